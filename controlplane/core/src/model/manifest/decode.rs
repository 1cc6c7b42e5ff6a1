//! From a YAML tree to model objects: the shape of each kind (which fields exist, their types,
//! their defaults) and the conversions to model types (integers to ranges, quantities,
//! durations). The domain rules (`model/validate.rs`) then run on the result.
//!
//! Errors are serde's words (`unknown field`, `invalid type`, `missing field`) with the path of
//! the field; the caller turns the path into a line.

use super::yaml::{Node, Value};
use crate::model::field::{shorten, FieldError, FieldPath, FieldResult};
use crate::model::validate::{self, port_from};
use crate::model::{
    check_labels, parse_cpu, parse_memory, AutoScalePolicy, Container, EnvVar, IntOrPercent,
    Labels, Limits, LivenessCheck, LivenessProbe, Object, Placement, PodSpec, PortSpec, Protocol,
    ReadinessProbe, Resources, RestartPolicy, RolloutSpec, Service, Workload, API_VERSION,
    DEFAULT_LIVENESS_FAILURES, DEFAULT_LIVENESS_INTERVAL_MS, DEFAULT_MIN_REPLICAS,
    DEFAULT_PROBE_INTERVAL_MS, DEFAULT_PROBE_TIMEOUT_MS, DEFAULT_REPLICAS, MAX_LABELS,
};

/// `invalid type: string "x", expected an integer`.
fn invalid_type(node: &Node, expected: &str, at: &FieldPath) -> FieldError {
    FieldError::new(
        at.clone(),
        format!(
            "invalid type: {}, expected {expected}",
            node.value.describe()
        ),
    )
}

/// `` `a`, `b` or `c` `` for an error listing what is accepted.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".into(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => format!(
            "one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The fields of a mapping, checked against the names a kind allows.
struct Fields<'a> {
    entries: &'a [(Node, Node)],
    at: FieldPath,
}

impl<'a> Fields<'a> {
    /// The mapping `node` at `at`. Fields not in `allowed` are reported to `errs`, every one of
    /// them; `None` if `node` is not a mapping at all.
    fn of(node: &'a Node, at: &FieldPath, allowed: &[&str], errs: &mut Errs) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            errs.push(invalid_type(node, "a mapping", at));
            return None;
        };
        for (key, _) in entries {
            let name = key.value.as_key();
            match name.as_deref() {
                Some(name) if allowed.contains(&name) => {}
                Some(name) => {
                    let shown = if name.len() > 64 {
                        shorten(name)
                    } else {
                        name.to_string()
                    };
                    errs.push(FieldError::new(
                        at.key(&shown),
                        format!("unknown field `{shown}`, expected {}", one_of(allowed)),
                    ));
                }
                None => errs.push(invalid_type(key, "a field name", at)),
            }
            if errs.full() {
                break;
            }
        }
        Some(Fields {
            entries,
            at: at.clone(),
        })
    }

    /// Like [`Fields::of`] for a leaf decoder: the first unknown field is the error.
    fn strict(node: &'a Node, at: &FieldPath, allowed: &[&str]) -> FieldResult<Self> {
        let mut errs = Errs::default();
        match Fields::of(node, at, allowed, &mut errs) {
            Some(fields) if errs.is_empty() => Ok(fields),
            _ => Err(errs.0.swap_remove(0)),
        }
    }

    /// The value of field `name` (`null` counts as absent), with its path.
    fn get(&self, name: &str) -> Option<(&'a Node, FieldPath)> {
        self.entries
            .iter()
            .find(|(key, _)| matches!(&key.value, Value::Str(k) if k == name))
            .map(|(_, value)| value)
            .filter(|value| value.value != Value::Null)
            .map(|value| (value, self.at.key(name)))
    }

    /// The value of field `name`, which must be there.
    fn required(&self, name: &str) -> FieldResult<(&'a Node, FieldPath)> {
        self.get(name)
            .ok_or_else(|| FieldError::new(self.at.clone(), format!("missing field `{name}`")))
    }

    /// Field `name` decoded by `f`, or `None` if absent.
    fn opt<T>(
        &self,
        name: &str,
        f: impl FnOnce(&'a Node, &FieldPath) -> FieldResult<T>,
    ) -> FieldResult<Option<T>> {
        self.get(name).map(|(node, at)| f(node, &at)).transpose()
    }

    /// Field `name` decoded by `f`; an error if absent.
    fn req<T>(
        &self,
        name: &str,
        f: impl FnOnce(&'a Node, &FieldPath) -> FieldResult<T>,
    ) -> FieldResult<T> {
        let (node, at) = self.required(name)?;
        f(node, &at)
    }
}

fn string(node: &Node, at: &FieldPath) -> FieldResult<String> {
    match &node.value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(invalid_type(node, "a string", at)),
    }
}

