//! The domain rules: one definition of every check on a desired-state object, whatever its
//! source. The manifest parser and the protobuf conversions both end here, and the controller
//! calls the same functions for `Scale`, `Autoscale` and for objects it loads from its store.
//!
//! Each rule works on model types and reports a [`FieldError`] whose path is relative to where
//! the caller says the object sits: a manifest passes `metadata.name` and `spec`, the wire form
//! passes `name` and the object root. Counts are checked before anything is walked, so a huge
//! list is refused without being looked at item by item; sums are checked, never wrapped.

use std::collections::{HashMap, HashSet};

use super::field::{shorten, FieldError, FieldPath, FieldResult};
use super::limits::{above, Limits, MAX_REPLICAS_SETTING, MAX_WORKLOAD_NAME_LEN};
use super::{
    check_labels, validate_dns1123, AutoScalePolicy, Container, IntOrPercent, LivenessCheck,
    LivenessProbe, Object, PodSpec, PortSpec, ReadinessProbe, Resources, RolloutSpec, Service,
    Workload, MAX_LIVENESS_FAILURES, MAX_PROGRESS_DEADLINE_MS, MAX_REVISION_HISTORY_LIMIT,
};

impl Workload {
    /// Checks every rule and limit; paths as on the wire (`name`, `replicas`, `podSpec...`).
    /// The controller calls this on stored objects at startup, to skip (and report) one an
    /// older version accepted but today's limits refuse.
    pub fn validate(&self, limits: &Limits) -> FieldResult<()> {
        let root = FieldPath::root();
        check_labels(&self.labels, &root.key("labels"))?;
        workload(self, limits, &root.key("name"), &root)
    }
}

impl Service {
    /// Checks every rule; paths as on the wire (`name`, `workload`, `port`, `targetPort`).
    pub fn validate(&self) -> FieldResult<()> {
        let root = FieldPath::root();
        object_name(&self.name, &root.key("name"))?;
        check_labels(&self.labels, &root.key("labels"))?;
        service(self, &root)
    }
}

impl AutoScalePolicy {
    /// Checks every rule and limit; paths as on the wire (`name`, `minReplicas`, `cpu`...).
    /// The one check of autoscaling bounds: manifests, `pssctl autoscale` and stored policies.
    pub fn validate(&self, limits: &Limits) -> FieldResult<()> {
        let root = FieldPath::root();
        object_name(&self.name, &root.key("name"))?;
        autoscaler(self, limits, &root)
    }
}

impl Object {
    /// Checks the object as [`Workload::validate`], [`Service::validate`] or
    /// [`AutoScalePolicy::validate`] does.
    pub fn validate(&self, limits: &Limits) -> FieldResult<()> {
        match self {
            Object::Workload(w) => w.validate(limits),
            Object::Service(s) => s.validate(),
            Object::AutoScalePolicy(p) => p.validate(limits),
        }
    }
}

impl Resources {
    /// Component-wise sum, or `None` if either component overflows `u64`.
    pub fn checked_plus(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_add(other.memory_bytes)?,
        })
    }
}

/// Checks a replica count (`pssctl scale`, `spec.replicas`) against [`Limits::max_replicas`];
/// the error's path is `replicas`.
pub fn validate_replicas(replicas: u32, limits: &Limits) -> FieldResult<()> {
    replicas_within(
        i128::from(replicas),
        limits,
        &FieldPath::root().key("replicas"),
    )
}

/// A replica count within the limit; `value` is wide so that a manifest's huge number is quoted
/// as written.
pub(crate) fn replicas_within(value: i128, limits: &Limits, at: &FieldPath) -> FieldResult<()> {
    if value > i128::from(limits.max_replicas) {
        return Err(FieldError::new(
            at.clone(),
            format!(
                "{} ({MAX_REPLICAS_SETTING})",
                above(value, limits.max_replicas)
            ),
        ));
    }
    Ok(())
}

/// A DNS-1123 object name (services, autoscalers).
pub(crate) fn object_name(name: &str, at: &FieldPath) -> FieldResult<()> {
    validate_dns1123(name).map_err(|e| FieldError::new(at.clone(), e))
}

