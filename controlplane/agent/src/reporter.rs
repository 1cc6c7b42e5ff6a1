//! The agent's side of the `NodeRegistry` conversation with the controller:
//!
//! - **Register** at start with every PSS pod already on the node (adoption: a restarted agent
//!   keeps its pods), retried with exponential back-off and jitter until the controller answers;
//!   pods in the answer's `stop_pods` are stopped.
//! - **Heartbeat** every metrics interval, on a timer of its own: node metrics (read from
//!   `/proc`, see [`crate::metrics`]) and the last known pod reports and runtime health from
//!   the [`crate::snapshot`]. A heartbeat never waits on Podman: it is the node's lease, and a
//!   slow Podman is reported as such (`NodeMetrics.runtime_unresponsive`), never by silence.
//!   `stop_pods` are stopped, `known = false` registers again.
//! - **ReportPodStatus** for every update the event watcher and readiness loop produce, at
//!   once and independently of heartbeats; the ack's `stop_pods` are stopped.
//!
//! The controller being away never touches the pods: calls fail, are logged on the first
//! failure, and the next heartbeat carries the full state once it is back. With several
//! controllers ([`Controllers`]) a call that cannot reach the one in use moves every report to
//! the next one (a heartbeat tries the next at once); a controller that does not know the node
//! answers the next heartbeat with `known = false`, and the agent registers there.

use std::sync::Arc;
use std::time::Duration;

use pss_proto::auth::BearerToken;
use pss_proto::v1::node_registry_client::NodeRegistryClient;
use pss_proto::v1::{HeartbeatRequest, PodReport, PodStatusUpdate, RegisterNodeRequest};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::metrics::NodeSampler;
use crate::runtime::Runtime;
use crate::snapshot::{NodeSnapshot, RuntimeHealth};
use crate::{Error, Result};
use pss_plumbing::controllers::Rotation;
use pss_plumbing::Backoff;

/// Grace period for pods the controller asks this node to drop (orphans after a partition).
pub const ORPHAN_STOP_GRACE: Duration = Duration::from_secs(5);

/// gRPC client of the controller's node registry, with the shared token attached.
pub type RegistryClient = NodeRegistryClient<InterceptedService<Channel, BearerToken>>;

/// How long connecting to one controller may take: a dead controller costs a call at most
/// this (a refused connection costs nothing), then the next address is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a heartbeat or status push may wait for a controller's answer before that
/// controller counts as failed: the heartbeat is the node's lease, and must not wait on a
/// hung controller.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a registration may wait (it carries every pod of the node).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

/// A lazily connected client for `controller` (`host:port` or a URI); the channel reconnects by
/// itself after the controller comes back.
pub fn connect(
    controller: &str,
    token: &str,
    dialer: &pss_security::tls::Dialer,
) -> Result<RegistryClient> {
    let endpoint = dialer
        .endpoint(controller)
        .map_err(|e| Error::Invalid(format!("controller address {controller:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REGISTER_TIMEOUT)
        .tcp_nodelay(true);
    let token = BearerToken::new(token)?;
    Ok(NodeRegistryClient::with_interceptor(
        dialer.lazy(endpoint),
        token,
    ))
}

/// The controllers an agent reports to (`--controller a:50051,b:50051`): one lazily
/// connected client per address, and the one in use. Registration, heartbeats and status
/// pushes go to the one in use; a call that fails because the controller cannot be reached
/// (or does not answer in time) moves every caller to the next address, round robin.
pub struct Controllers {
    clients: Vec<RegistryClient>,
    rotation: Rotation,
}

impl Controllers {
    /// Clients for every address of `list` (one address, or several separated by commas;
    /// checked here as `--controller` is).
    pub fn connect(
        list: &str,
        token: &str,
        dialer: &pss_security::tls::Dialer,
    ) -> Result<Arc<Controllers>> {
        let addresses = pss_plumbing::controllers::parse_list(list)
            .map_err(|e| Error::Config(format!("--controller: {e}")))?;
        let clients = addresses
            .iter()
            .map(|a| connect(a, token, dialer))
            .collect::<Result<_>>()?;
        Ok(Arc::new(Controllers {
            clients,
            rotation: Rotation::new(addresses),
        }))
    }

    /// How many controllers there are.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Never true (a list has at least one address).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The controller in use: its index, address and client.
    pub fn current(&self) -> (usize, String, RegistryClient) {
        let (i, address) = self.rotation.current();
        (i, address.to_string(), self.clients[i].clone())
    }

    /// Sorts out a failed call to controller `index`: when the controller could not be
    /// reached (or did not answer in time) the next one is used from now on. True when it
    /// moved.
    pub fn failed(&self, index: usize, status: &tonic::Status) -> bool {
        if !is_unreachable(status) {
            return false;
        }
        self.rotation.failed(index, &reason(status)) != index
    }
}

/// Whether a failed call says the controller could not be reached or did not answer (worth
/// another controller), rather than that it answered with a refusal.
pub fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) || (status.code() == tonic::Code::Unknown && status.message().contains("transport"))
}

fn reason(status: &tonic::Status) -> String {
    let mut m = status.message().to_string();
    if m.len() > 200 {
        let mut end = 200;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
    }
    format!("{:?}: {m}", status.code())
}

/// `call`, or DeadlineExceeded after `limit`.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = std::result::Result<T, tonic::Status>>,
) -> std::result::Result<T, tonic::Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {limit:?}"
        ))),
    }
}

