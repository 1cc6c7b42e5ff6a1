//! Pod lifecycle on Podman: a PSS pod is a Podman pod named by the pod's ID.
//!
//! - The pod's infra container publishes the spec's ports with host port 0 (Podman picks a free
//!   one); each spec container is a Podman container `<pod id>-<container name>` joined to it,
//!   with command/args/env and CPU/memory limits from `limits` (else the requests).
//! - Pods and containers carry the labels `pss.pod`, `pss.workload`, `pss.node`,
//!   `pss.spec-hash` and the readiness probe (`pss.probe-*`), so everything the agent needs to
//!   report or probe a pod is in Podman: a restarted agent adopts what runs.
//! - [`Runtime::report`] reads a pod back from Podman into a `PodReport` (phase derived from the
//!   containers by [`derive_phase`], addresses `<advertise>:<host port>`). The only state
//!   kept in memory is readiness (set by the readiness loop) and which pods are being stopped.
//! - The same `Runtime` runs over the in-memory simulator instead ([`Backend::Sim`], see
//!   [`crate::sim`]): server, reporter, snapshot and readiness code are shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pss_proto::v1::{ContainerStatus, PodPhase, PodReport, PortAddress, RunPodRequest};

use crate::cgroups::LimitSupport;
use crate::podman::{
    ContainerCreate, ContainerState, CpuLimits, MemoryLimits, PodCreate, PodInspect, Podman,
    PodmanError, PortMapping, ResourceLimits,
};
use crate::sim::SimPods;
use crate::snapshot::NodeSnapshot;
use crate::{Error, Result};

/// Label: the PSS pod ID.
pub const LABEL_POD: &str = "pss.pod";
/// Label: the pod's workload.
pub const LABEL_WORKLOAD: &str = "pss.workload";
/// Label: the node (agent) that owns the pod.
pub const LABEL_NODE: &str = "pss.node";
/// Label: the spec hash the pod was created from (decimal).
pub const LABEL_SPEC_HASH: &str = "pss.spec-hash";
/// Label on containers: the container's name in the pod spec.
pub const LABEL_CONTAINER: &str = "pss.container";
/// Label: the container port probed for readiness (absent: ready = running).
pub const LABEL_PROBE_PORT: &str = "pss.probe-port";
/// Label: probe interval in milliseconds.
pub const LABEL_PROBE_INTERVAL: &str = "pss.probe-interval-ms";
/// Label: probe connect timeout in milliseconds.
pub const LABEL_PROBE_TIMEOUT: &str = "pss.probe-timeout-ms";

/// Probe interval and timeout when the spec sets none: the model's one definition.
pub use pss_core::model::{DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT};

/// CFS period used for CPU limits (Podman's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// A pod's TCP readiness probe, as recorded in its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub container_port: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Probe {
    /// The probe of a pod from its labels (`None`: no ports, ready = running).
    fn from_labels(pod: &PodInspect) -> Option<Probe> {
        let container_port = pod.label(LABEL_PROBE_PORT)?.parse().ok()?;
        let ms = |key, default: Duration| {
            pod.label(key)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(default)
        };
        Some(Probe {
            container_port,
            interval: ms(LABEL_PROBE_INTERVAL, DEFAULT_PROBE_INTERVAL),
            timeout: ms(LABEL_PROBE_TIMEOUT, DEFAULT_PROBE_TIMEOUT),
        })
    }
}

/// What the agent remembers of a pod beyond Podman's state.
#[derive(Debug, Default, Clone, Copy)]
struct Tracked {
    /// Last readiness verdict of the readiness loop.
    ready: bool,
    /// A StopPod is in progress: its containers' deaths are expected, not failures to report.
    stopping: bool,
}

/// Where pods run: Podman, or the in-memory simulator.
// One per node, never moved around: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Podman(Podman),
    Sim(SimPods),
}

