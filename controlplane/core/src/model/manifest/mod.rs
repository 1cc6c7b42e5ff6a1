//! YAML manifests: parsing, decoding and validation.
//!
//! A manifest file holds one or more Kubernetes-like documents separated by `---`:
//! `apiVersion` (optional, `pss/v1`), `kind` (`Workload`, `Service`, `AutoScalePolicy`),
//! `metadata.name` and a `spec`. Parsing is all or nothing: one invalid document fails the file,
//! so an apply never half-happens; the error lists every problem found in every document (up
//! to [`MAX_FILE_ERRORS`]), so that one edit fixes them all.
//!
//! A file goes through four steps, each in its own module:
//! 1. bounds first ([`parse_manifests_with`]): size, then a UTF-8 byte-order mark is dropped;
//! 2. [`yaml`]: serde-saphyr parses each document, under a budget from [`Limits`] (nesting,
//!    documents, aliases), into a tree whose every node carries the parser's position;
//! 3. [`decode`]: the tree becomes model objects (field names, types, defaults);
//! 4. [`validate`](crate::model::validate): the domain rules and limits, shared with the
//!    protobuf conversions.
//!
//! Any error names its field path; the path is looked up in the tree for its line, and
//! [`error`] formats the whole as `FILE: document N (line L): FIELD: MESSAGE`.

mod decode;
mod error;
mod yaml;

use std::collections::HashMap;

pub use error::{ManifestError, MoreErrors};

use super::field::{FieldError, FieldPath};
use super::Limits;
use super::Object;

/// The most errors listed for one file; the rest are counted.
pub const MAX_FILE_ERRORS: usize = 50;

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BOM: &str = "\u{feff}";

/// [`parse_manifest_bytes_with`] with [`Limits::default`] (what `pssctl` checks locally).
pub fn parse_manifest_bytes(bytes: &[u8], source: &str) -> Result<Vec<Object>, ManifestError> {
    parse_manifest_bytes_with(bytes, source, &Limits::default())
}

/// Like [`parse_manifests_with`], for raw file contents: the size is checked before anything
/// else, and invalid UTF-8 (a binary file) is reported with the byte offset and line where it
/// starts.
pub fn parse_manifest_bytes_with(
    bytes: &[u8],
    source: &str,
    limits: &Limits,
) -> Result<Vec<Object>, ManifestError> {
    check_size(bytes.len(), source, limits)?;
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_manifests_with(text, source, limits),
        Err(e) => {
            let offset = e.valid_up_to();
            let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
            Err(ManifestError {
                line: Some(line),
                ..ManifestError::file_level(
                    source,
                    format!("not UTF-8 text: invalid byte sequence at byte offset {offset} (is it a binary file?)"),
                )
            })
        }
    }
}

/// [`parse_manifests_with`] with [`Limits::default`].
pub fn parse_manifests(text: &str, source: &str) -> Result<Vec<Object>, ManifestError> {
    parse_manifests_with(text, source, &Limits::default())
}

/// Parses and validates every document of `text` against `limits`; `source` names the file in
/// errors.
///
/// Empty documents (a stray `---`, comments only) are skipped; a file without any object is an
/// error. Two objects of the same kind and name in one file are an error.
pub fn parse_manifests_with(
    text: &str,
    source: &str,
    limits: &Limits,
) -> Result<Vec<Object>, ManifestError> {
    check_size(text.len(), source, limits)?;
    let text = text.strip_prefix(BOM).unwrap_or(text);
    let mut objects = Vec::new();
    let mut errors: Vec<ManifestError> = Vec::new();
    let mut omitted = 0usize;
    let mut report = |e: ManifestError, errors: &mut Vec<ManifestError>| {
        if errors.len() < MAX_FILE_ERRORS {
            errors.push(e);
        } else {
            omitted += 1;
        }
    };
    let mut seen: HashMap<(&'static str, String), usize> = HashMap::new();
    for (index, document) in yaml::documents(text, limits).into_iter().enumerate() {
        let number = index + 1;
        if number > limits.max_documents {
            report(
                ManifestError::file_level(
                    source,
                    format!(
                        "more than {} documents, above the limit of {}",
                        limits.max_documents, limits.max_documents
                    ),
                ),
                &mut errors,
            );
            break;
        }
        let root = match document {
            Ok(root) => root,
            Err(e) => {
                report(ManifestError::syntax(source, number, e), &mut errors);
                continue;
            }
        };
        let located = |e: FieldError| {
            let mark = yaml::locate(&root, &e.path);
            ManifestError::field(source, number, e, mark)
        };
        let object = match decode::document(&root, limits) {
            Ok(object) => object,
            Err(field_errors) => {
                for e in field_errors {
                    report(located(e), &mut errors);
                }
                continue;
            }
        };
        let key = (object.kind(), object.name().to_string());
        if let Some(first) = seen.insert(key, number) {
            report(
                located(FieldError::new(
                    FieldPath::root().key("metadata").key("name"),
                    format!(
                        "duplicate {} {:?}: already defined in document {first}",
                        object.kind(),
                        object.name()
                    ),
                )),
                &mut errors,
            );
            continue;
        }
        objects.push(object);
    }
    if let Some(e) = ManifestError::combine(errors, omitted) {
        return Err(e);
    }
    if objects.is_empty() {
        return Err(ManifestError::file_level(
            source,
            "no objects: the file is empty or holds only comments (expected documents with kind, metadata and spec)",
        ));
    }
    Ok(objects)
}

/// The manifest's size against [`Limits::max_manifest_bytes`], before it is looked at.
fn check_size(len: usize, source: &str, limits: &Limits) -> Result<(), ManifestError> {
    if len > limits.max_manifest_bytes {
        return Err(ManifestError::file_level(
            source,
            format!(
                "the manifest is {len} bytes, above the limit of {} bytes",
                limits.max_manifest_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