/// Everything the reporter sends about the node itself.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    /// `host:port` the controller dials back.
    pub agent_address: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Resource limits Podman here cannot enforce (see [`crate::cgroups`]); empty: none.
    pub limits_unenforced: String,
    /// The node's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Drives registration, heartbeats and status pushes until shutdown.
pub struct Reporter {
    /// Where reports go (the controller in use, and the others to move to).
    controllers: Arc<Controllers>,
    runtime: Arc<Runtime>,
    node: NodeIdentity,
    metrics_interval: Duration,
    /// The refresher's deadline (see [`crate::snapshot`]).
    runtime_deadline: Duration,
    backoff: Backoff,
    node_sampler: NodeSampler,
    /// What heartbeats send about the pods and the runtime.
    snapshot: Arc<NodeSnapshot>,
    /// Whether the last call reached the controller (only changes are logged).
    connected: bool,
    /// Registered, and the last call reached the controller: what `/readyz` reports.
    reachable: Arc<std::sync::atomic::AtomicBool>,
    /// The controller the last registration attempt went to (`None`: it failed before the
    /// call, e.g. reading the pods).
    registering: Option<usize>,
}

impl Reporter {
    pub fn new(
        controllers: Arc<Controllers>,
        runtime: Arc<Runtime>,
        node: NodeIdentity,
        metrics_interval: Duration,
        runtime_deadline: Duration,
        backoff: Backoff,
    ) -> Self {
        Self {
            controllers,
            snapshot: runtime.snapshot(),
            runtime,
            node,
            metrics_interval,
            runtime_deadline,
            backoff,
            node_sampler: NodeSampler::default(),
            connected: true,
            reachable: Arc::default(),
            registering: None,
        }
    }

    /// True once registered while the controller answers (the agent's `/readyz`).
    /// Reports reachability through `flag` (an admin server may be serving it already, e.g.
    /// while the agent was still joining).
    pub fn with_reachable(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.reachable = flag;
        self
    }

    pub fn reachable(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.reachable.clone()
    }

