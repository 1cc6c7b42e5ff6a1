//! The YAML layer: serde-saphyr reads each document into a tree of [`Spanned`] nodes, so every
//! key, item and value carries the position the parser saw it at: one parse gives both the
//! content and the index that turns a field path into a line.
//!
//! The parser runs under a budget built from [`Limits`]: nesting depth (block and flow), alias
//! replay (billion laughs), scalar bytes. Each budget stops the parse as soon as it is crossed,
//! so a hostile file costs time in proportion to how far it gets, not to how big it is.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::{AliasLimits, NonFiniteFloatPolicy};
use serde_saphyr::Spanned;

use crate::model::field::{cut, shorten, FieldPath, Segment};
use crate::model::Limits;

/// A YAML node with its position ([`Spanned::referenced`]).
pub(crate) type Node = Spanned<Value>;

/// A YAML value, as plain as the manifest decoder needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// Any integer YAML can write that fits 128 bits (so `-1` and `2^64` are quoted as written).
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order (duplicate keys are refused by the parser).
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// How the value is called in errors, in serde's words (`string "x"`, `integer `5``).
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Int(i) => format!("integer `{i}`"),
            Value::Float(f) => format!("floating point `{f}`"),
            Value::Str(s) => format!("string {}", shorten(s)),
            Value::Seq(_) => "a sequence".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The key text of a mapping entry, if the key is a scalar.
    pub(crate) fn as_key(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Null => Some("null".into()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
                Ok(i128::try_from(v).map_or(Value::Float(v as f64), Value::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Value::Map(entries))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Mark {
    /// Where `node` is used (for an alias, the alias; not its anchor).
    pub(crate) fn of(node: &Node) -> Mark {
        Mark {
            line: usize::try_from(node.referenced.line()).unwrap_or(usize::MAX),
            column: usize::try_from(node.referenced.column()).unwrap_or(usize::MAX),
        }
    }
}

/// The position of the deepest part of `path` that exists in `root`: the key of a field, the
/// start of a sequence item, or the document if nothing matches.
pub(crate) fn locate(root: &Node, path: &FieldPath) -> Mark {
    let mut node = root;
    let mut mark = Mark::of(root);
    for segment in path.segments() {
        let next = match (segment, &node.value) {
            (Segment::Key(k), Value::Map(entries)) => entries
                .iter()
                .find(|(key, _)| key.value.as_key().as_deref() == Some(k.as_str()))
                .map(|(key, value)| (Mark::of(key), value)),
            (Segment::Index(i), Value::Seq(items)) => items.get(*i).map(|v| (Mark::of(v), v)),
            _ => None,
        };
        match next {
            Some((m, v)) => (mark, node) = (m, v),
            None => break,
        }
    }
    mark
}

/// The parser's options for `limits`.
fn options(limits: &Limits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_yaml_depth;
    budget.flow_nesting_limit = limits.max_yaml_depth;
    // Without aliases no scalar text can exceed the input; with them, this bounds replay.
    budget.max_total_scalar_bytes = limits.max_manifest_bytes;
    budget.max_reader_input_bytes = Some(limits.max_manifest_bytes.saturating_add(1));
    budget.max_aliases = 1_000;
    budget.max_documents = limits.max_documents;
    // A manifest may share a block through an anchor; it never needs to replay much.
    let mut alias_limits = AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 8;
    alias_limits.max_alias_expansions_per_anchor = 64;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    // `yes`, `no`, `on`, `off` are strings (YAML 1.2), as they were with serde_yaml.
    options.strict_booleans = true;
    // `0755` and `1_000` stay text where text is expected (an env value), as with serde_yaml.
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    // `.inf` and `.nan` read as text: no field of a manifest is a float.
    options.non_finite_float_policy = NonFiniteFloatPolicy::AsString;
    options.with_snippet = false;
    options.crop_radius = 0;
    options
}

/// A YAML document that failed to parse: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) mark: Option<Mark>,
}

/// The longest parser message passed on whole; a longer one (it may quote a huge key) is cut.
const MAX_PARSER_MESSAGE: usize = 256;

/// The parser's error in the manifest's words, its location moved out of the message.
fn syntax_error(e: &serde_saphyr::Error, limits: &Limits) -> SyntaxError {
    let outer = e.without_snippet();
    // An error met while replaying an alias is wrapped; its cause says which budget broke.
    let mut e = outer;
    while let serde_saphyr::Error::AliasError { error, .. } = e {
        e = error.without_snippet();
    }
    let e = if outer.location().is_some() && e.location().is_none() {
        outer
    } else {
        e
    };
    let mark = e.location().map(|l| Mark {
        line: usize::try_from(l.line()).unwrap_or(usize::MAX),
        column: usize::try_from(l.column()).unwrap_or(usize::MAX),
    });
    let mut message = e.to_string();
    if let Some(m) = mark {
        for suffix in [
            format!(" at line {}, column {}", m.line, m.column),
            format!(" at line {} column {}", m.line, m.column),
        ] {
            if let Some(at) = message.rfind(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
        }
    }
    let depth = format!(
        "nested deeper than the limit of {} levels (sequences and mappings inside each other)",
        limits.max_yaml_depth
    );
    let message = match e {
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => depth,
            BudgetBreach::Documents { .. } => format!(
                "more than {} documents, above the limit",
                limits.max_documents
            ),
            BudgetBreach::Aliases { .. }
            | BudgetBreach::AliasAnchorRatio { .. }
            | BudgetBreach::ScalarBytes { .. } => {
                format!("too much alias expansion ({message}): write the values out")
            }
            _ => format!("too large to parse ({message})"),
        },
        _ if message.contains("recursion limit exceeded") => depth,
        _ if message.contains("alias") && message.contains("limit") => {
            format!("too much alias expansion ({message}): write the values out")
        }
        _ => message
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
            .to_string(),
    };
    SyntaxError {
        message: format!("invalid YAML: {}", cut(&message, MAX_PARSER_MESSAGE)),
        mark,
    }
}

/// The documents of `text`, in order, each as a tree or as the error that stopped the parse
/// (then the last item). Empty documents (a stray `---`, comments only) are not yielded; at
/// most `max_documents + 1` are read, so that one too many is seen without reading the rest.
pub(crate) fn documents(text: &str, limits: &Limits) -> Vec<Result<Node, SyntaxError>> {
    let mut reader = text.as_bytes();
    let mut out = Vec::new();
    for item in serde_saphyr::read_with_options::<_, Node>(&mut reader, options(limits)) {
        let stop = item.is_err();
        out.push(item.map_err(|e| syntax_error(&e, limits)));
        if stop || out.len() > limits.max_documents {
            break;
        }
    }
    out
}
