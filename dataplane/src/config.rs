//! Proxy configuration: the YAML file format, its defaults and validation, and the merge with
//! command-line flags (flags override the file).
//!
//! ```yaml
//! workers: 2                       # default: number of cores
//! buffer_size: 65536               # bytes a direction copies at once
//! admin: 127.0.0.1:9100            # Prometheus /metrics (optional)
//! drain_timeout: 10s
//! controller: {address: localhost:50051, join_token: PSS1-proxy-..., state_dir: /var/lib/pss/proxy}
//!                                  # TLS by default: a join token (or `token` + `ca`), or
//!                                  # `insecure: true` with the seed's `token`; several
//!                                  # controllers: `addresses: [ctl-1:50051, ctl-2:50051]`
//! services:
//!   - name: web
//!     listen: ":8080"              # ":PORT" means 0.0.0.0:PORT
//!     backends: [127.0.0.1:8081, 127.0.0.1:8082]   # or `service: my-service` (controller-fed)
//!     engine: splice               # splice | copy | uring
//!     backlog: 1024
//!     reuseport: true
//!     nodelay: true
//!     keepalive: 60s               # TCP keepalive idle time; omit for none
//!     send_buffer: 262144          # SO_SNDBUF bytes; omit for the kernel's autotuning
//!     recv_buffer: 262144
//!     connect_timeout: 2s
//!     connect_attempts: 3          # backends tried per client connection
//!     idle_timeout: 5m             # 0s disables
//!     max_connections: 10000       # omit for unlimited
//!     splice_threshold: 4096       # a direction switches from copy to splice after a read this big
//!     send_proxy: v2               # PROXY protocol header towards backends: v1 | v2; omit for none
//!     defer_accept: false          # TCP_DEFER_ACCEPT: wake on the first data, not the handshake
//!                                  # (client-first protocols only: HTTP, TLS; never SMTP/MySQL)
//!     smart_connect: false         # backend handshake's last ACK rides on the first data
//!                                  # (TCP_QUICKACK off; client-first protocols only)
//!     health: {interval: 2s, timeout: 1s, rise: 2, fall: 3}   # interval 0s disables checks
//! ```
//!
//! Unknown fields are rejected; every error names the field path and the reason.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{Error, Result};

/// How bytes are moved between the client and the backend socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Copy small reads through a userspace buffer, then `splice(2)` through a pooled pipe once a
    /// direction carries bulk data (Linux only).
    Splice,
    /// Userspace copy through reused per-worker buffers (portable).
    Copy,
    /// io_uring through tokio-uring (cargo feature `uring`).
    Uring,
}

impl Default for Engine {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Engine::Splice
        } else {
            Engine::Copy
        }
    }
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "splice" => Ok(Engine::Splice),
            "copy" => Ok(Engine::Copy),
            "uring" => Ok(Engine::Uring),
            other => Err(format!(
                "unknown engine `{other}` (expected splice, copy or uring)"
            )),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Splice => "splice",
            Engine::Copy => "copy",
            Engine::Uring => "uring",
        })
    }
}

/// PROXY protocol version sent to backends before the client's bytes (HAProxy's
/// `send-proxy` / `send-proxy-v2`), so backends see the client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 src dst sport dport\r\n`).
    V1,
    /// The binary header.
    V2,
}

impl FromStr for ProxyProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            other => Err(format!(
                "unknown PROXY protocol version `{other}` (expected v1 or v2)"
            )),
        }
    }
}

/// How worker threads wait for and dispatch socket events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLoop {
    /// One edge-triggered `mio` poller per worker, each socket registered once, coarse timers
    /// (copy and splice engines; see `event_loop`).
    #[default]
    Mio,
    /// A current-thread tokio runtime per worker, a task per connection (also what the uring
    /// engine always uses).
    Tokio,
}

impl FromStr for EventLoop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mio" => Ok(EventLoop::Mio),
            "tokio" => Ok(EventLoop::Tokio),
            other => Err(format!(
                "unknown event loop `{other}` (expected mio or tokio)"
            )),
        }
    }
}

/// The whole proxy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Worker threads; each runs its own runtime and its own listener per service.
    pub workers: usize,
    /// Where `/metrics` is served; none when absent.
    #[serde(deserialize_with = "de_opt_listen")]
    pub admin: Option<SocketAddr>,
    /// How long open connections may finish after shutdown is requested.
    #[serde(deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// Upper bound on splice pipes per worker thread (two per spliced connection); when the
    /// pool is exhausted a connection keeps copying.
    pub max_pipes_per_worker: usize,
    /// Controller to subscribe to for controller-fed services.
    pub controller: Option<ControllerConfig>,
    /// Bytes of one copy buffer (a direction reads at most this much at once).
    pub buffer_size: usize,
    /// Worker event loop (`tokio` whenever a service uses the uring engine).
    pub event_loop: EventLoop,
    /// Run the workers with `SCHED_BATCH` (a hint that they are throughput work: fewer
    /// wake-up preemptions of the clients and backends sharing the cores).
    pub sched_batch: bool,
    /// The services to proxy.
    pub services: Vec<ServiceConfig>,
}

