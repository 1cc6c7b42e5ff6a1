//! The PSS object model.
//!
//! - Validated desired-state objects users write in YAML: [`Workload`], [`Service`],
//!   [`AutoScalePolicy`] (parsed by [`parse_manifests`] in `manifest/`, checked by the rules in
//!   `validate.rs` against the bounds of [`Limits`] in `limits.rs`; errors are [`FieldError`]s
//!   from `field.rs`).
//! - Records the controller keeps about the world: [`PodRecord`], [`NodeRecord`], [`EventRecord`].
//! - Conversions to and from the `pss.v1` protobuf types live in `convert.rs`.
//!
//! These types are plain data (serde, no I/O) so the store, the pure decision functions and the
//! gRPC layer all share them.

mod convert;
mod field;
mod labels;
mod limits;
mod manifest;
mod names;
mod quantity;
mod rollout;
mod validate;

pub use convert::node_to_proto;
pub use field::{shorten, FieldError, FieldPath, FieldResult, Segment, ECHO_CHARS};
pub use labels::{
    check_key, check_labels, check_value, format_labels, Labels, Requirement, Selector, MAX_LABELS,
    MAX_SELECTOR_TERMS,
};
pub use limits::{Limits, MAX_REPLICAS_SETTING, MAX_WORKLOAD_NAME_LEN};
pub use manifest::{
    parse_manifest_bytes, parse_manifest_bytes_with, parse_manifests, parse_manifests_with,
    ManifestError, MoreErrors,
};
pub use names::{pod_id, validate_dns1123};
pub use quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
pub use rollout::{
    IntOrPercent, RevisionRecord, RolloutSpec, RolloutState, RolloutStatus,
    DEFAULT_PROGRESS_DEADLINE_MS, DEFAULT_REVISION_HISTORY_LIMIT, MAX_PROGRESS_DEADLINE_MS,
    MAX_REVISION_HISTORY_LIMIT,
};
pub use validate::validate_replicas;

use std::time::Duration;

use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------------------ defaults
// The one definition of each default; the agent and the controller use these.

/// The only `apiVersion` accepted in manifests (it may also be left out).
pub const API_VERSION: &str = "pss/v1";
/// Replicas of a workload whose manifest leaves `spec.replicas` out.
pub const DEFAULT_REPLICAS: u32 = 1;
/// `minReplicas` of an autoscaler that leaves it out.
pub const DEFAULT_MIN_REPLICAS: u32 = 1;
/// Probe interval when `readinessProbe.interval` is left out, in milliseconds.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 2_000;
/// Probe timeout when `readinessProbe.timeout` is left out, in milliseconds.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 1_000;
/// [`DEFAULT_PROBE_INTERVAL_MS`] as a duration.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(DEFAULT_PROBE_INTERVAL_MS);
/// [`DEFAULT_PROBE_TIMEOUT_MS`] as a duration.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(DEFAULT_PROBE_TIMEOUT_MS);

/// How the scheduler places a workload's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// The node with the fewest pods of the workload (ties: least allocated).
    #[default]
    Spread,
    /// The most allocated node that fits.
    Binpack,
}

impl Placement {
    /// The name used in YAML and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::Binpack => "binpack",
        }
    }
}

/// A container's environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// CPU and memory amounts: a container's requests (what the scheduler reserves) or limits (what
/// Podman enforces). Zero means "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    /// Component-wise sum, saturating at `u64::MAX` (never wraps: a node "full" of a huge
    /// request stays full). Validation refuses pods whose sum overflows, see
    /// [`Resources::checked_plus`].
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    /// Requests: what the scheduler reserves for the container.
    pub resources: Resources,
    /// What Podman enforces. `None`: the requests (the seed's flat `resources: {cpu, memory}`
    /// means both); `Some` with zeros: no limit (Kubernetes' `requests` without `limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    /// Restarts the container when it keeps failing (Kubernetes' `livenessProbe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<LivenessProbe>,
}

/// What a liveness probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LivenessCheck {
    /// A TCP connect to this declared container port (through its published host port).
    Tcp { port: u16 },
    /// A command run in the container (Podman exec) that must exit 0.
    Exec { command: Vec<String> },
}

/// A container's liveness probe, run by the agent: after `failure_threshold` failures in a row
/// the container is killed, and the pod is restarted as its `restartPolicy` says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LivenessProbe {
    pub check: LivenessCheck,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub initial_delay_ms: u64,
}

/// Liveness probe interval when left out (Kubernetes' 10 s).
pub const DEFAULT_LIVENESS_INTERVAL_MS: u64 = 10_000;
/// Failures in a row before the container is restarted, when left out (Kubernetes' 3).
pub const DEFAULT_LIVENESS_FAILURES: u32 = 3;
/// The most failures a liveness probe may wait for.
pub const MAX_LIVENESS_FAILURES: u32 = 100;