/// A workload name: a DNS-1123 label short enough for its pod IDs.
pub(crate) fn workload_name(name: &str, limits: &Limits, at: &FieldPath) -> FieldResult<()> {
    object_name(name, at)?;
    // Never above what pod IDs allow, whatever the caller's limits say.
    let max = limits.max_workload_name_len.min(MAX_WORKLOAD_NAME_LEN);
    if name.len() > max {
        return Err(FieldError::new(
            at.clone(),
            format!(
                "name {} is {} characters long, above the limit of {} (pod IDs add 6 and must stay 63-character labels)",
                shorten(name),
                name.len(),
                max
            ),
        ));
    }
    Ok(())
}

/// A whole workload; `name_at` is the path of its name, `at` that of its spec.
pub(crate) fn workload(
    w: &Workload,
    limits: &Limits,
    name_at: &FieldPath,
    at: &FieldPath,
) -> FieldResult<()> {
    workload_name(&w.name, limits, name_at)?;
    replicas_within(i128::from(w.replicas), limits, &at.key("replicas"))?;
    rollout(&w.rollout, at)?;
    pod_spec(&w.pod_spec, limits, &at.key("podSpec"))
}

/// The rollout settings of a workload whose spec is at `at`.
fn rollout(r: &RolloutSpec, at: &FieldPath) -> FieldResult<()> {
    if r.revision_history_limit > MAX_REVISION_HISTORY_LIMIT {
        return Err(FieldError::new(
            at.key("revisionHistoryLimit"),
            above(r.revision_history_limit, MAX_REVISION_HISTORY_LIMIT),
        ));
    }
    if r.progress_deadline_ms == 0 || r.progress_deadline_ms > MAX_PROGRESS_DEADLINE_MS {
        return Err(FieldError::new(
            at.key("progressDeadline"),
            format!(
                "must be between 1ms and 24h, got {}ms",
                r.progress_deadline_ms
            ),
        ));
    }
    for (field, v) in [
        ("maxSurge", r.max_surge),
        ("maxUnavailable", r.max_unavailable),
    ] {
        if let IntOrPercent::Percent(p) = v {
            if p > 100 {
                return Err(FieldError::new(
                    at.key("strategy").key(field),
                    format!("a percentage must be at most 100%, got {p}%"),
                ));
            }
        }
    }
    Ok(())
}

/// A list's length against its limit, before the list is walked.
pub(crate) fn count_within(
    len: usize,
    limit: usize,
    what: &str,
    at: &FieldPath,
) -> FieldResult<()> {
    if len > limit {
        return Err(FieldError::new(
            at.clone(),
            format!("{len} {what}, above the limit of {limit}"),
        ));
    }
    Ok(())
}

/// Checks what the types alone do not: container count, names (DNS-1123, unique), images,
/// commands, env, the total of the requests, ports and the readiness probe's port. `at` is the
/// path of the pod spec.
pub(crate) fn pod_spec(spec: &PodSpec, limits: &Limits, at: &FieldPath) -> FieldResult<()> {
    let containers_path = at.key("containers");
    if spec.containers.is_empty() {
        return Err(FieldError::new(
            containers_path,
            "at least one container is required",
        ));
    }
    count_within(
        spec.containers.len(),
        limits.max_containers,
        "containers",
        &containers_path,
    )?;
    let mut names = HashMap::new();
    let mut total = Resources::default();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = containers_path.index(i);
        container(c, limits, &path)?;
        if let Some(probe) = &c.liveness_probe {
            liveness_probe(probe, &spec.ports, limits, &path.key("livenessProbe"))?;
        }
        if let Some(first) = names.insert(c.name.as_str(), i) {
            return Err(FieldError::new(
                path.key("name"),
                format!(
                    "duplicate container name {} (also containers[{first}])",
                    shorten(&c.name)
                ),
            ));
        }
        total = total.checked_plus(c.resources).ok_or_else(|| {
            let field = if total.cpu_millis.checked_add(c.resources.cpu_millis).is_none() {
                "cpu"
            } else {
                "memory"
            };
            FieldError::new(
                path.key("resources").key(field),
                format!("the pod's total {field} request overflows: the sum of its containers' requests is too large"),
            )
        })?;
    }
    let ports_path = at.key("ports");
    count_within(spec.ports.len(), limits.max_ports, "ports", &ports_path)?;
    let mut ports = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = ports_path.index(i).key("containerPort");
        port_from(i128::from(p.container_port), &path)?;
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
        Some(probe) => readiness_probe(probe, &spec.ports, limits, &at.key("readinessProbe")),
        None => Ok(()),
    }
}

