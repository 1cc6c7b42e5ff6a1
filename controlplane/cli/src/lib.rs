//! `pssctl`, the operator CLI: argument parsing ([`Cli`]), the controller client
//! (`client.rs`), and rendering of tables / JSON / YAML (`render.rs`, `table.rs`).
//!
//! [`execute`] runs a parsed command and writes its output to any `Write`, so integration tests
//! drive exactly the code path the binary uses.

mod client;
pub mod connection;
mod render;
mod table;

use std::io::{Read, Write};

use clap::{Parser, Subcommand, ValueEnum};
use pss_plumbing::clock::now_ms;
use pss_proto::v1 as pb;

pub use client::{CliError, Client};

/// pssctl: operate a PSS cluster.
#[derive(Parser, Debug)]
#[command(
    name = "pssctl",
    version,
    about = "Operate a PSS cluster (Podman Service & Scheduler)"
)]
pub struct Cli {
    /// Controller gRPC address, or several comma-separated (tried in order: a command runs on
    /// the first that accepts the connection) [default: the configuration's `controllers`,
    /// else localhost:50051].
    #[arg(long, global = true, env = "PSS_CONTROLLER")]
    pub controller: Option<String>,
    /// Configuration file: controller address, CA, credential [default:
    /// ~/.config/pss/config.yaml, which pss-controller writes for root on first start].
    #[arg(long, global = true, env = "PSS_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// The cluster CA (PEM) to verify the controller with, instead of the configuration's.
    #[arg(long, global = true, env = "PSS_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// Plaintext, with the shared token, to a controller started with --insecure.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Shared auth token. Prefer --token-file or the PSS_TOKEN environment variable: a value
    /// given here is visible to every user in `ps`.
    #[arg(long, global = true, env = "PSS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the shared auth token (its trailing newline is ignored).
    #[arg(long, global = true, env = "PSS_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
    /// `kind/name`, one per line (for scripts: `pssctl get pods -o name | xargs ...`).
    Name,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "workload", alias = "wl")]
    Workloads,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "event", alias = "ev")]
    Events,
    #[value(alias = "autoscaler", alias = "hpa", alias = "autoscalepolicies")]
    Autoscalers,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply a YAML manifest (one or more documents separated by ---), or every .yaml/.yml
    /// file of a directory (one transaction per file, in name order).
    Apply {
        /// Manifest file, directory, or - for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// List objects: get KIND, get KIND NAME, get KIND/NAME, or get all.
    Get {
        /// pods, workloads, services, nodes, events, autoscalers (or a short name: po, wl,
        /// svc, no, ev, hpa), KIND/NAME, or all.
        resource: String,
        /// Only the object of this name.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Only pods/autoscalers of this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Events: how many of the newest to show (0: the controller's default, 200).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Only objects whose labels match: key=value, key!=value, key or !key, comma-separated
        /// (pods match their workload's labels).
        #[arg(short = 'l', long = "selector", default_value = "")]
        selector: String,
        /// Print the list, then one line per change (ADDED, MODIFIED, DELETED) until
        /// interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Set a workload's replica count: scale workload/NAME --replicas N.
    Scale {
        /// workload/NAME
        target: String,
        /// The new replica count (0 stops every pod; at most the controller's --max-replicas).
        #[arg(long)]
        replicas: u32,
    },
    /// Configure autoscaling: autoscale workload/NAME --cpu P --mem P --min N --max N.
    Autoscale {
        /// workload/NAME
        target: String,
        /// Target CPU utilisation, percent of requests (1..100).
        #[arg(long, default_value_t = 0)]
        cpu: u32,
        /// Target memory utilisation, percent of requests (1..100).
        #[arg(long, default_value_t = 0)]
        mem: u32,
        /// Fewest replicas the autoscaler keeps (at least 1).
        #[arg(long)]
        min: u32,
        /// Most replicas the autoscaler may set (at least --min, at most the controller's
        /// --max-replicas).
        #[arg(long)]
        max: u32,
    },
    /// Delete objects: delete KIND/NAME, or delete -f FILE (every object the file defines).
    Delete {
        /// workload/NAME, service/NAME or autoscaler/NAME
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        target: Option<String>,
        /// Manifest file whose objects are deleted.
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
    },
    /// Print (or follow) a pod's logs: logs [pod/]ID [-f].
    Logs {
        /// The pod: ID or pod/ID.
        target: String,
        /// Keep streaming new output.
        #[arg(short, long)]
        follow: bool,
        /// Only this container.
        #[arg(short, long, default_value = "")]
        container: String,
        /// Only the last N lines (0: all of them).
        #[arg(long, default_value_t = 0)]
        tail: u32,
    },
    /// Show one object in full with its recent events: describe KIND/NAME (or KIND NAME).
    Describe {
        /// KIND/NAME, or KIND when NAME follows.
        target: String,
        /// The name, when not given as KIND/NAME.
        name: Option<String>,
    },
    /// Current CPU and memory use: top nodes, top pods.
    Top {
        /// nodes or pods.
        #[arg(value_enum)]
        kind: TopKind,
    },
    /// Print pssctl's version and the controller's.
    Version,
    /// Mark a node unschedulable: cordon node/NAME (its pods keep running).
    Cordon {
        /// node/NAME
        target: String,
    },
    /// Make a cordoned or drained node schedulable again: uncordon node/NAME.
    Uncordon {
        /// node/NAME
        target: String,
    },
    /// Move every pod off a node, each replacement ready before the old pod stops, then leave
    /// the node cordoned: drain node/NAME.
    Drain {
        /// node/NAME
        target: String,
        /// Give up waiting after this long (the drain itself goes on); 0 returns at once.
        #[arg(long, default_value = "5m", value_parser = parse_wait)]
        timeout: std::time::Duration,
    },
    /// Manage a workload's rollouts: status, history, undo, restart, pause, resume.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Join tokens: token create --role agent|proxy|operator [--ttl D], token list,
    /// token revoke ID.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// pssctl's configuration: config view (secrets hidden).
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a join token for a role; it is printed once.
    Create {
        /// agent, proxy or operator.
        #[arg(long)]
        role: String,
        /// How long the token can be used to join (1m..365d).
        #[arg(long, default_value = "24h", value_parser = pss_plumbing::duration::parse_duration)]
        ttl: std::time::Duration,
    },
    /// List join tokens (never their secrets).
    List,
    /// Revoke a join token by its id (or the whole token).
    Revoke {
        /// The token's id (as `token list` shows it), or the whole token.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Show the configuration in use, without its secrets.
    View,
}

/// The configuration file in use: `--config`/`PSS_CONFIG` (must exist), else the per-user
/// default when it exists.
fn config_file(
    cli: &Cli,
) -> Result<Option<(std::path::PathBuf, pss_security::config_file::ClientConfig)>, CliError> {
    use pss_security::config_file::{default_path, ClientConfig};
    let load =
        |p: &std::path::Path| ClientConfig::load(p).map_err(|e| CliError::Usage(e.to_string()));
    match &cli.config {
        Some(p) => Ok(Some((p.clone(), load(p)?))),
        None => match default_path().filter(|p| p.exists()) {
            Some(p) => Ok(Some((p.clone(), load(&p)?))),
            None => Ok(None),
        },
    }
}

/// Where and how to connect, from the flags and the configuration file.
fn connection(cli: &Cli) -> Result<connection::Connection, CliError> {
    let token = match (&cli.token, &cli.token_file) {
        (None, None) => None,
        _ => Some(
            pss_plumbing::token::load(cli.token.clone(), cli.token_file.as_deref())
                .map_err(CliError::Usage)?,
        ),
    };
    let ca_pem = match &cli.ca {
        Some(p) => Some(
            pss_security::files::read_text(p).map_err(|e| CliError::Usage(format!("--ca: {e}")))?,
        ),
        None => None,
    };
    let file = config_file(cli)?;
    connection::resolve(
        connection::Flags {
            controller: cli.controller.clone(),
            token,
            ca_pem,
            insecure: cli.insecure,
        },
        file.as_ref().map(|(_, f)| f),
    )
}

/// `pssctl rollout ...`.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Wait for the rollout to finish; exits non-zero if it fails, is paused or times out.
    Status {
        /// workload/NAME
        target: String,
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = parse_wait)]
        timeout: std::time::Duration,
    },
    /// List the revisions kept (spec.revisionHistoryLimit).
    History {
        /// workload/NAME
        target: String,
    },
    /// Roll back to the previous revision, or to --to-revision N.
    Undo {
        /// workload/NAME
        target: String,
        /// The revision to go back to (see rollout history); 0: the previous one.
        #[arg(long, default_value_t = 0)]
        to_revision: u64,
    },
    /// Replace every pod (a new revision with the same spec), respecting the strategy.
    Restart {
        /// workload/NAME
        target: String,
    },
    /// Stop the rollout where it is: no old pod retired, no pod beyond the replicas.
    Pause {
        /// workload/NAME
        target: String,
    },
    /// Continue a paused rollout.
    Resume {
        /// workload/NAME
        target: String,
    },
}

