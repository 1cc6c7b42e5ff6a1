//! Where a field is in an object (`spec.podSpec.containers[1].name`) and what is wrong with it:
//! the error every validation rule returns, whether the object came from YAML or protobuf.

use std::fmt;

/// How much of a user's value an error quotes before cutting it short.
pub const ECHO_CHARS: usize = 64;

/// `value` as quoted in an error: whole if short, else its first [`ECHO_CHARS`] characters and
/// its size (`"aaaa…(1048576 bytes)"`), so that an error about a huge value stays small.
pub fn shorten(value: &str) -> String {
    match value.char_indices().nth(ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}…({} bytes)", &value[..end], value.len()),
    }
}

/// `text` unquoted, cut after `max` characters with its size (`aaaa…(1048576 bytes)`): for
/// text that is shown as is, such as a file name or a parser's message.
pub(crate) fn cut(text: &str, max: usize) -> String {
    crate::text::cut_short(text, max).into_owned()
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key (a field name).
    Key(String),
    /// An item of a sequence.
    Index(usize),
}

/// Where a field is in a document: `spec.podSpec.containers[1].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The object (or document) itself.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// The path of field `name` below this one.
    pub fn key(&self, name: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(name.to_string()));
        FieldPath(segments)
    }

    /// The path of item `index` of the sequence at this path.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    /// The steps from the root.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the root (no step).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A field that failed validation: where, and why. Displayed as `PATH: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field.
    pub path: FieldPath,
    /// What is wrong with it (user input in it is cut short, see [`shorten`]).
    pub message: String,
}

impl FieldError {
    /// An error about the field at `path`.
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        FieldError {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Result of a validation rule.
pub type FieldResult<T> = Result<T, FieldError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_path_display() {
        let p = FieldPath::root()
            .key("spec")
            .key("containers")
            .index(1)
            .key("name");
        assert_eq!(p.to_string(), "spec.containers[1].name");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn long_values_are_cut_short_with_their_size() {
        assert_eq!(shorten("abc"), "\"abc\"");
        let long = "x".repeat(1 << 20);
        let s = shorten(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("…(1048576 bytes)"), "{s}");
        // Cut on a character boundary.
        let wide = "é".repeat(100);
        assert!(shorten(&wide).ends_with("…(200 bytes)"));
    }
}
