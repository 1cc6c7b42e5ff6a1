//! pss-proxy: the PSS L4 data plane. Parses flags, builds the configuration, runs the library
//! until SIGTERM/SIGINT, then drains (a second SIGTERM/SIGINT stops at once). SIGHUP reloads
//! `--config` (flags still override it) without dropping connections; a bad file is rejected
//! and the running configuration keeps serving.
//!
//! Forms:
//! * seed:   `pss-proxy --controller ADDR --join-token T --service NAME --listen ADDR`
//!   (TLS; or `--token T --ca CA.crt`, or `--insecure --token T` in plaintext)
//! * static: `pss-proxy --listen ADDR --backend ADDR [--backend ADDR ...]`
//! * file:   `pss-proxy --config FILE [flags override the file] [--check]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use pss_dataplane::config::{self, Overrides};
use pss_dataplane::{Engine, EventLoop, Proxy, ProxyHandle, ProxyProtocol};
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
    /// Controller gRPC address; or several, comma-separated (`ctl-1:50051,ctl-2:50051`, at most
    /// 16): the watch moves to the next when its stream breaks.
    #[arg(long, env = "PSS_CONTROLLER", default_value = "localhost:50051")]
    controller: String,
    /// Shared token for the controller (at least 16 bytes). Prefer --token-file or the
    /// PSS_TOKEN environment variable: a value given here is visible to every user in `ps`.
    #[arg(long, env = "PSS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the shared token (its trailing newline is ignored).
    #[arg(long, env = "PSS_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// With a controller: plaintext and the shared token (the seed's mode). Default: TLS.
    #[arg(long)]
    insecure: bool,
    /// Join token (`pssctl token create --role proxy`): pins the cluster CA and buys this
    /// proxy's certificate. Prefer PSS_JOIN_TOKEN or --join-token-file.
    #[arg(long, env = "PSS_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "PSS_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<PathBuf>,
    /// The cluster CA (PEM), to join with the operator --token instead of a join token.
    #[arg(long, env = "PSS_CA")]
    ca: Option<PathBuf>,
    /// Where the proxy's key and certificate live (`<dir>/<name>/`). Default:
    /// /var/lib/pss/proxy as root, else ~/.local/state/pss/proxy.
    #[arg(long, env = "PSS_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The name this proxy's certificate carries [default: the host name].
    #[arg(long, env = "PSS_PROXY_NAME")]
    proxy_name: Option<String>,
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
    /// Health check interval; 0s disables active checks (failed backends are then ejected
    /// with back-off) [default: 2s].
    #[arg(long, value_parser = config::parse_duration)]
    health_interval: Option<Duration>,
    /// One SO_REUSEPORT listener per worker (true) or one shared listener (false)
    /// [default: true].
    #[arg(long)]
    reuseport: Option<bool>,
    /// Send a PROXY protocol header (v1 or v2) to backends so they see the client's address.
    #[arg(long)]
    send_proxy: Option<ProxyProtocol>,
    /// TCP_DEFER_ACCEPT: accept a connection only once the client sent data (client-first
    /// protocols only) [default: false].
    #[arg(long)]
    defer_accept: Option<bool>,
    /// Backend handshake's last ACK rides on the first data (TCP_QUICKACK off; client-first
    /// protocols only) [default: false].
    #[arg(long)]
    smart_connect: Option<bool>,
    /// Bytes a direction copies at once [default: 65536].
    #[arg(long)]
    buffer_size: Option<usize>,
    /// Worker event loop: mio (one epoll per worker, default) or tokio.
    #[arg(long)]
    event_loop: Option<EventLoop>,
    /// Run workers with SCHED_BATCH [default: false].
    #[arg(long)]
    sched_batch: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    pss_plumbing::logging::init("text");
    let args = Args::parse();
    // The default controller only matters for the seed form; an explicit flag or env always
    // wins over the file.
    let controller_given = std::env::args().any(|a| a.starts_with("--controller"))
        || std::env::var_os("PSS_CONTROLLER").is_some();
    if controller_given {
        pss_plumbing::controllers::parse_list(&args.controller)
            .map_err(|e| anyhow::anyhow!("--controller: {e}"))?;
    }
    // A token is only needed to follow a controller; when one is given it must be a good one.
    let token = match (&args.token, &args.token_file) {
        (None, None) => None,
        _ => Some(
            pss_plumbing::token::load(args.token.clone(), args.token_file.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let join_token = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--join-token-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if args.insecure {
        tracing::warn!("--insecure: the controller's endpoints and the token travel in plaintext");
    }
    let overrides = Overrides {
        insecure: args.insecure,
        join_token,
        ca: args.ca.clone(),
        state_dir: args.state_dir.clone(),
        proxy_name: args.proxy_name.clone(),
        config_file: args.config.clone(),
        listen: args.listen,
        backends: args.backends,
        service: args.service,
        controller: controller_given.then_some(args.controller),
        token,
        workers: args.workers,
        engine: args.engine,
        admin: args.admin,
        drain_timeout: args.drain_timeout,
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        health_interval: args.health_interval,
        reuseport: args.reuseport,
        send_proxy: args.send_proxy,
        defer_accept: args.defer_accept,
        event_loop: args.event_loop,
        sched_batch: args.sched_batch,
        smart_connect: args.smart_connect,
        buffer_size: args.buffer_size,
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
        let force = CancellationToken::new();
        let signals = Signals::install()?;
        tokio::spawn(signals.run(proxy.handle(), overrides, shutdown.clone(), force.clone()));
        proxy.serve_until(shutdown, force).await?;
        anyhow::Ok(())
    })
}

/// The signals pss-proxy handles, installed before serving so none is ever fatal.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// First SIGTERM/SIGINT: drain. Second: stop at once. SIGHUP: reload.
    async fn run(
        mut self,
        handle: ProxyHandle,
        overrides: Overrides,
        shutdown: CancellationToken,
        force: CancellationToken,
    ) {
        loop {
            let what = tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => {
                    reload(&handle, &overrides).await;
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                tracing::warn!("{what} again: closing every connection now");
                force.cancel();
                return;
            }
            tracing::info!("{what}: stop accepting, draining (send it again to stop at once)");
            shutdown.cancel();
        }
    }
}

/// Re-reads the configuration (file and flags) and applies it; logs what changed or why not.
async fn reload(handle: &ProxyHandle, overrides: &Overrides) {
    if overrides.config_file.is_none() {
        tracing::warn!("SIGHUP: no --config file to reload; nothing changed");
        return;
    }
    let config = match config::load(overrides) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: configuration rejected, the running one stays: {e}");
            return;
        }
    };
    match handle.reload(config).await {
        Ok(changes) if changes.is_empty() => tracing::info!("SIGHUP: configuration unchanged"),
        Ok(changes) => {
            for c in changes {
                tracing::info!("reload: {c}");
            }
        }
        Err(e) => tracing::error!("SIGHUP: reload rejected, the running configuration stays: {e}"),
    }
}