    fn set_reachable(&self, yes: bool) {
        self.reachable
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Registers, then heartbeats and forwards `updates` until `shutdown`.
    pub async fn run(mut self, updates: mpsc::Receiver<PodReport>, shutdown: CancellationToken) {
        // Prime the CPU counters so the first heartbeat already carries deltas.
        self.node_sampler.sample();
        if !self.register(&shutdown).await {
            return;
        }
        // Status pushes run beside the heartbeats so that a slow controller answer to one
        // never delays the other.
        let pusher = tokio::spawn(push_updates(
            self.controllers.clone(),
            self.runtime.clone(),
            self.node.name.clone(),
            updates,
            shutdown.clone(),
        ));
        let mut tick = tokio::time::interval_at(
            Instant::now() + self.metrics_interval,
            self.metrics_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // A heartbeat to a hung controller must not hold up shutdown.
                    let alive = tokio::select! {
                        _ = shutdown.cancelled() => false,
                        alive = self.heartbeat(&shutdown) => alive,
                    };
                    if !alive {
                        break;
                    }
                }
            }
        }
        let _ = pusher.await;
    }

    /// Registers until the controller answers (false: shut down first).
    async fn register(&mut self, shutdown: &CancellationToken) -> bool {
        let mut attempt = 0u32;
        loop {
            match self.try_register().await {
                Ok((pods, stop)) => {
                    tracing::info!(node = %self.node.name, address = %self.node.agent_address, pods, unwanted = stop.len(), "registered with the controller");
                    self.connected = true;
                    self.set_reachable(true);
                    self.stop_pods(stop);
                    return true;
                }
                Err(e) => {
                    let delay = self.backoff.next_delay(attempt, &mut rand::rng());
                    tracing::warn!(error = %e, retry_in = ?delay, "registration failed");
                    if let (Error::Rpc(status), Some(index)) = (&e, self.registering) {
                        self.controllers.failed(index, status);
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One registration; returns how many pods it reported and the pods to stop. The pods are
    /// read from Podman (the controller takes a pod missing from a registration as gone, so
    /// they must be current); this is the one report that waits on Podman, and it is not a
    /// heartbeat: the node is not registered (or was forgotten) until it succeeds.
    async fn try_register(&mut self) -> Result<(usize, Vec<String>)> {
        self.registering = None;
        let pods = crate::readiness::probe_all(&self.runtime).await?;
        let started = self.snapshot.begin_refresh();
        self.snapshot.install(started, pods.clone());
        tracing::debug!(
            pods = pods.len(),
            "registering with the pods already on this node"
        );
        let count = pods.len();
        let request = RegisterNodeRequest {
            labels: self.node.labels.clone().into_iter().collect(),
            name: self.node.name.clone(),
            cpu_millis: self.node.cpu_millis,
            memory_bytes: self.node.memory_bytes,
            agent_address: self.node.agent_address.clone(),
            pods,
            limits_unenforced: self.node.limits_unenforced.clone(),
        };
        let (index, address, mut client) = self.controllers.current();
        self.registering = Some(index);
        tracing::debug!(controller = %address, "registering");
        let stop = within(REGISTER_TIMEOUT, client.register(request))
            .await?
            .into_inner()
            .stop_pods;
        Ok((count, stop))
    }

    /// One heartbeat (false: shut down while registering again). Reads nothing from Podman.
    async fn heartbeat(&mut self, shutdown: &CancellationToken) -> bool {
        let started = std::time::Instant::now();
        let mut metrics = self.node_sampler.sample();
        // The refresher runs every interval and gives up waiting after its deadline; a snapshot
        // older than two intervals plus that means the refresher itself is stuck.
        let max_age = 2 * self.metrics_interval + self.runtime_deadline;
        if let RuntimeHealth::Unresponsive { since_ms, reason } =
            self.snapshot.health_at(std::time::Instant::now(), max_age)
        {
            metrics.runtime_unresponsive = true;
            metrics.runtime_unresponsive_since_ms = since_ms;
            metrics.runtime_reason = reason;
        }
        let request = HeartbeatRequest {
            node: self.node.name.clone(),
            metrics: Some(metrics),
            pods: self.snapshot.pods(),
        };
        let count = request.pods.len();
        // The controller in use first; one that cannot be reached passes the lease on to the
        // next at once (each tried at most once, and never for longer than an interval).
        let attempts = self.controllers.len();
        for attempt in 1..=attempts {
            let (index, address, mut client) = self.controllers.current();
            match within(CALL_TIMEOUT, client.heartbeat(request.clone())).await {
                Ok(response) => {
                    tracing::debug!(pods = count, controller = %address, took = ?started.elapsed(), "heartbeat");
                    self.reached();
                    let response = response.into_inner();
                    self.stop_pods(response.stop_pods);
                    if !response.known {
                        tracing::info!(controller = %address, "the controller does not know this node; registering again");
                        return self.register(shutdown).await;
                    }
                    return true;
                }
                Err(status) => {
                    let moved = self.controllers.failed(index, &status);
                    if !moved || attempt == attempts || started.elapsed() >= self.metrics_interval {
                        self.unreachable("heartbeat", &status);
                        break;
                    }
                }
            }
        }
        true
    }

    fn reached(&mut self) {
        self.set_reachable(true);
        if !self.connected {
            tracing::info!("controller reachable again");
            self.connected = true;
        }
    }

    fn unreachable(&mut self, what: &str, status: &tonic::Status) {
        self.set_reachable(false);
        if self.connected {
            tracing::warn!(error = %status, "{what} failed; pods keep running, retrying every interval");
            self.connected = false;
        } else {
            tracing::debug!(error = %status, "{what} failed");
        }
    }

    fn stop_pods(&self, ids: Vec<String>) {
        stop_unwanted(&self.runtime, ids);
    }
}

/// Pushes every update to the controller as it comes, until `shutdown`. A failed push is not
/// retried: the next heartbeat carries the pod's state anyway.
async fn push_updates(
    controllers: Arc<Controllers>,
    runtime: Arc<Runtime>,
    node: String,
    mut updates: mpsc::Receiver<PodReport>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let pod = tokio::select! {
            _ = shutdown.cancelled() => return,
            pod = updates.recv() => match pod {
                Some(pod) => pod,
                None => return,
            },
        };
        // The next heartbeats carry it too, even while Podman is slow.
        runtime.snapshot().update(pod.clone());
        let id = pod.id.clone();
        let update = PodStatusUpdate {
            node: node.clone(),
            pod: Some(pod),
        };
        let (index, _, mut client) = controllers.current();
        match within(CALL_TIMEOUT, client.report_pod_status(update)).await {
            Ok(ack) => {
                failing = false;
                tracing::debug!(pod = %id, "status pushed");
                stop_unwanted(&runtime, ack.into_inner().stop_pods);
            }
            Err(status) if !failing => {
                failing = true;
                controllers.failed(index, &status);
                tracing::warn!(pod = %id, error = %status, "status push failed; the next heartbeat carries it");
            }
            Err(status) => {
                controllers.failed(index, &status);
                tracing::debug!(pod = %id, error = %status, "status push failed")
            }
        }
    }
}

/// Stops pods the controller does not want here, in the background (a slow stop must not
/// delay heartbeats or pushes).
fn stop_unwanted(runtime: &Arc<Runtime>, ids: Vec<String>) {
    for id in ids {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            tracing::info!(pod = %id, "the controller does not want this pod here; stopping it");
            if let Err(e) = runtime.stop_pod(&id, ORPHAN_STOP_GRACE).await {
                tracing::warn!(pod = %id, error = %e, "stopping an unwanted pod");
            }
        });
    }
}
