//! `pss-controller`: flags, logging and signals; the work is in the `pss_controller` library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pss_controller::{defaults, serve, ControllerConfig, TlsSetup};
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
    /// SQLite database path (the default store).
    #[arg(long, env = "PSS_DB", default_value = "pss.db")]
    db: PathBuf,
    /// State store: `sqlite://PATH` (the default, same as --db PATH) or
    /// `etcd://HOST:PORT[,HOST:PORT...]` (several controllers share it; one leads).
    #[arg(long, env = "PSS_STORE")]
    store: Option<String>,
    /// On etcd: the key prefix the cluster's state lives under (several clusters can share an
    /// etcd under different prefixes).
    #[arg(long, env = "PSS_ETCD_PREFIX", default_value = pss_store::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// On etcd: a leader that dies is replaced within this long (3s to 60s; its lease is
    /// granted for one second less).
    #[arg(long, default_value_t = HumanDuration(pss_controller::DEFAULT_LEADER_TTL))]
    leader_ttl: HumanDuration,
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
    /// Directory of the cluster CA and the controller's certificate (`<dir>/pki`, `0700`;
    /// created on first start). Default: the database's directory.
    #[arg(long, env = "PSS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Serve plaintext, with the shared token only (logs a warning). Never across a network
    /// you do not trust.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    insecure: bool,
    /// Bring your own PKI: the controller's certificate chain (PEM); needs --tls-key and
    /// --client-ca. The controller then issues nothing (no join tokens).
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA client certificates (agents, proxies, operators) are checked against (PEM).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Extra DNS name or IP address of the controller's certificate (repeatable; it always
    /// carries pss-controller, localhost and the loopback addresses).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Lifetime of the certificates issued to agents, proxies and operators that join (they
    /// renew them two thirds through).
    #[arg(long, default_value_t = HumanDuration(pss_controller::security::DEFAULT_CERT_TTL))]
    cert_ttl: HumanDuration,
    /// Where to write the local operator's pssctl configuration on first start (the CA, a
    /// certificate, the address); `none` to skip. Default: root's per-user pssctl config
    /// when run as root, else `<data-dir>/pki/operator.yaml`.
    #[arg(long, env = "PSS_OPERATOR_CONFIG")]
    operator_config: Option<PathBuf>,
    /// Serve Prometheus /metrics, /healthz and /readyz over HTTP here (e.g. 127.0.0.1:9090);
    /// off when not given.
    #[arg(long, env = "PSS_ADMIN")]
    admin: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Moves a cluster's state from one store to another (e.g. SQLite to etcd) while no
    /// controller runs; the target must be empty. Then start the controllers on the target.
    Migrate {
        /// Where the state is now: `sqlite://PATH`.
        #[arg(long)]
        from: String,
        /// Where it goes: `etcd://HOST:PORT[,HOST:PORT...]` (under --etcd-prefix).
        #[arg(long)]
        to: String,
    },
}

/// A `--store`, `--from` or `--to` value.
enum StoreSpec {
    Sqlite(PathBuf),
    Etcd(String),
}

fn parse_store(flag: &str, spec: &str) -> anyhow::Result<StoreSpec> {
    if let Some(path) = spec.strip_prefix("sqlite://") {
        if path.is_empty() {
            anyhow::bail!("{flag} {spec:?}: sqlite:// needs a path");
        }
        return Ok(StoreSpec::Sqlite(PathBuf::from(path)));
    }
    if spec.starts_with("etcd://") {
        pss_etcd::parse_endpoints(spec).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        return Ok(StoreSpec::Etcd(spec.to_string()));
    }
    let shown = pss_core::text::cut_short(spec, 100);
    anyhow::bail!("{flag} {shown:?}: expected sqlite://PATH or etcd://HOST:PORT[,HOST:PORT...]")
}

fn open_etcd(spec: &str, prefix: &str) -> anyhow::Result<pss_store::EtcdStore> {
    pss_store::EtcdStore::connect(spec, prefix, pss_etcd::Timeouts::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("connecting to etcd at {spec}"))
}

