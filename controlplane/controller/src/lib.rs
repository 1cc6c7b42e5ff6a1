//! `pss-controller`: the control plane's gRPC server and control loops.
//!
//! - `operator.rs`: the `Operator` service pssctl talks to (apply, get, scale, autoscale,
//!   delete, logs).
//! - `registry.rs`: the `NodeRegistry` service agents talk to (register, heartbeat, pod status
//!   pushes), and how a pod report updates the controller's record.
//! - `endpoint_watch.rs`: the `EndpointWatch` service proxies subscribe to, fed by
//!   [`service_manager`] (one versioned endpoint snapshot per service).
//! - `executor.rs`: the reconciler's executor: gathers state, asks
//!   [`pss_core::reconciler::reconcile`], and executes the actions on agents.
//! - `liveness.rs`: the node liveness loop around [`pss_core::liveness`].
//! - `rollouts.rs`: after each pass, where every rollout stands (events, auto-revert).
//! - `autoscale_loop.rs`: the autoscaler loop around [`pss_core::autoscaler`].
//! - `agent_clients.rs`: gRPC clients for dialing agents back (mutual TLS: the controller's
//!   certificate, and the node's certificate checked before anything is sent).
//! - [`security`]: TLS set-up (own CA, brought certificates, or `--insecure`), the guard every
//!   call passes, revocations; `credentials.rs`: the `Credentials` service (join, renew, join
//!   tokens).
//! - `views.rs`: objects as clients see them (desired state with observed fields).
//! - `watch_hub.rs`: the `Watch` RPC's change sequence (list at a revision, then changes).
//! - `metrics.rs`: `--admin`'s `/metrics`, `/healthz`, `/readyz`, and the gRPC request counter.
//! - `leader.rs`: who runs the loops: always this controller on SQLite; on etcd, the one
//!   elected through a lease ([`serve_etcd`]), with every other controller serving reads,
//!   watches and writes from its copy of the state that follows etcd.
//!
//! Every decision is a pure function of `pss-core`; the modules here read the store, call it,
//! and write or send what it decided.
//!
//! [`serve`] runs all of it until a [`CancellationToken`] fires; the binary only parses flags.

mod agent_clients;
mod autoscale_loop;
mod credentials;
mod endpoint_watch;
mod error;
mod executor;
mod leader;
mod liveness;
mod metrics;
mod operator;
mod registry;
mod rollouts;
pub mod security;
pub mod service_manager;
mod views;
mod watch_hub;

pub use error::{Error, Result};
pub use leader::DEFAULT_TTL as DEFAULT_LEADER_TTL;
pub use security::TlsSetup;

use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1::credentials_server::CredentialsServer;
use pss_proto::v1::endpoint_watch_server::EndpointWatchServer;
use pss_proto::v1::node_registry_server::NodeRegistryServer;
use pss_proto::v1::operator_server::OperatorServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::service_manager::ServiceManager;
use pss_core::model::EventRecord;
use pss_core::text::cut_short;
use pss_plumbing::clock::now_ms;
use pss_store::{BatchWriter, CachedStore, EtcdStore, StateStore};

/// The default of every tunable of [`ControllerConfig`], defined once: `pss-controller`'s
/// flags show and use these.
pub mod defaults {
    use std::time::Duration;

    pub use pss_core::autoscaler::{
        DEFAULT_COOLDOWN as AUTOSCALE_COOLDOWN,
        DEFAULT_STABILIZATION_WINDOW as STABILIZATION_WINDOW,
    };
    /// Periodic resync on top of the event-driven passes.
    pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
    /// Autoscaler evaluation interval, and the agents' expected heartbeat interval.
    pub const METRICS_INTERVAL: Duration = Duration::from_secs(15);
    /// Heartbeats missed before a node is NotReady: the timeout is this many intervals.
    pub const NODE_TIMEOUT_INTERVALS: u32 = 3;
    /// Time a pod spends out of the endpoints before it is stopped.
    pub const DRAIN_PERIOD: Duration = Duration::from_secs(3);
    /// Grace period containers get before SIGKILL.
    pub const STOP_GRACE: Duration = Duration::from_secs(5);
}