/// A wait such as `30s` or `5m` (at most a day).
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?}: {e} (examples: 30s, 5m)"))?;
    if d > std::time::Duration::from_secs(86_400) {
        return Err(format!("{text:?}: at most 24h"));
    }
    Ok(d)
}

/// How often the waiting commands (drain, rollout status) look again.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What `top` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopKind {
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "pod", alias = "po")]
    Pods,
}

/// The kinds `get all` lists, in kubectl's spirit: what a user deployed, then what runs.
const ALL: [Resource; 4] = [
    Resource::Workloads,
    Resource::Services,
    Resource::Autoscalers,
    Resource::Pods,
];

/// Reads `get`'s arguments: `KIND`, `KIND NAME` or `KIND/NAME`.
fn get_target(
    resource: &str,
    name: Option<String>,
) -> Result<(Resource, Option<String>), CliError> {
    let (kind, inline) = match resource.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
        Some(_) => return Err(CliError::Usage(format!("missing name in {resource:?}"))),
        None => (resource, None),
    };
    let kind = match kind.to_lowercase().as_str() {
        "autoscalepolicy" | "autoscalepolicies" => Resource::Autoscalers,
        other => Resource::from_str(other, true).map_err(|_| {
            CliError::Usage(format!(
                "unknown kind {kind:?}: use pods, workloads, services, nodes, events, autoscalers or all"
            ))
        })?,
    };
    if inline.is_some() && name.is_some() {
        return Err(CliError::Usage(format!(
            "give the name once: {resource} or {kind:?} NAME"
        )));
    }
    Ok((kind, inline.or(name)))
}

