//! A real cluster for tests: Podman prepared by `scripts/podman-setup.sh`, an in-process
//! controller, and `pss-agent` processes (real binaries, so a test can SIGKILL one).
//! Node names are unique per cluster, and dropping the cluster removes every Podman pod
//! labelled for its nodes, also when the test failed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{eventually, repo_path, RunningController, TOKEN};

/// Paths printed by the setup script.
#[derive(Clone, Debug)]
pub struct PodmanEnv {
    pub containers_conf: String,
    pub socket: String,
}

/// Runs the (idempotent) setup script once per test binary.
pub fn podman_env() -> PodmanEnv {
    static ENV: OnceLock<PodmanEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_path("scripts/podman-setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/podman-setup.sh");
        assert!(out.status.success(), "podman-setup.sh failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("setup script printed no {key}=: {text}"))
                .to_string()
        };
        PodmanEnv {
            containers_conf: get("CONTAINERS_CONF"),
            socket: get("PSS_PODMAN_SOCK"),
        }
    })
    .clone()
}

/// Runs the podman CLI (tests only use it to look and to clean up).
pub fn podman(args: &[&str]) -> String {
    let env = podman_env();
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", &env.containers_conf)
        .output()
        .expect("run podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IDs of the Podman pods labelled for `node`.
pub fn podman_pods_on(node: &str) -> Vec<String> {
    podman(&[
        "pod",
        "ps",
        "-q",
        "--filter",
        &format!("label=pss.node={node}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One pss-agent process.
pub struct AgentProcess {
    pub node: String,
    pub port: u16,
    child: Child,
    /// The agent's state directory (its key and certificate).
    pub state: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts `pss-agent` for `node` against the controller at `controller`.
    pub fn start(node: &str, port: u16, controller: &str) -> Self {
        Self::start_on_socket(node, port, controller, &podman_env().socket, &[])
    }

    /// Starts `pss-agent` for `node` against `controller` on the Podman API at `socket`, with
    /// `extra` flags appended (later flags win).
    pub fn start_on_socket(
        node: &str,
        port: u16,
        controller: &str,
        socket: &str,
        extra: &[&str],
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        // TLS (joining with the operator token and the controller's CA) unless the
        // controller serves plaintext.
        let transport: Vec<String> = match controller.parse().ok().and_then(super::ca_file) {
            Some(ca) => vec![
                "--ca".into(),
                ca.display().to_string(),
                "--state-dir".into(),
                state.path().display().to_string(),
            ],
            None => vec!["--insecure".into()],
        };
        let child = Command::new(super::workspace_bin("pss-agent"))
            .args(["--controller", controller, "--token", TOKEN])
            .args(&transport)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--node-name", node, "--socket", socket])
            .args(["--metrics-interval", "2s", "--cpu", "4000", "--mem", "4096"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pss-agent");
        AgentProcess {
            node: node.to_string(),
            port,
            child,
            state,
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Controller + agents on real Podman.
pub struct Cluster {
    pub controller: RunningController,
    pub agents: Vec<AgentProcess>,
    /// Every node name this cluster used (for cleanup).
    pub nodes: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A controller and one agent per entry of `nodes` (names get a unique suffix).
    pub async fn start(nodes: &[&str]) -> Self {
        Self::start_with_config(nodes, |_| {}).await
    }

    /// Like [`Cluster::start`], with the controller's test config adjusted by `tune`.
    pub async fn start_with_config(
        nodes: &[&str],
        tune: impl FnOnce(&mut pss_controller::ControllerConfig),
    ) -> Self {
        Self::start_with_agent_args(nodes, tune, |_| Vec::new()).await
    }

    /// Like [`Cluster::start_with_config`], agent `i` started with the extra flags
    /// `agent_args(i)`.
    pub async fn start_with_agent_args(
        nodes: &[&str],
        tune: impl FnOnce(&mut pss_controller::ControllerConfig),
        agent_args: impl Fn(usize) -> Vec<String>,
    ) -> Self {
        podman_env();
        let dir = tempfile::tempdir().unwrap();
        let mut config = super::fast_config();
        tune(&mut config);
        let controller = RunningController::start_with(&dir.path().join("pss.db"), config).await;
        let suffix = pss_core::model::pod_id("t", rand::random());
        let suffix = suffix.trim_start_matches("t-");
        let names: Vec<String> = nodes.iter().map(|n| format!("{n}-{suffix}")).collect();
        let addr = controller.addr.to_string();
        let agents = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let extra = agent_args(i);
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                AgentProcess::start_on_socket(n, free_port(), &addr, &podman_env().socket, &extra)
            })
            .collect();
        let cluster = Cluster {
            controller,
            agents,
            nodes: names.clone(),
            _dir: dir,
        };
        let want = names.len();
        eventually(
            Duration::from_secs(60),
            "every agent registered and Ready",
            || async {
                let out = cluster
                    .controller
                    .ctl(&["get", "nodes", "-o", "json"])
                    .await
                    .ok()?;
                let v: serde_json::Value = serde_json::from_str(&out).ok()?;
                let ready = v["items"]
                    .as_array()?
                    .iter()
                    .filter(|n| n["status"] == "Ready")
                    .count();
                (ready == want).then_some(())
            },
        )
        .await;
        cluster
    }

    /// `pssctl get pods -o json` items.
    pub async fn pods(&self) -> Vec<serde_json::Value> {
        let out = self
            .controller
            .ctl(&["get", "pods", "-o", "json"])
            .await
            .expect("get pods");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["items"].as_array().unwrap().clone()
    }

    /// Waits until exactly `n` pods of `workload` are Running and ready; returns them.
    pub async fn wait_running(
        &self,
        workload: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<serde_json::Value> {
        eventually(
            timeout,
            &format!("{n} ready pods of {workload}"),
            || async {
                let pods: Vec<_> = self
                    .pods()
                    .await
                    .into_iter()
                    .filter(|p| p["workload"] == workload)
                    .collect();
                let ready = pods
                    .iter()
                    .filter(|p| p["phase"] == "Running" && p["ready"] == true)
                    .count();
                (ready == n && pods.len() == n).then_some(pods)
            },
        )
        .await
    }

    /// Podman pod ids on all of this cluster's nodes.
    pub fn podman_pods(&self) -> Vec<String> {
        self.nodes.iter().flat_map(|n| podman_pods_on(n)).collect()
    }

    /// Writes a manifest to a temp file and applies it.
    pub async fn apply_text(&self, yaml: &str) -> String {
        let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        self.controller
            .ctl(&["apply", "-f", f.path().to_str().unwrap()])
            .await
            .expect("apply")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        self.controller.shutdown.cancel();
        for node in &self.nodes {
            let env = podman_env();
            let ids = Command::new("podman")
                .args([
                    "pod",
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=pss.node={node}"),
                ])
                .env("CONTAINERS_CONF", &env.containers_conf)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.lines() {
                let _ = Command::new("podman")
                    .args(["pod", "rm", "-f", "-t", "0", id])
                    .env("CONTAINERS_CONF", &env.containers_conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// HTTP GET of `/` on `addr`, returning the body (plain TCP; no HTTP client dependency).
pub fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pss\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// The demo manifests' directory.
pub fn examples() -> PathBuf {
    repo_path("examples")
}

/// A Podman API service of the test's own (`podman system service` on a socket in a temp
/// directory, same storage and containers.conf as the shared one), so that a test can freeze it
/// with SIGSTOP without freezing everybody else's Podman. Killed when dropped.
pub struct PodmanService {
    pub socket: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PodmanService {
    /// Starts the service and waits until it answers `/_ping`.
    pub async fn start() -> Self {
        let env = podman_env();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock").display().to_string();
        let child = Command::new("podman")
            .args(["system", "service", "--time=0", &format!("unix://{socket}")])
            .env("CONTAINERS_CONF", &env.containers_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podman system service");
        let service = PodmanService {
            socket,
            child,
            _dir: dir,
        };
        let path = service.socket.clone();
        eventually(
            Duration::from_secs(30),
            "the private Podman service answers /_ping",
            || {
                let path = path.clone();
                async move { ping(&path).then_some(()) }
            },
        )
        .await;
        service
    }

    /// The service's process ID (the process a SIGSTOP freezes).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the service with SIGSTOP until the returned guard is dropped (SIGCONT), also when
    /// the test panics meanwhile.
    pub fn freeze(&self) -> Frozen {
        signal(self.pid(), "STOP");
        Frozen { pid: self.pid() }
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process stopped with SIGSTOP; dropping the guard sends SIGCONT.
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    /// SIGCONT now.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.pid, "CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// `GET /_ping` on a Podman unix socket answers `OK` within a second.
pub fn ping(socket: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.ends_with("OK")
}
