//! Test support: an in-process controller on 127.0.0.1:0 with a real SQLite file, and pssctl
//! commands run through the same `cli::execute` the binary uses.
#![allow(dead_code)]

pub mod cluster;
pub mod fake_agent;
pub mod process;
pub mod proxy;
pub mod traffic;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pss_controller::{serve, ControllerConfig};
use pss_store::SqliteStore;
use pssctl::{execute, Cli, CliError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "pss-e2e-test-token-0123";

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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
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
    /// Starts a controller on `db` with `config`.
    pub async fn start_with(db: &Path, config: ControllerConfig) -> Self {
        Self::start_with_store(SqliteStore::open(db).expect("open store"), config).await
    }

    /// Starts a controller on an opened `store` (e.g. with a longer event retention).
    #[allow(dead_code)]
    pub async fn start_with_store(store: SqliteStore, config: ControllerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::new(store), config, shutdown.clone()));
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
        let mut argv = vec!["pssctl", "--controller", addr.as_str(), "--token", token];
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

/// Controller timings for tests: quick loops, short drains.
pub fn fast_config() -> ControllerConfig {
    let mut c = ControllerConfig::new(TOKEN);
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
