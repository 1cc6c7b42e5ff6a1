//! Conversions between model types and pss.v1 protobuf types.
//!
//! Model to proto is infallible (`From<&T>`); proto to model is `TryFrom` for the desired-state
//! objects and runs the rules of `validate.rs`, the manifests' own (names, ports, probes, bounds
//! and [`Limits`]), so a hand-made request cannot smuggle in what a manifest could not; its
//! errors are [`Error::Invalid`]. `TryFrom` checks [`Limits::default`]; `from_proto` takes the
//! caller's limits.
//! Observed fields that the model does not hold (a workload's ready replicas, a node's allocated
//! resources, an autoscaler's status) are filled by the caller or passed in explicitly.

use pss_proto::v1 as pb;

use super::field::{FieldError, FieldPath};
use super::validate::{self, port_from};
use super::{
    AutoScalePolicy, AutoscalerStatus, Container, ContainerState, EnvVar, EventRecord, EventType,
    IntOrPercent, Limits, LivenessCheck, LivenessProbe, NodeRecord, NodeStatus, Placement,
    PodPhase, PodRecord, PodSpec, PortAddress, PortSpec, Protocol, ReadinessProbe, Resources,
    RestartPolicy, RolloutSpec, Service, Workload, DEFAULT_LIVENESS_FAILURES,
    DEFAULT_LIVENESS_INTERVAL_MS, DEFAULT_PROBE_TIMEOUT_MS,
};
use crate::Error;

/// A validation failure as the crate's error.
fn invalid(e: FieldError) -> Error {
    Error::Invalid(e.to_string())
}

// ------------------------------------------------------------------------------ enums

impl PodPhase {
    /// The `pss.v1.PodPhase` value.
    pub fn to_proto(self) -> pb::PodPhase {
        match self {
            PodPhase::Pending => pb::PodPhase::Pending,
            PodPhase::Starting => pb::PodPhase::Starting,
            PodPhase::Running => pb::PodPhase::Running,
            PodPhase::Failed => pb::PodPhase::Failed,
            PodPhase::Succeeded => pb::PodPhase::Succeeded,
            PodPhase::Terminating => pb::PodPhase::Terminating,
            PodPhase::Lost => pb::PodPhase::Lost,
            PodPhase::Unknown => pb::PodPhase::Unknown,
        }
    }

    /// The phase of a `pss.v1.PodPhase` wire value; unspecified or out-of-range is `Unknown`.
    pub fn from_proto(value: i32) -> PodPhase {
        match pb::PodPhase::try_from(value).unwrap_or(pb::PodPhase::Unknown) {
            pb::PodPhase::Pending => PodPhase::Pending,
            pb::PodPhase::Starting => PodPhase::Starting,
            pb::PodPhase::Running => PodPhase::Running,
            pb::PodPhase::Failed => PodPhase::Failed,
            pb::PodPhase::Succeeded => PodPhase::Succeeded,
            pb::PodPhase::Terminating => PodPhase::Terminating,
            pb::PodPhase::Lost => PodPhase::Lost,
            pb::PodPhase::Unspecified | pb::PodPhase::Unknown => PodPhase::Unknown,
        }
    }
}

impl NodeStatus {
    /// The `pss.v1.NodeStatus` value.
    pub fn to_proto(self) -> pb::NodeStatus {
        match self {
            NodeStatus::Ready => pb::NodeStatus::Ready,
            NodeStatus::NotReady => pb::NodeStatus::NotReady,
        }
    }

    /// The status of a `pss.v1.NodeStatus` wire value; anything but Ready is `NotReady`.
    pub fn from_proto(value: i32) -> NodeStatus {
        match pb::NodeStatus::try_from(value) {
            Ok(pb::NodeStatus::Ready) => NodeStatus::Ready,
            _ => NodeStatus::NotReady,
        }
    }
}

impl Protocol {
    /// Parses the wire form: `tcp`, `udp`, or empty for the default (tcp); case-insensitive.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl Placement {
    /// Parses the wire form: `spread`, `binpack`, or empty for the default (spread).
    pub fn parse(s: &str) -> Option<Placement> {
        match s {
            "" | "spread" => Some(Placement::Spread),
            "binpack" => Some(Placement::Binpack),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------------ pod specs

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        pb::Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
        }
    }
}

