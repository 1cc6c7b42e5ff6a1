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
    parse_cpu, parse_memory, AutoScalePolicy, Container, EnvVar, Limits, Object, Placement,
    PodSpec, PortSpec, Protocol, ReadinessProbe, Resources, Service, Workload, API_VERSION,
    DEFAULT_MIN_REPLICAS, DEFAULT_PROBE_INTERVAL_MS, DEFAULT_PROBE_TIMEOUT_MS, DEFAULT_REPLICAS,
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
    /// The mapping `node` at `at`, refusing fields not in `allowed`.
    fn of(node: &'a Node, at: &FieldPath, allowed: &[&str]) -> FieldResult<Self> {
        let Value::Map(entries) = &node.value else {
            return Err(invalid_type(node, "a mapping", at));
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
                    return Err(FieldError::new(
                        at.key(&shown),
                        format!("unknown field `{shown}`, expected {}", one_of(allowed)),
                    ));
                }
                None => return Err(invalid_type(key, "a field name", at)),
            }
        }
        Ok(Fields {
            entries,
            at: at.clone(),
        })
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

/// One non-empty document to an object, checked by the domain rules.
pub(crate) fn document(root: &Node, limits: &Limits) -> FieldResult<Object> {
    let at = FieldPath::root();
    if !matches!(root.value, Value::Map(_)) {
        return Err(FieldError::new(
            at,
            format!(
                "expected a mapping with kind, metadata and spec, got {}",
                root.value.describe()
            ),
        ));
    }
    let doc = Fields::of(root, &at, &["apiVersion", "kind", "metadata", "spec"])?;
    if let Some(v) = doc.opt("apiVersion", string)? {
        if v != API_VERSION {
            return Err(FieldError::new(
                at.key("apiVersion"),
                format!(
                    "unsupported apiVersion {}: use {API_VERSION:?} or leave it out",
                    shorten(&v)
                ),
            ));
        }
    }
    let kind_path = at.key("kind");
    let kind = doc.opt("kind", string)?.ok_or_else(|| {
        FieldError::new(
            kind_path.clone(),
            "required: one of Workload, Service, AutoScalePolicy",
        )
    })?;
    if !matches!(kind.as_str(), "Workload" | "Service" | "AutoScalePolicy") {
        return Err(FieldError::new(
            kind_path,
            format!(
                "unknown kind {}: expected Workload, Service or AutoScalePolicy",
                shorten(&kind)
            ),
        ));
    }
    let name_path = at.key("metadata").key("name");
    let name = doc
        .opt("metadata", |node, at| {
            Fields::of(node, at, &["name"])?.opt("name", string)
        })?
        .flatten()
        .ok_or_else(|| FieldError::new(name_path.clone(), "required"))?;
    let (spec, spec_path) = doc
        .get("spec")
        .ok_or_else(|| FieldError::new(at.key("spec"), "required"))?;
    match kind.as_str() {
        "Workload" => {
            let w = workload(name, spec, &spec_path, limits)?;
            validate::workload(&w, limits, &name_path, &spec_path)?;
            Ok(Object::Workload(w))
        }
        "Service" => {
            validate::object_name(&name, &name_path)?;
            let s = service(name, spec, &spec_path)?;
            validate::service(&s, &spec_path)?;
            Ok(Object::Service(s))
        }
        _ => {
            validate::object_name(&name, &name_path)?;
            let p = autoscaler(name, spec, &spec_path)?;
            validate::autoscaler(&p, limits, &spec_path)?;
            Ok(Object::AutoScalePolicy(p))
        }
    }
}

fn workload(name: String, spec: &Node, at: &FieldPath, limits: &Limits) -> FieldResult<Workload> {
    let f = Fields::of(spec, at, &["replicas", "placement", "podSpec"])?;
    let replicas = f
        .opt("replicas", |n, at| replicas(n, at, limits))?
        .unwrap_or(DEFAULT_REPLICAS);
    let placement = f
        .opt("placement", |n, at| {
            variant(
                n,
                at,
                &[
                    ("spread", Placement::Spread),
                    ("binpack", Placement::Binpack),
                ],
            )
        })?
        .unwrap_or_default();
    let pod_spec = f.req("podSpec", |n, at| pod_spec(n, at, limits))?;
    Ok(Workload {
        name,
        replicas,
        placement,
        pod_spec,
    })
}

