//! `pss-controller`: flags, logging and signals; the work is in the `pss_controller` library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pss_controller::{defaults, serve, ControllerConfig};
use pss_plumbing::duration::{parse_duration, HumanDuration};
use pss_plumbing::server_args::{bind, ServerArgs};
use pss_store::SqliteStore;
use tokio_util::sync::CancellationToken;

/// Highest `--max-replicas` accepted: the scheduler and reconciler work per replica, and a
/// cluster of this system's size never needs more pods of one workload.
const MAX_MAX_REPLICAS: u32 = 100_000;

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
    /// Periodic reconcile interval (changes also reconcile at once).
    #[arg(long, default_value_t = HumanDuration(defaults::RECONCILE_INTERVAL))]
    reconcile_interval: HumanDuration,
    /// Autoscaler evaluation interval (and the agents' expected metrics interval).
    #[arg(long, default_value_t = HumanDuration(defaults::METRICS_INTERVAL))]
    metrics_interval: HumanDuration,
    /// A node silent for this long becomes NotReady and its pods are replaced
    /// (default: 3 x --metrics-interval).
    #[arg(long, value_parser = parse_duration)]
    node_timeout: Option<Duration>,
    /// Time a pod spends out of the endpoints before it is stopped.
    #[arg(long, default_value_t = HumanDuration(defaults::DRAIN_PERIOD))]
    drain_period: HumanDuration,
    /// Grace period containers get before SIGKILL when a pod is stopped.
    #[arg(long, default_value_t = HumanDuration(defaults::STOP_GRACE))]
    stop_grace: HumanDuration,
    /// Minimum time between two autoscaling actions on a workload.
    #[arg(long, default_value_t = HumanDuration(defaults::AUTOSCALE_COOLDOWN))]
    autoscale_cooldown: HumanDuration,
    /// Scale-down uses the highest recommendation over this window.
    #[arg(long, default_value_t = HumanDuration(defaults::STABILIZATION_WINDOW))]
    stabilization_window: HumanDuration,
    /// Most replicas one workload may have (manifests, `pssctl scale`, autoscalers); stored
    /// workloads above it are reported and not run.
    #[arg(
        long,
        default_value_t = pss_core::model::Limits::default().max_replicas,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MAX_REPLICAS))
    )]
    max_replicas: u32,
    /// Serve Prometheus /metrics, /healthz and /readyz over HTTP here (e.g. 127.0.0.1:9090);
    /// off when not given.
    #[arg(long, env = "PSS_ADMIN")]
    admin: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = args.server.start().map_err(anyhow::Error::msg)?;
    let store = SqliteStore::open(&args.db)
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let listener = bind(&args.listen).await.map_err(anyhow::Error::msg)?;
    let mut config = ControllerConfig::new(token);
    config.reconcile_interval = args.reconcile_interval.into();
    config.metrics_interval = args.metrics_interval.into();
    config.node_timeout = args
        .node_timeout
        .unwrap_or(config.metrics_interval * defaults::NODE_TIMEOUT_INTERVALS);
    config.drain_period = args.drain_period.into();
    config.stop_grace = args.stop_grace.into();
    config.autoscale_cooldown = args.autoscale_cooldown.into();
    config.stabilization_window = args.stabilization_window.into();
    config.limits.max_replicas = args.max_replicas;
    config.admin = match &args.admin {
        Some(a) => Some(
            pss_plumbing::addr::parse_listen(a)
                .map_err(|e| anyhow::anyhow!("--admin {a:?}: {e}"))?,
        ),
        None => None,
    };
    tracing::info!(db = %args.db.display(), "state store opened");

    let shutdown = CancellationToken::new();
    pss_plumbing::shutdown::cancel_on_signals(shutdown.clone());
    serve(listener, Arc::new(store), config, shutdown).await?;
    Ok(())
}