impl From<pb::Resources> for Resources {
    fn from(r: pb::Resources) -> Self {
        Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
        }
    }
}

impl From<&EnvVar> for pb::EnvVar {
    fn from(e: &EnvVar) -> Self {
        pb::EnvVar {
            name: e.name.clone(),
            value: e.value.clone(),
        }
    }
}

impl From<pb::EnvVar> for EnvVar {
    fn from(e: pb::EnvVar) -> Self {
        EnvVar {
            name: e.name,
            value: e.value,
        }
    }
}

impl From<&Container> for pb::Container {
    fn from(c: &Container) -> Self {
        pb::Container {
            name: c.name.clone(),
            image: c.image.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c.env.iter().map(Into::into).collect(),
            resources: Some(c.resources.into()),
            limits: c.limits.map(Into::into),
            liveness_probe: c.liveness_probe.as_ref().map(|p| {
                let (tcp_port, exec_command) = match &p.check {
                    LivenessCheck::Tcp { port } => (u32::from(*port), Vec::new()),
                    LivenessCheck::Exec { command } => (0, command.clone()),
                };
                pb::LivenessProbe {
                    tcp_port,
                    exec_command,
                    interval_ms: p.interval_ms,
                    timeout_ms: p.timeout_ms,
                    failure_threshold: p.failure_threshold,
                    initial_delay_ms: p.initial_delay_ms,
                }
            }),
        }
    }
}

/// Field-by-field; validated as part of its [`PodSpec`].
impl From<pb::Container> for Container {
    fn from(c: pb::Container) -> Self {
        Container {
            name: c.name,
            image: c.image,
            command: c.command,
            args: c.args,
            env: c.env.into_iter().map(Into::into).collect(),
            resources: c.resources.map(Into::into).unwrap_or_default(),
            limits: c.limits.map(Into::into),
            // A port out of range or both checks set are caught by validation (port 0 is
            // not a declared port; an exec command beside a port is refused there).
            liveness_probe: c.liveness_probe.map(|p| LivenessProbe {
                check: if p.exec_command.is_empty() {
                    LivenessCheck::Tcp {
                        port: u16::try_from(p.tcp_port).unwrap_or(0),
                    }
                } else {
                    LivenessCheck::Exec {
                        command: p.exec_command,
                    }
                },
                interval_ms: if p.interval_ms == 0 {
                    DEFAULT_LIVENESS_INTERVAL_MS
                } else {
                    p.interval_ms
                },
                timeout_ms: if p.timeout_ms == 0 {
                    DEFAULT_PROBE_TIMEOUT_MS
                } else {
                    p.timeout_ms
                },
                failure_threshold: if p.failure_threshold == 0 {
                    DEFAULT_LIVENESS_FAILURES
                } else {
                    p.failure_threshold
                },
                initial_delay_ms: p.initial_delay_ms,
            }),
        }
    }
}

impl From<&PortSpec> for pb::PortSpec {
    fn from(p: &PortSpec) -> Self {
        pb::PortSpec {
            container_port: u32::from(p.container_port),
            protocol: p.protocol.as_str().to_string(),
        }
    }
}

impl From<&ReadinessProbe> for pb::ReadinessProbe {
    fn from(p: &ReadinessProbe) -> Self {
        pb::ReadinessProbe {
            port: p.port.map_or(0, u32::from),
            interval_ms: p.interval_ms,
            timeout_ms: p.timeout_ms,
        }
    }
}

impl From<&PodSpec> for pb::PodSpec {
    fn from(s: &PodSpec) -> Self {
        pb::PodSpec {
            containers: s.containers.iter().map(Into::into).collect(),
            ports: s.ports.iter().map(Into::into).collect(),
            readiness_probe: s.readiness_probe.as_ref().map(Into::into),
            restarted_at_ms: s.restarted_at_ms,
            restart_policy: s.restart_policy.as_str().to_string(),
        }
    }
}

impl TryFrom<pb::PodSpec> for PodSpec {
    type Error = Error;