/// Tunables of the controller (flags of `pss-controller`).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The seed's shared token: an operator credential (empty: none); with `--insecure` also
    /// sent when dialing agents.
    pub token: String,
    /// TLS: the controller's own CA (default), certificates brought, or plaintext.
    pub tls: TlsSetup,
    /// Names (DNS or IP) the controller's certificate carries beside `pss-controller`.
    pub tls_sans: Vec<String>,
    /// Lifetime of the certificates issued to members (and the most one may ask for).
    pub cert_ttl: Duration,
    /// Periodic resync on top of the event-driven triggers.
    pub reconcile_interval: Duration,
    /// How often the autoscaler evaluates (and the interval agents are expected to report at).
    pub metrics_interval: Duration,
    /// A node whose last heartbeat is older than this becomes NotReady and its pods Lost.
    pub node_timeout: Duration,
    /// How long a pod stays out of the endpoints before it is stopped (scale-down, delete).
    pub drain_period: Duration,
    /// Grace period the agent gives a pod's containers before SIGKILL.
    pub stop_grace: Duration,
    /// Minimum time between two autoscaling actions on a workload.
    pub autoscale_cooldown: Duration,
    /// Scale-down uses the highest recommendation over this window.
    pub stabilization_window: Duration,
    /// Bounds on what a request may ask for (`--max-replicas` sets `max_replicas`); stored
    /// objects outside them are reported and skipped, never executed.
    pub limits: pss_core::model::Limits,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`--admin`); `None`: nowhere.
    pub admin: Option<std::net::SocketAddr>,
    /// On etcd: the leader lease's TTL (a dead leader is replaced within about this long).
    pub leader_ttl: Duration,
}

impl ControllerConfig {
    /// Defaults of the seed README, with `token`; plaintext until [`ControllerConfig::tls`]
    /// says otherwise (the binary's default is [`TlsSetup::Auto`]).
    pub fn new(token: impl Into<String>) -> Self {
        ControllerConfig {
            token: token.into(),
            tls: TlsSetup::Insecure,
            tls_sans: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            cert_ttl: security::DEFAULT_CERT_TTL,
            reconcile_interval: defaults::RECONCILE_INTERVAL,
            metrics_interval: defaults::METRICS_INTERVAL,
            node_timeout: defaults::METRICS_INTERVAL * defaults::NODE_TIMEOUT_INTERVALS,
            drain_period: defaults::DRAIN_PERIOD,
            stop_grace: defaults::STOP_GRACE,
            autoscale_cooldown: defaults::AUTOSCALE_COOLDOWN,
            limits: pss_core::model::Limits::default(),
            stabilization_window: Duration::from_secs(300),
            admin: None,
            leader_ttl: leader::DEFAULT_TTL,
        }
    }
}

/// State shared by every service and loop of one controller.
/// Longest event object name kept (`kind/name`).
const MAX_EVENT_OBJECT_BYTES: usize = 256;
/// Longest event message kept.
const MAX_EVENT_MESSAGE_BYTES: usize = 1024;
/// Manifests parsed at the same time; more wait their turn (parsing runs on blocking threads,
/// never on the runtime's).
pub(crate) const PARSE_SLOTS: usize = 2;
/// RunPod calls to agents in flight at once, all nodes together: enough to keep every agent
/// busy, bounded so a pass that creates 100,000 pods does not open 100,000 calls.
pub(crate) const START_SLOTS: usize = 512;

pub(crate) struct Shared {
    /// Desired and observed state: `cache`, seen through the trait (reads from memory, writes
    /// through to SQLite).
    pub store: Arc<dyn StateStore>,
    /// The same in-memory state, for what only it offers (pods by node, the change feed).
    pub cache: Arc<CachedStore>,
    /// Group commit for the hot writes (pod records after RunPod, status reports).
    pub writer: BatchWriter,
    /// Bounds the RunPod calls in flight (see [`START_SLOTS`]).
    pub start_slots: Arc<tokio::sync::Semaphore>,
    pub config: ControllerConfig,
    /// Endpoint snapshots per service, fanned out to proxies.
    pub services: ServiceManager,
    /// Wakes the reconcile loop at once (apply, scale, delete, status change).
    pub trigger: Notify,
    /// Cached gRPC clients to agents.
    pub agents: agent_clients::AgentPool,
    /// TLS, the CA, revocations.
    pub security: security::Security,
    /// Autoscaler memory (recommendation history per policy) between evaluations.
    pub autoscale: autoscale_loop::AutoscaleMemory,
    /// Cancelled on shutdown; background tasks (drains, restarts) watch it.
    pub shutdown: CancellationToken,
    /// Pods with a start or stop task under way, so a pass never starts a second one.
    pub inflight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Bounds the manifests being parsed at once (see [`PARSE_SLOTS`]).
    pub parse_slots: tokio::sync::Semaphore,
    /// Workloads (name, generation) already reported as outside the limits, so each is
    /// reported once, not on every pass.
    pub reported_invalid: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    /// The change sequence watchers follow.
    pub watch: watch_hub::WatchHub,
    /// Whether this controller runs the loops (always, on SQLite; when elected, on etcd).
    pub leadership: leader::Leadership,
    /// Cancelled when the current term of leadership ends (or at shutdown): the loops and
    /// their tasks of that term stop.
    pub term: std::sync::Mutex<CancellationToken>,
    /// Following etcd: wakes the endpoint refresher on every change that came in.
    pub followed: Notify,
}