/// An integer. The parser reads an integer too wide for 64 bits as a float; it is taken back
/// (to the nearest value a float holds) so that range checks, not type checks, report it.
fn int(node: &Node, at: &FieldPath) -> FieldResult<i128> {
    const WIDE: f64 = 9_223_372_036_854_775_808.0; // 2^63
    match node.value {
        Value::Int(i) => Ok(i),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() >= WIDE => {
            // Saturates at the i128 bounds, far beyond any limit.
            Ok(f as i128)
        }
        _ => Err(invalid_type(node, "an integer", at)),
    }
}

/// A scalar read as text whatever its YAML type (`80`, `0.5` and `"80"` alike): quantities,
/// durations, env values, command words.
fn text(node: &Node, at: &FieldPath) -> FieldResult<String> {
    match &node.value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid_type(node, "a string or a number", at)),
    }
}

/// A sequence of at most `limit` items, each decoded by `f`. The count is checked first.
fn seq<T>(
    node: &Node,
    at: &FieldPath,
    limit: usize,
    what: &str,
    mut f: impl FnMut(&Node, &FieldPath) -> FieldResult<T>,
) -> FieldResult<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        return Err(invalid_type(node, "a sequence", at));
    };
    validate::count_within(items.len(), limit, what, at)?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| f(item, &at.index(i)))
        .collect()
}

/// One of `variants`, written as a string.
fn variant<T: Copy>(node: &Node, at: &FieldPath, variants: &[(&str, T)]) -> FieldResult<T> {
    let s = string(node, at)?;
    variants
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
            FieldError::new(
                at.clone(),
                format!(
                    "unknown variant `{}`, expected {}",
                    shorten(&s).trim_matches('"'),
                    one_of(&names)
                ),
            )
        })
}

/// A non-negative count that fits `u32`.
fn count(node: &Node, at: &FieldPath) -> FieldResult<u32> {
    let v = int(node, at)?;
    if v < 0 {
        return Err(FieldError::new(
            at.clone(),
            format!("must be >= 0, got {v}"),
        ));
    }
    u32::try_from(v)
        .map_err(|_| FieldError::new(at.clone(), format!("must be at most {}, got {v}", u32::MAX)))
}

/// A replica count: within the limit (quoted as written, however large), and non-negative.
fn replicas(node: &Node, at: &FieldPath, limits: &Limits) -> FieldResult<u32> {
    validate::replicas_within(int(node, at)?, limits, at)?;
    count(node, at)
}

fn port(node: &Node, at: &FieldPath) -> FieldResult<u16> {
    port_from(int(node, at)?, at)
}

/// The most errors reported for one document; more are counted, not listed.
pub(crate) const MAX_ERRORS: usize = 20;

/// The errors of one document, collected so that a manifest reports every wrong field at once
/// instead of one per attempt. At most [`MAX_ERRORS`] are kept; a hostile document with
/// thousands of unknown fields costs no more.
#[derive(Debug, Default)]
pub(crate) struct Errs(pub(crate) Vec<FieldError>);