/// Splits `kind/name`, checking the kind is one of `kinds` (first is canonical).
fn split_target<'a>(target: &'a str, kinds: &[&str]) -> Result<(String, &'a str), CliError> {
    let (kind, name) = target
        .split_once('/')
        .ok_or_else(|| CliError::Usage(format!("expected {}/NAME, got {target:?}", kinds[0])))?;
    if name.is_empty() {
        return Err(CliError::Usage(format!("missing name in {target:?}")));
    }
    let kind = kind.to_lowercase();
    let canonical = match kind.as_str() {
        "workload" | "workloads" | "wl" => "workload",
        "service" | "services" | "svc" => "service",
        "autoscaler" | "autoscalers" | "autoscalepolicy" | "hpa" => "autoscaler",
        "pod" | "pods" | "po" => "pod",
        "node" | "nodes" | "no" => "node",
        other => other,
    };
    if !kinds.contains(&canonical) {
        return Err(CliError::Usage(format!(
            "{target:?}: kind must be one of {}",
            kinds.join(", ")
        )));
    }
    Ok((canonical.to_string(), name))
}

/// Reads a manifest from a file or stdin (`-`), refusing one larger than the controller
/// would accept before reading it all.
fn read_manifest(file: &str) -> Result<(Vec<u8>, String), CliError> {
    let max = pss_core::model::Limits::default().max_manifest_bytes;
    let mut buf = Vec::new();
    let source = if file == "-" {
        std::io::stdin()
            .take(max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
        "<stdin>".to_string()
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut buf))
            .map_err(|e| CliError::Usage(format!("{file}: {e}")))?;
        file.to_string()
    };
    if buf.len() > max {
        return Err(CliError::Invalid(format!(
            "{source}: the manifest is larger than the limit of {max} bytes"
        )));
    }
    Ok((buf, source))
}

/// The manifests `apply -f`/`delete -f` name: the file, or every `.yaml`/`.yml` file of a
/// directory in name order; each parsed and validated here, before the controller is dialled.
fn read_manifests(
    file: &str,
) -> Result<Vec<(String, String, Vec<pss_core::model::Object>)>, CliError> {
    let files = if file != "-" && std::path::Path::new(file).is_dir() {
        let mut files: Vec<String> = std::fs::read_dir(file)
            .map_err(|e| CliError::Usage(format!("{file}: {e}")))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
            })
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CliError::Usage(format!("{file}: no .yaml or .yml files")));
        }
        files
    } else {
        vec![file.to_string()]
    };
    files
        .iter()
        .map(|f| {
            let (bytes, source) = read_manifest(f)?;
            let objects = pss_core::model::parse_manifest_bytes(&bytes, &source)
                .map_err(|e| CliError::Invalid(e.to_string()))?;
            let text = String::from_utf8(bytes).expect("validated as UTF-8");
            Ok((text, source, objects))
        })
        .collect()
}

