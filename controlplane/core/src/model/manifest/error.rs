//! [`ManifestError`]: a manifest that failed, located by file, document, line and field.

use std::fmt;

use super::yaml::{Mark, SyntaxError};
use crate::model::field::{cut, FieldError};

/// The longest file name shown whole (a raw request may send any `source`).
const MAX_FILE_NAME: usize = 256;

/// A manifest that failed to parse or validate.
///
/// Displayed as `FILE: document N (line L): FIELD: MESSAGE`; parts that are unknown are left out,
/// and the column is shown for errors that have no field path (YAML syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// What is wrong, without the location (e.g. `must be >= 0, got -1`).
    pub message: String,
    /// The file name (or `<stdin>`) given to [`parse_manifests`](super::parse_manifests).
    pub file: String,
    /// 1-based number of the document in the file, counting the documents that hold
    /// something (a stray `---` is not counted); `None` for whole-file errors.
    pub document: Option<usize>,
    /// 1-based line of the offending field or syntax error, where known.
    pub line: Option<usize>,
    /// 1-based column of the offending field or syntax error, where known.
    pub column: Option<u32>,
    /// Path of the offending field, e.g. `spec.podSpec.containers[1].resources.memory`.
    pub field: Option<String>,
    /// Further errors in the same file (every wrong field is reported at once); `None` when
    /// this is the only one. Boxed: the common single error stays small.
    pub more: Option<Box<MoreErrors>>,
}

/// The errors of a file after its first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoreErrors {
    /// In order; never nested.
    pub errors: Vec<ManifestError>,
    /// Errors found beyond those listed (the list is capped).
    pub omitted: usize,
}

impl ManifestError {
    /// An error about the file as a whole (no document).
    pub(crate) fn file_level(file: &str, message: impl Into<String>) -> Self {
        ManifestError {
            message: message.into(),
            file: cut(file, MAX_FILE_NAME),
            document: None,
            line: None,
            column: None,
            field: None,
            more: None,
        }
    }

    /// The errors found in one file as one error: the first, with the others in `more`.
    pub(crate) fn combine(mut all: Vec<ManifestError>, omitted: usize) -> Option<Self> {
        if all.is_empty() {
            return None;
        }
        let mut first = all.remove(0);
        if !all.is_empty() || omitted > 0 {
            first.more = Some(Box::new(MoreErrors {
                errors: all,
                omitted,
            }));
        }
        Some(first)
    }

    /// Every error, the first included.
    pub fn all(&self) -> impl Iterator<Item = &ManifestError> {
        std::iter::once(self).chain(self.more.iter().flat_map(|m| m.errors.iter()))
    }

    /// A field error of document `document`, at `mark`.
    pub(crate) fn field(file: &str, document: usize, e: FieldError, mark: Mark) -> Self {
        ManifestError {
            field: (!e.path.is_root()).then(|| e.path.to_string()),
            message: e.message,
            file: cut(file, MAX_FILE_NAME),
            document: Some(document),
            line: Some(mark.line),
            column: Some(u32::try_from(mark.column).unwrap_or(u32::MAX)),
            more: None,
        }
    }

    /// A YAML error of document `document`.
    pub(crate) fn syntax(file: &str, document: usize, e: SyntaxError) -> Self {
        ManifestError {
            message: e.message,
            file: cut(file, MAX_FILE_NAME),
            document: Some(document),
            line: e.mark.map(|m| m.line),
            column: e.mark.map(|m| u32::try_from(m.column).unwrap_or(u32::MAX)),
            field: None,
            more: None,
        }
    }
}

impl fmt::Display for ManifestError {
    /// One line per error: the first, then the others of the same file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_one(f)?;
        if let Some(more) = &self.more {
            for e in &more.errors {
                f.write_str("\n")?;
                e.fmt_one(f)?;
            }
            if more.omitted > 0 {
                write!(f, "\n{}: ... and {} more errors", self.file, more.omitted)?;
            }
        }
        Ok(())
    }
}

impl ManifestError {
    fn fmt_one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(doc) = self.document {
            write!(f, ": document {doc}")?;
        }
        match (self.line, self.column, &self.field) {
            (Some(line), Some(col), None) => write!(f, " (line {line}, column {col})")?,
            (Some(line), _, _) => write!(f, " (line {line})")?,
            _ => {}
        }
        if let Some(field) = self.field.as_deref().filter(|p| !p.is_empty()) {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}