fn pod_spec(node: &Node, at: &FieldPath, limits: &Limits) -> FieldResult<PodSpec> {
    let f = Fields::of(node, at, &["containers", "ports", "readinessProbe"])?;
    let containers = f.req("containers", |n, at| {
        seq(n, at, limits.max_containers, "containers", |n, at| {
            container(n, at, limits)
        })
    })?;
    let ports = f
        .opt("ports", |n, at| {
            seq(n, at, limits.max_ports, "ports", |n, at| {
                let p = Fields::of(n, at, &["containerPort", "protocol"])?;
                Ok(PortSpec {
                    container_port: p.req("containerPort", port)?,
                    protocol: p
                        .opt("protocol", |n, at| {
                            variant(n, at, &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)])
                        })?
                        .unwrap_or_default(),
                })
            })
        })?
        .unwrap_or_default();
    let readiness_probe = f.opt("readinessProbe", probe)?;
    Ok(PodSpec {
        containers,
        ports,
        readiness_probe,
    })
}

fn container(node: &Node, at: &FieldPath, limits: &Limits) -> FieldResult<Container> {
    let f = Fields::of(
        node,
        at,
        &["name", "image", "command", "args", "env", "resources"],
    )?;
    let words = |field: &str| {
        f.opt(field, |n, at| {
            seq(n, at, limits.max_command_words, "words", text)
        })
        .map(Option::unwrap_or_default)
    };
    let env = f
        .opt("env", |n, at| {
            seq(n, at, limits.max_env, "variables", |n, at| {
                let e = Fields::of(n, at, &["name", "value"])?;
                Ok(EnvVar {
                    name: e.req("name", string)?,
                    value: e.opt("value", text)?.unwrap_or_default(),
                })
            })
        })?
        .unwrap_or_default();
    let resources = f
        .opt("resources", |n, at| {
            let r = Fields::of(n, at, &["cpu", "memory"])?;
            let quantity = |field: &str, parse: fn(&str) -> Result<u64, String>| {
                r.opt(field, |n, at| {
                    parse(&text(n, at)?).map_err(|e| FieldError::new(at.clone(), e))
                })
                .map(Option::unwrap_or_default)
            };
            Ok(Resources {
                cpu_millis: quantity("cpu", parse_cpu)?,
                memory_bytes: quantity("memory", parse_memory)?,
            })
        })?
        .unwrap_or_default();
    Ok(Container {
        name: f.req("name", string)?,
        image: f.req("image", string)?,
        command: words("command")?,
        args: words("args")?,
        env,
        resources,
    })
}

fn probe(node: &Node, at: &FieldPath) -> FieldResult<ReadinessProbe> {
    let f = Fields::of(node, at, &["port", "interval", "timeout"])?;
    let duration = |field: &str, default: u64| -> FieldResult<u64> {
        let parse = |n: &Node, at: &FieldPath| {
            let t = text(n, at)?;
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
        };
        Ok(f.opt(field, parse)?.unwrap_or(default))
    };
    Ok(ReadinessProbe {
        port: f.opt("port", port)?,
        interval_ms: duration("interval", DEFAULT_PROBE_INTERVAL_MS)?,
        timeout_ms: duration("timeout", DEFAULT_PROBE_TIMEOUT_MS)?,
    })
}

fn service(name: String, spec: &Node, at: &FieldPath) -> FieldResult<Service> {
    let f = Fields::of(spec, at, &["workload", "port", "targetPort"])?;
    let workload = f.req("workload", string)?;
    let port = f.req("port", port)?;
    // Defaults to `port`.
    let target_port = f.opt("targetPort", self::port)?.unwrap_or(port);
    Ok(Service {
        name,
        workload,
        port,
        target_port,
    })
}

fn autoscaler(name: String, spec: &Node, at: &FieldPath) -> FieldResult<AutoScalePolicy> {
    let f = Fields::of(
        spec,
        at,
        &["workload", "minReplicas", "maxReplicas", "cpu", "memory"],
    )?;
    Ok(AutoScalePolicy {
        name,
        workload: f.req("workload", string)?,
        min_replicas: f.opt("minReplicas", count)?.unwrap_or(DEFAULT_MIN_REPLICAS),
        max_replicas: f.req("maxReplicas", count)?,
        cpu_percent: f.opt("cpu", count)?,
        memory_percent: f.opt("memory", count)?,
    })
}