/// Runs one command against the controller, writing human output to `out`.
pub async fn execute(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    // Validate local input before dialing, so a bad manifest is reported as such even when the
    // controller is away.
    let manifests = match &cli.command {
        Command::Apply { file } => read_manifests(file)?,
        Command::Delete {
            file: Some(file), ..
        } => read_manifests(file)?,
        _ => Vec::new(),
    };
    if let Command::Version = cli.command {
        writeln!(out, "pssctl {}", env!("CARGO_PKG_VERSION"))?;
    }
    if let Command::Config {
        action: ConfigCommand::View,
    } = &cli.command
    {
        let Some((path, file)) = config_file(&cli)? else {
            return Err(CliError::Usage(
                "no configuration file: pass --config FILE or set PSS_CONFIG".into(),
            ));
        };
        writeln!(out, "# {}", path.display())?;
        let text = serde_saphyr::to_string(&file.redacted())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        write!(out, "{text}")?;
        if let Some(list) = &cli.controller {
            let list = pss_plumbing::controllers::parse_list(list)
                .map_err(|e| CliError::Usage(format!("--controller: {e}")))?;
            writeln!(
                out,
                "# --controller (used instead of `controllers`): {}",
                list.join(", ")
            )?;
        }
        return Ok(());
    }
    let conn = connection(&cli)?;
    let mut client = Client::connect(&conn).await?;
    match cli.command {
        Command::Config { .. } => unreachable!("answered above"),
        Command::Token { action } => match action {
            TokenCommand::Create { role, ttl } => {
                let r = client.create_join_token(&role, ttl).await?;
                writeln!(out, "{}", r.token)?;
            }
            TokenCommand::List => {
                let tokens = client.list_join_tokens().await?;
                write!(
                    out,
                    "{}",
                    render::join_tokens(&tokens, pss_plumbing::clock::now_ms())
                )?;
            }
            TokenCommand::Revoke { id } => {
                client.revoke_join_token(&id).await?;
                writeln!(out, "token {} revoked", id.split('-').nth(3).unwrap_or(&id))?;
            }
        },
        Command::Describe { target, name } => {
            let (kind, name) = get_target(&target, name)?;
            let name = name
                .ok_or_else(|| CliError::Usage(format!("describe needs a name: {target}/NAME")))?;
            let text = render::describe(&mut client, kind, &name).await?;
            write!(out, "{text}")?;
        }
        Command::Top { kind } => {
            let text = match kind {
                TopKind::Nodes => render::top_nodes(&client.list_nodes().await?),
                TopKind::Pods => render::top_pods(&client.list_pods(String::new()).await?),
            };
            write!(out, "{text}")?;
        }
        Command::Version => {
            writeln!(out, "pss-controller {}", client.version().await?)?;
        }
        Command::Apply { .. } => {
            for (text, source, _) in manifests {
                let resp = client.apply(text, source).await?;
                for o in resp.objects {
                    writeln!(out, "{}/{} {}", o.kind.to_lowercase(), o.name, o.action)?;
                }
            }
        }
        Command::Get {
            resource,
            name,
            output,
            workload,
            limit,
            selector,
            watch,
        } => {
            client.set_selector(&selector)?;
            if watch {
                let (kind, name) = get_target(&resource, name)?;
                return watch_kind(&mut client, kind, name.as_deref(), output, out).await;
            }
            let filter = workload.unwrap_or_default();
            if resource.eq_ignore_ascii_case("all") {
                if name.is_some() {
                    return Err(CliError::Usage("get all takes no name".into()));
                }
                let mut sections = Vec::new();
                for kind in ALL {
                    let text =
                        render::get(&mut client, kind, None, output, filter.clone(), limit).await?;
                    sections.push(text);
                }
                let joined = match output {
                    Output::Table | Output::Wide => sections.join("\n"),
                    _ => sections.concat(),
                };
                write!(out, "{joined}")?;
            } else {
                let (kind, name) = get_target(&resource, name)?;
                let text =
                    render::get(&mut client, kind, name.as_deref(), output, filter, limit).await?;
                write!(out, "{text}")?;
            }
        }
        Command::Scale { target, replicas } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let resp = client.scale(name, replicas).await?;
            writeln!(
                out,
                "workload/{name} scaled from {} to {} replicas",
                resp.previous_replicas, resp.replicas
            )?;
            // An autoscaler owns the count within its bounds: say so, as the next evaluation
            // may move it again.
            if let Some(a) = client.list_autoscalers(name.to_string()).await?.first() {
                writeln!(
                    out,
                    "note: autoscaler/{} owns this workload's replica count within [{}, {}]; it may change it again",
                    a.name, a.min_replicas, a.max_replicas
                )?;
            }
        }
        Command::Autoscale {
            target,
            cpu,
            mem,
            min,
            max,
        } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let req = pb::AutoscaleRequest {
                workload: name.to_string(),
                min_replicas: min,
                max_replicas: max,
                cpu_percent: cpu,
                memory_percent: mem,
                name: String::new(),
            };
            let resp = client.autoscale(req).await?;
            let p = resp.policy.unwrap_or_default();
            writeln!(
                out,
                "autoscaler/{} {} (workload {}, {}..{} replicas)",
                p.name, resp.action, p.workload, p.min_replicas, p.max_replicas
            )?;
        }
        Command::Delete { target, .. } => {
            let targets: Vec<(String, String)> = match target {
                Some(t) => {
                    let (kind, name) =
                        split_target(&t, &["workload", "service", "autoscaler", "pod", "node"])?;
                    vec![(kind, name.to_string())]
                }
                None => manifests
                    .iter()
                    .flat_map(|(_, _, objects)| objects)
                    .map(|o| {
                        let kind = match o {
                            pss_core::model::Object::Workload(_) => "workload",
                            pss_core::model::Object::Service(_) => "service",
                            pss_core::model::Object::AutoScalePolicy(_) => "autoscaler",
                        };
                        (kind.to_string(), o.name().to_string())
                    })
                    .collect(),
            };
            for (kind, name) in targets {
                client.delete(&kind, &name).await?;
                writeln!(out, "{kind}/{name} deleted")?;
            }
        }
        Command::Logs {
            target,
            follow,
            container,
            tail,
        } => {
            // `logs ID` or `logs pod/ID`, as kubectl.
            let id = if target.contains('/') {
                split_target(&target, &["pod"])?.1
            } else {
                target.as_str()
            };
            let req = pb::PodLogsRequest {
                pod: id.to_string(),
                follow,
                container,
                tail,
            };
            client.logs(req, out).await?;
        }
        Command::Cordon { target } => {
            let (_, node) = split_target(&target, &["node"])?;
            client.set_node_scheduling(node, "cordon").await?;
            writeln!(out, "node/{node} cordoned")?;
        }
        Command::Uncordon { target } => {
            let (_, node) = split_target(&target, &["node"])?;
            client.set_node_scheduling(node, "uncordon").await?;
            writeln!(out, "node/{node} uncordoned")?;
        }
        Command::Drain { target, timeout } => {
            let (_, node) = split_target(&target, &["node"])?;
            let resp = client.set_node_scheduling(node, "drain").await?;
            writeln!(
                out,
                "node/{node} cordoned; draining {} pods (each replacement ready before the old pod stops)",
                resp.pods
            )?;
            wait_drained(&mut client, node, timeout, out).await?;
        }
        Command::Rollout { command } => rollout(&mut client, command, out).await?,
    }
    Ok(())
}