    /// Converts and validates as a manifest's `podSpec` would be (errors name `podSpec.*`),
    /// against [`Limits::default`].
    fn try_from(s: pb::PodSpec) -> Result<Self, Error> {
        let at = FieldPath::root().key("podSpec");
        let spec = pod_spec_from_proto(s, &at).map_err(invalid)?;
        validate::pod_spec(&spec, &Limits::default(), &at).map_err(invalid)?;
        Ok(spec)
    }
}

/// The conversion part of `TryFrom<pb::PodSpec>`: ports and protocols that do not fit.
fn pod_spec_from_proto(s: pb::PodSpec, at: &FieldPath) -> Result<PodSpec, FieldError> {
    let ports = s
        .ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let path = at.key("ports").index(i);
            let container_port =
                port_from(i128::from(p.container_port), &path.key("containerPort"))?;
            let protocol = Protocol::parse(&p.protocol).ok_or_else(|| {
                FieldError::new(
                    path.key("protocol"),
                    format!("unknown protocol {:?}: expected tcp or udp", p.protocol),
                )
            })?;
            Ok(PortSpec {
                container_port,
                protocol,
            })
        })
        .collect::<Result<_, FieldError>>()?;
    let readiness_probe = s
        .readiness_probe
        .map(|p| {
            let port = match p.port {
                0 => None,
                n => Some(port_from(
                    i128::from(n),
                    &at.key("readinessProbe").key("port"),
                )?),
            };
            Ok::<_, FieldError>(ReadinessProbe {
                port,
                interval_ms: p.interval_ms,
                timeout_ms: p.timeout_ms,
            })
        })
        .transpose()?;
    let restart_policy = RestartPolicy::parse(&s.restart_policy).ok_or_else(|| {
        FieldError::new(
            at.key("restartPolicy"),
            format!(
                "unknown restart policy {}: expected Always, OnFailure or Never",
                super::shorten(&s.restart_policy)
            ),
        )
    })?;
    Ok(PodSpec {
        containers: s.containers.into_iter().map(Into::into).collect(),
        ports,
        readiness_probe,
        restarted_at_ms: s.restarted_at_ms,
        restart_policy,
    })
}

// ------------------------------------------------------------------------------ objects

/// Desired state only: `current_replicas`, `ready_replicas`, `created_at_ms` and `generation`
/// are left 0 for the caller to fill.
impl From<&Workload> for pb::Workload {
    fn from(w: &Workload) -> Self {
        pb::Workload {
            name: w.name.clone(),
            replicas: w.replicas,
            placement: w.placement.as_str().to_string(),
            pod_spec: Some((&w.pod_spec).into()),
            labels: w.labels.clone().into_iter().collect(),
            strategy: Some(pb::RolloutStrategy {
                max_surge: w.rollout.max_surge.to_string(),
                max_unavailable: w.rollout.max_unavailable.to_string(),
            }),
            revision_history_limit: Some(w.rollout.revision_history_limit),
            progress_deadline_ms: w.rollout.progress_deadline_ms,
            auto_revert: w.rollout.auto_revert,
            paused: w.rollout.paused,
            ..Default::default()
        }
    }
}

impl Workload {
    /// The workload of a wire object, checked against `limits` (errors name `name`,
    /// `replicas`, `placement`, `podSpec.*`).
    pub fn from_proto(w: pb::Workload, limits: &Limits) -> Result<Self, Error> {
        let root = FieldPath::root();
        let placement = Placement::parse(&w.placement).ok_or_else(|| {
            invalid(FieldError::new(
                root.key("placement"),
                format!(
                    "unknown placement {}: expected spread or binpack",
                    super::shorten(&w.placement)
                ),
            ))
        })?;
        let at = root.key("podSpec");
        let pod_spec = w
            .pod_spec
            .ok_or_else(|| invalid(FieldError::new(at.clone(), "required")))?;
        let defaults = RolloutSpec::default();
        let strategy = w.strategy.unwrap_or_default();
        let amount = |text: &str, field: &str, default: IntOrPercent| {
            if text.is_empty() {
                return Ok(default);
            }
            IntOrPercent::parse(text)
                .map_err(|e| invalid(FieldError::new(root.key("strategy").key(field), e)))
        };
        let rollout = RolloutSpec {
            max_surge: amount(&strategy.max_surge, "maxSurge", defaults.max_surge)?,
            max_unavailable: amount(
                &strategy.max_unavailable,
                "maxUnavailable",
                defaults.max_unavailable,
            )?,
            revision_history_limit: w
                .revision_history_limit
                .unwrap_or(defaults.revision_history_limit),
            progress_deadline_ms: match w.progress_deadline_ms {
                0 => defaults.progress_deadline_ms,
                ms => ms,
            },
            auto_revert: w.auto_revert,
            paused: w.paused,
        };
        let workload = Workload {
            name: w.name,
            replicas: w.replicas,
            placement,
            pod_spec: pod_spec_from_proto(pod_spec, &at).map_err(invalid)?,
            labels: w.labels.into_iter().collect(),
            rollout,
        };
        workload.validate(limits).map_err(invalid)?;
        Ok(workload)
    }
}