impl Errs {
    fn push(&mut self, e: FieldError) {
        if !self.full() {
            self.0.push(e);
        }
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_ERRORS
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `r`, or `None` with its error kept.
    fn take<T>(&mut self, r: FieldResult<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }
}

/// One non-empty document to an object, checked by the domain rules. Every field error found
/// while decoding is returned (up to [`MAX_ERRORS`]); the domain rules run once the document
/// decodes, and report their first finding.
pub(crate) fn document(root: &Node, limits: &Limits) -> Result<Object, Vec<FieldError>> {
    let mut errs = Errs::default();
    let object = decode_document(root, limits, &mut errs);
    match object {
        Some(object) if errs.is_empty() => Ok(object),
        _ => {
            if errs.is_empty() {
                // Cannot happen: every `None` above pushed its reason. Say so rather than panic.
                errs.push(FieldError::new(FieldPath::root(), "invalid document"));
            }
            Err(errs.0)
        }
    }
}

fn decode_document(root: &Node, limits: &Limits, errs: &mut Errs) -> Option<Object> {
    let at = FieldPath::root();
    if !matches!(root.value, Value::Map(_)) {
        errs.push(FieldError::new(
            at,
            format!(
                "expected a mapping with kind, metadata and spec, got {}",
                root.value.describe()
            ),
        ));
        return None;
    }
    let doc = Fields::of(root, &at, &["apiVersion", "kind", "metadata", "spec"], errs)?;
    if let Some(v) = errs.take(doc.opt("apiVersion", string)).flatten() {
        if v != API_VERSION {
            errs.push(FieldError::new(
                at.key("apiVersion"),
                format!(
                    "unsupported apiVersion {}: use {API_VERSION:?} or leave it out",
                    shorten(&v)
                ),
            ));
        }
    }
    let kind_path = at.key("kind");
    let kind = match errs.take(doc.opt("kind", string))? {
        None => {
            errs.push(FieldError::new(
                kind_path,
                "required: one of Workload, Service, AutoScalePolicy",
            ));
            None
        }
        Some(kind) if !matches!(kind.as_str(), "Workload" | "Service" | "AutoScalePolicy") => {
            errs.push(FieldError::new(
                kind_path,
                format!(
                    "unknown kind {}: expected Workload, Service or AutoScalePolicy",
                    shorten(&kind)
                ),
            ));
            None
        }
        Some(kind) => Some(kind),
    };
    let name_path = at.key("metadata").key("name");
    let (name, labels) = match doc.get("metadata") {
        None => {
            errs.push(FieldError::new(name_path.clone(), "required"));
            (None, Some(Labels::new()))
        }
        Some((node, meta_at)) => match Fields::of(node, &meta_at, &["name", "labels"], errs) {
            None => (None, None),
            Some(meta) => {
                let name = match errs.take(meta.opt("name", string)) {
                    Some(None) => {
                        errs.push(FieldError::new(name_path.clone(), "required"));
                        None
                    }
                    other => other.flatten(),
                };
                let labels = errs
                    .take(meta.opt("labels", labels))
                    .map(Option::unwrap_or_default);
                (name, labels)
            }
        },
    };
    let spec = match doc.get("spec") {
        Some(spec) => Some(spec),
        None => {
            errs.push(FieldError::new(at.key("spec"), "required"));
            None
        }
    };
    // Decode the spec even when the header has errors, so that they are all reported at once.
    let (spec, spec_path) = spec?;
    let kind = kind.unwrap_or_default();
    let object = match kind.as_str() {
        "Workload" => {
            let w = workload(
                name.clone().unwrap_or_default(),
                labels.clone().unwrap_or_default(),
                spec,
                &spec_path,
                limits,
                errs,
            );
            Object::Workload(w?)
        }
        "Service" => {
            let s = service(name.clone().unwrap_or_default(), spec, &spec_path, errs);
            let mut s = s?;
            s.labels = labels.clone().unwrap_or_default();
            Object::Service(s)
        }
        "AutoScalePolicy" => Object::AutoScalePolicy(autoscaler(
            name.clone().unwrap_or_default(),
            spec,
            &spec_path,
            errs,
        )?),
        _ => return None,
    };
    // The domain rules, once the shape is right.
    let (Some(_), Some(_)) = (name, labels) else {
        return None;
    };
    if !errs.is_empty() {
        return None;
    }
    let checked = match &object {
        Object::Workload(w) => validate::workload(w, limits, &name_path, &spec_path),
        Object::Service(s) => validate::object_name(&s.name, &name_path)
            .and_then(|()| validate::service(s, &spec_path)),
        Object::AutoScalePolicy(p) => validate::object_name(&p.name, &name_path)
            .and_then(|()| validate::autoscaler(p, limits, &spec_path)),
    };
    errs.take(checked)?;
    Some(object)
}

/// `metadata.labels`: a mapping of strings, checked as Kubernetes does.
fn labels(node: &Node, at: &FieldPath) -> FieldResult<Labels> {
    let Value::Map(entries) = &node.value else {
        return Err(invalid_type(node, "a mapping of label keys to values", at));
    };
    validate::count_within(entries.len(), MAX_LABELS, "labels", at)?;
    let mut out = Labels::new();
    for (key, value) in entries {
        let Some(k) = key.value.as_key() else {
            return Err(invalid_type(key, "a label key", at));
        };
        let v = text(value, &at.key(&k))?;
        out.insert(k, v);
    }
    check_labels(&out, at)?;
    Ok(out)
}

fn workload(
    name: String,
    labels: Labels,
    spec: &Node,
    at: &FieldPath,
    limits: &Limits,
    errs: &mut Errs,
) -> Option<Workload> {
    let f = Fields::of(
        spec,
        at,
        &[
            "replicas",
            "placement",
            "podSpec",
            "strategy",
            "revisionHistoryLimit",
            "progressDeadline",
            "autoRevert",
            "paused",
        ],
        errs,
    )?;
    let replicas = errs
        .take(f.opt("replicas", |n, at| replicas(n, at, limits)))
        .map(|r| r.unwrap_or(DEFAULT_REPLICAS));
    let placement = errs
        .take(f.opt("placement", |n, at| {
            variant(
                n,
                at,
                &[
                    ("spread", Placement::Spread),
                    ("binpack", Placement::Binpack),
                ],
            )
        }))
        .map(Option::unwrap_or_default);
    let rollout = rollout(&f, errs);
    let pod_spec = match f.get("podSpec") {
        Some((n, at)) => pod_spec(n, &at, limits, errs),
        None => {
            errs.push(FieldError::new(at.clone(), "missing field `podSpec`"));
            None
        }
    };
    Some(Workload {
        name,
        replicas: replicas?,
        placement: placement?,
        pod_spec: pod_spec?,
        labels,
        rollout: rollout?,
    })
}

/// `strategy`, `revisionHistoryLimit`, `progressDeadline`, `autoRevert`, `paused` of a
/// workload's spec.
fn rollout(f: &Fields<'_>, errs: &mut Errs) -> Option<RolloutSpec> {
    let defaults = RolloutSpec::default();
    let strategy = f.get("strategy").map(|(n, at)| {
        let s = Fields::of(n, &at, &["maxSurge", "maxUnavailable"], errs)?;
        let amount = |field: &str, errs: &mut Errs, default: IntOrPercent| {
            errs.take(s.opt(field, |n, at| {
                IntOrPercent::parse(&text(n, at)?).map_err(|e| FieldError::new(at.clone(), e))
            }))
            .map(|v| v.unwrap_or(default))
        };
        let surge = amount("maxSurge", errs, defaults.max_surge);
        let unavailable = amount("maxUnavailable", errs, defaults.max_unavailable);
        Some((surge?, unavailable?))
    });
    let history = errs
        .take(f.opt("revisionHistoryLimit", count))
        .map(|v| v.unwrap_or(defaults.revision_history_limit));
    let deadline = errs
        .take(f.opt("progressDeadline", duration_ms))
        .map(|v| v.unwrap_or(defaults.progress_deadline_ms));
    let auto_revert = errs
        .take(f.opt("autoRevert", boolean))
        .map(Option::unwrap_or_default);
    let paused = errs
        .take(f.opt("paused", boolean))
        .map(Option::unwrap_or_default);
    let (max_surge, max_unavailable) = match strategy {
        None => (defaults.max_surge, defaults.max_unavailable),
        Some(s) => s?,
    };
    Some(RolloutSpec {
        max_surge,
        max_unavailable,
        revision_history_limit: history?,
        progress_deadline_ms: deadline?,
        auto_revert: auto_revert?,
        paused: paused?,
    })
}

fn boolean(node: &Node, at: &FieldPath) -> FieldResult<bool> {
    match node.value {
        Value::Bool(b) => Ok(b),
        _ => Err(invalid_type(node, "true or false", at)),
    }
}

/// A duration such as `2s`, `500ms`, `1m`, in milliseconds.
fn duration_ms(node: &Node, at: &FieldPath) -> FieldResult<u64> {
    let t = text(node, at)?;
    let d = humantime::parse_duration(t.trim()).map_err(|e| {
        FieldError::new(
            at.clone(),
            format!(
                "invalid duration {}: {e} (examples: 2s, 500ms, 1m)",
                shorten(&t)
            ),
        )
    })?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn pod_spec(node: &Node, at: &FieldPath, limits: &Limits, errs: &mut Errs) -> Option<PodSpec> {
    let f = Fields::of(
        node,
        at,
        &["containers", "ports", "readinessProbe", "restartPolicy"],
        errs,
    )?;
    let containers = match f.get("containers") {
        None => {
            errs.push(FieldError::new(at.clone(), "missing field `containers`"));
            None
        }
        Some((n, at)) => match &n.value {
            Value::Seq(items) => {
                errs.take(validate::count_within(
                    items.len(),
                    limits.max_containers,
                    "containers",
                    &at,
                ))?;
                let decoded: Vec<Option<Container>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| container(item, &at.index(i), limits, errs))
                    .collect();
                decoded.into_iter().collect()
            }
            _ => {
                errs.push(invalid_type(n, "a sequence", &at));
                None
            }
        },
    };
    let ports = errs
        .take(f.opt("ports", |n, at| {
            seq(n, at, limits.max_ports, "ports", |n, at| {
                let p = Fields::strict(n, at, &["containerPort", "protocol"])?;
                Ok(PortSpec {
                    container_port: p.req("containerPort", port)?,
                    protocol: p
                        .opt("protocol", |n, at| {
                            variant(n, at, &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)])
                        })?
                        .unwrap_or_default(),
                })
            })
        }))
        .map(Option::unwrap_or_default);
    let readiness_probe = errs.take(f.opt("readinessProbe", probe));
    let restart_policy = errs
        .take(f.opt("restartPolicy", |n, at| {
            variant(
                n,
                at,
                &[
                    ("Always", RestartPolicy::Always),
                    ("OnFailure", RestartPolicy::OnFailure),
                    ("Never", RestartPolicy::Never),
                ],
            )
        }))
        .map(Option::unwrap_or_default);
    Some(PodSpec {
        containers: containers?,
        ports: ports?,
        readiness_probe: readiness_probe?,
        restarted_at_ms: 0,
        restart_policy: restart_policy?,
    })
}

