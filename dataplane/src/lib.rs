//! pss-dataplane: the PSS L4 data plane behind the `pss-proxy` binary.
//!
//! A proxy serves one or more *services*. Each service has its own listener (tuned with socket2),
//! its own backend set (static, or pushed by the controller's `EndpointWatch` stream), active
//! health checks and a forwarding engine (`splice`, `copy`, or `uring` behind the `uring`
//! feature).
//!
//! Threading: `workers` OS threads, each with its own `SO_REUSEPORT` listener per service, so
//! a connection lives its whole life on one thread. By default each worker runs an
//! edge-triggered `mio` loop (`event_loop`: sockets registered once, no task per connection);
//! `EventLoop::Tokio` (and the uring engine) run a current-thread tokio runtime per worker
//! instead. Health checks, the endpoint watch, reloads and the admin `/metrics` server run on
//! the caller's runtime, the one [`Proxy::serve`] is awaited on.
//!
//! # Embedding (e.g. in another crate's integration test)
//!
//! ```no_run
//! use pss_dataplane::{Proxy, ProxyConfig, ServiceConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), pss_dataplane::Error> {
//! let backend: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
//! let service = ServiceConfig::with_static_backends("web", "127.0.0.1:0".parse().unwrap(), vec![backend]);
//! let config = ProxyConfig { workers: 1, ..ProxyConfig::new(vec![service]) };
//! let proxy = Proxy::bind(config)?;                  // listeners are bound here
//! let addr = proxy.local_addr("web").unwrap();      // the real port when listening on :0
//! let handle = proxy.handle();                      // metrics and backend updates
//! let shutdown = CancellationToken::new();
//! let task = tokio::spawn(proxy.serve(shutdown.clone()));
//! // ... connect to `addr` ...
//! let stats = handle.service("web").unwrap().stats();
//! assert_eq!(stats.connections_active, 0);
//! shutdown.cancel();                                // stop accepting, drain, return
//! task.await.unwrap()?;
//! # Ok(()) }
//! ```
//!
//! For a controller-fed service use [`ServiceConfig::with_controller_service`] and set
//! [`ProxyConfig::controller`]; [`run`] is the one-call form of bind + serve.

pub mod balancer;
pub mod config;
mod event_loop;
pub mod fds;
pub mod forward;
pub mod health;
pub mod listener;
pub mod metrics;
mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use config::{
    Backends, ControllerConfig, Engine, EventLoop, HealthConfig, ListenerTuning, ProxyConfig,
    ProxyProtocol, ServiceConfig,
};
pub use metrics::ServiceStats;
pub use proxy::{Proxy, ProxyHandle, ServiceHandle};
pub use tokio_util::sync::CancellationToken;

/// Everything that can stop the proxy from starting or serving. Per-connection failures are not
/// errors of the proxy: they are counted in the metrics and the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; `path` names the field (`services[0].health.rise`),
    /// `at` where it is written when it comes from a file (`proxy.yaml: line 7`).
    #[error("{}{path}: {reason}", at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Config {
        at: Option<String>,
        path: String,
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    ConfigRead {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A listener could not be bound or tuned; `listener` says which (`service web`, `admin`).
    #[error("{listener}: cannot listen on {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The requested engine cannot run in this build or on this kernel.
    #[error("engine {engine} is unavailable: {reason}")]
    EngineUnavailable { engine: Engine, reason: String },
    /// The controller address or token is unusable (never a transient connection failure: those
    /// are retried with backoff).
    #[error("controller: {0}")]
    Controller(String),
    /// A worker thread could not be started or ended abnormally.
    #[error("worker: {0}")]
    Worker(String),
    /// Any other I/O failure while starting (admin listener, runtime creation).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Binds every listener of `config` and serves until `shutdown` is cancelled, then stops
/// accepting and drains open connections for up to `config.drain_timeout`.
pub async fn run(config: ProxyConfig, shutdown: CancellationToken) -> Result<()> {
    Proxy::bind(config)?.serve(shutdown).await
}