impl TryFrom<pb::Workload> for Workload {
    type Error = Error;

    /// [`Workload::from_proto`] with [`Limits::default`].
    fn try_from(w: pb::Workload) -> Result<Self, Error> {
        Workload::from_proto(w, &Limits::default())
    }
}

/// Desired state only: `created_at_ms`, `endpoints` and `snapshot_version` are left for the
/// caller to fill.
impl From<&Service> for pb::Service {
    fn from(s: &Service) -> Self {
        pb::Service {
            name: s.name.clone(),
            workload: s.workload.clone(),
            port: u32::from(s.port),
            target_port: u32::from(s.target_port),
            labels: s.labels.clone().into_iter().collect(),
            ..Default::default()
        }
    }
}

impl TryFrom<pb::Service> for Service {
    type Error = Error;

    /// `target_port` 0 means "same as `port`".
    fn try_from(s: pb::Service) -> Result<Self, Error> {
        let root = FieldPath::root();
        let port = port_from(i128::from(s.port), &root.key("port")).map_err(invalid)?;
        let target_port = match s.target_port {
            0 => port,
            n => port_from(i128::from(n), &root.key("targetPort")).map_err(invalid)?,
        };
        let service = Service {
            name: s.name,
            workload: s.workload,
            port,
            target_port,
            labels: s.labels.into_iter().collect(),
        };
        service.validate().map_err(invalid)?;
        Ok(service)
    }
}

/// Desired state only (percent 0 = target not used); see [`AutoScalePolicy::to_proto_with_status`]
/// for the observed fields.
impl From<&AutoScalePolicy> for pb::AutoScalePolicy {
    fn from(p: &AutoScalePolicy) -> Self {
        pb::AutoScalePolicy {
            name: p.name.clone(),
            workload: p.workload.clone(),
            min_replicas: p.min_replicas,
            max_replicas: p.max_replicas,
            cpu_percent: p.cpu_percent.unwrap_or(0),
            memory_percent: p.memory_percent.unwrap_or(0),
            ..Default::default()
        }
    }
}

impl AutoScalePolicy {
    /// The policy of a wire object, checked against `limits`. Percent 0 means "target not
    /// used"; an empty name defaults to the workload's.
    pub fn from_proto(p: pb::AutoScalePolicy, limits: &Limits) -> Result<Self, Error> {
        let name = if p.name.is_empty() {
            p.workload.clone()
        } else {
            p.name
        };
        let policy = AutoScalePolicy {
            name,
            workload: p.workload,
            min_replicas: p.min_replicas,
            max_replicas: p.max_replicas,
            cpu_percent: Some(p.cpu_percent).filter(|&v| v != 0),
            memory_percent: Some(p.memory_percent).filter(|&v| v != 0),
        };
        policy.validate(limits).map_err(invalid)?;
        Ok(policy)
    }
}

impl TryFrom<pb::AutoScalePolicy> for AutoScalePolicy {
    type Error = Error;

    /// [`AutoScalePolicy::from_proto`] with [`Limits::default`].
    fn try_from(p: pb::AutoScalePolicy) -> Result<Self, Error> {
        AutoScalePolicy::from_proto(p, &Limits::default())
    }
}

impl AutoScalePolicy {
    /// The policy with what the autoscaler last observed and decided; `created_at_ms` is left 0.
    pub fn to_proto_with_status(&self, status: &AutoscalerStatus) -> pb::AutoScalePolicy {
        pb::AutoScalePolicy {
            current_cpu_percent: status.current_cpu_percent.unwrap_or(0.0),
            current_memory_percent: status.current_memory_percent.unwrap_or(0.0),
            current_replicas: status.current_replicas,
            desired_replicas: status.desired_replicas,
            last_scale_at_ms: status.last_scale_at_ms,
            has_metrics: status.current_cpu_percent.is_some()
                || status.current_memory_percent.is_some(),
            ..self.into()
        }
    }
}