/// `get KIND -w`: the current list, then a line per change, until the controller ends the
/// watch (or the command is interrupted).
async fn watch_kind(
    client: &mut Client,
    kind: Resource,
    name: Option<&str>,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    use pss_proto::v1::watch_event::{Object, Type};
    let kind_name = match kind {
        Resource::Pods => "pods",
        Resource::Workloads => "workloads",
        Resource::Services => "services",
        Resource::Nodes => "nodes",
        Resource::Autoscalers => "autoscalers",
        Resource::Events => return Err(CliError::Usage(
            "get events -w is not supported: watch pods, workloads, services, nodes or autoscalers"
                .into(),
        )),
    };
    let named = |o: &Object| {
        name.is_none_or(|n| match o {
            Object::Workload(w) => w.name == n,
            Object::Service(s) => s.name == n,
            Object::Node(x) => x.name == n,
            Object::Pod(p) => p.id == n,
            Object::Autoscaler(a) => a.name == n,
        })
    };
    let mut stream = client.watch(kind_name).await?;
    let mut initial = Vec::new();
    while let Some(event) = client.next_event(&mut stream).await? {
        if event.r#type == Type::Synced as i32 {
            write!(out, "{}", render::watch_table(kind, &initial, output))?;
            out.flush()?;
            break;
        }
        if let Some(o) = event.object.filter(|o| named(o)) {
            initial.push(o);
        }
    }
    while let Some(event) = client.next_event(&mut stream).await? {
        let Some(object) = event.object.filter(|o| named(o)) else {
            continue;
        };
        let typ = Type::try_from(event.r#type).unwrap_or(Type::Unspecified);
        let label = match typ {
            Type::Added => "ADDED",
            Type::Modified => "MODIFIED",
            Type::Deleted => "DELETED",
            _ => continue,
        };
        write!(
            out,
            "{}",
            render::watch_line(kind, label, event.revision, &object, output)
        )?;
        out.flush()?;
    }
    Ok(())
}

