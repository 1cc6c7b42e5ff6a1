//! YAML manifest parsing and validation.
//!
//! A manifest file holds one or more Kubernetes-like documents separated by `---`:
//! `apiVersion` (optional, `pss/v1`), `kind` (`Workload`, `Service`, `AutoScalePolicy`),
//! `metadata.name` and a `spec`. Parsing is all or nothing: one invalid document fails the file,
//! so an apply never half-happens.
//!
//! Each document goes through three steps:
//! 1. serde_yaml reads it into a [`serde_yaml::Value`] (syntax errors come with a location);
//! 2. serde decodes the value into loose `Raw*` structs (`deny_unknown_fields`, integers kept
//!    signed so `-1` is reported as a range error, not a type error); [`serde_path_to_error`]
//!    gives the field path of a decoding error;
//! 3. the raw structs become model objects, with range and semantic checks that name the field.
//!
//! serde_yaml forgets positions once a value is built, so a second, event-level pass with
//! yaml-rust2 ([`spans`]) records where every key and item starts; a field path is looked up there
//! to report the line of any error.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml::Value;

use super::{
    parse_cpu, parse_memory, validate_dns1123, AutoScalePolicy, Container, EnvVar, Object,
    Placement, PodSpec, PortSpec, Protocol, ReadinessProbe, Resources, Service, Workload,
};

/// The only `apiVersion` accepted (it may also be left out).
pub const API_VERSION: &str = "pss/v1";
/// Probe interval when `readinessProbe.interval` is left out.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 2_000;
/// Probe timeout when `readinessProbe.timeout` is left out.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 1_000;

/// A manifest that failed to parse or validate.
///
/// Displayed as `FILE: document N (line L): FIELD: MESSAGE`; parts that are unknown are left out,
/// and the column is shown for errors that have no field path (YAML syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// What is wrong, without the location (e.g. `must be >= 0, got -1`).
    pub message: String,
    /// The file name (or `<stdin>`) given to [`parse_manifests`].
    pub file: String,
    /// 1-based number of the document in the file; `None` for whole-file errors.
    pub document: Option<usize>,
    /// 1-based line of the offending field or syntax error, where known.
    pub line: Option<usize>,
    /// 1-based column of the offending field or syntax error, where known.
    pub column: Option<usize>,
    /// Path of the offending field, e.g. `spec.podSpec.containers[1].resources.memory`.
    pub field: Option<String>,
}

