//! Test support: an in-process controller on 127.0.0.1:0 with a real SQLite file, and pssctl
//! commands run through the same `cli::execute` the binary uses.
#![allow(dead_code)]

pub mod cluster;
pub mod etcd;
pub mod fake_agent;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod traffic;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pss_controller::{serve, ControllerConfig, TlsSetup};
use pss_store::SqliteStore;
use pssctl::{execute, Cli, CliError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "pss-e2e-test-token-0123";

/// The CA certificate file of each TLS controller these tests started, by address: clients
/// of a controller verify it with its CA; a controller missing here serves plaintext.
static CAS: std::sync::Mutex<Vec<(SocketAddr, std::path::PathBuf)>> =
    std::sync::Mutex::new(Vec::new());

/// Records that the controller at `addr` serves TLS with the CA in `ca_file`.
pub fn register_ca(addr: SocketAddr, ca_file: std::path::PathBuf) {
    CAS.lock().unwrap().push((addr, ca_file));
}

/// The CA file of the controller at `addr`, if it serves TLS.
pub fn ca_file(addr: SocketAddr) -> Option<std::path::PathBuf> {
    CAS.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, f)| f.clone())
}

/// The CA (PEM) of the controller at `addr`, if it serves TLS.
pub fn ca_pem(addr: SocketAddr) -> Option<String> {
    ca_file(addr).map(|f| std::fs::read_to_string(f).expect("read the CA"))
}

/// pssctl's flags for the controller at `addr`: its CA, or `--insecure`.
pub fn transport_flags(addr: SocketAddr) -> Vec<String> {
    match ca_file(addr) {
        Some(f) => vec!["--ca".into(), f.display().to_string()],
        None => vec!["--insecure".into()],
    }
}

/// A channel to the controller at `addr`: TLS verified with its CA (no client certificate:
/// calls carry the token), or plaintext.
pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    try_channel(addr).await.expect("connect to the controller")
}

/// Like [`channel`], reporting a failure to connect.
pub async fn try_channel(
    addr: SocketAddr,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use pss_security::tls::{client_config, Dialer, Expect};
    let dialer = match ca_pem(addr) {
        Some(ca_pem) => Dialer::tls(
            client_config(
                Expect::Controller {
                    ca_pem,
                    server_name: "pss-controller".into(),
                },
                None,
            )
            .unwrap(),
        ),
        None => Dialer::plaintext(),
    };
    let endpoint = dialer.endpoint(&addr.to_string()).unwrap();
    dialer.connect(endpoint).await
}

/// How an in-process agent authenticates to the controller at `addr`: joins with the operator
/// token and the controller's CA (credentials in `state_dir`), or plaintext.
pub fn agent_tls(addr: SocketAddr, state_dir: &Path) -> pss_agent::AgentTls {
    match ca_pem(addr) {
        Some(ca) => pss_agent::AgentTls::Tls {
            state_dir: state_dir.to_path_buf(),
            join_token: None,
            ca_pem: Some(ca),
            cert_ttl: Duration::ZERO,
        },
        None => pss_agent::AgentTls::Insecure,
    }
}

/// The path of a workspace binary (`pss-agent`, `pss-controller`, `pssctl`, `pss-proxy`) of the
/// profile these tests were built with. Cargo only exposes `CARGO_BIN_EXE_*` for binaries of
/// the test's own package, so the binary is found beside the test's `deps/` directory, and
/// built once per test process when it is not there yet (`cargo test --workspace` and
/// `cargo nextest run --workspace` build it anyway).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap();
    if !path.exists() && !built.iter().any(|b| b == name) {
        let package = if name == "pss-proxy" {
            "pss-dataplane"
        } else {
            name
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
        built.push(name.to_string());
    }
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// A raw gRPC operator client (past pssctl's own checks) with the right token.
pub async fn operator(
    addr: SocketAddr,
) -> pss_proto::v1::operator_client::OperatorClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        pss_proto::auth::BearerToken,
    >,
> {
    let channel = channel(addr).await;
    pss_proto::v1::operator_client::OperatorClient::with_interceptor(
        channel,
        pss_proto::auth::BearerToken::new(TOKEN).unwrap(),
    )
}

/// A controller running in this process.
pub struct RunningController {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<pss_controller::Result<()>>,
}

impl RunningController {
    /// Starts a controller on `db` with `config`; an `Auto` TLS set-up with an empty
    /// directory keeps its CA beside the database (`pki/`).
    pub async fn start_with(db: &Path, config: ControllerConfig) -> Self {
        Self::start_with_store(db, SqliteStore::open(db).expect("open store"), config).await
    }

    /// Starts a controller on `store`, opened on `db` (e.g. with a longer event retention).
    #[allow(dead_code)]
    pub async fn start_with_store(
        db: &Path,
        store: SqliteStore,
        mut config: ControllerConfig,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if let TlsSetup::Auto { dir } = &mut config.tls {
            if dir.as_os_str().is_empty() {
                *dir = db.parent().unwrap().join("pki");
            }
            register_ca(addr, dir.join("ca.crt"));
        }
        let shutdown = CancellationToken::new();
        let ca = match &config.tls {
            TlsSetup::Auto { dir } => Some(dir.join("ca.crt")),
            _ => None,
        };
        let task = tokio::spawn(serve(listener, Arc::new(store), config, shutdown.clone()));
        if let Some(ca) = ca {
            // The CA is made as the controller starts: clients need it.
            eventually(Duration::from_secs(20), "the controller's CA", || async {
                ca.exists().then_some(())
            })
            .await;
        }
        RunningController {
            addr,
            shutdown,
            task,
        }
    }

    /// Starts a controller on `db` with fast test timings.
    pub async fn start(db: &Path) -> Self {
        Self::start_with(db, fast_config()).await
    }

    /// Stops it and waits until it has released the database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("controller stops in time")
            .expect("controller task")
            .expect("controller result");
    }

    /// Runs a pssctl command line (without the leading "pssctl") with the right address and
    /// token; returns its output.
    pub async fn ctl(&self, args: &[&str]) -> Result<String, CliError> {
        self.ctl_with_token(TOKEN, args).await
    }

    pub async fn ctl_with_token(&self, token: &str, args: &[&str]) -> Result<String, CliError> {
        let addr = self.addr.to_string();
        let transport = transport_flags(self.addr);
        let mut argv = vec!["pssctl", "--controller", addr.as_str(), "--token", token];
        argv.extend(transport.iter().map(String::as_str));
        argv.extend_from_slice(args);
        ctl_raw(&argv).await
    }
}

/// Runs a full pssctl argv through `cli::execute`.
pub async fn ctl_raw(argv: &[&str]) -> Result<String, CliError> {
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut out: Vec<u8> = Vec::new();
    execute(cli, &mut out).await?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

/// Controller timings for tests: quick loops, short drains; TLS with a CA beside the
/// database (the secure default).
pub fn fast_config() -> ControllerConfig {
    let mut c = ControllerConfig::new(TOKEN);
    c.tls = TlsSetup::Auto {
        dir: std::path::PathBuf::new(),
    };
    c.reconcile_interval = Duration::from_secs(1);
    c.metrics_interval = Duration::from_secs(1);
    c.node_timeout = Duration::from_secs(6);
    c.drain_period = Duration::from_millis(500);
    c.stop_grace = Duration::from_secs(2);
    c
}

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Polls `f` every 100 ms until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An output sink shared with a running command (e.g. `logs -f`), readable while it runs.
#[derive(Clone, Default)]
pub struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