impl ProxyConfig {
    /// A configuration with defaults around the given services.
    pub fn new(services: Vec<ServiceConfig>) -> Self {
        ProxyConfig {
            services,
            ..ProxyConfig::default()
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            admin: None,
            drain_timeout: Duration::from_secs(10),
            max_pipes_per_worker: 4096,
            controller: None,
            buffer_size: crate::forward::copy::BUF_SIZE,
            event_loop: EventLoop::default(),
            sched_batch: false,
            services: Vec::new(),
        }
    }
}

/// How to reach the controller's `EndpointWatch` service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// `host:port` or a full `http://` / `https://` URL; several may be given separated by
    /// commas (the `--controller` flag's form). Exclusive with `addresses`.
    #[serde(default)]
    pub address: String,
    /// Several controllers sharing one cluster (at most 16): the watch uses one and moves to
    /// the next when its stream breaks or it cannot connect. Exclusive with `address`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Shared token sent as `authorization: Bearer <token>`.
    #[serde(default)]
    pub token: String,
    /// First reconnect delay; doubles per failure up to `backoff_max`, with full jitter.
    #[serde(default = "default_backoff_initial", deserialize_with = "de_duration")]
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    #[serde(default = "default_backoff_max", deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    /// Plaintext with the token (the seed's mode); TLS otherwise.
    #[serde(default)]
    pub insecure: bool,
    /// Join token (`pssctl token create --role proxy`): buys this proxy's certificate.
    #[serde(default)]
    pub join_token: Option<String>,
    /// The cluster CA file (PEM), to join with the operator `token` instead.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Where the proxy's key and certificate live.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The name the proxy's certificate carries (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
}

fn default_backoff_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(10)
}

impl ControllerConfig {
    /// Every controller address, in order (`addresses`, else `address` split at commas),
    /// checked; the error names the field.
    pub fn controllers(&self) -> Result<Vec<String>> {
        match (self.address.trim().is_empty(), self.addresses.is_empty()) {
            (false, false) => Err(invalid(
                "controller.addresses",
                "give `address` or `addresses`, not both",
            )),
            (true, true) => Err(invalid("controller.address", "must not be empty")),
            (false, true) => pss_plumbing::controllers::parse_list(&self.address)
                .map_err(|e| invalid("controller.address", e)),
            (true, false) => {
                let list: Vec<String> = self
                    .addresses
                    .iter()
                    .map(|a| a.trim().to_string())
                    .collect();
                pss_plumbing::controllers::check_list(&list)
                    .map_err(|e| invalid("controller.addresses", e))?;
                Ok(list)
            }
        }
    }

    /// The addresses as one line (`a:1,b:2`), for logs; unchecked.
    pub fn display_addresses(&self) -> String {
        if self.addresses.is_empty() {
            self.address.clone()
        } else {
            self.addresses.join(",")
        }
    }

    /// A controller at `address` with the default backoff.
    pub fn new(address: impl Into<String>, token: impl Into<String>) -> Self {
        ControllerConfig {
            address: address.into(),
            addresses: Vec::new(),
            token: token.into(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
            insecure: false,
            join_token: None,
            ca: None,
            state_dir: None,
            name: None,
        }
    }
}

/// Where a service's backends come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends {
    /// A fixed list.
    Static(Vec<SocketAddr>),
    /// The named service's endpoint snapshots, streamed by the controller.
    Controller(String),
}

/// Socket options of the listener; accepted sockets inherit them, backend sockets get the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTuning {
    /// `listen(2)` backlog.
    pub backlog: u32,
    /// One `SO_REUSEPORT` listener per worker (the kernel spreads connections); otherwise one
    /// shared listening socket.
    pub reuseport: bool,
    /// `TCP_NODELAY` on both legs.
    pub nodelay: bool,
    /// TCP keepalive idle time on both legs.
    pub keepalive: Option<Duration>,
    /// `SO_SNDBUF`; none keeps kernel autotuning.
    pub send_buffer: Option<usize>,
    /// `SO_RCVBUF`; none keeps kernel autotuning.
    pub recv_buffer: Option<usize>,
    /// `TCP_DEFER_ACCEPT` on the listener: a connection is accepted only once the client has
    /// sent data, saving a wake-up per connection. Only for client-first protocols.
    pub defer_accept: bool,
    /// Backend connects with `TCP_QUICKACK` off, so the handshake's last ACK rides on the
    /// first bytes sent (HAProxy's `tcp-smart-connect`): one packet less per connection. With
    /// a server-first protocol the backend's accept would wait for the delayed ACK (tens of
    /// milliseconds): client-first protocols only.
    pub smart_connect: bool,
}