/// Any control character (NUL, ESC, DEL...).
fn any_control(c: char) -> bool {
    c.is_control()
}

/// A control character other than tab and line breaks, which a shell script may hold.
fn control_but_whitespace(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// NUL, which no C string (argv, environment) can hold.
fn nul(c: char) -> bool {
    c == '\0'
}

/// A string field's length and characters: at most `max_len` bytes, none `forbidden`.
fn text_within(
    s: &str,
    max_len: usize,
    forbidden: fn(char) -> bool,
    what: &str,
    at: &FieldPath,
) -> FieldResult<()> {
    if s.len() > max_len {
        return Err(FieldError::new(
            at.clone(),
            format!(
                "{what} {} is {} bytes long, above the limit of {max_len}",
                shorten(s),
                s.len()
            ),
        ));
    }
    if let Some(c) = s.chars().find(|&c| forbidden(c)) {
        return Err(FieldError::new(
            at.clone(),
            format!("{what} {} contains the control character {c:?}", shorten(s)),
        ));
    }
    Ok(())
}

fn container(c: &Container, limits: &Limits, at: &FieldPath) -> FieldResult<()> {
    validate_dns1123(&c.name).map_err(|e| FieldError::new(at.key("name"), e))?;
    if let Some(lim) = c.limits {
        for (what, request, limit) in [
            ("cpu", c.resources.cpu_millis, lim.cpu_millis),
            ("memory", c.resources.memory_bytes, lim.memory_bytes),
        ] {
            if limit > 0 && request > limit {
                return Err(FieldError::new(
                    at.key("resources").key("requests").key(what),
                    format!("the request ({request}) is above the limit ({limit})"),
                ));
            }
        }
    }
    let image_path = at.key("image");
    if c.image.trim().is_empty() {
        return Err(FieldError::new(
            image_path,
            "must not be empty (e.g. localhost/pss-demo:latest)",
        ));
    }
    text_within(
        &c.image,
        limits.max_image_len,
        any_control,
        "image",
        &image_path,
    )?;
    if let Some(bad) = c.image.chars().find(|ch| !ch.is_ascii_graphic()) {
        return Err(FieldError::new(
            image_path,
            format!(
                "image {} contains {bad:?}: an image reference is printable ASCII without spaces (e.g. localhost/pss-demo:latest)",
                shorten(&c.image)
            ),
        ));
    }
    for (field, words) in [("command", &c.command), ("args", &c.args)] {
        command_words(words, limits, &at.key(field))?;
    }
    let env_path = at.key("env");
    count_within(c.env.len(), limits.max_env, "variables", &env_path)?;
    for (j, e) in c.env.iter().enumerate() {
        let path = env_path.index(j);
        let name_path = path.key("name");
        if e.name.is_empty() {
            return Err(FieldError::new(name_path, "must not be empty"));
        }
        text_within(
            &e.name,
            limits.max_env_name_len,
            any_control,
            "environment variable name",
            &name_path,
        )?;
        if e.name.contains('=') {
            return Err(FieldError::new(
                name_path,
                format!(
                    "invalid environment variable name {}: must not contain '='",
                    shorten(&e.name)
                ),
            ));
        }
        text_within(
            &e.value,
            limits.max_env_value_len,
            nul,
            "value",
            &path.key("value"),
        )?;
    }
    Ok(())
}

/// A command line (`command`, `args`, an exec probe): word count and each word's length and
/// characters.
fn command_words(words: &[String], limits: &Limits, at: &FieldPath) -> FieldResult<()> {
    count_within(words.len(), limits.max_command_words, "words", at)?;
    for (i, word) in words.iter().enumerate() {
        text_within(
            word,
            limits.max_command_word_len,
            control_but_whitespace,
            "word",
            &at.index(i),
        )?;
    }
    Ok(())
}

fn liveness_probe(
    probe: &LivenessProbe,
    ports: &[PortSpec],
    limits: &Limits,
    at: &FieldPath,
) -> FieldResult<()> {
    match &probe.check {
        LivenessCheck::Tcp { port } => {
            if !ports.iter().any(|p| p.container_port == *port) {
                return Err(FieldError::new(
                    at.key("tcpSocket").key("port"),
                    format!("port {port} is not a declared containerPort"),
                ));
            }
        }
        LivenessCheck::Exec { command } => {
            let path = at.key("exec").key("command");
            if command.is_empty() {
                return Err(FieldError::new(path, "must not be empty"));
            }
            command_words(command, limits, &path)?;
        }
    }
    for (field, ms) in [
        ("interval", probe.interval_ms),
        ("timeout", probe.timeout_ms),
        ("initialDelay", probe.initial_delay_ms),
    ] {
        if ms == 0 && field != "initialDelay" {
            return Err(FieldError::new(at.key(field), "must be greater than 0"));
        }
        if ms > limits.max_probe_ms {
            return Err(FieldError::new(
                at.key(field),
                above(format!("{ms}ms"), format!("{}ms", limits.max_probe_ms)),
            ));
        }
    }
    if probe.failure_threshold == 0 || probe.failure_threshold > MAX_LIVENESS_FAILURES {
        return Err(FieldError::new(
            at.key("failureThreshold"),
            format!(
                "must be between 1 and {MAX_LIVENESS_FAILURES}, got {}",
                probe.failure_threshold
            ),
        ));
    }
    Ok(())
}

fn readiness_probe(
    probe: &ReadinessProbe,
    ports: &[PortSpec],
    limits: &Limits,
    at: &FieldPath,
) -> FieldResult<()> {
    match probe.port {
        None if ports.is_empty() => {
            return Err(FieldError::new(
                at.clone(),
                "probes the first declared port, but spec.podSpec.ports is empty: declare a port",
            ))
        }
        Some(port) if !ports.iter().any(|p| p.container_port == port) => {
            let declared: Vec<String> =
                ports.iter().map(|p| p.container_port.to_string()).collect();
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
    for (field, ms) in [
        ("interval", probe.interval_ms),
        ("timeout", probe.timeout_ms),
    ] {
        if ms == 0 {
            return Err(FieldError::new(at.key(field), "must be greater than 0"));
        }
        if ms > limits.max_probe_ms {
            return Err(FieldError::new(
                at.key(field),
                above(format!("{ms}ms"), format!("{}ms", limits.max_probe_ms)),
            ));
        }
    }
    Ok(())
}

/// Checks a service's workload name and ports. `at` is the path of the spec.
pub(crate) fn service(s: &Service, at: &FieldPath) -> FieldResult<()> {
    object_name(&s.workload, &at.key("workload"))?;
    for (field, port) in [("port", s.port), ("targetPort", s.target_port)] {
        port_from(i128::from(port), &at.key(field))?;
    }
    Ok(())
}

/// Checks an autoscaler's bounds and targets. `at` is the path of the spec.
pub(crate) fn autoscaler(p: &AutoScalePolicy, limits: &Limits, at: &FieldPath) -> FieldResult<()> {
    object_name(&p.workload, &at.key("workload"))?;
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
    replicas_within(i128::from(p.max_replicas), limits, &at.key("maxReplicas"))?;
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

/// A TCP/UDP port number, 1..=65535.
pub(crate) fn port_from(v: i128, at: &FieldPath) -> FieldResult<u16> {
    u16::try_from(v).ok().filter(|&p| p != 0).ok_or_else(|| {
        FieldError::new(
            at.clone(),
            format!("must be a port between 1 and 65535, got {v}"),
        )
    })
}