// ------------------------------------------------------------------------------ records

impl From<&ContainerState> for pb::ContainerStatus {
    fn from(c: &ContainerState) -> Self {
        pb::ContainerStatus {
            name: c.name.clone(),
            id: c.id.clone(),
            state: c.state.clone(),
            exit_code: c.exit_code,
            oom_killed: c.oom_killed,
        }
    }
}

impl From<pb::ContainerStatus> for ContainerState {
    fn from(c: pb::ContainerStatus) -> Self {
        ContainerState {
            name: c.name,
            id: c.id,
            state: c.state,
            exit_code: c.exit_code,
            oom_killed: c.oom_killed,
        }
    }
}

impl From<&PortAddress> for pb::PortAddress {
    fn from(a: &PortAddress) -> Self {
        pb::PortAddress {
            container_port: u32::from(a.container_port),
            address: a.address.clone(),
        }
    }
}

impl TryFrom<pb::PortAddress> for PortAddress {
    type Error = Error;

    fn try_from(a: pb::PortAddress) -> Result<Self, Error> {
        let container_port = port_from(
            i128::from(a.container_port),
            &FieldPath::root().key("containerPort"),
        )
        .map_err(invalid)?;
        Ok(PortAddress {
            container_port,
            address: a.address,
        })
    }
}

impl ContainerState {
    /// Whether Podman reports the container as running (what `READY 1/2` counts).
    pub fn is_running(&self) -> bool {
        self.state.eq_ignore_ascii_case("running")
    }
}

impl From<&PodRecord> for pb::Pod {
    fn from(p: &PodRecord) -> Self {
        let ready_containers = p.containers.iter().filter(|c| c.is_running()).count();
        pb::Pod {
            id: p.id.clone(),
            workload: p.workload.clone(),
            node: p.node.clone().unwrap_or_default(),
            phase: p.phase.to_proto().into(),
            ready: p.ready,
            addresses: p.addresses.iter().map(Into::into).collect(),
            restart_count: p.restart_count,
            reason: p.reason.clone(),
            message: p.message.clone(),
            spec_hash: p.spec_hash,
            created_at_ms: p.created_at_ms,
            started_at_ms: p.started_at_ms,
            updated_at_ms: p.updated_at_ms,
            cpu_percent: p.cpu_percent,
            memory_bytes: p.memory_bytes,
            containers: p.containers.iter().map(Into::into).collect(),
            ready_containers: u32::try_from(ready_containers).unwrap_or(u32::MAX),
            total_containers: u32::try_from(p.containers.len()).unwrap_or(u32::MAX),
            labels: Default::default(),
        }
    }
}

impl NodeRecord {
    /// The node as `pss.v1.Node`; `allocated` (sum of the requests of its pods) and `pod_count`
    /// come from the pods, which the record does not hold.
    pub fn to_proto(&self, allocated: Resources, pod_count: u32) -> pb::Node {
        pb::Node {
            name: self.name.clone(),
            agent_address: self.agent_address.clone(),
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            status: self.status.to_proto().into(),
            cpu_allocated_millis: allocated.cpu_millis,
            memory_allocated_bytes: allocated.memory_bytes,
            cpu_usage_percent: self.cpu_usage_percent,
            memory_used_bytes: self.memory_used_bytes,
            pod_count,
            last_heartbeat_ms: self.last_heartbeat_ms,
            registered_at_ms: self.registered_at_ms,
            conditions: self
                .conditions
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            unschedulable: !self.conditions.schedulable(),
            runtime_reason: self
                .conditions
                .runtime_unresponsive
                .as_ref()
                .map(|c| c.reason.clone())
                .unwrap_or_default(),
            runtime_unresponsive_since_ms: self
                .conditions
                .runtime_unresponsive
                .as_ref()
                .map_or(0, |c| c.since_ms),
            limits_unenforced: self.limits_unenforced.clone(),
            cordoned: self.unschedulable,
            draining: self.draining,
            labels: self.labels.clone().into_iter().collect(),
        }
    }
}