impl Default for ListenerTuning {
    fn default() -> Self {
        ListenerTuning {
            backlog: 4096,
            reuseport: true,
            nodelay: true,
            keepalive: None,
            send_buffer: None,
            recv_buffer: None,
            defer_accept: false,
            smart_connect: false,
        }
    }
}

/// Active health checks.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between checks of one backend; zero disables active checks.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Connect timeout of one check.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures (checks or client connects) that take an up backend down.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// One proxied service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Name used in logs and metrics (and, for controller-fed services, the default service).
    pub name: String,
    /// Listen address (`:8080` in files and flags means `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Static list or controller service.
    pub backends: Backends,
    /// Forwarding engine.
    pub engine: Engine,
    /// Socket options.
    pub tuning: ListenerTuning,
    /// Time allowed for one backend connect.
    pub connect_timeout: Duration,
    /// Backends tried per client connection before giving up.
    pub connect_attempts: u32,
    /// Close a connection when neither side sent anything for this long.
    pub idle_timeout: Option<Duration>,
    /// Connections beyond this many open ones are closed at once.
    pub max_connections: Option<usize>,
    /// A direction switches from copying to splicing after one read of at least this many bytes.
    pub splice_threshold: usize,
    /// Active health checks.
    pub health: HealthConfig,
    /// PROXY protocol header to send to backends first, if any.
    pub send_proxy: Option<ProxyProtocol>,
}

impl ServiceConfig {
    /// A service with a fixed backend list and default tuning.
    pub fn with_static_backends(
        name: impl Into<String>,
        listen: SocketAddr,
        backends: Vec<SocketAddr>,
    ) -> Self {
        Self::with_backends(name.into(), listen, Backends::Static(backends))
    }

    /// A service whose backends are the controller's endpoints of `service`.
    pub fn with_controller_service(
        name: impl Into<String>,
        listen: SocketAddr,
        service: impl Into<String>,
    ) -> Self {
        Self::with_backends(name.into(), listen, Backends::Controller(service.into()))
    }

    fn with_backends(name: String, listen: SocketAddr, backends: Backends) -> Self {
        ServiceConfig {
            name,
            listen,
            backends,
            engine: Engine::default(),
            tuning: ListenerTuning::default(),
            connect_timeout: Duration::from_secs(2),
            connect_attempts: 3,
            idle_timeout: Some(Duration::from_secs(300)),
            max_connections: None,
            splice_threshold: 4096,
            health: HealthConfig::default(),
            send_proxy: None,
        }
    }
}

/// The file form of a service: every tuning knob optional, defaults filled in by conversion.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    #[serde(deserialize_with = "de_listen")]
    listen: SocketAddr,
    #[serde(default)]
    backends: Option<Vec<BackendAddr>>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    engine: Option<Engine>,
    #[serde(default)]
    backlog: Option<u32>,
    #[serde(default)]
    reuseport: Option<bool>,
    #[serde(default)]
    nodelay: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    keepalive: Option<Duration>,
    #[serde(default)]
    send_buffer: Option<usize>,
    #[serde(default)]
    recv_buffer: Option<usize>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default)]
    connect_attempts: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    splice_threshold: Option<usize>,
    #[serde(default)]
    health: Option<HealthConfig>,
    #[serde(default)]
    send_proxy: Option<ProxyProtocol>,
    #[serde(default)]
    defer_accept: Option<bool>,
    #[serde(default)]
    smart_connect: Option<bool>,
}

impl<'de> Deserialize<'de> for ServiceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let f = ServiceFile::deserialize(d)?;
        let backends = match (f.backends, f.service) {
            (Some(_), Some(_)) => {
                return Err(D::Error::custom(
                    "`backends` and `service` are exclusive: give a static list or a controller service",
                ))
            }
            (None, None) => {
                return Err(D::Error::custom(
                    "needs `backends` (static list) or `service` (controller-fed)",
                ))
            }
            (Some(list), None) => Backends::Static(list.into_iter().map(|a| a.0).collect()),
            (None, Some(svc)) => Backends::Controller(svc),
        };
        let mut s = ServiceConfig::with_backends(f.name, f.listen, backends);
        let t = &mut s.tuning;
        if let Some(v) = f.engine {
            s.engine = v;
        }
        if let Some(v) = f.backlog {
            t.backlog = v;
        }
        if let Some(v) = f.reuseport {
            t.reuseport = v;
        }
        if let Some(v) = f.nodelay {
            t.nodelay = v;
        }
        t.keepalive = f.keepalive.filter(|d| !d.is_zero());
        t.send_buffer = f.send_buffer;
        t.recv_buffer = f.recv_buffer;
        if let Some(v) = f.connect_timeout {
            s.connect_timeout = v;
        }
        if let Some(v) = f.connect_attempts {
            s.connect_attempts = v;
        }
        if let Some(v) = f.idle_timeout {
            s.idle_timeout = (!v.is_zero()).then_some(v);
        }
        s.max_connections = f.max_connections;
        if let Some(v) = f.splice_threshold {
            s.splice_threshold = v;
        }
        if let Some(v) = f.health {
            s.health = v;
        }
        s.send_proxy = f.send_proxy;
        s.tuning.defer_accept = f.defer_accept.unwrap_or(false);
        s.tuning.smart_connect = f.smart_connect.unwrap_or(false);
        Ok(s)
    }
}