impl Shared {
    /// Records an event (and logs it). Its object and message are cut short: they may echo
    /// input (a source name, an address), and one event must never be large.
    pub fn event(&self, mut e: EventRecord) {
        if e.time_ms == 0 {
            e.time_ms = now_ms();
        }
        if e.object.len() > MAX_EVENT_OBJECT_BYTES {
            e.object = cut_short(&e.object, MAX_EVENT_OBJECT_BYTES).into_owned();
        }
        if e.message.len() > MAX_EVENT_MESSAGE_BYTES {
            e.message = cut_short(&e.message, MAX_EVENT_MESSAGE_BYTES).into_owned();
        }
        match e.event_type {
            pss_core::model::EventType::Warning => {
                tracing::warn!(object = %e.object, reason = %e.reason, "{}", e.message)
            }
            pss_core::model::EventType::Normal => {
                tracing::info!(object = %e.object, reason = %e.reason, "{}", e.message)
            }
        }
        if let Err(err) = self.store.add_event(&e) {
            tracing::warn!(error = %err, "could not record event");
        }
    }

    /// The current term's token (see [`Shared::term`]); taken once by each loop at its start.
    pub fn term(&self) -> CancellationToken {
        self.term.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the reconcile loop to run now.
    pub fn kick(&self) {
        self.trigger.notify_one();
    }

    /// Republishes endpoint snapshots after pod changes.
    pub fn refresh_endpoints(&self) {
        if let Err(e) = self.services.refresh(self.store.as_ref()) {
            tracing::warn!(error = %e, "endpoint refresh failed");
        }
    }
}

/// Runs the controller on `listener` until `shutdown` is cancelled: the only controller, on
/// `store` (SQLite), which it keeps in memory and writes through.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn StateStore>,
    config: ControllerConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let security = setup_security(&store, &config).await?;
    // Everything the controller reads comes from memory from here on; SQLite is written through.
    let cache = Arc::new(CachedStore::load(store)?);
    run(listener, cache, None, security, config, shutdown).await
}

/// Runs the controller on `listener` until `shutdown` is cancelled: one of several sharing
/// `etcd`. Its memory follows etcd's watch; it serves reads, watches and writes, and runs the
/// loops while elected leader.
pub async fn serve_etcd(
    listener: TcpListener,
    etcd: Arc<EtcdStore>,
    config: ControllerConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let store: Arc<dyn StateStore> = etcd.clone();
    let security = setup_security(&store, &config).await?;
    let follow = etcd.clone();
    let cache = tokio::task::spawn_blocking(move || CachedStore::follow(follow))
        .await
        .map_err(|e| Error::Config(format!("loading from etcd: {e}")))??;
    run(listener, cache, Some(etcd), security, config, shutdown).await
}

async fn setup_security(
    store: &Arc<dyn StateStore>,
    config: &ControllerConfig,
) -> Result<security::Security> {
    let security =
        security::Security::setup(&config.tls, config.tls_sans.clone(), store, config.cert_ttl)
            .await?;
    if security.server.is_none() {
        tracing::warn!(
            "--insecure: serving plaintext; tokens and manifests cross the network in clear"
        );
    }
    if config.token.is_empty() && security.server.is_none() {
        return Err(Error::Config("--insecure needs the shared token".into()));
    }
    Ok(security)
}

