//! `pss-agent`: one per node. It drives Podman through its libpod REST API over the unix
//! socket and keeps the controller informed.
//!
//! - [`podman`]: the REST client (hyperlocal); [`logs`]: Podman's log-frame demultiplexer;
//!   [`socket`]: where the Podman socket is; [`cgroups`]: which resource limits it enforces
//!   (rootless Podman may enforce none).
//! - [`runtime`]: PSS pods as labelled Podman pods (create, stop, read back as `PodReport`).
//! - [`server`]: the `pss.v1.Agent` gRPC service the controller dials back (RunPod, StopPod,
//!   PodLogs): with TLS only the controller's certificate may call it (the node's own
//!   certificate is served, see [`pss_security::member`]: joined with a join token, kept in
//!   the state directory, renewed before expiry); with `--insecure`, the shared token.
//! - [`reporter`]: Register (with the pods already running: adoption), heartbeats with
//!   [`metrics`], and status pushes; [`events`] (Podman's event stream) and [`readiness`]
//!   (TCP probes) feed those pushes.
//! - [`sim`]: the simulated runtime (`--runtime sim`): pods run in memory, no Podman; many
//!   simulated agents can share one process (see [`run_sim_nodes`]).
//! - [`snapshot`]: the last known pods and the runtime's health, refreshed from Podman with a
//!   deadline; heartbeats send it and never wait on Podman.
//!
//! # Running an agent
//!
//! [`run`] is the whole agent: bind a listener (e.g. `127.0.0.1:0` in tests), build an
//! [`AgentConfig`], and call `run(listener, config, shutdown)`; it returns after `shutdown` is
//! cancelled (pods keep running: an agent restart adopts them). The address registered with
//! the controller is `<advertise_address>:<listener port>`.
//!
//! ```no_run
//! # async fn demo() -> pss_agent::Result<()> {
//! use pss_agent::{run, AgentConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut config = AgentConfig::new("127.0.0.1:50051", "token", "node-a");
//! config.socket = Some("/run/pss/podman.sock".into());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! run(listener, config, shutdown).await
//! # }
//! ```

mod admin;
pub mod cgroups;
mod error;
pub mod events;
pub mod liveness;
pub mod logs;
pub mod metrics;
pub mod podman;
pub mod readiness;
pub mod reporter;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod snapshot;
pub mod socket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1::agent_server::AgentServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
use pss_plumbing::Backoff;
use pss_security::guard::{Guard, NoRevocations};
use pss_security::member::{JoinOptions, Membership};
use pss_security::policy::Server;
use pss_security::tls::{ClientAuth, Dialer};
pub use runtime::Runtime;
pub use server::AgentService;

/// The default of every tunable of [`AgentConfig`], defined once: `pss-agent`'s flags show and
/// use these.
pub mod defaults {
    use std::time::Duration;

    /// Memory capacity offered to the scheduler, in MiB.
    pub const MEMORY_MIB: u64 = 4096;
    /// Heartbeat and metrics interval.
    pub const METRICS_INTERVAL: Duration = Duration::from_secs(15);
    /// Address the controller dials back and pods' ports are reached on.
    pub const ADVERTISE_ADDRESS: &str = "127.0.0.1";
    /// How long one read of the node's pods from Podman may take before the runtime is
    /// reported unresponsive.
    pub const RUNTIME_DEADLINE: Duration = crate::snapshot::DEFAULT_RUNTIME_DEADLINE;
}

/// Which runtime the agent's pods run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Podman, through its socket.
    #[default]
    Podman,
    /// The in-memory simulator (see [`sim`]): no Podman needed.
    Sim,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "podman" => Ok(RuntimeKind::Podman),
            "sim" => Ok(RuntimeKind::Sim),
            other => Err(format!("unknown runtime {other:?}: podman or sim")),
        }
    }
}

/// How an agent authenticates.
#[derive(Clone, Default)]
pub enum AgentTls {
    /// Plaintext and the shared token (the seed; `--insecure`). The library's default, for
    /// tests with a stand-in controller; the binary's default is TLS.
    #[default]
    Insecure,
    /// Mutual TLS with a certificate naming the node, from the cluster CA.
    Tls {
        /// Credentials live in `<state_dir>/<node name>/` (`0700`).
        state_dir: PathBuf,
        /// `--join-token`: joins with it when no valid certificate is stored.
        join_token: Option<String>,
        /// The CA (PEM) to verify the controller by when joining with the operator token.
        ca_pem: Option<String>,
        /// Certificate lifetime to ask for (zero: the controller's default).
        cert_ttl: Duration,
    },
}