/// A backend address in a file, resolved while parsing so an error names its list element
/// (`services[0].backends[1]`), not the whole service.
struct BackendAddr(SocketAddr);

impl<'de> Deserialize<'de> for BackendAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        resolve(&s)
            .map(BackendAddr)
            .map_err(serde::de::Error::custom)
    }
}

pub use pss_plumbing::addr::{parse_listen, resolve};
pub use pss_plumbing::duration::parse_duration;

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

fn de_opt_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_listen(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Parses a YAML configuration; errors name the field path, the line and the reason.
pub fn from_yaml(text: &str) -> Result<ProxyConfig> {
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| {
        let loc = e.location().filter(|l| l.line() > 0);
        let mut reason = e.without_snippet().to_string();
        if let Some(l) = loc {
            // The location goes in front with the file name, not twice.
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            if reason.ends_with(&suffix) {
                reason.truncate(reason.len() - suffix.len());
            }
        }
        Error::Config {
            at: loc.map(|l| format!("line {}, column {}", l.line(), l.column())),
            path: if path.is_empty() || path == "." {
                "config".into()
            } else {
                path
            },
            reason,
        }
    })
}

/// Reads and parses a configuration file (not yet validated: see [`ProxyConfig::validate`]).
/// Errors name the file and line.
pub fn from_file(path: &Path) -> Result<ProxyConfig> {
    read_file(path).map(|(_, c)| c)
}

fn read_file(path: &Path) -> Result<(String, ProxyConfig)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        file: path.to_path_buf(),
        source,
    })?;
    let config = from_yaml(&text).map_err(|e| in_file(e, path, None))?;
    Ok((text, config))
}

/// Puts the file (and, if the error has none yet, the line `line`) in front of a config error.
fn in_file(e: Error, file: &Path, line: Option<u64>) -> Error {
    match e {
        Error::Config { at, path, reason } => {
            let at = at.or_else(|| line.map(|l| format!("line {l}")));
            Error::Config {
                at: Some(match at {
                    Some(at) => format!("{}: {at}", file.display()),
                    None => file.display().to_string(),
                }),
                path,
                reason,
            }
        }
        other => other,
    }
}

/// Line of the YAML value a validation error's field path (`services[1].health.rise`)
/// designates, as far as the file spells it: the top-level key, or the service's own key.
fn line_of(text: &str, path: &str) -> Option<u64> {
    use serde::de::IgnoredAny;
    use serde_saphyr::Spanned;
    use std::collections::HashMap;
    type Keys = HashMap<String, Spanned<IgnoredAny>>;
    #[derive(Deserialize)]
    struct Services {
        #[serde(default)]
        services: Vec<Spanned<Keys>>,
    }
    let line = |s: &Spanned<IgnoredAny>| s.referenced.line();
    if let Some(rest) = path.strip_prefix("services[") {
        let (index, field) = rest.split_once(']')?;
        let index: usize = index.parse().ok()?;
        let field = field.trim_start_matches('.');
        let field = field.split(['.', '[']).next().unwrap_or("");
        let all: Services = serde_saphyr::from_str(text).ok()?;
        let service = all.services.get(index)?;
        return Some(match service.value.get(field) {
            Some(v) => line(v),
            None => service.referenced.line(),
        })
        .filter(|l| *l > 0);
    }
    let top: Keys = serde_saphyr::from_str(text).ok()?;
    let key = path.split(['.', '[']).next()?;
    top.get(key).map(line).filter(|l| *l > 0)
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        at: None,
        path: path.into(),
        reason: reason.into(),
    }
}