async fn run(
    listener: TcpListener,
    cache: Arc<CachedStore>,
    etcd: Option<Arc<EtcdStore>>,
    security: security::Security,
    config: ControllerConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let guard = security.guard(&config.token);
    let store: Arc<dyn StateStore> = cache.clone();
    let leadership = match &etcd {
        None => leader::Leadership::sole(),
        Some(_) => leader::Leadership::elected(listener.local_addr()?.to_string()),
    };
    let shared = Arc::new(Shared {
        agents: agent_clients::AgentPool::new(&config.token, security.agent_tls.clone())?,
        security,
        writer: BatchWriter::spawn(store.clone()),
        start_slots: Arc::new(tokio::sync::Semaphore::new(START_SLOTS)),
        cache,
        store,
        config,
        services: ServiceManager::new(),
        trigger: Notify::new(),
        autoscale: autoscale_loop::AutoscaleMemory::default(),
        shutdown: shutdown.clone(),
        parse_slots: tokio::sync::Semaphore::new(PARSE_SLOTS),
        reported_invalid: Default::default(),
        inflight: Default::default(),
        watch: watch_hub::WatchHub::new(),
        leadership,
        term: std::sync::Mutex::new(shutdown.clone()),
        followed: Notify::new(),
    });
    {
        // Every committed write wakes the watch hub; following etcd, changes may come from
        // other controllers, so they also wake the reconciler (its passes are paced) and the
        // endpoint refresher.
        let hub = Arc::downgrade(&shared);
        let following = etcd.is_some();
        shared.store.set_change_hook(Arc::new(move || {
            if let Some(shared) = hub.upgrade() {
                shared.watch.poke();
                if following {
                    shared.kick();
                    shared.followed.notify_one();
                }
            }
        }));
    }
    shared.services.refresh(shared.store.as_ref())?;
    if let Some(addr) = shared.config.admin {
        let admin = TcpListener::bind(addr).await?;
        tracing::info!(addr = %admin.local_addr()?, "admin endpoints (/metrics, /healthz, /readyz)");
        tokio::spawn(pss_plumbing::admin::serve(
            admin,
            Arc::new(metrics::ControllerAdmin {
                shared: shared.clone(),
            }),
            shutdown.clone(),
        ));
    }

    let loops = match &etcd {
        None => vec![
            tokio::spawn(executor::run(shared.clone())),
            tokio::spawn(liveness::run(shared.clone())),
            tokio::spawn(autoscale_loop::run(shared.clone())),
            tokio::spawn(watch_hub::run(shared.clone())),
        ],
        Some(etcd) => vec![
            tokio::spawn(shared.leadership.clone().campaign(
                etcd.clone(),
                shared.config.leader_ttl,
                shutdown.clone(),
            )),
            tokio::spawn(lead_while_elected(shared.clone())),
            tokio::spawn(follow_endpoints(shared.clone())),
            tokio::spawn(watch_hub::run(shared.clone())),
        ],
    };

    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = shared.security.server.is_some(), "controller listening");
    let router = tonic::transport::Server::builder()
        .layer(metrics::GrpcMetricsLayer)
        .layer(guard)
        .add_service(OperatorServer::new(operator::OperatorApi::new(
            shared.clone(),
        )))
        .add_service(NodeRegistryServer::new(registry::RegistryApi::new(
            shared.clone(),
        )))
        .add_service(EndpointWatchServer::new(endpoint_watch::EndpointApi::new(
            shared.clone(),
        )))
        .add_service(CredentialsServer::new(credentials::CredentialsApi::new(
            shared.clone(),
        )));
    let stop = shutdown.clone().cancelled_owned();
    let result = match shared.security.server.clone() {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(pss_security::tls::incoming(listener, tls), stop)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(pss_plumbing::addr::nodelay_incoming(listener), stop)
                .await
        }
    };
    shutdown.cancel();
    for l in loops {
        let _ = l.await;
    }
    if let Err(e) = shared.store.flush() {
        tracing::warn!(error = %e, "writing the last events failed");
    }
    tracing::info!("controller stopped");
    Ok(result?)
}

/// Runs the leader's loops for each term this controller is elected for.
async fn lead_while_elected(shared: Arc<Shared>) {
    let mut leading = shared.leadership.subscribe();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
        }
        let term = shared.shutdown.child_token();
        *shared.term.lock().unwrap_or_else(|p| p.into_inner()) = term.clone();
        shared.leadership.set_running(true);
        let (leader, number) = shared.leadership.leader();
        shared.event(EventRecord::normal(
            "LeaderElected",
            format!("controller/{leader}"),
            format!("controller {leader} leads (term {number})"),
        ));
        let loops = [
            tokio::spawn(executor::run(shared.clone())),
            tokio::spawn(liveness::run(shared.clone())),
            tokio::spawn(autoscale_loop::run(shared.clone())),
        ];
        shared.kick();
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = leading.wait_for(|l| !*l) => {}
        }
        term.cancel();
        for l in loops {
            let _ = l.await;
        }
        // Start and stop tasks of the ended term may still be queued: they check `may_act`
        // before sending anything, and release their pods when they end.
        shared.leadership.set_running(false);
        if shared.shutdown.is_cancelled() {
            return;
        }
    }
}

/// Following etcd: republishes endpoint snapshots when pods change, whoever changed them
/// (paced: at most every 20 ms).
async fn follow_endpoints(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.followed.notified() => {}
        }
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || s.refresh_endpoints()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