/// Everything an agent needs to know; the flags of `pss-agent`.
#[derive(Clone)]
pub struct AgentConfig {
    /// Controller address, `host:port` (or a URI); or several, separated by commas, of
    /// controllers sharing one cluster state: the agent uses one and moves to the next when it
    /// cannot be reached.
    pub controller: String,
    /// Shared token: sent to the controller and required from callers of the agent's server.
    pub token: String,
    /// This node's name (labels its pods; the controller's node name).
    pub node_name: String,
    /// Host the controller dials back and pods' ports are reached on.
    pub advertise_address: String,
    /// Host address pods' ports are published on; `None`: the advertise address when it is an
    /// IP address, else every address. `0.0.0.0` publishes on every address explicitly.
    pub publish_address: Option<String>,
    /// Podman socket; `None` auto-detects (see [`socket`]).
    pub socket: Option<PathBuf>,
    /// Podman (default) or the simulator.
    pub runtime: RuntimeKind,
    /// CPU capacity offered to the scheduler, in millicores.
    pub cpu_millis: u64,
    /// Memory capacity offered to the scheduler, in bytes.
    pub memory_bytes: u64,
    /// Heartbeat (metrics) interval; the pod snapshot is refreshed as often.
    pub metrics_interval: Duration,
    /// Deadline of one snapshot refresh: beyond it, the runtime is reported unresponsive.
    pub runtime_deadline: Duration,
    /// Retry policy of registration and the event stream.
    pub backoff: Backoff,
    /// TLS or plaintext.
    pub tls: AgentTls,
    /// The node's labels, sent at registration (`pss-agent --label k=v`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`--admin`); `None`: nowhere.
    pub admin: Option<SocketAddr>,
}

impl AgentConfig {
    /// The defaults of `pss-agent`: advertise 127.0.0.1, auto-detected socket, cores x 1000
    /// millicores, 4096 MiB, 15 s heartbeats.
    pub fn new(
        controller: impl Into<String>,
        token: impl Into<String>,
        node_name: impl Into<String>,
    ) -> Self {
        Self {
            controller: controller.into(),
            token: token.into(),
            node_name: node_name.into(),
            advertise_address: defaults::ADVERTISE_ADDRESS.into(),
            publish_address: None,
            socket: None,
            runtime: RuntimeKind::Podman,
            cpu_millis: default_cpu_millis(),
            memory_bytes: defaults::MEMORY_MIB * 1024 * 1024,
            metrics_interval: defaults::METRICS_INTERVAL,
            runtime_deadline: defaults::RUNTIME_DEADLINE,
            backoff: Backoff::default(),
            tls: AgentTls::Insecure,
            labels: Default::default(),
            admin: None,
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    /// Everything but the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("controller", &self.controller)
            .field("token", &"<redacted>")
            .field("node_name", &self.node_name)
            .field("advertise_address", &self.advertise_address)
            .field("publish_address", &self.publish_address)
            .field("socket", &self.socket)
            .field("runtime", &self.runtime)
            .field("cpu_millis", &self.cpu_millis)
            .field("memory_bytes", &self.memory_bytes)
            .field("metrics_interval", &self.metrics_interval)
            .field("runtime_deadline", &self.runtime_deadline)
            .field("backoff", &self.backoff)
            .field("tls", &matches!(self.tls, AgentTls::Tls { .. }))
            .finish()
    }
}

/// The node's cores x 1000.
pub fn default_cpu_millis() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        * 1000
}