fn container(node: &Node, at: &FieldPath, limits: &Limits, errs: &mut Errs) -> Option<Container> {
    let f = Fields::of(
        node,
        at,
        &[
            "name",
            "image",
            "command",
            "args",
            "env",
            "resources",
            "livenessProbe",
        ],
        errs,
    )?;
    let words = |field: &str, errs: &mut Errs| {
        errs.take(f.opt(field, |n, at| {
            seq(n, at, limits.max_command_words, "words", text)
        }))
        .map(Option::unwrap_or_default)
    };
    let command = words("command", errs);
    let args = words("args", errs);
    let env = errs
        .take(f.opt("env", |n, at| {
            seq(n, at, limits.max_env, "variables", |n, at| {
                let e = Fields::strict(n, at, &["name", "value"])?;
                Ok(EnvVar {
                    name: e.req("name", string)?,
                    value: e.opt("value", text)?.unwrap_or_default(),
                })
            })
        }))
        .map(Option::unwrap_or_default);
    let resources = errs
        .take(f.opt("resources", resources))
        .map(|r| r.unwrap_or((Resources::default(), None)));
    let liveness_probe = errs.take(f.opt("livenessProbe", |n, at| liveness(n, at, limits)));
    let name = errs.take(f.req("name", string));
    let image = errs.take(f.req("image", string));
    Some(Container {
        name: name?,
        image: image?,
        command: command?,
        args: args?,
        env: env?,
        resources: resources?.0,
        limits: resources?.1,
        liveness_probe: liveness_probe?,
    })
}

