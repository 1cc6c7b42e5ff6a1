//! `pssctl`, the operator CLI: argument parsing ([`Cli`]), the controller client
//! (`client.rs`), and rendering of tables / JSON / YAML (`render.rs`, `table.rs`).
//!
//! [`execute`] runs a parsed command and writes its output to any `Write`, so integration tests
//! drive exactly the code path the binary uses.

mod client;
mod render;
mod table;

use std::io::{Read, Write};

use clap::{Parser, Subcommand, ValueEnum};
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
    /// Controller gRPC address.
    #[arg(
        long,
        global = true,
        env = "PSS_CONTROLLER",
        default_value = "localhost:50051"
    )]
    pub controller: String,
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
    /// Apply a YAML manifest (one or more documents separated by ---).
    Apply {
        /// Manifest file, or - for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// List objects.
    Get {
        resource: Resource,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Only pods/autoscalers of this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Events: how many of the newest to show.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Set a workload's replica count: scale workload/NAME --replicas N.
    Scale {
        /// workload/NAME
        target: String,
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
        #[arg(long)]
        min: u32,
        #[arg(long)]
        max: u32,
    },
    /// Delete a workload, service or autoscaler: delete KIND/NAME.
    Delete {
        /// workload/NAME, service/NAME or autoscaler/NAME
        target: String,
    },
    /// Print (or follow) a pod's logs: logs pod/ID [-f].
    Logs {
        /// pod/ID
        target: String,
        /// Keep streaming new output.
        #[arg(short, long)]
        follow: bool,
        /// Only this container.
        #[arg(short, long, default_value = "")]
        container: String,
        /// Only the last N lines.
        #[arg(long, default_value_t = 0)]
        tail: u32,
    },
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

/// Reads a manifest from a file or stdin (`-`).
fn read_manifest(file: &str) -> Result<(Vec<u8>, String), CliError> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
        Ok((buf, "<stdin>".into()))
    } else {
        let bytes = std::fs::read(file).map_err(|e| CliError::Usage(format!("{file}: {e}")))?;
        Ok((bytes, file.to_string()))
    }
}

/// Runs one command against the controller, writing human output to `out`.
pub async fn execute(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    // Validate local input before dialing, so a bad manifest is reported as such even when the
    // controller is away.
    let manifest = match &cli.command {
        Command::Apply { file } => {
            let (bytes, source) = read_manifest(file)?;
            pss_core::model::parse_manifest_bytes(&bytes, &source)
                .map_err(|e| CliError::Invalid(e.to_string()))?;
            Some((
                String::from_utf8(bytes).expect("validated as UTF-8"),
                source,
            ))
        }
        _ => None,
    };
    let token = pss_plumbing::token::load(cli.token.clone(), cli.token_file.as_deref())
        .map_err(CliError::Usage)?;
    let mut client = Client::connect(&cli.controller, &token).await?;
    match cli.command {
        Command::Apply { .. } => {
            let (text, source) = manifest.expect("read above");
            let resp = client.apply(text, source).await?;
            for o in resp.objects {
                writeln!(out, "{}/{} {}", o.kind.to_lowercase(), o.name, o.action)?;
            }
        }
        Command::Get {
            resource,
            output,
            workload,
            limit,
        } => {
            let filter = workload.unwrap_or_default();
            let text = render::get(&mut client, resource, output, filter, limit).await?;
            write!(out, "{text}")?;
        }
        Command::Scale { target, replicas } => {
            let (_, name) = split_target(&target, &["workload"])?;
            let resp = client.scale(name, replicas).await?;
            writeln!(
                out,
                "workload/{name} scaled from {} to {} replicas",
                resp.previous_replicas, resp.replicas
            )?;
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
        Command::Delete { target } => {
            let (kind, name) = split_target(&target, &["workload", "service", "autoscaler"])?;
            client.delete(&kind, name).await?;
            writeln!(out, "{kind}/{name} deleted")?;
        }
        Command::Logs {
            target,
            follow,
            container,
            tail,
        } => {
            let (_, id) = split_target(&target, &["pod"])?;
            let req = pb::PodLogsRequest {
                pod: id.to_string(),
                follow,
                container,
                tail,
            };
            client.logs(req, out).await?;
        }
    }
    Ok(())
}