/// The machine's hostname (the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs the agent on `listener` until `shutdown`: finds and pings Podman (unless
/// [`AgentConfig::runtime`] is [`RuntimeKind::Sim`]) (failing with every
/// socket path tried when none answers), serves the `Agent` gRPC service, registers with the
/// controller (reporting the pods already on this node), heartbeats, watches Podman's events
/// and probes readiness.
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    check_credentials(&config)?;
    let publish = config.publish_address.clone().or_else(|| {
        config
            .advertise_address
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_string())
    });
    let (runtime, limits_unenforced) = match config.runtime {
        RuntimeKind::Podman => {
            let podman = socket::detect(config.socket.clone()).await?;
            tracing::info!(socket = %podman.socket().display(), node = %config.node_name, "Podman answers");
            let limits = cgroups::LimitSupport::probe(&podman).await;
            let limits_unenforced = limits.unenforced().unwrap_or_default();
            if !limits_unenforced.is_empty() {
                tracing::warn!(
                    "{limits_unenforced}: pods run without them, and are still scheduled by their requests"
                );
            }
            let runtime = Runtime::new(
                podman,
                config.node_name.clone(),
                config.advertise_address.clone(),
            )
            .with_publish_address(publish)
            .with_limit_support(limits);
            (runtime, limits_unenforced)
        }
        RuntimeKind::Sim => {
            tracing::debug!(node = %config.node_name, "simulated runtime: pods run in memory");
            let runtime = Runtime::sim(config.node_name.clone(), config.advertise_address.clone());
            (runtime, String::new())
        }
    };
    serve(
        listener,
        config,
        Arc::new(runtime),
        limits_unenforced,
        shutdown,
    )
    .await
}

/// Runs the agent over a runtime the caller made and keeps (e.g. a simulated one, see
/// [`Runtime::sim`], whose pods a test inspects); otherwise like [`run`].
pub async fn run_with_runtime(
    listener: TcpListener,
    config: AgentConfig,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
) -> Result<()> {
    check_credentials(&config)?;
    serve(listener, config, runtime, String::new(), shutdown).await
}

fn check_credentials(config: &AgentConfig) -> Result<()> {
    pss_plumbing::controllers::parse_list(&config.controller)
        .map_err(|e| Error::Config(format!("--controller: {e}")))?;
    if matches!(config.tls, AgentTls::Insecure) && config.token.is_empty() {
        return Err(Error::Invalid(
            "the agent needs the shared token with --insecure".into(),
        ));
    }
    Ok(())
}

/// The agent's credential with TLS (joined or stored), else `None`.
async fn membership(
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<Membership>>> {
    let AgentTls::Tls {
        state_dir,
        join_token,
        ca_pem,
        cert_ttl,
    } = &config.tls
    else {
        return Ok(None);
    };
    let identity = pss_security::Identity::new(pss_security::Role::Agent, &config.node_name)
        .map_err(|e| Error::Invalid(format!("node name: {e}")))?;
    let options = JoinOptions {
        controller: config.controller.clone(),
        identity,
        state_dir: state_dir.join(&config.node_name),
        join_token: join_token.clone(),
        operator_token: Some(config.token.clone()).filter(|t| !t.is_empty()),
        ca_pem: ca_pem.clone(),
        ttl: *cert_ttl,
    };
    let m = Membership::obtain(options, shutdown)
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Some(m))
}

