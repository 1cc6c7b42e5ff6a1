//! `pss-agent`: flags, logging and signals; the work is in the `pss_agent` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pss_agent::{
    default_cpu_millis, defaults, hostname, run, run_sim_nodes, AgentConfig, AgentTls, RuntimeKind,
};
use pss_plumbing::duration::HumanDuration;
use pss_plumbing::server_args::{bind, ServerArgs};
use tokio_util::sync::CancellationToken;

/// PSS node agent: runs the controller's pods on Podman (libpod REST API over its unix
/// socket), reports node and pod state, and serves RunPod/StopPod/PodLogs to the controller.
#[derive(Parser, Debug)]
#[command(name = "pss-agent", version)]
struct Args {
    /// Controller gRPC address; or several, comma-separated (`ctl-1:50051,ctl-2:50051`, at most
    /// 16), of controllers sharing one cluster: the agent moves to the next when one cannot be
    /// reached.
    #[arg(long, env = "PSS_CONTROLLER", default_value = "localhost:50051")]
    controller: String,
    /// Agent gRPC listen address (the controller dials back here).
    #[arg(long, env = "PSS_AGENT_LISTEN", default_value = ":50052")]
    listen: String,
    /// Podman socket path (default: auto-detect: DOCKER_HOST, CONTAINER_HOST,
    /// $XDG_RUNTIME_DIR/podman/podman.sock, /run/user/<uid>/podman/podman.sock,
    /// /run/podman/podman.sock).
    #[arg(long, env = "PSS_PODMAN_SOCK")]
    socket: Option<PathBuf>,
    /// Where pods run: `podman`, or `sim` (in memory, instantly, no Podman: for scale tests).
    #[arg(long, env = "PSS_AGENT_RUNTIME", default_value = "podman")]
    runtime: RuntimeKind,
    /// With `--runtime sim`: run this many simulated agents in this process, named
    /// `<node-name>-0` .. `<node-name>-<N-1>`, listening on the --listen port plus their index
    /// (port 0: each on a free port).
    #[arg(long)]
    sim_nodes: Option<usize>,
    /// CPU capacity in millicores (default: cores x 1000).
    #[arg(long)]
    cpu: Option<u64>,
    /// Memory capacity in MiB.
    #[arg(long, default_value_t = defaults::MEMORY_MIB)]
    mem: u64,
    /// Heartbeat / metrics interval.
    #[arg(long, default_value_t = HumanDuration(defaults::METRICS_INTERVAL))]
    metrics_interval: HumanDuration,
    /// Node name (default: the hostname).
    #[arg(long, env = "PSS_NODE_NAME")]
    node_name: Option<String>,
    /// Address the controller dials back and pods' ports are reached on.
    #[arg(long, env = "PSS_ADVERTISE_ADDRESS", default_value = defaults::ADVERTISE_ADDRESS)]
    advertise_address: String,
    /// Host address pods' ports are published on (default: the advertise address when it is
    /// an IP address; 0.0.0.0 publishes on every address).
    #[arg(long, env = "PSS_PUBLISH_ADDRESS")]
    publish_address: Option<String>,
    /// How long one read of the node's pods from Podman may take before heartbeats report the
    /// runtime unresponsive (the node stays Ready but gets no new pods).
    #[arg(long, default_value_t = HumanDuration(defaults::RUNTIME_DEADLINE))]
    runtime_deadline: HumanDuration,
    /// Plaintext with the shared token (the seed's mode; logs a warning). The controller must
    /// run with --insecure too.
    #[arg(long)]
    insecure: bool,
    /// Join token (`pssctl token create --role agent`): pins the cluster CA and buys this
    /// node's certificate on first start. Prefer PSS_JOIN_TOKEN or --join-token-file.
    #[arg(
        long,
        env = "PSS_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "insecure"
    )]
    join_token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "PSS_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<PathBuf>,
    /// The cluster CA (PEM), to join with the operator --token instead of a join token.
    #[arg(long, env = "PSS_CA")]
    ca: Option<PathBuf>,
    /// Where the node's key and certificate live (`<dir>/<node-name>/`, `0700`).
    /// Default: /var/lib/pss/agent as root, else $XDG_STATE_HOME/pss/agent or
    /// ~/.local/state/pss/agent.
    #[arg(long, env = "PSS_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Certificate lifetime to ask for (at most the controller's --cert-ttl; 0s: that).
    #[arg(long, default_value = "0s")]
    cert_ttl: HumanDuration,
    /// A label of this node, `key=value` (repeat the flag for several); `pssctl get nodes -l`
    /// selects on them.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Serve Prometheus /metrics, /healthz and /readyz over HTTP here (e.g. 127.0.0.1:9091);
    /// off when not given.
    #[arg(long, env = "PSS_AGENT_ADMIN")]
    admin: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `key=value`, checked as the controller will (Kubernetes' label syntax). Parsed here rather
/// than by clap, whose error would echo a huge value whole.
fn parse_label(text: &str) -> anyhow::Result<(String, String)> {
    let shown = pss_core::model::shorten(text);
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--label {shown}: expected KEY=VALUE"))?;
    pss_core::model::check_key(key)
        .and_then(|()| pss_core::model::check_value(value))
        .map_err(|e| anyhow::anyhow!("--label {shown}: {e}"))?;
    Ok((key.to_string(), value.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pss_plumbing::controllers::parse_list(&args.controller)
        .map_err(|e| anyhow::anyhow!("--controller: {e}"))?;
    let token = args.server.start_optional().map_err(anyhow::Error::msg)?;
    if args.insecure && token.is_none() {
        anyhow::bail!("--insecure needs the shared token (--token-file or PSS_TOKEN)");
    }
    let join_token = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            pss_security::files::read_text(f)
                .map_err(anyhow::Error::msg)?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| pss_security::files::default_state_dir("agent"));
    if !args.insecure
        && join_token.is_none()
        && token.is_none()
        && args.sim_nodes.is_none()
        && !state_dir.join(&node_name).join("cert.pem").exists()
    {
        anyhow::bail!(
            "no credential: pass --join-token (pssctl token create --role agent), or the \
             operator token (PSS_TOKEN) with --ca, or --insecure with the token"
        );
    }
    let ca_pem = match &args.ca {
        Some(p) => Some(pss_security::files::read_text(p).map_err(anyhow::Error::msg)?),
        None => None,
    };

    let mut config = AgentConfig::new(args.controller, token.unwrap_or_default(), node_name);
    if args.insecure {
        tracing::warn!("--insecure: plaintext to and from the controller; the token crosses the network in clear");
    } else {
        config.tls = AgentTls::Tls {
            state_dir,
            join_token,
            ca_pem,
            cert_ttl: args.cert_ttl.into(),
        };
    }
    config.advertise_address = args.advertise_address;
    config.publish_address = args.publish_address;
    config.runtime_deadline = args.runtime_deadline.into();
    config.socket = args.socket;
    config.runtime = args.runtime;
    config.cpu_millis = args.cpu.unwrap_or_else(default_cpu_millis);
    config.memory_bytes = args.mem * 1024 * 1024;
    config.metrics_interval = args.metrics_interval.into();
    if args.labels.len() > pss_core::model::MAX_LABELS {
        anyhow::bail!(
            "--label: {} labels, above the limit of {}",
            args.labels.len(),
            pss_core::model::MAX_LABELS
        );
    }
    config.labels = args
        .labels
        .iter()
        .map(|l| parse_label(l))
        .collect::<anyhow::Result<_>>()?;
    config.admin = match &args.admin {
        Some(a) => Some(
            pss_plumbing::addr::parse_listen(a)
                .map_err(|e| anyhow::anyhow!("--admin {a:?}: {e}"))?,
        ),
        None => None,
    };

    let shutdown = CancellationToken::new();
    pss_plumbing::shutdown::cancel_on_signals(shutdown.clone());
    if let Some(count) = args.sim_nodes {
        if config.runtime != RuntimeKind::Sim {
            anyhow::bail!("--sim-nodes needs --runtime sim");
        }
        let listen = pss_plumbing::addr::parse_listen(&args.listen).map_err(anyhow::Error::msg)?;
        run_sim_nodes(listen, config, count, shutdown)
            .await
            .context("pss-agent (simulated nodes)")?;
        return Ok(());
    }
    let listener = bind(&args.listen).await.map_err(anyhow::Error::msg)?;
    run(listener, config, shutdown).await.context("pss-agent")?;
    Ok(())
}
