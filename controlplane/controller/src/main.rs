//! `pss-controller`: flags, logging and signals; the work is in the `pss_controller` library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pss_controller::{serve, ControllerConfig};
use pss_plumbing::addr::parse_listen;
use pss_plumbing::duration::parse_duration;
use pss_store::SqliteStore;
use tokio_util::sync::CancellationToken;

/// PSS control plane: desired and observed state in SQLite, scheduler, reconciler, autoscaler,
/// service manager and node registry behind one token-protected gRPC endpoint.
#[derive(Parser, Debug)]
#[command(name = "pss-controller", version)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "PSS_LISTEN", default_value = ":50051")]
    listen: String,
    /// SQLite database path.
    #[arg(long, env = "PSS_DB", default_value = "pss.db")]
    db: PathBuf,
    /// Shared auth token (required).
    #[arg(long, env = "PSS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Periodic reconcile interval (changes also reconcile at once).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    reconcile_interval: Duration,
    /// Autoscaler evaluation interval (and the agents' expected metrics interval).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    metrics_interval: Duration,
    /// A node silent for this long becomes NotReady and its pods are replaced
    /// (default: 3 x --metrics-interval).
    #[arg(long, value_parser = parse_duration)]
    node_timeout: Option<Duration>,
    /// Time a pod spends out of the endpoints before it is stopped.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    drain_period: Duration,
    /// Grace period containers get before SIGKILL when a pod is stopped.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    stop_grace: Duration,
    /// Minimum time between two autoscaling actions on a workload.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    autoscale_cooldown: Duration,
    /// Scale-down uses the highest recommendation over this window.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    stabilization_window: Duration,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pss_plumbing::logging::init(&args.log_format);
    let token = pss_plumbing::token::require_token(args.token).map_err(anyhow::Error::msg)?;
    let addr = parse_listen(&args.listen).map_err(anyhow::Error::msg)?;
    let store = SqliteStore::open(&args.db)
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let mut config = ControllerConfig::new(token);
    config.reconcile_interval = args.reconcile_interval;
    config.metrics_interval = args.metrics_interval;
    config.node_timeout = args.node_timeout.unwrap_or(args.metrics_interval * 3);
    config.drain_period = args.drain_period;
    config.stop_grace = args.stop_grace;
    config.autoscale_cooldown = args.autoscale_cooldown;
    config.stabilization_window = args.stabilization_window;
    tracing::info!(db = %args.db.display(), "state store opened");

    let shutdown = CancellationToken::new();
    pss_plumbing::shutdown::cancel_on_signals(shutdown.clone());
    serve(listener, Arc::new(store), config, shutdown).await?;
    Ok(())
}