/// Free-function form of [`NodeRecord::to_proto`].
pub fn node_to_proto(n: &NodeRecord, allocated: Resources, pod_count: u32) -> pb::Node {
    n.to_proto(allocated, pod_count)
}

impl From<&EventRecord> for pb::Event {
    fn from(e: &EventRecord) -> Self {
        pb::Event {
            id: e.id,
            time_ms: e.time_ms,
            r#type: e.event_type.as_str().to_string(),
            reason: e.reason.clone(),
            object: e.object.clone(),
            message: e.message.clone(),
        }
    }
}

/// A `type` other than `Warning` reads as Normal.
impl From<pb::Event> for EventRecord {
    fn from(e: pb::Event) -> Self {
        let event_type = if e.r#type == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        EventRecord {
            id: e.id,
            time_ms: e.time_ms,
            event_type,
            reason: e.reason,
            object: e.object,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_manifests, Object};

    const ALL_PHASES: [PodPhase; 8] = [
        PodPhase::Pending,
        PodPhase::Starting,
        PodPhase::Running,
        PodPhase::Failed,
        PodPhase::Succeeded,
        PodPhase::Terminating,
        PodPhase::Lost,
        PodPhase::Unknown,
    ];

    fn example_objects() -> Vec<Object> {
        let text = "\
kind: Workload
metadata: {name: my-app}
spec:
  replicas: 3
  podSpec:
    containers:
      - {name: web, image: img, command: [a], args: [b], env: [{name: A, value: b}], resources: {cpu: 100m, memory: 32Mi}}
      - {name: side, image: img2}
    ports: [{containerPort: 80}, {containerPort: 53, protocol: udp}]
    readinessProbe: {interval: 3s}
---
kind: Service
metadata: {name: my-service}
spec: {workload: my-app, port: 8080, targetPort: 80}
---
kind: AutoScalePolicy
metadata: {name: my-autoscaler}
spec: {workload: my-app, minReplicas: 2, maxReplicas: 10, memory: 80}
";
        parse_manifests(text, "t").unwrap()
    }

    #[test]
    fn objects_roundtrip_through_proto() {
        for object in example_objects() {
            let back = match &object {
                Object::Workload(w) => Object::Workload(pb::Workload::from(w).try_into().unwrap()),
                Object::Service(s) => Object::Service(pb::Service::from(s).try_into().unwrap()),
                Object::AutoScalePolicy(p) => {
                    Object::AutoScalePolicy(pb::AutoScalePolicy::from(p).try_into().unwrap())
                }
            };
            assert_eq!(back, object);
        }
    }

    #[test]
    fn phases_and_statuses_roundtrip() {
        for phase in ALL_PHASES {
            assert_eq!(PodPhase::from_proto(phase.to_proto().into()), phase);
        }
        assert_eq!(PodPhase::from_proto(0), PodPhase::Unknown);
        assert_eq!(PodPhase::from_proto(99), PodPhase::Unknown);
        for status in [NodeStatus::Ready, NodeStatus::NotReady] {
            assert_eq!(NodeStatus::from_proto(status.to_proto().into()), status);
        }
        assert_eq!(NodeStatus::from_proto(0), NodeStatus::NotReady);
    }

    #[test]
    fn invalid_proto_objects_are_rejected_naming_the_field() {
        let Object::Workload(w) = example_objects().remove(0) else {
            panic!()
        };
        let mut bad = pb::Workload::from(&w);
        bad.pod_spec.as_mut().unwrap().containers[1].name = "web".into();
        let e = Workload::try_from(bad).unwrap_err().to_string();
        assert!(
            e.contains("podSpec.containers[1].name: duplicate container name"),
            "{e}"
        );

        let mut bad = pb::Workload::from(&w);
        bad.pod_spec.as_mut().unwrap().ports[0].container_port = 70000;
        let e = Workload::try_from(bad).unwrap_err().to_string();
        assert!(
            e.contains(
                "podSpec.ports[0].containerPort: must be a port between 1 and 65535, got 70000"
            ),
            "{e}"
        );

        let bad = pb::Workload {
            name: "Bad".into(),
            ..pb::Workload::from(&w)
        };
        assert!(matches!(Workload::try_from(bad), Err(Error::Invalid(_))));

        let bad = pb::Service {
            name: "s".into(),
            workload: "w".into(),
            port: 0,
            ..Default::default()
        };
        assert!(Service::try_from(bad)
            .unwrap_err()
            .to_string()
            .contains("port: must be a port"));

        let bad = pb::AutoScalePolicy {
            workload: "w".into(),
            min_replicas: 5,
            max_replicas: 2,
            cpu_percent: 50,
            ..Default::default()
        };
        let e = AutoScalePolicy::try_from(bad).unwrap_err().to_string();
        assert!(
            e.contains("maxReplicas: must be >= minReplicas (5), got 2"),
            "{e}"
        );
    }