impl ProxyConfig {
    /// Checks cross-field rules serde cannot express.
    pub fn validate(&self) -> Result<()> {
        if !(1024..=16 << 20).contains(&self.buffer_size) {
            return Err(invalid(
                "buffer_size",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "workers",
                format!("must be between 1 and {MAX_WORKERS}"),
            ));
        }
        if self.services.is_empty() {
            return Err(invalid("services", "no service to proxy"));
        }
        for (i, s) in self.services.iter().enumerate() {
            let at = |field: &str| format!("services[{i}].{field}");
            if s.name.is_empty() {
                return Err(invalid(at("name"), "must not be empty"));
            }
            if let Some(j) = self.services[..i].iter().position(|o| o.name == s.name) {
                return Err(invalid(
                    at("name"),
                    format!("`{}` is also services[{j}].name", s.name),
                ));
            }
            if let Some(j) = self.services[..i]
                .iter()
                .position(|o| overlaps(o.listen, s.listen))
            {
                return Err(invalid(
                    at("listen"),
                    format!(
                        "{} overlaps services[{j}].listen ({}): both would take the same connections",
                        s.listen, self.services[j].listen
                    ),
                ));
            }
            if let Some(admin) = self.admin.filter(|a| overlaps(*a, s.listen)) {
                return Err(invalid(
                    "admin",
                    format!(
                        "{admin} overlaps services[{i}].listen ({}): the admin server needs its own port",
                        s.listen
                    ),
                ));
            }
            match &s.backends {
                Backends::Static(list) if list.is_empty() => {
                    return Err(invalid(at("backends"), "empty backend list"))
                }
                Backends::Controller(name) if name.is_empty() => {
                    return Err(invalid(at("service"), "must not be empty"))
                }
                Backends::Controller(_) if self.controller.is_none() => {
                    return Err(invalid(
                        at("service"),
                        "a controller-fed service needs `controller` (or --controller)",
                    ))
                }
                _ => {}
            }
            if s.connect_attempts == 0 {
                return Err(invalid(at("connect_attempts"), "must be at least 1"));
            }
            if s.connect_timeout.is_zero() {
                return Err(invalid(at("connect_timeout"), "must be more than 0"));
            }
            if s.tuning.backlog == 0 {
                return Err(invalid(at("backlog"), "must be at least 1"));
            }
            if s.max_connections == Some(0) {
                return Err(invalid(at("max_connections"), "must be at least 1"));
            }
            if s.health.rise == 0 {
                return Err(invalid(at("health.rise"), "must be at least 1"));
            }
            if s.health.fall == 0 {
                return Err(invalid(at("health.fall"), "must be at least 1"));
            }
            if !s.health.interval.is_zero() && s.health.timeout.is_zero() {
                return Err(invalid(at("health.timeout"), "must be more than 0"));
            }
            #[cfg(not(feature = "uring"))]
            if s.engine == Engine::Uring {
                return Err(invalid(
                    at("engine"),
                    "uring needs pss-proxy built with the `uring` cargo feature",
                ));
            }
        }
        if let Some(c) = &self.controller {
            c.controllers()?;
            if c.backoff_initial.is_zero() || c.backoff_max < c.backoff_initial {
                return Err(invalid(
                    "controller.backoff_initial",
                    "must be more than 0 and at most backoff_max",
                ));
            }
        }
        Ok(())
    }
}

/// Most worker threads a configuration may ask for (each holds a runtime, a listener per
/// service and its own buffers; far more threads than cores only costs).
pub const MAX_WORKERS: usize = 1024;

/// Whether two listen addresses would compete for the same connections: same port (not 0),
/// and the same address or one of them a wildcard of a family that covers the other.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |w: SocketAddr, o: SocketAddr| {
        w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4()) // [::] also takes IPv4
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

/// Command-line values that override (or, without a file, make up) the configuration.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub backends: Vec<SocketAddr>,
    pub service: Option<String>,
    pub controller: Option<String>,
    pub token: Option<String>,
    /// `--insecure`, `--join-token`, `--ca`, `--state-dir`, `--proxy-name`.
    pub insecure: bool,
    pub join_token: Option<String>,
    pub ca: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub proxy_name: Option<String>,
    pub workers: Option<usize>,
    pub engine: Option<Engine>,
    pub admin: Option<SocketAddr>,
    pub drain_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub health_interval: Option<Duration>,
    pub reuseport: Option<bool>,
    pub send_proxy: Option<ProxyProtocol>,
    pub defer_accept: Option<bool>,
    pub event_loop: Option<EventLoop>,
    pub sched_batch: Option<bool>,
    pub smart_connect: Option<bool>,
    pub buffer_size: Option<usize>,
}