impl Container {
    /// The limits Podman enforces (see [`Container::limits`]).
    pub fn effective_limits(&self) -> Resources {
        self.limits.unwrap_or(self.resources)
    }
}

/// Whether a pod whose containers exited is restarted in place (Kubernetes' `restartPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always restarted, whatever the exit code.
    #[default]
    Always,
    /// Restarted when it failed; a pod that succeeded stays Succeeded.
    OnFailure,
    /// Never restarted: it stays Failed or Succeeded (and still counts toward the replicas).
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }

    pub fn parse(s: &str) -> Option<RestartPolicy> {
        match s {
            "" | "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }

    fn is_always(&self) -> bool {
        *self == RestartPolicy::Always
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A port the pod exposes; the agent maps it to a dynamic host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    pub container_port: u16,
    pub protocol: Protocol,
}

/// TCP readiness probe run by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadinessProbe {
    /// Container port to connect to; `None` = the first declared port.
    pub port: Option<u16>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// What every pod of a workload runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub ports: Vec<PortSpec>,
    pub readiness_probe: Option<ReadinessProbe>,
    /// Set by `pssctl rollout restart` (unix ms) so that the spec, and its hash, change and
    /// every pod is replaced; 0 (and left out of the hash's JSON) otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarted_at_ms: i64,
    /// Whether exited pods are restarted in place (left out of the hash's JSON when Always).
    #[serde(default, skip_serializing_if = "RestartPolicy::is_always")]
    pub restart_policy: RestartPolicy,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl PodSpec {
    /// Sum of the containers' requests: what the scheduler reserves for one pod.
    pub fn requests(&self) -> Resources {
        self.containers
            .iter()
            .fold(Resources::default(), |acc, c| acc.plus(c.resources))
    }

    /// Stable hash of the spec; a pod whose hash differs from its workload's runs an old spec.
    /// FNV-1a over the canonical JSON, so it is stable across builds and restarts.
    pub fn spec_hash(&self) -> u64 {
        let json = serde_json::to_vec(self).expect("PodSpec serialises");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

/// A ReplicaSet-like set of identical pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub replicas: u32,
    pub placement: Placement,
    pub pod_spec: PodSpec,
    /// `metadata.labels`; its pods carry them too (for selectors).
    #[serde(default)]
    pub labels: Labels,
    /// How its pods are replaced when the spec changes.
    #[serde(default)]
    pub rollout: RolloutSpec,
}

/// An L4 service: `port` on the proxy forwards to `targetPort` of the workload's ready pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub workload: String,
    pub port: u16,
    pub target_port: u16,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: Labels,
}

/// Horizontal autoscaling bounds and targets for one workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AutoScalePolicy {
    pub name: String,
    pub workload: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Target CPU utilisation in percent of requests, 1..=100.
    pub cpu_percent: Option<u32>,
    /// Target memory utilisation in percent of requests, 1..=100.
    pub memory_percent: Option<u32>,
}

/// Any object a manifest can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    Workload(Workload),
    Service(Service),
    AutoScalePolicy(AutoScalePolicy),
}

impl Object {
    /// The kind as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Workload(_) => "Workload",
            Object::Service(_) => "Service",
            Object::AutoScalePolicy(_) => "AutoScalePolicy",
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        match self {
            Object::Workload(w) => &w.name,
            Object::Service(s) => &s.name,
            Object::AutoScalePolicy(a) => &a.name,
        }
    }
}

/// Lifecycle phase of a pod (mirrors `pss.v1.PodPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    /// Accepted but not placed on a node yet (or waiting for a restart back-off).
    Pending,
    /// Placed; the agent is creating it.
    Starting,
    Running,
    /// A container exited with an error, or the pod could not be created.
    Failed,
    /// Every container exited 0.
    Succeeded,
    /// Out of the endpoints, draining, being stopped.
    Terminating,
    /// Its node stopped answering.
    Lost,
    Unknown,
}

impl PodPhase {
    /// Name shown by `pssctl` and stored in SQLite.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Starting => "Starting",
            PodPhase::Running => "Running",
            PodPhase::Failed => "Failed",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Terminating => "Terminating",
            PodPhase::Lost => "Lost",
            PodPhase::Unknown => "Unknown",
        }
    }

    /// Parses [`PodPhase::as_str`] output.
    pub fn parse(s: &str) -> Option<PodPhase> {
        Some(match s {
            "Pending" => PodPhase::Pending,
            "Starting" => PodPhase::Starting,
            "Running" => PodPhase::Running,
            "Failed" => PodPhase::Failed,
            "Succeeded" => PodPhase::Succeeded,
            "Terminating" => PodPhase::Terminating,
            "Lost" => PodPhase::Lost,
            "Unknown" => PodPhase::Unknown,
            _ => return None,
        })
    }
}

