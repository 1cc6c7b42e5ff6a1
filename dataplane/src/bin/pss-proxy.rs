//! pss-proxy: the PSS L4 data plane. Parses flags, builds the configuration, runs the library
//! until SIGTERM/SIGINT, then drains.
//!
//! Forms:
//! * seed:   `pss-proxy --controller ADDR --token T --service NAME --listen ADDR`
//! * static: `pss-proxy --listen ADDR --backend ADDR [--backend ADDR ...]`
//! * file:   `pss-proxy --config FILE [flags override the file] [--check]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use pss_dataplane::config::{self, Overrides};
use pss_dataplane::{Engine, Proxy};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "pss-proxy", version, about = "PSS zero-copy L4 load balancer")]
struct Args {
    /// YAML configuration file (many services, per-service tuning).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check: bool,
    /// Listen address; `:PORT` means 0.0.0.0:PORT [default: :8080].
    #[arg(long, env = "PSS_LISTEN", value_parser = config::parse_listen)]
    listen: Option<SocketAddr>,
    /// Static backend (repeatable); no controller needed.
    #[arg(long = "backend", value_parser = config::resolve)]
    backends: Vec<SocketAddr>,
    /// Controller service whose endpoints to balance over (seed form).
    #[arg(long)]
    service: Option<String>,
    /// Controller gRPC address.
    #[arg(long, env = "PSS_CONTROLLER", default_value = "localhost:50051")]
    controller: String,
    /// Shared token for the controller.
    #[arg(long, env = "PSS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Worker threads [default: number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Forwarding engine: splice, copy or uring.
    #[arg(long)]
    engine: Option<Engine>,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, value_parser = config::parse_listen)]
    admin: Option<SocketAddr>,
    /// How long open connections may finish after SIGTERM [default: 10s].
    #[arg(long, value_parser = config::parse_duration)]
    drain_timeout: Option<Duration>,
    /// Backend connect timeout [default: 2s].
    #[arg(long, value_parser = config::parse_duration)]
    connect_timeout: Option<Duration>,
    /// Close connections idle this long; 0s disables [default: 5m].
    #[arg(long, value_parser = config::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Close connections beyond this many open ones at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Health check interval; 0s disables active checks [default: 2s].
    #[arg(long, value_parser = config::parse_duration)]
    health_interval: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // The default controller only matters for the seed form; an explicit flag or env always
    // wins over the file.
    let controller_given = std::env::args().any(|a| a.starts_with("--controller"))
        || std::env::var_os("PSS_CONTROLLER").is_some();
    let overrides = Overrides {
        config_file: args.config.clone(),
        listen: args.listen,
        backends: args.backends,
        service: args.service,
        controller: controller_given.then_some(args.controller),
        token: args.token,
        workers: args.workers,
        engine: args.engine,
        admin: args.admin,
        drain_timeout: args.drain_timeout,
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        health_interval: args.health_interval,
    };
    let config = config::load(&overrides).context("invalid configuration")?;
    if args.check {
        println!(
            "configuration ok: {} service(s), {} worker(s)",
            config.services.len(),
            config.workers
        );
        return Ok(());
    }

    // Control tasks (health, watch, admin, signals) are light: one thread is plenty; the
    // workers run their own runtimes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let proxy = Proxy::bind(config)?;
        for s in proxy.handle().services() {
            tracing::info!(service = %s.0, listen = %s.1, "listening");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        proxy.serve(shutdown).await?;
        anyhow::Ok(())
    })
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stop accepting, draining"),
        _ = int.recv() => tracing::info!("SIGINT: stop accepting, draining"),
    }
    shutdown.cancel();
}