/// The agent proper over `runtime`: the gRPC service, the reporter and the background loops.
async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    runtime: Arc<Runtime>,
    limits_unenforced: String,
    shutdown: CancellationToken,
) -> Result<()> {
    let port = listener.local_addr()?.port();
    let agent_address = format!("{}:{port}", config.advertise_address);

    // The admin endpoints answer from the start (not ready while the agent still joins).
    let tasks = shutdown.child_token();
    let mut background = tokio::task::JoinSet::new();
    let reachable: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    if let Some(addr) = config.admin {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Invalid(format!("--admin {addr}: {e}")))?;
        tracing::info!(addr = %listener.local_addr()?, "admin endpoints (/metrics, /healthz, /readyz)");
        background.spawn(pss_plumbing::admin::serve(
            listener,
            Arc::new(admin::AgentAdmin {
                snapshot: runtime.snapshot(),
                reachable: reachable.clone(),
            }),
            tasks.clone(),
        ));
    }
    let member = membership(&config, &shutdown).await?;
    let (dialer, token) = match &member {
        Some(m) => (m.dialer().map_err(|e| Error::Invalid(e.to_string()))?, ""),
        None => (Dialer::plaintext(), config.token.as_str()),
    };
    let controllers = reporter::Controllers::connect(&config.controller, token, &dialer)?;
    let identity = reporter::NodeIdentity {
        name: config.node_name.clone(),
        agent_address: agent_address.clone(),
        cpu_millis: config.cpu_millis,
        memory_bytes: config.memory_bytes,
        limits_unenforced,
        labels: config.labels.clone(),
    };
    let (updates_tx, updates_rx) = mpsc::channel(1024);
    let reporter = reporter::Reporter::new(
        controllers,
        runtime.clone(),
        identity,
        config.metrics_interval,
        config.runtime_deadline,
        config.backoff,
    )
    .with_reachable(reachable);

    background.spawn(reporter.run(updates_rx, tasks.clone()));
    background.spawn(snapshot::refresh(
        runtime.clone(),
        config.metrics_interval,
        config.runtime_deadline,
        tasks.clone(),
    ));
    background.spawn(events::run(
        runtime.clone(),
        updates_tx.clone(),
        tasks.clone(),
    ));
    background.spawn(liveness::run(
        runtime.clone(),
        updates_tx.clone(),
        tasks.clone(),
    ));
    background.spawn(readiness::run(runtime.clone(), updates_tx, tasks.clone()));
    if let Some(m) = &member {
        background.spawn(m.clone().keep_renewed(tasks.clone()));
    }

    tracing::info!(listen = %listener.local_addr()?, advertise = %agent_address, tls = member.is_some(), "agent serving");
    let guard = Guard::new(Server::Agent, Arc::new(NoRevocations));
    let router = match &member {
        Some(_) => tonic::transport::Server::builder().layer(guard),
        // The controller is the only one that holds the token and calls an agent.
        None => tonic::transport::Server::builder()
            .layer(guard.with_token(&config.token, pss_security::Role::Controller)),
    }
    .add_service(AgentServer::new(AgentService::new(runtime)));
    let served = match &member {
        Some(m) => {
            let tls =
                pss_security::tls::server_config(m.cert.clone(), &m.ca_pem, ClientAuth::Required)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            router
                .serve_with_incoming_shutdown(
                    pss_security::tls::incoming(listener, tls),
                    shutdown.cancelled(),
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    pss_plumbing::addr::nodelay_incoming(listener),
                    shutdown.cancelled(),
                )
                .await
        }
    };
    tasks.cancel();
    while background.join_next().await.is_some() {}
    tracing::info!("agent stopped; its pods keep running");
    served.map_err(Error::from)
}

/// The listen address of simulated node `index` of [`run_sim_nodes`]: `base` with its port
/// plus `index`, or port 0 (any free port) when `base`'s port is 0.
pub fn sim_listen_addr(base: SocketAddr, index: usize) -> Result<SocketAddr> {
    if base.port() == 0 {
        return Ok(base);
    }
    let port = u16::try_from(usize::from(base.port()) + index)
        .map_err(|_| Error::Invalid(format!("simulated node {index}: port past 65535")))?;
    Ok(SocketAddr::new(base.ip(), port))
}

/// Runs `count` simulated agents in this process until `shutdown` (the way kubemark runs
/// hollow nodes): agent `i` is `config` with node name `<node_name>-<i>`, the simulated runtime,
/// and a listener on [`sim_listen_addr`]`(listen, i)`; each registers its own bound port. The
/// agents share nothing but the process. Fails when a listener cannot be bound or an agent
/// fails (the others are then stopped).
pub async fn run_sim_nodes(
    listen: SocketAddr,
    config: AgentConfig,
    count: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut agents = tokio::task::JoinSet::new();
    let stop = shutdown.child_token();
    for i in 0..count {
        let addr = sim_listen_addr(listen, i)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Invalid(format!("simulated node {i}: binding {addr}: {e}")))?;
        let mut node = config.clone();
        node.node_name = format!("{}-{i}", config.node_name);
        node.runtime = RuntimeKind::Sim;
        // One admin server per process: the first simulated node serves it.
        if i > 0 {
            node.admin = None;
        }
        agents.spawn(run(listener, node, stop.clone()));
    }
    tracing::info!(count, "simulated agents started");
    let mut first_error = None;
    while let Some(done) = agents.join_next().await {
        let result = done.map_err(|e| Error::Invalid(format!("simulated agent task: {e}")));
        if let Err(e) = result.and_then(|r| r) {
            tracing::error!(error = %e, "a simulated agent failed; stopping the others");
            stop.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_nodes_listen_on_consecutive_ports_or_any() {
        let base: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(sim_listen_addr(base, 3).unwrap().port(), 40003);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(sim_listen_addr(any, 3).unwrap().port(), 0);
        let high: SocketAddr = "127.0.0.1:65535".parse().unwrap();
        assert!(sim_listen_addr(high, 1).is_err());
        assert_eq!("sim".parse::<RuntimeKind>(), Ok(RuntimeKind::Sim));
        assert!("docker".parse::<RuntimeKind>().is_err());
    }
}