/// A container's `livenessProbe`: `tcpSocket: {port}` or `exec: {command: [...]}`, with
/// `interval`, `timeout`, `failureThreshold`, `initialDelay`.
fn liveness(node: &Node, at: &FieldPath, limits: &Limits) -> FieldResult<LivenessProbe> {
    let f = Fields::strict(
        node,
        at,
        &[
            "tcpSocket",
            "exec",
            "interval",
            "timeout",
            "failureThreshold",
            "initialDelay",
        ],
    )?;
    let tcp = f.opt("tcpSocket", |n, at| {
        Fields::strict(n, at, &["port"])?.req("port", port)
    })?;
    let exec = f.opt("exec", |n, at| {
        Fields::strict(n, at, &["command"])?.req("command", |n, at| {
            seq(n, at, limits.max_command_words, "words", text)
        })
    })?;
    let check = match (tcp, exec) {
        (Some(port), None) => LivenessCheck::Tcp { port },
        (None, Some(command)) => LivenessCheck::Exec { command },
        _ => {
            return Err(FieldError::new(
                at.clone(),
                "give exactly one of tcpSocket: {port: N} or exec: {command: [...]}",
            ))
        }
    };
    Ok(LivenessProbe {
        check,
        interval_ms: f
            .opt("interval", duration_ms)?
            .unwrap_or(DEFAULT_LIVENESS_INTERVAL_MS),
        timeout_ms: f
            .opt("timeout", duration_ms)?
            .unwrap_or(DEFAULT_PROBE_TIMEOUT_MS),
        failure_threshold: f
            .opt("failureThreshold", count)?
            .unwrap_or(DEFAULT_LIVENESS_FAILURES),
        initial_delay_ms: f.opt("initialDelay", duration_ms)?.unwrap_or(0),
    })
}