impl ManifestError {
    /// An error about the file as a whole (no document).
    fn file_level(file: &str, message: impl Into<String>) -> Self {
        ManifestError {
            message: message.into(),
            file: file.to_string(),
            document: None,
            line: None,
            column: None,
            field: None,
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// Like [`parse_manifests`], for raw file contents: invalid UTF-8 (a binary file) is reported
/// with the byte offset and line where it starts.
pub fn parse_manifest_bytes(bytes: &[u8], source: &str) -> Result<Vec<Object>, ManifestError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_manifests(text, source),
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

/// Parses and validates every document of `text`; `source` names the file in errors.
///
/// Empty documents (a stray `---`, comments only) are skipped; a file without any object is an
/// error. Two objects of the same kind and name in one file are an error.
pub fn parse_manifests(text: &str, source: &str) -> Result<Vec<Object>, ManifestError> {
    let spans = spans::Document::parse_all(text);
    let mut objects = Vec::new();
    let mut seen: HashMap<(&'static str, String), usize> = HashMap::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let located = |e: FieldError| {
            let mark = spans.get(index).and_then(|s| s.locate(&e.path));
            ManifestError {
                message: e.message,
                file: source.to_string(),
                document: Some(number),
                line: mark.map(|m| m.line),
                column: mark.map(|m| m.column),
                field: (!e.path.segments().is_empty()).then(|| e.path.to_string()),
            }
        };
        let value = match Value::deserialize(doc) {
            Ok(value) => value,
            // serde_yaml keeps yielding the same error after a syntax error: stop at the first.
            Err(e) => return Err(syntax_error(&e, source, number)),
        };
        if value.is_null() {
            continue;
        }
        let object = decode_document(value).map_err(located)?;
        let key = (object.kind(), object.name().to_string());
        if let Some(first) = seen.insert(key, number) {
            return Err(located(FieldError::new(
                FieldPath::root().key("metadata").key("name"),
                format!(
                    "duplicate {} {:?}: already defined in document {first}",
                    object.kind(),
                    object.name()
                ),
            )));
        }
        objects.push(object);
    }
    if objects.is_empty() {
        return Err(ManifestError::file_level(
            source,
            "no objects: the file is empty or holds only comments (expected documents with kind, metadata and spec)",
        ));
    }
    Ok(objects)
}

/// A serde_yaml syntax error, with its location moved out of the message into the fields.
fn syntax_error(e: &serde_yaml::Error, source: &str, document: usize) -> ManifestError {
    let mut message = e.to_string();
    if let Some(loc) = e.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
    }
    ManifestError {
        message: format!("invalid YAML: {message}"),
        file: source.to_string(),
        document: Some(document),
        line: e.location().map(|l| l.line()),
        column: e.location().map(|l| l.column()),
        field: None,
    }
}

// ------------------------------------------------------------------------------ field paths

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Where a field is in a document: `spec.podSpec.containers[1].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document itself.
    pub(crate) fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// The path of field `name` below this one.
    pub(crate) fn key(&self, name: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(name.to_string()));
        FieldPath(segments)
    }

    /// The path of item `index` of the sequence at this path.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    /// This path followed by the path serde_path_to_error found below it.
    fn join(&self, below: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let mut segments = self.0.clone();
        for segment in below.iter() {
            match segment {
                S::Seq { index } => segments.push(Segment::Index(*index)),
                S::Map { key } => segments.push(Segment::Key(key.clone())),
                S::Enum { variant } => segments.push(Segment::Key(variant.clone())),
                S::Unknown => break,
            }
        }
        FieldPath(segments)
    }

    fn segments(&self) -> &[Segment] {
        &self.0
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

/// A field that failed validation: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) path: FieldPath,
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn new(path: FieldPath, message: impl Into<String>) -> Self {
        FieldError {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

type FieldResult<T> = Result<T, FieldError>;

/// Decodes `value` (the part of a document at `at`) into `T`, naming the field that failed.
fn decode<T: de::DeserializeOwned>(value: Value, at: &FieldPath) -> FieldResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = at.join(e.path());
        FieldError::new(path, e.into_inner().to_string())
    })
}

// ------------------------------------------------------------------------------ raw shapes

/// An integer as written, signed and wide so that range errors can quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
        }
        d.deserialize_any(IntVisitor)
    }
}

/// A scalar read as text whatever its YAML type (`80`, `0.5` and `"80"` alike): quantities,
/// durations, env values, command words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// The envelope every document shares; `spec` is decoded once `kind` is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDocument {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<RawMetadata>,
    spec: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWorkloadSpec {
    replicas: Option<Int>,
    #[serde(default)]
    placement: Placement,
    pod_spec: RawPodSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPodSpec {
    containers: Vec<RawContainer>,
    #[serde(default)]
    ports: Vec<RawPort>,
    readiness_probe: Option<RawProbe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    name: String,
    image: String,
    #[serde(default)]
    command: Vec<Text>,
    #[serde(default)]
    args: Vec<Text>,
    #[serde(default)]
    env: Vec<RawEnvVar>,
    #[serde(default)]
    resources: RawResources,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvVar {
    name: String,
    value: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpu: Option<Text>,
    memory: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPort {
    container_port: Int,
    #[serde(default)]
    protocol: Protocol,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    port: Option<Int>,
    interval: Option<Text>,
    timeout: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawServiceSpec {
    workload: String,
    port: Int,
    /// Defaults to `port`.
    target_port: Option<Int>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAutoScaleSpec {
    workload: String,
    /// Defaults to 1.
    min_replicas: Option<Int>,
    max_replicas: Int,
    cpu: Option<Int>,
    memory: Option<Int>,
}

// ------------------------------------------------------------------------------ documents

/// One non-empty document to a validated object.
fn decode_document(value: Value) -> FieldResult<Object> {
    let root = FieldPath::root();
    if !value.is_mapping() {
        return Err(FieldError::new(
            root,
            format!(
                "expected a mapping with kind, metadata and spec, got {}",
                value_kind(&value)
            ),
        ));
    }
    let doc: RawDocument = decode(value, &root)?;
    if let Some(v) = doc.api_version.as_deref().filter(|v| *v != API_VERSION) {
        return Err(FieldError::new(
            root.key("apiVersion"),
            format!("unsupported apiVersion {v:?}: use {API_VERSION:?} or leave it out"),
        ));
    }
    let kind = doc.kind.ok_or_else(|| {
        FieldError::new(
            root.key("kind"),
            "required: one of Workload, Service, AutoScalePolicy",
        )
    })?;
    if !matches!(kind.as_str(), "Workload" | "Service" | "AutoScalePolicy") {
        return Err(FieldError::new(
            root.key("kind"),
            format!("unknown kind {kind:?}: expected Workload, Service or AutoScalePolicy"),
        ));
    }
    let name_path = root.key("metadata").key("name");
    let name = doc
        .metadata
        .and_then(|m| m.name)
        .ok_or_else(|| FieldError::new(name_path.clone(), "required"))?;
    validate_dns1123(&name).map_err(|e| FieldError::new(name_path, e))?;
    let spec_path = root.key("spec");
    let spec = doc
        .spec
        .ok_or_else(|| FieldError::new(spec_path.clone(), "required"))?;
    match kind.as_str() {
        "Workload" => workload(name, decode(spec, &spec_path)?, &spec_path).map(Object::Workload),
        "Service" => service(name, decode(spec, &spec_path)?, &spec_path).map(Object::Service),
        _ => autoscaler(name, decode(spec, &spec_path)?, &spec_path).map(Object::AutoScalePolicy),
    }
}

/// How a YAML value is called in errors.
fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn workload(name: String, raw: RawWorkloadSpec, at: &FieldPath) -> FieldResult<Workload> {
    let replicas = match raw.replicas {
        Some(r) => to_u32(r, &at.key("replicas"))?,
        None => 1,
    };
    let spec_path = at.key("podSpec");
    let pod_spec = pod_spec(raw.pod_spec, &spec_path)?;
    validate_pod_spec(&pod_spec, &spec_path)?;
    Ok(Workload {
        name,
        replicas,
        placement: raw.placement,
        pod_spec,
    })
}

fn pod_spec(raw: RawPodSpec, at: &FieldPath) -> FieldResult<PodSpec> {
    let containers_path = at.key("containers");
    let containers = raw
        .containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| container(c, &containers_path.index(i)))
        .collect::<FieldResult<_>>()?;
    let ports_path = at.key("ports");
    let ports = raw
        .ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let container_port =
                to_port(p.container_port, &ports_path.index(i).key("containerPort"))?;
            Ok(PortSpec {
                container_port,
                protocol: p.protocol,
            })
        })
        .collect::<FieldResult<_>>()?;
    let readiness_probe = raw
        .readiness_probe
        .map(|p| probe(p, &at.key("readinessProbe")))
        .transpose()?;
    Ok(PodSpec {
        containers,
        ports,
        readiness_probe,
    })
}

fn container(raw: RawContainer, at: &FieldPath) -> FieldResult<Container> {
    let resources_path = at.key("resources");
    let quantity = |text: Option<Text>, field: &str, parse: fn(&str) -> Result<u64, String>| {
        text.map(|t| parse(&t.0).map_err(|e| FieldError::new(resources_path.key(field), e)))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let resources = Resources {
        cpu_millis: quantity(raw.resources.cpu, "cpu", parse_cpu)?,
        memory_bytes: quantity(raw.resources.memory, "memory", parse_memory)?,
    };
    let words = |v: Vec<Text>| v.into_iter().map(|t| t.0).collect();
    let env = raw
        .env
        .into_iter()
        .map(|e| EnvVar {
            name: e.name,
            value: e.value.map(|v| v.0).unwrap_or_default(),
        })
        .collect();
    Ok(Container {
        name: raw.name,
        image: raw.image,
        command: words(raw.command),
        args: words(raw.args),
        env,
        resources,
    })
}

fn probe(raw: RawProbe, at: &FieldPath) -> FieldResult<ReadinessProbe> {
    let port = raw.port.map(|p| to_port(p, &at.key("port"))).transpose()?;
    let duration = |text: Option<Text>, field: &str, default: u64| -> FieldResult<u64> {
        let Some(Text(text)) = text else {
            return Ok(default);
        };
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            FieldError::new(
                at.key(field),
                format!("invalid duration {text:?}: {e} (examples: 2s, 500ms, 1m)"),
            )
        })?;
        Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Ok(ReadinessProbe {
        port,
        interval_ms: duration(raw.interval, "interval", DEFAULT_PROBE_INTERVAL_MS)?,
        timeout_ms: duration(raw.timeout, "timeout", DEFAULT_PROBE_TIMEOUT_MS)?,
    })
}

fn service(name: String, raw: RawServiceSpec, at: &FieldPath) -> FieldResult<Service> {
    let port = to_port(raw.port, &at.key("port"))?;
    let target_port = raw
        .target_port
        .map(|p| to_port(p, &at.key("targetPort")))
        .transpose()?
        .unwrap_or(port);
    let service = Service {
        name,
        workload: raw.workload,
        port,
        target_port,
    };
    validate_service(&service, at)?;
    Ok(service)
}

fn autoscaler(name: String, raw: RawAutoScaleSpec, at: &FieldPath) -> FieldResult<AutoScalePolicy> {
    let percent = |v: Option<Int>, field: &str| v.map(|v| to_u32(v, &at.key(field))).transpose();
    let policy = AutoScalePolicy {
        name,
        workload: raw.workload,
        min_replicas: raw
            .min_replicas
            .map(|v| to_u32(v, &at.key("minReplicas")))
            .transpose()?
            .unwrap_or(1),
        max_replicas: to_u32(raw.max_replicas, &at.key("maxReplicas"))?,
        cpu_percent: percent(raw.cpu, "cpu")?,
        memory_percent: percent(raw.memory, "memory")?,
    };
    validate_autoscaler(&policy, at)?;
    Ok(policy)
}

/// A non-negative count.
fn to_u32(v: Int, at: &FieldPath) -> FieldResult<u32> {
    if v.0 < 0 {
        return Err(FieldError::new(
            at.clone(),
            format!("must be >= 0, got {}", v.0),
        ));
    }
    u32::try_from(v.0).map_err(|_| {
        FieldError::new(
            at.clone(),
            format!("must be at most {}, got {}", u32::MAX, v.0),
        )
    })
}

fn to_port(v: Int, at: &FieldPath) -> FieldResult<u16> {
    port_from_i64(v.0, at)
}

/// A TCP/UDP port number, 1..=65535.
pub(crate) fn port_from_i64(v: i64, at: &FieldPath) -> FieldResult<u16> {
    u16::try_from(v).ok().filter(|&p| p != 0).ok_or_else(|| {
        FieldError::new(
            at.clone(),
            format!("must be a port between 1 and 65535, got {v}"),
        )
    })
}

// ------------------------------------------------------------------------------ semantic checks
// Shared with the protobuf conversions: they run on model types, whatever their source.

/// Checks what the types alone do not: container names (DNS-1123, unique), images, env names,
/// ports and the readiness probe's port. `at` is the path of the pod spec.
pub(crate) fn validate_pod_spec(spec: &PodSpec, at: &FieldPath) -> FieldResult<()> {
    let containers_path = at.key("containers");
    if spec.containers.is_empty() {
        return Err(FieldError::new(
            containers_path,
            "at least one container is required",
        ));
    }
    let mut names = HashMap::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = containers_path.index(i);
        validate_container(c, &path)?;
        if let Some(first) = names.insert(c.name.as_str(), i) {
            return Err(FieldError::new(
                path.key("name"),
                format!(
                    "duplicate container name {:?} (also containers[{first}])",
                    c.name
                ),
            ));
        }
    }
    let ports_path = at.key("ports");
    let mut ports = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = ports_path.index(i).key("containerPort");
        if p.container_port == 0 {
            return Err(FieldError::new(
                path,
                "must be a port between 1 and 65535, got 0",
            ));
        }
        if !ports.insert((p.container_port, p.protocol)) {
            return Err(FieldError::new(
                path,
                format!(
                    "duplicate port {}/{}",
                    p.container_port,
                    p.protocol.as_str()
                ),
            ));
        }
    }
    match &spec.readiness_probe {
        Some(probe) => validate_probe(probe, &spec.ports, &at.key("readinessProbe")),
        None => Ok(()),
    }
}

fn validate_container(c: &Container, at: &FieldPath) -> FieldResult<()> {
    validate_dns1123(&c.name).map_err(|e| FieldError::new(at.key("name"), e))?;
    if c.image.trim().is_empty() {
        return Err(FieldError::new(
            at.key("image"),
            "must not be empty (e.g. localhost/pss-demo:latest)",
        ));
    }
    for (j, e) in c.env.iter().enumerate() {
        let path = at.key("env").index(j).key("name");
        if e.name.is_empty() {
            return Err(FieldError::new(path, "must not be empty"));
        }
        if e.name.contains('=') || e.name.contains('\0') {
            return Err(FieldError::new(
                path,
                format!("invalid environment variable name {:?}", e.name),
            ));
        }
    }
    Ok(())
}

fn validate_probe(probe: &ReadinessProbe, ports: &[PortSpec], at: &FieldPath) -> FieldResult<()> {
    let declared: Vec<String> = ports.iter().map(|p| p.container_port.to_string()).collect();
    match probe.port {
        None if ports.is_empty() => {
            return Err(FieldError::new(
                at.clone(),
                "probes the first declared port, but spec.podSpec.ports is empty: declare a port",
            ))
        }
        Some(port) if !ports.iter().any(|p| p.container_port == port) => {
            let declared = if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            };
            return Err(FieldError::new(
                at.key("port"),
                format!("port {port} is not a declared containerPort (declared: {declared})"),
            ));
        }
        _ => {}
    }
    if probe.interval_ms == 0 {
        return Err(FieldError::new(
            at.key("interval"),
            "must be greater than 0",
        ));
    }
    if probe.timeout_ms == 0 {
        return Err(FieldError::new(at.key("timeout"), "must be greater than 0"));
    }
    Ok(())
}

/// Checks a service's workload name and ports. `at` is the path of the spec.
pub(crate) fn validate_service(s: &Service, at: &FieldPath) -> FieldResult<()> {
    validate_dns1123(&s.workload).map_err(|e| FieldError::new(at.key("workload"), e))?;
    for (field, port) in [("port", s.port), ("targetPort", s.target_port)] {
        port_from_i64(i64::from(port), &at.key(field))?;
    }
    Ok(())
}

/// Checks an autoscaler's bounds and targets. `at` is the path of the spec.
pub(crate) fn validate_autoscaler(p: &AutoScalePolicy, at: &FieldPath) -> FieldResult<()> {
    validate_dns1123(&p.workload).map_err(|e| FieldError::new(at.key("workload"), e))?;
    if p.min_replicas < 1 {
        return Err(FieldError::new(
            at.key("minReplicas"),
            format!("must be >= 1, got {}", p.min_replicas),
        ));
    }
    if p.max_replicas < p.min_replicas {
        return Err(FieldError::new(
            at.key("maxReplicas"),
            format!(
                "must be >= minReplicas ({}), got {}",
                p.min_replicas, p.max_replicas
            ),
        ));
    }
    for (field, percent) in [("cpu", p.cpu_percent), ("memory", p.memory_percent)] {
        if let Some(v) = percent.filter(|v| !(1..=100).contains(v)) {
            return Err(FieldError::new(
                at.key(field),
                format!("must be a percentage between 1 and 100, got {v}"),
            ));
        }
    }
    if p.cpu_percent.is_none() && p.memory_percent.is_none() {
        return Err(FieldError::new(
            at.clone(),
            "set a target: cpu, memory or both (percent of requests)",
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------ positions

/// Where each key and item of a document starts, from yaml-rust2's event stream.
mod spans {
    use super::{FieldPath, Segment};
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::Marker;

    /// A 1-based position in the file.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Mark {
        pub(super) line: usize,
        pub(super) column: usize,
    }

    impl From<Marker> for Mark {
        fn from(m: Marker) -> Self {
            // yaml-rust2 counts lines from 1 and columns from 0.
            Mark {
                line: m.line(),
                column: m.col() + 1,
            }
        }
    }

    /// A YAML node reduced to its structure and start position.
    #[derive(Debug)]
    enum Node {
        Leaf(Mark),
        Sequence(Mark, Vec<Node>),
        /// Entries as (key text, key position, value).
        Mapping(Mark, Vec<(String, Mark, Node)>),
    }

    impl Node {
        /// Where the node starts; for a block mapping, the position of its first key.
        fn mark(&self) -> Mark {
            match self {
                Node::Leaf(m) | Node::Sequence(m, _) => *m,
                Node::Mapping(m, entries) => entries.first().map_or(*m, |(_, k, _)| *k),
            }
        }
    }

    /// The positions of one document.
    #[derive(Debug)]
    pub(super) struct Document(Option<Node>);

    impl Document {
        /// Every document of `text`, in order. A syntax error ends the list early (serde_yaml
        /// reports it), so look-ups past it find nothing.
        pub(super) fn parse_all(text: &str) -> Vec<Document> {
            let mut builder = Builder::default();
            // Errors are serde_yaml's to report; keep what was built.
            let _ = Parser::new_from_str(text).load(&mut builder, true);
            builder.documents
        }

        /// The position of the deepest part of `path` that exists: the key of a field, the
        /// start of a sequence item, or the document if nothing matches.
        pub(super) fn locate(&self, path: &FieldPath) -> Option<Mark> {
            let mut node = self.0.as_ref()?;
            let mut mark = node.mark();
            for segment in path.segments() {
                let next = match (segment, node) {
                    (Segment::Key(k), Node::Mapping(_, entries)) => entries
                        .iter()
                        .find(|(key, _, _)| key == k)
                        .map(|(_, m, v)| (*m, v)),
                    (Segment::Index(i), Node::Sequence(_, items)) => {
                        items.get(*i).map(|v| (v.mark(), v))
                    }
                    _ => None,
                };
                match next {
                    Some((m, v)) => (mark, node) = (m, v),
                    None => break,
                }
            }
            Some(mark)
        }
    }

    /// A collection being built.
    enum Frame {
        Sequence(Mark, Vec<Node>),
        Mapping(Mark, Vec<(String, Mark, Node)>, Option<(String, Mark)>),
    }

    #[derive(Default)]
    struct Builder {
        documents: Vec<Document>,
        stack: Vec<Frame>,
        root: Option<Node>,
    }

    impl Builder {
        /// Adds a finished node to its parent; `key` is its text when it is a scalar.
        fn push(&mut self, node: Node, key: Option<String>) {
            match self.stack.last_mut() {
                None => self.root = Some(node),
                Some(Frame::Sequence(_, items)) => items.push(node),
                Some(Frame::Mapping(_, entries, pending)) => match pending.take() {
                    Some((k, m)) => entries.push((k, m, node)),
                    None => *pending = Some((key.unwrap_or_default(), node.mark())),
                },
            }
        }
    }

    impl MarkedEventReceiver for Builder {
        fn on_event(&mut self, event: Event, marker: Marker) {
            let mark = Mark::from(marker);
            match event {
                Event::Scalar(text, ..) => self.push(Node::Leaf(mark), Some(text)),
                Event::Alias(_) => self.push(Node::Leaf(mark), None),
                Event::SequenceStart(..) => self.stack.push(Frame::Sequence(mark, Vec::new())),
                Event::MappingStart(..) => self.stack.push(Frame::Mapping(mark, Vec::new(), None)),
                Event::SequenceEnd | Event::MappingEnd => {
                    let node = match self.stack.pop() {
                        Some(Frame::Sequence(m, items)) => Node::Sequence(m, items),
                        Some(Frame::Mapping(m, entries, _)) => Node::Mapping(m, entries),
                        None => return,
                    };
                    self.push(node, None);
                }
                Event::DocumentEnd => {
                    self.stack.clear();
                    self.documents.push(Document(self.root.take()));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{format_cpu, format_memory};
    use proptest::prelude::*;

    const APP: &str = "\
kind: Workload
metadata: {name: my-app}
spec:
  replicas: 3
  placement: binpack
  podSpec:
    containers:
      - name: web
        image: localhost/pss-demo:latest
        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
        args: []
        env: [{name: GREETING, value: hello}]
        resources: {cpu: 100m, memory: 32Mi}
    ports:
      - containerPort: 80
    readinessProbe: {port: 80, interval: 2s, timeout: 1s}
";

    /// The single object of `text`.
    fn one(text: &str) -> Object {
        let mut objects = parse_manifests(text, "t.yaml").unwrap();
        assert_eq!(objects.len(), 1, "{objects:?}");
        objects.remove(0)
    }

    fn err(text: &str) -> ManifestError {
        parse_manifests(text, "t.yaml").expect_err("should fail")
    }

    #[test]
    fn parses_the_canonical_workload() {
        let Object::Workload(w) = one(APP) else {
            panic!("not a workload")
        };
        assert_eq!(w.name, "my-app");
        assert_eq!(w.replicas, 3);
        assert_eq!(w.placement, Placement::Binpack);
        let c = &w.pod_spec.containers[0];
        assert_eq!(c.command, ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]);
        assert_eq!(
            c.env,
            [EnvVar {
                name: "GREETING".into(),
                value: "hello".into()
            }]
        );
        assert_eq!(
            c.resources,
            Resources {
                cpu_millis: 100,
                memory_bytes: 32 << 20
            }
        );
        assert_eq!(
            w.pod_spec.ports,
            [PortSpec {
                container_port: 80,
                protocol: Protocol::Tcp
            }]
        );
        assert_eq!(
            w.pod_spec.readiness_probe,
            Some(ReadinessProbe {
                port: Some(80),
                interval_ms: 2000,
                timeout_ms: 1000
            })
        );
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let text = "apiVersion: pss/v1\nkind: Workload\nmetadata: {name: a}\nspec:\n  podSpec:\n    containers: [{name: c, image: i}]\n";
        let Object::Workload(w) = one(text) else {
            panic!("not a workload")
        };
        assert_eq!((w.replicas, w.placement), (1, Placement::Spread));
        assert_eq!(w.pod_spec.containers[0].resources, Resources::default());
        let svc = "kind: Service\nmetadata: {name: s}\nspec: {workload: a, port: 8080}\n";
        let Object::Service(s) = one(svc) else {
            panic!("not a service")
        };
        assert_eq!(s.target_port, 8080);
        let hpa = "kind: AutoScalePolicy\nmetadata: {name: h}\nspec: {workload: a, maxReplicas: 4, cpu: 50}\n";
        let Object::AutoScalePolicy(p) = one(hpa) else {
            panic!("not a policy")
        };
        assert_eq!(
            (p.min_replicas, p.cpu_percent, p.memory_percent),
            (1, Some(50), None)
        );
    }

    #[test]
    fn error_names_file_document_line_and_field() {
        let text = format!(
            "{APP}---\n{}",
            APP.replace("replicas: 3", "replicas: -1")
                .replace("my-app", "b")
        );
        let e = err(&text);
        assert_eq!(e.document, Some(2));
        assert_eq!(e.field.as_deref(), Some("spec.replicas"));
        assert_eq!(e.line, Some(21));
        assert_eq!(
            e.to_string(),
            "t.yaml: document 2 (line 21): spec.replicas: must be >= 0, got -1"
        );
    }

    #[test]
    fn nested_field_errors_point_at_the_field_line() {
        let text = APP.replace(
            "resources: {cpu: 100m, memory: 32Mi}",
            "resources:\n          cpu: 100m\n          memory: lots",
        );
        let e = err(&text);
        assert_eq!(
            e.field.as_deref(),
            Some("spec.podSpec.containers[0].resources.memory")
        );
        assert_eq!(e.line, Some(15));
        assert!(
            e.message.contains("invalid memory quantity \"lots\""),
            "{e}"
        );
    }

    #[test]
    fn second_container_error_points_at_its_item() {
        let text = APP.replace(
            "    ports:",
            "      - name: Side\n        image: x\n    ports:",
        );
        let e = err(&text);
        assert_eq!(e.field.as_deref(), Some("spec.podSpec.containers[1].name"));
        assert_eq!(e.line, Some(14));
        assert!(e.message.contains("use lowercase"), "{e}");
    }

    #[test]
    fn syntax_errors_have_line_and_column_without_duplication() {
        let e = err("kind: Workload\nmetadata: {name: a\n");
        assert_eq!(e.document, Some(1));
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
        assert!(e.message.starts_with("invalid YAML: "), "{e}");
        let (line, column) = (e.line.unwrap(), e.column.unwrap());
        let primary = format!("at line {line} column {column}");
        assert!(
            !e.message.contains(&primary),
            "the location is in the fields: {e}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err(&APP.replace(
            "image: localhost",
            "imagePullPolicy: Always\n        image: localhost",
        ));
        assert_eq!(
            e.field.as_deref(),
            Some("spec.podSpec.containers[0].imagePullPolicy")
        );
        assert_eq!(e.line, Some(9));
        assert!(e.message.contains("unknown field `imagePullPolicy`"), "{e}");
    }

    #[test]
    fn empty_documents_are_skipped_but_no_objects_is_an_error() {
        assert_eq!(
            parse_manifests(&format!("---\n{APP}---\n# end\n"), "t")
                .unwrap()
                .len(),
            1
        );
        for text in ["", "# nothing\n", "---\n---\n"] {
            let e = err(text);
            assert!(e.message.starts_with("no objects"), "{e}");
            assert_eq!(e.document, None);
        }
    }

    #[test]
    fn invalid_utf8_reports_the_offset() {
        let e = parse_manifest_bytes(b"kind: Workload\n\xff\xfe", "bin").unwrap_err();
        assert!(e.message.contains("byte offset 15"), "{e}");
        assert_eq!(e.line, Some(2));
    }

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
    fn commands_accept_unquoted_numbers() {
        let text = APP.replace("\"80\", \"-h\"", "80, \"-h\"");
        let Object::Workload(w) = one(&text) else {
            panic!("not a workload")
        };
        assert_eq!(w.pod_spec.containers[0].command[3], "80");
    }

    /// A string as a YAML double-quoted scalar (JSON strings are valid YAML).
    fn quoted(s: &str) -> String {
        serde_json::to_string(s).expect("strings serialise")
    }

    /// `w` written as a block-style manifest document.
    fn render(w: &Workload) -> String {
        let mut out = format!(
            "kind: Workload\nmetadata:\n  name: {}\nspec:\n  replicas: {}\n  placement: {}\n  podSpec:\n    containers:\n",
            w.name,
            w.replicas,
            w.placement.as_str()
        );
        for c in &w.pod_spec.containers {
            let words = |v: &[String]| v.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ");
            out += &format!(
                "      - name: {}\n        image: {}\n",
                c.name,
                quoted(&c.image)
            );
            out += &format!(
                "        command: [{}]\n        args: [{}]\n",
                words(&c.command),
                words(&c.args)
            );
            out += "        env:\n";
            for e in &c.env {
                out += &format!(
                    "          - name: {}\n            value: {}\n",
                    e.name,
                    quoted(&e.value)
                );
            }
            out += &format!(
                "        resources:\n          cpu: {}\n          memory: {}\n",
                format_cpu(c.resources.cpu_millis),
                format_memory(c.resources.memory_bytes)
            );
        }
        out += "    ports:\n";
        for p in &w.pod_spec.ports {
            out += &format!(
                "      - containerPort: {}\n        protocol: {}\n",
                p.container_port,
                p.protocol.as_str()
            );
        }
        if let Some(probe) = &w.pod_spec.readiness_probe {
            out += "    readinessProbe:\n";
            if let Some(port) = probe.port {
                out += &format!("      port: {port}\n");
            }
            out += &format!(
                "      interval: {}ms\n      timeout: {}ms\n",
                probe.interval_ms, probe.timeout_ms
            );
        }
        out
    }

    fn container_strategy(index: usize) -> impl Strategy<Value = Container> {
        let words = prop::collection::vec("[ -~]{0,12}", 0..4);
        let env = prop::collection::vec(("[A-Z_][A-Z0-9_]{0,8}", "[ -~]{0,10}"), 0..3);
        (
            "[a-z]{1,8}",
            "[a-z]{1,10}(/[a-z]{1,10})?(:[a-z0-9.]{1,6})?",
            words.clone(),
            words,
            env,
            0u64..100_000,
            0u64..(1 << 40),
        )
            .prop_map(
                move |(name, image, command, args, env, cpu_millis, memory_bytes)| Container {
                    name: format!("{name}{index}"),
                    image,
                    command,
                    args,
                    env: env
                        .into_iter()
                        .map(|(name, value)| EnvVar { name, value })
                        .collect(),
                    resources: Resources {
                        cpu_millis,
                        memory_bytes,
                    },
                },
            )
    }

    fn workload_strategy() -> impl Strategy<Value = Workload> {
        let containers =
            (1usize..4).prop_flat_map(|n| (0..n).map(container_strategy).collect::<Vec<_>>());
        let ports = prop::collection::btree_set((1u16..=65535, any::<bool>()), 0..3);
        let probe = (any::<bool>(), 1u64..60_000, 1u64..10_000);
        let placement = prop_oneof![Just(Placement::Spread), Just(Placement::Binpack)];
        (
            "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
            0u32..1000,
            placement,
            containers,
            ports,
            probe,
        )
            .prop_map(
                |(
                    name,
                    replicas,
                    placement,
                    containers,
                    ports,
                    (first_port, interval_ms, timeout_ms),
                )| {
                    let ports: Vec<PortSpec> = ports
                        .into_iter()
                        .map(|(container_port, udp)| PortSpec {
                            container_port,
                            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                        })
                        .collect();
                    let readiness_probe = ports.first().map(|p| ReadinessProbe {
                        port: (!first_port).then_some(p.container_port),
                        interval_ms,
                        timeout_ms,
                    });
                    Workload {
                        name,
                        replicas,
                        placement,
                        pod_spec: PodSpec {
                            containers,
                            ports,
                            readiness_probe,
                        },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_valid_workload_written_as_yaml_parses_back(w in workload_strategy()) {
            let text = render(&w);
            prop_assert_eq!(parse_manifests(&text, "t").map_err(|e| e.to_string()), Ok(vec![Object::Workload(w)]));
        }

        #[test]
        fn a_bad_field_in_any_document_is_reported_at_its_document_and_line(
            workloads in prop::collection::vec(workload_strategy(), 1..4),
            bad in any::<prop::sample::Index>(),
        ) {
            let bad = bad.index(workloads.len());
            let docs: Vec<String> = workloads
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let w = Workload { name: format!("w{i}"), ..w.clone() };
                    let doc = render(&w);
                    if i == bad { doc.replacen(&format!("  replicas: {}\n", w.replicas), "  replicas: -7\n", 1) } else { doc }
                })
                .collect();
            let text = docs.join("---\n");
            let line = 1 + text[..text.find("replicas: -7").unwrap()].matches('\n').count();
            let e = parse_manifests(&text, "t").unwrap_err();
            prop_assert_eq!(e.document, Some(bad + 1));
            prop_assert_eq!(e.line, Some(line));
            prop_assert_eq!(e.field.as_deref(), Some("spec.replicas"));
            prop_assert_eq!(e.message, "must be >= 0, got -7");
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_manifests(&text, "t");
        }
    }
}