/// `pss-controller migrate`: copies everything into an empty target.
fn migrate(from: &str, to: &str, prefix: &str) -> anyhow::Result<()> {
    let StoreSpec::Sqlite(path) = parse_store("--from", from)? else {
        anyhow::bail!("--from: migrate reads from sqlite://PATH");
    };
    let StoreSpec::Etcd(target) = parse_store("--to", to)? else {
        anyhow::bail!("--to: migrate writes to etcd://HOST:PORT[,...]");
    };
    if !path.exists() {
        anyhow::bail!("--from: {} does not exist", path.display());
    }
    let source =
        SqliteStore::open(&path).with_context(|| format!("opening database {}", path.display()))?;
    let etcd = open_etcd(&target, prefix)?;
    let summary = etcd
        .import(&source)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("migrating (nothing was left in etcd)")?;
    println!(
        "migrated {} to {target} under {prefix}: {} workloads, {} services, {} autoscalers, \
         {} nodes, {} pods, {} events, {} join tokens, {} revocations",
        path.display(),
        summary.workloads,
        summary.services,
        summary.autoscalers,
        summary.nodes,
        summary.pods,
        summary.events,
        summary.join_tokens,
        summary.revoked_certificates
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Migrate { from, to }) = &args.command {
        let (from, to, prefix) = (from.clone(), to.clone(), args.etcd_prefix.clone());
        return tokio::task::spawn_blocking(move || migrate(&from, &to, &prefix)).await?;
    }
    pss_store::etcd::check_prefix(&args.etcd_prefix)
        .map_err(|e| anyhow::anyhow!("--etcd-prefix: {e}"))?;
    let leader_ttl: Duration = args.leader_ttl.into();
    if !(Duration::from_secs(3)..=Duration::from_secs(60)).contains(&leader_ttl) {
        anyhow::bail!(
            "--leader-ttl {args_ttl}: must be between 3s and 60s",
            args_ttl = args.leader_ttl
        );
    }
    let spec = match &args.store {
        Some(s) => parse_store("--store", s)?,
        None => StoreSpec::Sqlite(args.db.clone()),
    };
    let db = match &spec {
        StoreSpec::Sqlite(p) => p.clone(),
        StoreSpec::Etcd(_) => args.db.clone(),
    };
    let token = args.server.start_optional().map_err(anyhow::Error::msg)?;
    if args.insecure && token.is_none() {
        anyhow::bail!("--insecure needs the shared token (--token-file or PSS_TOKEN)");
    }
    let (store, etcd): (Arc<dyn pss_store::StateStore>, _) = match &spec {
        StoreSpec::Sqlite(path) => (
            Arc::new(
                SqliteStore::open(path)
                    .with_context(|| format!("opening database {}", path.display()))?,
            ),
            None,
        ),
        StoreSpec::Etcd(s) => {
            let (s, prefix) = (s.clone(), args.etcd_prefix.clone());
            let etcd =
                Arc::new(tokio::task::spawn_blocking(move || open_etcd(&s, &prefix)).await??);
            (etcd.clone() as Arc<dyn pss_store::StateStore>, Some(etcd))
        }
    };
    let listener = bind(&args.listen).await.map_err(anyhow::Error::msg)?;
    let mut config = ControllerConfig::new(token.unwrap_or_default());
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        db.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    });
    let pki_dir = data_dir.join("pki");
    config.tls = match (args.insecure, &args.tls_cert) {
        (true, _) => TlsSetup::Insecure,
        (false, Some(cert)) => TlsSetup::Files {
            cert: cert.clone(),
            key: args.tls_key.clone().expect("clap requires it"),
            client_ca: args.client_ca.clone().expect("clap requires it"),
        },
        (false, None) => TlsSetup::Auto {
            dir: pki_dir.clone(),
        },
    };
    config.tls_sans.extend(args.tls_sans.iter().cloned());
    config.tls_sans.push(host_name());
    config.cert_ttl = args.cert_ttl.into();
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
    config.leader_ttl = leader_ttl;
    match &args.store {
        Some(s) => tracing::info!(store = %s, "state store opened"),
        None => tracing::info!(db = %args.db.display(), "state store opened"),
    }

    if matches!(config.tls, TlsSetup::Auto { .. }) {
        let path = match &args.operator_config {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p.clone()),
            None if is_root() => pss_security::config_file::default_path(),
            None => Some(pki_dir.join("operator.yaml")),
        };
        if let Some(path) = path {
            let port = listener.local_addr()?.port();
            let user = std::env::var("USER")
                .ok()
                .filter(|u| pss_security::identity::check_name(u).is_ok());
            let name = user.unwrap_or_else(|| "root".into());
            let written = pss_controller::security::write_operator_config(
                &pki_dir,
                store.as_ref(),
                &path,
                &format!("127.0.0.1:{port}"),
                &name,
            )?;
            if written {
                tracing::info!(path = %path.display(), "wrote the local operator's pssctl configuration");
            }
        }
    }

    let shutdown = CancellationToken::new();
    pss_plumbing::shutdown::cancel_on_signals(shutdown.clone());
    match etcd {
        Some(etcd) => pss_controller::serve_etcd(listener, etcd, config, shutdown).await?,
        None => serve(listener, store, config, shutdown).await?,
    }
    Ok(())
}

/// This machine's host name, a name the controller's certificate carries.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the process runs as root (its operator configuration goes to root's home).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