/// A container's `resources`: the seed's flat `{cpu, memory}` (requests, enforced as limits
/// too: `None` limits), or Kubernetes' `{requests: {...}, limits: {...}}` (requests default to
/// the limits; no `limits` means none).
fn resources(node: &Node, at: &FieldPath) -> FieldResult<(Resources, Option<Resources>)> {
    let r = Fields::strict(node, at, &["cpu", "memory", "requests", "limits"])?;
    let amounts = |fields: &Fields<'_>| -> FieldResult<Resources> {
        let quantity = |field: &str, parse: fn(&str) -> Result<u64, String>| {
            fields
                .opt(field, |n, at| {
                    parse(&text(n, at)?).map_err(|e| FieldError::new(at.clone(), e))
                })
                .map(Option::unwrap_or_default)
        };
        Ok(Resources {
            cpu_millis: quantity("cpu", parse_cpu)?,
            memory_bytes: quantity("memory", parse_memory)?,
        })
    };
    let flat = r.get("cpu").or(r.get("memory"));
    let split = r.get("requests").or(r.get("limits"));
    match (flat, split) {
        (Some((_, flat_at)), Some(_)) => Err(FieldError::new(
            flat_at,
            "use either cpu/memory (requests, also enforced as limits) or requests/limits, not both",
        )),
        (_, None) => Ok((amounts(&r)?, None)),
        (None, Some(_)) => {
            let part = |name: &str| {
                r.opt(name, |n, at| amounts(&Fields::strict(n, at, &["cpu", "memory"])?))
            };
            let limits = part("limits")?;
            let requests = part("requests")?;
            Ok(match (requests, limits) {
                (Some(req), Some(lim)) => (req, Some(lim)),
                (Some(req), None) => (req, Some(Resources::default())),
                (None, Some(lim)) => (lim, Some(lim)),
                (None, None) => (Resources::default(), Some(Resources::default())),
            })
        }
    }
}

fn probe(node: &Node, at: &FieldPath) -> FieldResult<ReadinessProbe> {
    let f = Fields::strict(node, at, &["port", "interval", "timeout"])?;
    Ok(ReadinessProbe {
        port: f.opt("port", port)?,
        interval_ms: f
            .opt("interval", duration_ms)?
            .unwrap_or(DEFAULT_PROBE_INTERVAL_MS),
        timeout_ms: f
            .opt("timeout", duration_ms)?
            .unwrap_or(DEFAULT_PROBE_TIMEOUT_MS),
    })
}

fn service(name: String, spec: &Node, at: &FieldPath, errs: &mut Errs) -> Option<Service> {
    let f = Fields::of(spec, at, &["workload", "port", "targetPort"], errs)?;
    let workload = errs.take(f.req("workload", string));
    let port = errs.take(f.req("port", self::port));
    // Defaults to `port`.
    let target_port = errs.take(f.opt("targetPort", self::port));
    let port = port?;
    Some(Service {
        name,
        workload: workload?,
        port,
        target_port: target_port?.unwrap_or(port),
        labels: Labels::new(),
    })
}

fn autoscaler(
    name: String,
    spec: &Node,
    at: &FieldPath,
    errs: &mut Errs,
) -> Option<AutoScalePolicy> {
    let f = Fields::of(
        spec,
        at,
        &["workload", "minReplicas", "maxReplicas", "cpu", "memory"],
        errs,
    )?;
    let workload = errs.take(f.req("workload", string));
    let min_replicas = errs.take(f.opt("minReplicas", count));
    let max_replicas = errs.take(f.req("maxReplicas", count));
    let cpu_percent = errs.take(f.opt("cpu", count));
    let memory_percent = errs.take(f.opt("memory", count));
    Some(AutoScalePolicy {
        name,
        workload: workload?,
        min_replicas: min_replicas?.unwrap_or(DEFAULT_MIN_REPLICAS),
        max_replicas: max_replicas?,
        cpu_percent: cpu_percent?,
        memory_percent: memory_percent?,
    })
}