/// Waits until no pod holds resources on `node` any more.
async fn wait_drained(
    client: &mut Client,
    node: &str,
    timeout: std::time::Duration,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        let left: Vec<String> = client
            .list_pods(String::new())
            .await?
            .into_iter()
            .filter(|p| p.node == node && p.phase != pb::PodPhase::Lost as i32)
            .map(|p| p.id)
            .collect();
        if left.is_empty() {
            writeln!(out, "node/{node} drained")?;
            return Ok(());
        }
        if last != Some(left.len()) {
            writeln!(out, "waiting for {} pods to leave node/{node}", left.len())?;
            last = Some(left.len());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Invalid(format!(
                "node/{node}: {} pods still there after {} ({}); the drain goes on:                  see pssctl get pods and pssctl describe node/{node}",
                left.len(),
                humantime::format_duration(timeout),
                left.join(", ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `pssctl rollout ...`.
async fn rollout(
    client: &mut Client,
    command: RolloutCommand,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match command {
        RolloutCommand::Status { target, timeout } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let deadline = tokio::time::Instant::now() + timeout;
            let mut last = String::new();
            loop {
                let w = client.workload(name).await?;
                match w.rollout_state.as_str() {
                    "Complete" => {
                        writeln!(
                            out,
                            "workload/{name} successfully rolled out (revision {})",
                            w.revision
                        )?;
                        return Ok(());
                    }
                    "Failed" => {
                        return Err(CliError::Invalid(format!(
                            "workload/{name}: rollout of revision {} failed: {}",
                            w.revision, w.rollout_message
                        )))
                    }
                    "Paused" => {
                        return Err(CliError::Invalid(format!(
                            "workload/{name}: rollout of revision {} is paused (pssctl rollout resume workload/{name})",
                            w.revision
                        )))
                    }
                    _ => {}
                }
                let line = format!(
                    "waiting for workload/{name} (revision {}): {} of {} updated pods ready, {} pods in all",
                    w.revision, w.updated_replicas.min(w.ready_replicas), w.replicas, w.current_replicas
                );
                if line != last {
                    writeln!(out, "{line}")?;
                    last = line;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CliError::Invalid(format!(
                        "workload/{name}: rollout not finished after {}",
                        humantime::format_duration(timeout)
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        RolloutCommand::History { target } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let revisions = client.rollout_history(name).await?;
            write!(out, "{}", render::history(&revisions, now_ms()))?;
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let r = client.rollout(name, "undo", to_revision).await?;
            writeln!(out, "workload/{name} {}", r.message)?;
        }
        RolloutCommand::Restart { target } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let r = client.rollout(name, "restart", 0).await?;
            writeln!(out, "workload/{name} {}", r.message)?;
        }
        RolloutCommand::Pause { target } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let r = client.rollout(name, "pause", 0).await?;
            writeln!(out, "workload/{name} {}", r.message)?;
        }
        RolloutCommand::Resume { target } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let r = client.rollout(name, "resume", 0).await?;
            writeln!(out, "workload/{name} {}", r.message)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every (sub)command has help text.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            if sub.get_about().is_none() {
                out.push(format!("{path} {} (no about)", sub.get_name()));
            }
            missing_help(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_and_command_has_help() {
        let mut missing = Vec::new();
        missing_help(&Cli::command(), "pssctl", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