/// The agent's pod runtime: Podman (or the simulator) plus the node's identity.
pub struct Runtime {
    backend: Backend,
    /// This node's name (the `pss.node` label of its pods).
    node: String,
    /// Host part of the pods' addresses.
    advertise: String,
    /// Host address pods' ports are published on (`None`: every address).
    publish: Option<String>,
    /// Per-pod agent state, by pod ID.
    tracked: Mutex<HashMap<String, Tracked>>,
    /// The last known reports, which heartbeats send (see [`crate::snapshot`]).
    snapshot: Arc<NodeSnapshot>,
    /// Which resource limits Podman here can enforce (rootless: maybe none); the others are
    /// left out of the containers.
    limits: LimitSupport,
    /// Per-pod operation locks: a RunPod and a StopPod (or two RunPods: the controller retries)
    /// of one pod never interleave.
    ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Runtime {
    /// A runtime whose pods' ports are published on `advertise` (see
    /// [`Runtime::with_publish_address`]).
    pub fn new(podman: Podman, node: impl Into<String>, advertise: impl Into<String>) -> Self {
        Self::with_backend(Backend::Podman(podman), node, advertise)
    }

    /// A simulated node: pods run in memory (see [`crate::sim`]).
    pub fn sim(node: impl Into<String>, advertise: impl Into<String>) -> Self {
        Self::with_backend(Backend::Sim(SimPods::default()), node, advertise)
    }

    fn with_backend(
        backend: Backend,
        node: impl Into<String>,
        advertise: impl Into<String>,
    ) -> Self {
        let advertise = advertise.into();
        Self {
            backend,
            node: node.into(),
            publish: Some(advertise.clone()),
            advertise,
            snapshot: Arc::new(NodeSnapshot::default()),
            tracked: Mutex::new(HashMap::new()),
            ops: Mutex::new(HashMap::new()),
            limits: LimitSupport::default(),
        }
    }

    /// Publishes pods' ports on `address` instead of the advertise address; `None` or
    /// `"0.0.0.0"` publishes on every host address (Podman's default).
    pub fn with_publish_address(mut self, address: Option<String>) -> Self {
        self.publish = address.filter(|a| !a.is_empty() && a != "0.0.0.0");
        self
    }

    /// The node's last known state (what heartbeats send).
    pub fn snapshot(&self) -> Arc<NodeSnapshot> {
        self.snapshot.clone()
    }

    /// Creates containers with only the limits `limits` says Podman enforces (default: all).
    pub fn with_limit_support(mut self, limits: LimitSupport) -> Self {
        self.limits = limits;
        self
    }

    /// Podman, `None` on a simulated node.
    pub fn podman(&self) -> Option<&Podman> {
        match &self.backend {
            Backend::Podman(podman) => Some(podman),
            Backend::Sim(_) => None,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Podman, or an error on a simulated node.
    fn require_podman(&self) -> Result<&Podman> {
        self.podman()
            .ok_or_else(|| Error::Invalid("this node runs simulated pods, not Podman".into()))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Creates and starts the pod, or returns it when it already exists (idempotent). An image
    /// that is not present locally gives a FAILED report with reason `ImageNotFound` and
    /// creates nothing; a failure half-way removes what was created.
    pub async fn run_pod(&self, req: &RunPodRequest) -> Result<PodReport> {
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::Invalid("RunPod without a pod spec".into()))?;
        if req.id.is_empty() || spec.containers.is_empty() {
            return Err(Error::Invalid(format!(
                "pod {:?} needs an ID and at least one container",
                req.id
            )));
        }
        let guard = self.lock_pod(&req.id).await;
        let result = self.run_pod_locked(req).await;
        if let Ok(report) = &result {
            self.snapshot.update(report.clone());
        }
        drop(guard);
        self.release_lock(&req.id);
        result
    }

    async fn run_pod_locked(&self, req: &RunPodRequest) -> Result<PodReport> {
        let podman = match &self.backend {
            Backend::Podman(podman) => podman,
            Backend::Sim(sim) => {
                // Running and ready at once: the readiness loop finds nothing to flip.
                let report = sim.run(req, &self.advertise);
                self.set_ready(&req.id, true);
                return Ok(report);
            }
        };
        if let Some(pod) = podman.inspect_pod(&req.id).await? {
            if !self.owns(&pod) {
                return Err(Error::Invalid(format!(
                    "a Podman pod named {:?} exists and is not a PSS pod of node {:?}",
                    req.id, self.node
                )));
            }
            if let Some(report) = self.report(&req.id).await? {
                let ended = report.phase == PodPhase::Failed as i32
                    || report.phase == PodPhase::Succeeded as i32;
                if !ended {
                    return Ok(report);
                }
                if report.spec_hash == req.spec_hash {
                    // Restart in place, as Kubernetes restarts a crashed container: the infra
                    // container keeps the network namespace and the host ports, so the pod's
                    // address does not change and no pod has to be created.
                    podman.start_pod(&req.id).await?;
                    tracing::info!(pod = %req.id, "pod restarted in place");
                    return self.report(&req.id).await?.ok_or_else(|| {
                        Error::Podman(PodmanError::NotFound {
                            message: format!(
                                "pod {} vanished right after it was restarted",
                                req.id
                            ),
                        })
                    });
                }
                // It ended and runs an old spec: make room for the new one.
                podman.remove_pod(&req.id).await?;
                self.forget(&req.id);
            }
        }

        let spec = req.spec.as_ref().expect("checked by run_pod");
        for c in &spec.containers {
            match podman.image_exists(&c.image).await {
                Ok(()) => {}
                Err(PodmanError::NotFound { message }) => {
                    tracing::warn!(pod = %req.id, image = %c.image, "image not found locally");
                    return Ok(self.failed_report(
                        req,
                        "ImageNotFound",
                        format!("image {:?}: {message}", c.image),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }

        match self.create(podman, req).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(pod = %req.id, error = %e, "creating the pod failed; removing what was created");
                if let Err(rm) = podman.remove_pod(&req.id).await {
                    tracing::warn!(pod = %req.id, error = %rm, "cleanup after a failed create");
                }
                self.forget(&req.id);
                return Ok(self.failed_report(req, "CreateFailed", e.to_string()));
            }
        }
        tracing::info!(pod = %req.id, workload = %req.workload, "pod started");
        self.report(&req.id).await?.ok_or_else(|| {
            Error::Podman(PodmanError::NotFound {
                message: format!("pod {} vanished right after it was started", req.id),
            })
        })
    }

    async fn create(&self, podman: &Podman, req: &RunPodRequest) -> Result<()> {
        let spec = req.spec.as_ref().expect("checked by run_pod");
        let mut labels = HashMap::from([
            (LABEL_POD.to_string(), req.id.clone()),
            (LABEL_WORKLOAD.to_string(), req.workload.clone()),
            (LABEL_NODE.to_string(), self.node.clone()),
            (LABEL_SPEC_HASH.to_string(), req.spec_hash.to_string()),
        ]);
        let probe = spec.readiness_probe.unwrap_or_default();
        let probe_port = if probe.port != 0 {
            Some(probe.port)
        } else {
            spec.ports.first().map(|p| p.container_port)
        };
        if let Some(port) = probe_port {
            labels.insert(LABEL_PROBE_PORT.into(), port.to_string());
            if probe.interval_ms > 0 {
                labels.insert(LABEL_PROBE_INTERVAL.into(), probe.interval_ms.to_string());
            }
            if probe.timeout_ms > 0 {
                labels.insert(LABEL_PROBE_TIMEOUT.into(), probe.timeout_ms.to_string());
            }
        }
        if spec.containers.iter().any(|c| c.liveness_probe.is_some()) {
            // Marks the pod so the liveness loop inspects only pods that have probes.
            labels.insert(crate::liveness::LABEL_LIVENESS.into(), "1".into());
        }
        let portmappings = spec
            .ports
            .iter()
            .map(|p| {
                let container_port = u16::try_from(p.container_port).map_err(|_| {
                    Error::Invalid(format!("container port {} out of range", p.container_port))
                })?;
                let protocol = if p.protocol.is_empty() {
                    "tcp".to_string()
                } else {
                    p.protocol.to_lowercase()
                };
                Ok(PortMapping {
                    container_port,
                    host_port: 0,
                    protocol,
                    host_ip: self.publish.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.tracked
            .lock()
            .expect("tracked lock")
            .insert(req.id.clone(), Tracked::default());
        podman
            .create_pod(&PodCreate {
                name: req.id.clone(),
                labels: labels.clone(),
                portmappings,
            })
            .await?;

        for c in &spec.containers {
            let mut labels = labels.clone();
            labels.insert(LABEL_CONTAINER.into(), c.name.clone());
            // The pod's marker is not a probe: only containers with one carry the label.
            labels.remove(crate::liveness::LABEL_LIVENESS);
            if let Some(probe) = &c.liveness_probe {
                labels.insert(
                    crate::liveness::LABEL_LIVENESS.into(),
                    crate::liveness::LivenessSpec::from_proto(probe).to_label(),
                );
            }
            let (entrypoint, command) = match (c.command.is_empty(), c.args.is_empty()) {
                (false, _) => (Some(c.command.clone()), Some(c.args.clone())),
                (true, false) => (None, Some(c.args.clone())),
                (true, true) => (None, None),
            };
            // Limits: the container's own, else its requests (the seed's flat form).
            let resources = c.limits.or(c.resources).unwrap_or_default();
            let limits = ResourceLimits {
                cpu: (resources.cpu_millis > 0).then(|| CpuLimits {
                    quota: i64::try_from(resources.cpu_millis * CPU_PERIOD_US / 1000)
                        .unwrap_or(i64::MAX),
                    period: CPU_PERIOD_US,
                }),
                memory: (resources.memory_bytes > 0).then(|| MemoryLimits {
                    limit: i64::try_from(resources.memory_bytes).unwrap_or(i64::MAX),
                }),
            };
            let create = ContainerCreate {
                name: format!("{}-{}", req.id, c.name),
                image: c.image.clone(),
                pod: req.id.clone(),
                entrypoint,
                command,
                env: c
                    .env
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone()))
                    .collect(),
                labels,
                resource_limits: self.limits.apply(limits),
                init: true,
            };
            podman.create_container(&create).await?;
        }
        Ok(podman.start_pod(&req.id).await?)
    }

    /// A FAILED report for a pod that could not be created.
    fn failed_report(&self, req: &RunPodRequest, reason: &str, message: String) -> PodReport {
        PodReport {
            id: req.id.clone(),
            workload: req.workload.clone(),
            phase: PodPhase::Failed as i32,
            reason: reason.to_string(),
            message,
            spec_hash: req.spec_hash,
            ..Default::default()
        }
    }

    /// Stops the pod (SIGTERM, SIGKILL after `grace`) and removes it with its containers.
    /// `Ok(false)` when there was no such pod (idempotent).
    pub async fn stop_pod(&self, id: &str, grace: Duration) -> Result<bool> {
        let guard = self.lock_pod(id).await;
        self.tracked
            .lock()
            .expect("tracked lock")
            .entry(id.to_string())
            .or_default()
            .stopping = true;
        let result = async {
            let podman = match &self.backend {
                Backend::Podman(podman) => podman,
                Backend::Sim(sim) => return Ok(sim.stop(id)),
            };
            // Only this node's PSS pods: never another agent's (two agents may share one
            // Podman) nor a pod PSS did not make.
            if self.inspect_own(id).await?.is_none() {
                return Ok(false);
            }
            let existed = podman.stop_pod(id, grace).await?;
            let removed = podman.remove_pod(id).await?;
            Ok(existed || removed)
        }
        .await;
        if result.is_ok() {
            self.snapshot.remove(id);
        }
        match &result {
            Ok(true) => tracing::info!(pod = %id, "pod stopped and removed"),
            Ok(false) => tracing::debug!(pod = %id, "StopPod: no such pod"),
            Err(e) => tracing::warn!(pod = %id, error = %e, "StopPod failed"),
        }
        self.forget(id);
        drop(guard);
        self.release_lock(id);
        result
    }

    async fn lock_pod(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .ops
            .lock()
            .expect("ops lock")
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Drops the pod's lock entry when nobody else holds or waits for it.
    fn release_lock(&self, id: &str) {
        let mut ops = self.ops.lock().expect("ops lock");
        if ops.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            ops.remove(id);
        }
    }

    fn forget(&self, id: &str) {
        self.tracked.lock().expect("tracked lock").remove(id);
    }

    /// Whether `pod` is a PSS pod of this node.
    fn owns(&self, pod: &PodInspect) -> bool {
        pod.label(LABEL_NODE) == Some(self.node.as_str()) && pod.label(LABEL_POD).is_some()
    }

    /// The pod if it exists and is a PSS pod of this node (Podman only).
    pub async fn inspect_own(&self, id: &str) -> Result<Option<PodInspect>> {
        Ok(self
            .require_podman()?
            .inspect_pod(id)
            .await?
            .filter(|p| self.owns(p)))
    }

    /// True while a StopPod for `id` is in progress.
    pub fn is_stopping(&self, id: &str) -> bool {
        self.tracked
            .lock()
            .expect("tracked lock")
            .get(id)
            .is_some_and(|t| t.stopping)
    }

    /// Records the readiness verdict; returns true when it flipped.
    pub fn set_ready(&self, id: &str, ready: bool) -> bool {
        let mut tracked = self.tracked.lock().expect("tracked lock");
        let t = tracked.entry(id.to_string()).or_default();
        let flipped = t.ready != ready;
        t.ready = ready;
        flipped
    }

    /// IDs of the PSS pods on this node, as Podman lists them.
    pub async fn pod_ids(&self) -> Result<Vec<String>> {
        let podman = match &self.backend {
            Backend::Podman(podman) => podman,
            Backend::Sim(sim) => return Ok(sim.ids()),
        };
        let pods = podman
            .list_pods(&format!("{LABEL_NODE}={}", self.node))
            .await?;
        Ok(pods.into_iter().map(|p| p.name).collect())
    }

    /// Reports of every PSS pod on this node (without usage figures, except simulated ones).
    pub async fn reports(&self) -> Result<Vec<PodReport>> {
        let mut out = Vec::new();
        for id in self.pod_ids().await? {
            if let Some(r) = self.report(&id).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The pod as Podman has it, or `None` when it does not exist.
    pub async fn report(&self, id: &str) -> Result<Option<PodReport>> {
        Ok(self.report_and_probe(id).await?.map(|(r, _)| r))
    }

    /// Every running container of this node's pods that has a liveness probe.
    pub async fn liveness_targets(&self) -> Result<Vec<crate::liveness::Target>> {
        let Backend::Podman(podman) = &self.backend else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // One list call; only pods marked as having a probe are inspected further.
        let probed = podman
            .list_pods(&format!("{LABEL_NODE}={}", self.node))
            .await?
            .into_iter()
            .filter(|p| {
                p.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(crate::liveness::LABEL_LIVENESS))
            })
            .map(|p| p.name);
        for id in probed {
            let Some(pod) = self.inspect_own(&id).await? else {
                continue;
            };
            let published = pod.published_ports();
            for c in pod.app_containers() {
                let Some(info) = podman.inspect_container(&c.id).await? else {
                    continue;
                };
                let Some(spec) = info
                    .label(crate::liveness::LABEL_LIVENESS)
                    .and_then(crate::liveness::LivenessSpec::from_label)
                else {
                    continue;
                };
                let address = spec.tcp_port.and_then(|port| {
                    published
                        .iter()
                        .find(|(cp, _, _)| *cp == port)
                        .map(|(_, _, hp)| format!("{}:{hp}", self.advertise))
                });
                out.push(crate::liveness::Target {
                    pod: id.clone(),
                    container_id: info.id.clone(),
                    container: info
                        .label(LABEL_CONTAINER)
                        .unwrap_or(info.name.as_str())
                        .to_string(),
                    running: info.state.status == ContainerState::Running,
                    spec,
                    address,
                });
            }
        }
        Ok(out)
    }

    /// The pod's report and its readiness probe.
    pub async fn report_and_probe(&self, id: &str) -> Result<Option<(PodReport, Option<Probe>)>> {
        let podman = match &self.backend {
            Backend::Podman(podman) => podman,
            // No probe: a simulated pod is ready while it runs.
            Backend::Sim(sim) => return Ok(sim.report(id).map(|r| (r, None))),
        };
        let Some(pod) = self.inspect_own(id).await? else {
            return Ok(None);
        };
        let mut containers = Vec::new();
        let mut started_at_ms = 0i64;
        for c in pod.app_containers() {
            let Some(info) = podman.inspect_container(&c.id).await? else {
                continue;
            };
            let name = info
                .label(LABEL_CONTAINER)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    info.name
                        .strip_prefix(&format!("{id}-"))
                        .unwrap_or(&info.name)
                        .to_string()
                });
            if let Some(ms) = rfc3339_ms(&info.state.started_at) {
                started_at_ms = if started_at_ms == 0 {
                    ms
                } else {
                    started_at_ms.min(ms)
                };
            }
            containers.push(ContainerStatus {
                name,
                id: info.id.clone(),
                state: info.state.status.as_str().to_string(),
                exit_code: info.state.exit_code,
                oom_killed: info.state.oom_killed,
            });
        }
        let (phase, reason, message) = derive_phase(&containers);
        let ready = phase == PodPhase::Running
            && self
                .tracked
                .lock()
                .expect("tracked lock")
                .get(id)
                .is_some_and(|t| t.ready && !t.stopping);
        let addresses = pod
            .published_ports()
            .into_iter()
            .map(|(container_port, _, host_port)| PortAddress {
                container_port: u32::from(container_port),
                address: format!("{}:{host_port}", self.advertise),
            })
            .collect();
        let report = PodReport {
            id: id.to_string(),
            workload: pod.label(LABEL_WORKLOAD).unwrap_or_default().to_string(),
            phase: phase as i32,
            ready,
            addresses,
            reason,
            message,
            containers,
            cpu_percent: 0.0,
            memory_bytes: 0,
            started_at_ms,
            spec_hash: pod
                .label(LABEL_SPEC_HASH)
                .and_then(|h| h.parse().ok())
                .unwrap_or(0),
        };
        Ok(Some((report, Probe::from_labels(&pod))))
    }
}

/// Unix milliseconds of an RFC 3339 time; `None` for Podman's zero time ("never").
fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok().filter(|&ms| ms > 0)
}

/// The pod's phase from its containers, with a reason and message when it is not running:
///
/// - any container OOM-killed → FAILED `OOMKilled`; any exited non-zero → FAILED `Error`;
/// - every container exited 0 → SUCCEEDED `Completed`;
/// - every container running (or some running, the rest exited 0) → RUNNING;
/// - otherwise (created, not yet started) → STARTING.
pub fn derive_phase(containers: &[ContainerStatus]) -> (PodPhase, String, String) {
    if containers.is_empty() {
        return (
            PodPhase::Unknown,
            "NoContainers".into(),
            "the pod has no containers".into(),
        );
    }
    let state = |c: &ContainerStatus| ContainerState::parse(&c.state);
    let terminated = |c: &ContainerStatus| state(c).is_terminated();
    if let Some(c) = containers.iter().find(|c| c.oom_killed) {
        return (
            PodPhase::Failed,
            "OOMKilled".into(),
            format!("container {} was killed: out of memory", c.name),
        );
    }
    if let Some(c) = containers
        .iter()
        .find(|c| terminated(c) && c.exit_code != 0)
    {
        return (
            PodPhase::Failed,
            "Error".into(),
            format!("container {} exited with code {}", c.name, c.exit_code),
        );
    }
    if containers.iter().all(terminated) {
        return (
            PodPhase::Succeeded,
            "Completed".into(),
            "every container exited 0".into(),
        );
    }
    if containers
        .iter()
        .all(|c| state(c) == ContainerState::Running || terminated(c))
    {
        return (PodPhase::Running, String::new(), String::new());
    }
    (PodPhase::Starting, String::new(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, state: &str, exit_code: i32, oom: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            id: name.into(),
            state: state.into(),
            exit_code,
            oom_killed: oom,
        }
    }

    #[test]
    fn phase_follows_the_containers() {
        assert_eq!(
            derive_phase(&[c("a", "running", 0, false)]).0,
            PodPhase::Running
        );
        assert_eq!(
            derive_phase(&[c("a", "running", 0, false), c("b", "created", 0, false)]).0,
            PodPhase::Starting
        );
        let (phase, reason, msg) =
            derive_phase(&[c("a", "running", 0, false), c("b", "exited", 137, false)]);
        assert_eq!((phase, reason.as_str()), (PodPhase::Failed, "Error"));
        assert!(msg.contains("b exited with code 137"), "{msg}");
        assert_eq!(derive_phase(&[c("a", "exited", 137, true)]).1, "OOMKilled");
        assert_eq!(
            derive_phase(&[c("a", "exited", 0, false), c("b", "stopped", 0, false)]).0,
            PodPhase::Succeeded
        );
        assert_eq!(
            derive_phase(&[c("a", "exited", 0, false), c("b", "running", 0, false)]).0,
            PodPhase::Running
        );
        assert_eq!(derive_phase(&[]).0, PodPhase::Unknown);
    }

    #[test]
    fn podman_times_parse_and_zero_time_is_none() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            rfc3339_ms("2026-11-25T12:10:33.187184747Z").map(|ms| ms > 0),
            Some(true)
        );
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms(""), None);
    }
}