/// Observed state of one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub id: String,
    pub state: String,
    pub exit_code: i32,
    pub oom_killed: bool,
}

/// A host address for one container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAddress {
    pub container_port: u16,
    /// `host:port`.
    pub address: String,
}

/// Everything the controller knows about one pod: desired (workload, spec hash, node) and
/// observed (phase, readiness, addresses, metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// `<workload>-<5 lowercase alphanumerics>`.
    pub id: String,
    pub workload: String,
    /// The node it is placed on; `None` while Pending and unplaced.
    pub node: Option<String>,
    pub phase: PodPhase,
    pub ready: bool,
    pub addresses: Vec<PortAddress>,
    pub restart_count: u32,
    pub reason: String,
    pub message: String,
    /// [`PodSpec::spec_hash`] of the spec it was created from.
    pub spec_hash: u64,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    /// Earliest time a restart may be attempted (crash-loop back-off); 0 = no back-off.
    pub backoff_until_ms: i64,
    /// Failures in a row without 10 minutes of healthy running in between (drives the
    /// crash-loop back-off; reset after a long healthy run).
    pub failure_streak: u32,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub containers: Vec<ContainerState>,
}

impl PodRecord {
    /// A new, unplaced pod of `workload`.
    pub fn new(id: String, workload: &str, spec_hash: u64, now_ms: i64) -> Self {
        PodRecord {
            id,
            workload: workload.to_string(),
            node: None,
            phase: PodPhase::Pending,
            ready: false,
            addresses: Vec::new(),
            restart_count: 0,
            reason: String::new(),
            message: String::new(),
            spec_hash,
            created_at_ms: now_ms,
            started_at_ms: 0,
            updated_at_ms: now_ms,
            backoff_until_ms: 0,
            failure_streak: 0,
            cpu_percent: 0.0,
            memory_bytes: 0,
            containers: Vec::new(),
        }
    }
}

/// Readiness of a node as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    Ready,
    NotReady,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "Ready",
            NodeStatus::NotReady => "NotReady",
        }
    }
    pub fn parse(s: &str) -> Option<NodeStatus> {
        match s {
            "Ready" => Some(NodeStatus::Ready),
            "NotReady" => Some(NodeStatus::NotReady),
            _ => None,
        }
    }
}

/// A registered node (one agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The agent's gRPC address; the controller dials back here.
    pub agent_address: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub status: NodeStatus,
    pub cpu_usage_percent: f64,
    pub memory_used_bytes: u64,
    pub last_heartbeat_ms: i64,
    pub registered_at_ms: i64,
    /// Conditions besides readiness (e.g. RuntimeUnresponsive: Ready but unschedulable).
    #[serde(default)]
    pub conditions: crate::node_condition::NodeConditions,
    /// Resource limits the node's Podman cannot enforce (rootless Podman without delegated
    /// cgroup controllers), as the agent said at registration; empty: all enforced.
    #[serde(default)]
    pub limits_unenforced: String,
    /// Labels the agent was started with (`pss-agent --label k=v`).
    #[serde(default)]
    pub labels: Labels,
    /// Cordoned (`pssctl cordon`): keeps its pods, gets no new ones.
    #[serde(default)]
    pub unschedulable: bool,
    /// Being drained (`pssctl drain`): its pods are replaced elsewhere, new pod ready before
    /// the old one stops.
    #[serde(default)]
    pub draining: bool,
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Something that happened, for `pssctl get events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Assigned by the store; 0 before insertion.
    pub id: u64,
    pub time_ms: i64,
    pub event_type: EventType,
    /// CamelCase reason: Scheduled, FailedScheduling, Started, Killing, Scaled, ...
    pub reason: String,
    /// `kind/name`, e.g. `pod/my-app-x7k2q`.
    pub object: String,
    pub message: String,
}

impl EventRecord {
    /// A Normal event (time and id are filled in by whoever records it).
    pub fn normal(reason: &str, object: String, message: String) -> Self {
        EventRecord {
            id: 0,
            time_ms: 0,
            event_type: EventType::Normal,
            reason: reason.into(),
            object,
            message,
        }
    }
    /// A Warning event.
    pub fn warning(reason: &str, object: String, message: String) -> Self {
        EventRecord {
            id: 0,
            time_ms: 0,
            event_type: EventType::Warning,
            reason: reason.into(),
            object,
            message,
        }
    }
}

/// What the autoscaler last observed and decided for a policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AutoscalerStatus {
    pub current_cpu_percent: Option<f64>,
    pub current_memory_percent: Option<f64>,
    pub current_replicas: u32,
    pub desired_replicas: u32,
    /// 0 = never scaled.
    pub last_scale_at_ms: i64,
}