/// The default listen address of the seed and static forms.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// Builds the effective configuration: the file (if any), then flags on top, then validation.
///
/// Without a file, `--backend` gives the static form and `--service` the seed (controller) form.
/// With a file, `--listen`/`--backend`/`--service` replace those of its only service (a file
/// with several services refuses them), and tuning flags apply to every service.
pub fn load(o: &Overrides) -> Result<ProxyConfig> {
    let (text, mut config) = match &o.config_file {
        Some(path) => {
            let (text, c) = read_file(path)?;
            (Some(text), c)
        }
        None => (None, ProxyConfig::default()),
    };
    let defines_service = o.listen.is_some() || !o.backends.is_empty() || o.service.is_some();
    if o.config_file.is_none() {
        let listen = o.listen.unwrap_or(DEFAULT_LISTEN);
        let service = match (&o.service, o.backends.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "--backend",
                    "give static backends or --service, not both",
                ))
            }
            (Some(name), true) => ServiceConfig::with_controller_service(name, listen, name),
            (None, false) => {
                ServiceConfig::with_static_backends("static", listen, o.backends.clone())
            }
            (None, true) => {
                return Err(invalid(
                    "--backend",
                    "nothing to proxy: give --backend ADDR, --service NAME or --config FILE",
                ))
            }
        };
        config.services.push(service);
    } else if defines_service {
        if config.services.len() != 1 {
            return Err(invalid(
                "--listen/--backend/--service",
                "only apply to a configuration file with exactly one service",
            ));
        }
        let s = &mut config.services[0];
        if let Some(l) = o.listen {
            s.listen = l;
        }
        match (&o.service, o.backends.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "--backend",
                    "give static backends or --service, not both",
                ))
            }
            (Some(name), true) => s.backends = Backends::Controller(name.clone()),
            (None, false) => s.backends = Backends::Static(o.backends.clone()),
            (None, true) => {}
        }
    }
    let needs_controller = config
        .services
        .iter()
        .any(|s| matches!(s.backends, Backends::Controller(_)));
    if o.controller.is_some() || o.token.is_some() || needs_controller {
        let c = config
            .controller
            .get_or_insert_with(|| ControllerConfig::new("localhost:50051", ""));
        if let Some(a) = &o.controller {
            // The flag replaces the file's address or addresses.
            c.address = a.clone();
            c.addresses.clear();
        }
        if let Some(t) = &o.token {
            c.token = t.clone();
        }
        c.insecure |= o.insecure;
        if o.join_token.is_some() {
            c.join_token = o.join_token.clone();
        }
        if o.ca.is_some() {
            c.ca = o.ca.clone();
        }
        if o.state_dir.is_some() {
            c.state_dir = o.state_dir.clone();
        }
        if o.proxy_name.is_some() {
            c.name = o.proxy_name.clone();
        }
    }
    if let Some(w) = o.workers {
        config.workers = w;
    }
    if let Some(a) = o.admin {
        config.admin = Some(a);
    }
    if let Some(d) = o.drain_timeout {
        config.drain_timeout = d;
    }
    if let Some(e) = o.event_loop {
        config.event_loop = e;
    }
    if let Some(b) = o.buffer_size {
        config.buffer_size = b;
    }
    if let Some(b) = o.sched_batch {
        config.sched_batch = b;
    }
    for s in &mut config.services {
        if let Some(e) = o.engine {
            s.engine = e;
        }
        if let Some(d) = o.connect_timeout {
            s.connect_timeout = d;
        }
        if let Some(d) = o.idle_timeout {
            s.idle_timeout = (!d.is_zero()).then_some(d);
        }
        if let Some(m) = o.max_connections {
            s.max_connections = Some(m);
        }
        if let Some(i) = o.health_interval {
            s.health.interval = i;
        }
        if let Some(r) = o.reuseport {
            s.tuning.reuseport = r;
        }
        if let Some(p) = o.send_proxy {
            s.send_proxy = Some(p);
        }
        if let Some(d) = o.defer_accept {
            s.tuning.defer_accept = d;
        }
        if let Some(d) = o.smart_connect {
            s.tuning.smart_connect = d;
        }
    }
    if let Err(e) = config.validate() {
        return Err(match (&o.config_file, &text, &e) {
            (Some(file), Some(text), Error::Config { path, .. }) => {
                let line = line_of(text, path);
                in_file(e, file, line)
            }
            _ => e,
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match from_yaml(text).and_then(|c| c.validate().map(|_| c)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_file_parses_with_every_knob() {
        let c = from_yaml(
            r#"
workers: 3
admin: 127.0.0.1:9100
drain_timeout: 500ms
controller: {address: "ctl:50051", token: t}
services:
  - name: web
    listen: ":8080"
    backends: [127.0.0.1:1, 127.0.0.1:2]
    engine: copy
    backlog: 128
    reuseport: false
    nodelay: false
    keepalive: 30s
    send_buffer: 65536
    recv_buffer: 131072
    connect_timeout: 250ms
    connect_attempts: 2
    idle_timeout: 0s
    max_connections: 10
    splice_threshold: 8192
    health: {interval: 1s, timeout: 100ms, rise: 4, fall: 5}
  - name: api
    listen: 127.0.0.1:9000
    service: my-service
"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.drain_timeout, Duration::from_millis(500));
        let web = &c.services[0];
        assert_eq!(web.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(web.engine, Engine::Copy);
        assert_eq!(web.tuning.backlog, 128);
        assert!(!web.tuning.reuseport && !web.tuning.nodelay);
        assert_eq!(web.tuning.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(web.tuning.recv_buffer, Some(131072));
        assert_eq!(web.idle_timeout, None);
        assert_eq!(web.max_connections, Some(10));
        assert_eq!(web.health.rise, 4);
        assert_eq!(
            c.services[1].backends,
            Backends::Controller("my-service".into())
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_its_path() {
        let e = err(
            "services:\n  - name: a\n    listen: :1\n    backends: [127.0.0.1:2]\n    helth: {}\n",
        );
        assert!(e.contains("services[0]") && e.contains("helth"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let e = err("services:\n  - name: a\n    listen: :1\n    backends: [127.0.0.1:2]\n    health: {interval: soon}\n");
        assert!(e.contains("services[0].health.interval"), "{e}");
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn zero_rise_is_rejected_by_validation() {
        let e = err("services:\n  - name: a\n    listen: :1\n    backends: [127.0.0.1:2]\n    health: {rise: 0}\n");
        assert!(e.contains("services[0].health.rise"), "{e}");
    }

    #[test]
    fn backends_and_service_are_exclusive() {
        let e = err("controller: {address: x:1}\nservices:\n  - name: a\n    listen: :1\n    backends: [127.0.0.1:2]\n    service: b\n");
        assert!(e.contains("services[0]") && e.contains("exclusive"), "{e}");
    }

    #[test]
    fn duplicate_listen_is_rejected() {
        let e = err("services:\n  - {name: a, listen: ':1', backends: [127.0.0.1:2]}\n  - {name: b, listen: ':1', backends: [127.0.0.1:2]}\n");
        assert!(e.contains("services[1].listen"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "workers: 1\nservices:\n  - {name: a, listen: ':1', backends: [127.0.0.1:2], engine: copy}\n",
        )
        .unwrap();
        let c = load(&Overrides {
            config_file: Some(path),
            workers: Some(4),
            engine: Some(Engine::Splice),
            listen: Some("127.0.0.1:7".parse().unwrap()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.workers, 4);
        assert_eq!(c.services[0].engine, Engine::Splice);
        assert_eq!(c.services[0].listen, "127.0.0.1:7".parse().unwrap());
    }

    #[test]
    fn seed_form_uses_the_controller_and_default_listen() {
        let c = load(&Overrides {
            service: Some("my-service".into()),
            token: Some("t".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.services[0].listen, DEFAULT_LISTEN);
        assert_eq!(
            c.services[0].backends,
            Backends::Controller("my-service".into())
        );
        let ctl = c.controller.unwrap();
        assert_eq!(
            (ctl.address.as_str(), ctl.token.as_str()),
            ("localhost:50051", "t")
        );
    }

    #[test]
    fn several_controllers_as_a_list_or_comma_separated() {
        let svc = "services:\n  - {name: a, listen: ':1', service: b}\n";
        let c = from_yaml(&format!(
            "controller: {{addresses: [ctl-1:50051, '10.0.0.2:50051'], token: t}}\n{svc}"
        ))
        .unwrap();
        c.validate().unwrap();
        let ctl = c.controller.unwrap();
        assert_eq!(
            ctl.controllers().unwrap(),
            ["ctl-1:50051", "10.0.0.2:50051"]
        );
        assert_eq!(ctl.display_addresses(), "ctl-1:50051,10.0.0.2:50051");
        let c = from_yaml(&format!("controller: {{address: 'a:1, b:2'}}\n{svc}")).unwrap();
        assert_eq!(c.controller.unwrap().controllers().unwrap(), ["a:1", "b:2"]);
        // One address is what it always was.
        let c = from_yaml(&format!("controller: {{address: a:1}}\n{svc}")).unwrap();
        assert_eq!(c.controller.unwrap().controllers().unwrap(), ["a:1"]);
    }

    #[test]
    fn bad_controller_lists_name_the_field() {
        let svc = "services:\n  - {name: a, listen: ':1', service: b}\n";
        let e = err(&format!(
            "controller: {{address: a:1, addresses: [b:2]}}\n{svc}"
        ));
        assert!(
            e.contains("controller.addresses") && e.contains("not both"),
            "{e}"
        );
        let e = err(&format!("controller: {{token: t}}\n{svc}"));
        assert!(
            e.contains("controller.address") && e.contains("empty"),
            "{e}"
        );
        let e = err(&format!("controller: {{addresses: [a:1, a:1]}}\n{svc}"));
        assert!(
            e.contains("controller.addresses") && e.contains("twice"),
            "{e}"
        );
        let e = err(&format!("controller: {{addresses: [a:1, '']}}\n{svc}"));
        assert!(e.contains("empty"), "{e}");
        let e = err(&format!("controller: {{address: 'a:1,,b:2'}}\n{svc}"));
        assert!(
            e.contains("controller.address") && e.contains("empty"),
            "{e}"
        );
        let e = err(&format!("controller: {{address: nonsense}}\n{svc}"));
        assert!(e.contains("no port"), "{e}");
        let many: Vec<String> = (1..=17).map(|i| format!("h{i}:1")).collect();
        let e = err(&format!(
            "controller: {{addresses: [{}]}}\n{svc}",
            many.join(", ")
        ));
        assert!(e.contains("17 addresses"), "{e}");
    }

    #[test]
    fn the_controller_flag_replaces_the_file_s_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "controller: {addresses: [a:1, b:2]}\nservices:\n  - {name: a, listen: ':1', service: b}\n",
        )
        .unwrap();
        let c = load(&Overrides {
            config_file: Some(path),
            controller: Some("c:3,d:4".into()),
            ..Overrides::default()
        })
        .unwrap();
        let ctl = c.controller.unwrap();
        assert_eq!(ctl.controllers().unwrap(), ["c:3", "d:4"]);
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "workers: many\nservices: []\n").unwrap();
        let e = load(&Overrides {
            config_file: Some(path),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad.yaml") && e.contains("workers"), "{e}");
    }

    #[test]
    fn listen_shorthand_means_all_interfaces() {
        assert_eq!(parse_listen(":8080").unwrap(), DEFAULT_LISTEN);
        assert!(parse_listen(":x").is_err());
    }

    #[test]
    fn check_rejects_a_wildcard_listener_beside_a_specific_one_on_the_same_port() {
        let e = err("services:\n  - {name: a, listen: ':7001', backends: [127.0.0.1:2]}\n  - {name: b, listen: '127.0.0.1:7001', backends: [127.0.0.1:2]}\n");
        assert!(
            e.contains("services[1].listen") && e.contains("overlaps"),
            "{e}"
        );
    }

    #[test]
    fn check_rejects_an_admin_address_equal_to_a_listener() {
        let e = err("admin: 127.0.0.1:7002\nservices:\n  - {name: a, listen: ':7002', backends: [127.0.0.1:2]}\n");
        assert!(e.contains("admin") && e.contains("overlaps"), "{e}");
    }

    #[test]
    fn check_rejects_absurd_worker_counts() {
        let e = err(
            "workers: 100000\nservices:\n  - {name: a, listen: ':1', backends: [127.0.0.1:2]}\n",
        );
        assert!(e.contains("workers") && e.contains("1024"), "{e}");
    }

    #[test]
    fn overlap_rules() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("0.0.0.0:1"), a("127.0.0.1:1")));
        assert!(overlaps(a("[::]:1"), a("127.0.0.1:1")));
        assert!(!overlaps(a("0.0.0.0:1"), a("[::1]:1")));
        assert!(!overlaps(a("127.0.0.1:1"), a("127.0.0.2:1")));
        assert!(!overlaps(a("127.0.0.1:0"), a("127.0.0.1:0")));
        assert!(!overlaps(a("0.0.0.0:1"), a("0.0.0.0:2")));
    }

    #[test]
    fn a_bad_backend_address_names_its_list_element_and_line() {
        let e = err("services:\n  - name: a\n    listen: ':1'\n    backends:\n      - 127.0.0.1:2\n      - nonsense\n");
        assert!(e.contains("services[0].backends[1]"), "{e}");
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn validation_errors_from_a_file_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "workers: 1\nservices:\n  - name: a\n    listen: ':1'\n    backends: [127.0.0.1:2]\n    connect_attempts: 0\n",
        )
        .unwrap();
        let e = load(&Overrides {
            config_file: Some(path),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("p.yaml: line 6: services[0].connect_attempts"),
            "{e}"
        );
    }

    #[test]
    fn buffer_size_is_bounded() {
        let e = err(
            "buffer_size: 10\nservices:\n  - {name: a, listen: ':1', backends: [127.0.0.1:2]}\n",
        );
        assert!(e.contains("buffer_size"), "{e}");
        let c = from_yaml(
            "buffer_size: 16384\nservices:\n  - {name: a, listen: ':1', backends: [127.0.0.1:2]}\n",
        )
        .unwrap();
        assert_eq!(c.buffer_size, 16384);
    }
}