    /// The example workload on the wire, changed by `f`.
    fn wire_workload(f: impl FnOnce(&mut pb::Workload)) -> pb::Workload {
        let Object::Workload(w) = example_objects().remove(0) else {
            panic!()
        };
        let mut p = pb::Workload::from(&w);
        f(&mut p);
        p
    }

    fn refused(w: pb::Workload) -> String {
        Workload::try_from(w).unwrap_err().to_string()
    }

    #[test]
    fn raw_grpc_objects_get_the_manifest_limits() {
        let e = refused(wire_workload(|w| w.replicas = u32::MAX));
        assert!(
            e.contains(
                "replicas: 4294967295 is above the limit of 1000 (pss-controller --max-replicas)"
            ),
            "{e}"
        );
        let many = wire_workload(|w| {
            let spec = w.pod_spec.as_mut().unwrap();
            let c = spec.containers[0].clone();
            spec.containers = (0..10_000)
                .map(|i| pb::Container {
                    name: format!("c{i}"),
                    ..c.clone()
                })
                .collect();
        });
        let e = refused(many);
        assert!(
            e.contains("podSpec.containers: 10000 containers, above the limit of 32"),
            "{e}"
        );
        let e = refused(wire_workload(|w| {
            for c in &mut w.pod_spec.as_mut().unwrap().containers {
                c.resources = Some(pb::Resources {
                    cpu_millis: 1 << 63,
                    memory_bytes: 0,
                });
            }
        }));
        assert!(
            e.contains(
                "podSpec.containers[1].resources.cpu: the pod's total cpu request overflows"
            ),
            "{e}"
        );
        let e = refused(wire_workload(|w| {
            w.pod_spec.as_mut().unwrap().containers[0].image = "img\0".into()
        }));
        assert!(e.contains("control character '\\0'"), "{e}");
        let e = refused(wire_workload(|w| {
            w.pod_spec.as_mut().unwrap().containers[0].image = "x".repeat(1 << 20)
        }));
        assert!(e.len() < 300 && e.contains("(1048576 bytes)"), "{e}");
        let e = refused(wire_workload(|w| w.name = "a".repeat(63)));
        assert!(e.contains("name: name \"aaa"), "{e}");
        assert!(e.contains("above the limit of 57"), "{e}");
    }

    #[test]
    fn the_controller_may_pass_its_own_limits() {
        let limits = Limits {
            max_replicas: 5_000,
            ..Limits::default()
        };
        let w = Workload::from_proto(wire_workload(|w| w.replicas = 5_000), &limits).unwrap();
        assert_eq!(w.replicas, 5_000);
        assert!(w.validate(&Limits::default()).is_err());
        assert_eq!(crate::model::validate_replicas(5_000, &limits), Ok(()));
        assert_eq!(
            crate::model::validate_replicas(5_001, &limits)
                .unwrap_err()
                .to_string(),
            "replicas: 5001 is above the limit of 5000 (pss-controller --max-replicas)"
        );
    }

    #[test]
    fn stored_objects_are_checked_against_todays_limits() {
        // What an older version stored: valid then, above today's limits.
        let Object::Workload(mut w) = example_objects().remove(0) else {
            panic!()
        };
        w.replicas = 1_000_000_000;
        let e = Object::Workload(w)
            .validate(&Limits::default())
            .unwrap_err();
        assert_eq!(e.path.to_string(), "replicas");
        let p = AutoScalePolicy {
            name: "a".into(),
            workload: "w".into(),
            min_replicas: 1,
            max_replicas: u32::MAX,
            cpu_percent: Some(50),
            memory_percent: None,
        };
        let e = p.validate(&Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "maxReplicas: 4294967295 is above the limit of 1000 (pss-controller --max-replicas)"
        );
        for object in example_objects() {
            assert_eq!(object.validate(&Limits::default()), Ok(()));
        }
    }

