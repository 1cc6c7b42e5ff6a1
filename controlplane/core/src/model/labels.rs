//! Labels (`metadata.labels`) and label selectors (`pssctl get -l app=web,tier!=db`), with
//! Kubernetes' syntax: a key is an optional DNS-subdomain prefix and `/`, then a name of at most
//! 63 characters (alphanumerics, `-`, `_`, `.`, alphanumeric at both ends); a value is empty or
//! such a name.

use std::collections::BTreeMap;
use std::fmt;

use super::field::{shorten, FieldError, FieldPath, FieldResult};

/// An object's labels, ordered by key (so they print and hash the same every time).
pub type Labels = BTreeMap<String, String>;

/// Labels one object may carry.
pub const MAX_LABELS: usize = 64;
/// The longest label name (the part after an optional `prefix/`) and the longest value.
pub const MAX_LABEL_NAME_LEN: usize = 63;
/// The longest key prefix (a DNS subdomain).
pub const MAX_LABEL_PREFIX_LEN: usize = 253;
/// Requirements in one selector.
pub const MAX_SELECTOR_TERMS: usize = 32;

/// Why `name` is not a label name (or value, when `value` is set), if it is not.
fn name_problem(name: &str, value: bool) -> Option<String> {
    if name.is_empty() {
        return (!value).then(|| "must not be empty".to_string());
    }
    if name.len() > MAX_LABEL_NAME_LEN {
        return Some(format!(
            "{} characters, above the limit of {MAX_LABEL_NAME_LEN}",
            name.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !name.chars().all(ok_char) || !ends(name.chars().next()) || !ends(name.chars().last()) {
        return Some(
            "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                .to_string(),
        );
    }
    None
}

/// Checks one label key.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_LABEL_PREFIX_LEN
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "label key {}: the prefix before '/' must be a DNS subdomain (lowercase, at most {MAX_LABEL_PREFIX_LEN} characters)",
                shorten(key)
            ));
        }
    }
    match name_problem(name, false) {
        Some(p) => Err(format!("label key {}: {p}", shorten(key))),
        None => Ok(()),
    }
}

/// Checks one label value.
pub fn check_value(value: &str) -> Result<(), String> {
    match name_problem(value, true) {
        Some(p) => Err(format!("label value {}: {p}", shorten(value))),
        None => Ok(()),
    }
}

/// Checks a whole label set found at `at` (e.g. `metadata.labels`).
pub fn check_labels(labels: &Labels, at: &FieldPath) -> FieldResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            at.clone(),
            format!("{} labels, above the limit of {MAX_LABELS}", labels.len()),
        ));
    }
    for (key, value) in labels {
        let here = at.key(&shorten(key));
        check_key(key).map_err(|e| FieldError::new(here.clone(), e))?;
        check_value(value).map_err(|e| FieldError::new(here, e))?;
    }
    Ok(())
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key`: the label is present, whatever its value.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
}

/// A conjunction of [`Requirement`]s; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses `key=value,key2!=value2,key3,!key4`. Whitespace around terms is ignored; an
    /// empty string is the empty selector.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Selector::default());
        }
        // Never more than one term past the limit is looked at, however long the text.
        let terms: Vec<&str> = text
            .split(',')
            .take(MAX_SELECTOR_TERMS + 1)
            .map(str::trim)
            .collect();
        if terms.len() > MAX_SELECTOR_TERMS {
            return Err(format!(
                "more than {MAX_SELECTOR_TERMS} terms, above the limit of {MAX_SELECTOR_TERMS}"
            ));
        }
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms {
            let requirement = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_string())
            } else {
                Requirement::Exists(term.to_string())
            };
            let (key, value) = match &requirement {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, None),
            };
            if key.is_empty() {
                return Err(format!(
                    "term {}: expected key=value, key!=value, key or !key",
                    shorten(term)
                ));
            }
            check_key(key)?;
            if let Some(v) = value {
                check_value(v)?;
            }
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

/// `key=value,key2=value2` for display (`-` when there are none).
pub fn format_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_terms() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(Selector::parse("").unwrap().matches(&l));
        assert!(Selector::parse("app=web").unwrap().matches(&l));
        assert!(Selector::parse("app==web, tier=front").unwrap().matches(&l));
        assert!(!Selector::parse("app=web,tier=back").unwrap().matches(&l));
        assert!(Selector::parse("tier!=back").unwrap().matches(&l));
        assert!(Selector::parse("env!=prod").unwrap().matches(&l));
        assert!(Selector::parse("app,!env").unwrap().matches(&l));
        assert!(!Selector::parse("env").unwrap().matches(&l));
        assert!(!Selector::parse("!app").unwrap().matches(&l));
    }

    #[test]
    fn selector_errors_name_the_term() {
        let e = Selector::parse("=web").unwrap_err();
        assert!(e.contains("expected key=value"), "{e}");
        let e = Selector::parse("app=we b").unwrap_err();
        assert!(e.contains("label value"), "{e}");
        let e = Selector::parse("-app=web").unwrap_err();
        assert!(e.contains("label key"), "{e}");
        let many = vec!["a=b"; MAX_SELECTOR_TERMS + 1].join(",");
        assert!(Selector::parse(&many)
            .unwrap_err()
            .contains("above the limit"));
    }

    #[test]
    fn keys_and_values() {
        assert!(check_key("app").is_ok());
        assert!(check_key("example.com/app").is_ok());
        assert!(check_key("Example.com/app").is_err());
        assert!(check_key("/app").is_err());
        assert!(check_key(&"a".repeat(64)).is_err());
        assert!(check_value("").is_ok());
        assert!(check_value("v1.2_3-x").is_ok());
        assert!(check_value("-x").is_err());
    }

    #[test]
    fn too_many_labels() {
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let e = check_labels(&many, &FieldPath::root().key("labels")).unwrap_err();
        assert!(e.message.contains("above the limit"), "{}", e.message);
    }

    proptest! {
        /// A selector printed and parsed again is the same selector, and means the same.
        #[test]
        fn selector_round_trips(
            terms in proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{0,4}", 0u8..4), 0..6),
            present in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,4}", 0..6),
        ) {
            let requirements = terms
                .into_iter()
                .map(|(k, v, op)| match op {
                    0 => Requirement::Equals(k, v),
                    1 => Requirement::NotEquals(k, v),
                    2 => Requirement::Exists(k),
                    _ => Requirement::NotExists(k),
                })
                .collect();
            let selector = Selector { requirements };
            let again = Selector::parse(&selector.to_string()).unwrap();
            prop_assert_eq!(&again, &selector);
            prop_assert_eq!(again.matches(&present), selector.matches(&present));
        }
    }
}