    #[test]
    fn autoscaler_name_defaults_to_workload() {
        let p = pb::AutoScalePolicy {
            workload: "w".into(),
            min_replicas: 1,
            max_replicas: 2,
            cpu_percent: 50,
            ..Default::default()
        };
        assert_eq!(AutoScalePolicy::try_from(p).unwrap().name, "w");
    }

    #[test]
    fn autoscaler_status_is_carried() {
        let Some(Object::AutoScalePolicy(p)) = example_objects().pop() else {
            panic!()
        };
        let status = AutoscalerStatus {
            current_cpu_percent: None,
            current_memory_percent: Some(42.5),
            current_replicas: 3,
            desired_replicas: 4,
            last_scale_at_ms: 7,
        };
        let proto = p.to_proto_with_status(&status);
        assert_eq!(
            (
                proto.min_replicas,
                proto.max_replicas,
                proto.cpu_percent,
                proto.memory_percent
            ),
            (2, 10, 0, 80)
        );
        assert_eq!(
            (
                proto.current_memory_percent,
                proto.desired_replicas,
                proto.has_metrics
            ),
            (42.5, 4, true)
        );
        assert!(
            !p.to_proto_with_status(&AutoscalerStatus::default())
                .has_metrics
        );
    }

    #[test]
    fn pod_counts_running_containers() {
        let mut pod = PodRecord::new("my-app-bcdfg".into(), "my-app", 9, 1);
        pod.node = Some("n1".into());
        pod.addresses = vec![PortAddress {
            container_port: 80,
            address: "127.0.0.1:4000".into(),
        }];
        pod.containers = vec![
            ContainerState {
                name: "web".into(),
                state: "running".into(),
                ..Default::default()
            },
            ContainerState {
                name: "side".into(),
                state: "exited".into(),
                exit_code: 1,
                ..Default::default()
            },
        ];
        let proto = pb::Pod::from(&pod);
        assert_eq!((proto.ready_containers, proto.total_containers), (1, 2));
        assert_eq!(proto.node, "n1");
        assert_eq!(PodPhase::from_proto(proto.phase), PodPhase::Pending);
        let addresses: Vec<PortAddress> = proto
            .addresses
            .into_iter()
            .map(|a| a.try_into().unwrap())
            .collect();
        assert_eq!(addresses, pod.addresses);
        let containers: Vec<ContainerState> =
            proto.containers.into_iter().map(Into::into).collect();
        assert_eq!(containers, pod.containers);
    }

    #[test]
    fn node_carries_allocation() {
        let node = NodeRecord {
            labels: Default::default(),
            unschedulable: false,
            draining: false,
            name: "n1".into(),
            agent_address: "127.0.0.1:7000".into(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            status: NodeStatus::Ready,
            cpu_usage_percent: 12.5,
            memory_used_bytes: 1 << 30,
            last_heartbeat_ms: 5,
            registered_at_ms: 1,
            conditions: Default::default(),
            limits_unenforced: String::new(),
        };
        let alloc = Resources {
            cpu_millis: 300,
            memory_bytes: 96 << 20,
        };
        let proto = node_to_proto(&node, alloc, 3);
        assert_eq!(
            (
                proto.cpu_allocated_millis,
                proto.memory_allocated_bytes,
                proto.pod_count
            ),
            (300, 96 << 20, 3)
        );
        assert_eq!(NodeStatus::from_proto(proto.status), NodeStatus::Ready);
        assert_eq!(proto.agent_address, node.agent_address);
    }

    #[test]
    fn events_roundtrip() {
        let mut e = EventRecord::warning(
            "FailedScheduling",
            "pod/a-bcdfg".into(),
            "no node fits".into(),
        );
        e.id = 4;
        e.time_ms = 99;
        let proto = pb::Event::from(&e);
        assert_eq!(proto.r#type, "Warning");
        assert_eq!(EventRecord::from(proto), e);
    }
}
