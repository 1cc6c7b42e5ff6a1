//! Issue 13: rootless Podman, the seed's default, next to rootful Podman in one cluster.
//!
//! `scripts/podman-setup.sh --rootless pss-rootless` prepares the user (sub-ids, runtime
//! directory, its own `podman system service` on `$XDG_RUNTIME_DIR/podman/podman.sock`, the
//! demo image in its store). One `pss-agent` runs as root on root's socket, another runs as
//! that user through `runuser`, with no `--socket`: it finds the user's socket the way the seed
//! documents. One workload and one service span both nodes. Needs root and Podman.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::cluster::{free_port, http_get, podman, Cluster};
use support::proxy::start_proxy;
use support::{eventually, repo_path, TOKEN};

/// The user the test prepares (and the setup script creates when missing).
const USER: &str = "pss-rootless";

/// Four replicas with resources (spread: two per node), a log line, and a service.
const WEB: &str = "kind: Workload\nmetadata: {name: mixed}\nspec:\n  replicas: 4\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n        command: [\"/bin/sh\", \"-c\", \"echo serving-as-$(hostname); exec /bin/httpd -f -p 80 -h /www\"]\n        resources: {cpu: 50m, memory: 16Mi}\n    ports:\n      - containerPort: 80\n    readinessProbe: {port: 80, interval: 500ms, timeout: 1s}\n---\nkind: Service\nmetadata: {name: mixed}\nspec: {workload: mixed, port: 80, targetPort: 80}\n";

/// What `podman-setup.sh --rootless` printed.
struct RootlessEnv {
    uid: u32,
    runtime_dir: String,
    socket: String,
    home: String,
}

fn rootless_setup() -> RootlessEnv {
    let out = Command::new("bash")
        .arg(repo_path("scripts/podman-setup.sh"))
        .args(["--rootless", USER])
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/podman-setup.sh --rootless");
    assert!(out.status.success(), "podman-setup.sh --rootless failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("setup printed no {key}=: {text}"))
            .to_string()
    };
    let conf = get("CONTAINERS_CONF");
    RootlessEnv {
        uid: get("PSS_ROOTLESS_UID").parse().unwrap(),
        runtime_dir: get("XDG_RUNTIME_DIR"),
        socket: get("PSS_PODMAN_SOCK"),
        // <home>/.config/containers/containers.conf
        home: Path::new(&conf)
            .ancestors()
            .nth(3)
            .unwrap()
            .display()
            .to_string(),
    }
}

impl RootlessEnv {
    /// `runuser -u USER -- env ... <program>`, with the user's environment and nothing of ours
    /// that would point it at root's Podman.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", USER, "--", "env"])
            .args([
                "-u",
                "CONTAINERS_CONF",
                "-u",
                "DOCKER_HOST",
                "-u",
                "CONTAINER_HOST",
                "-u",
                "PSS_PODMAN_SOCK",
            ])
            .arg(format!("HOME={}", self.home))
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime_dir))
            .arg(program)
            .current_dir("/");
        cmd
    }

    /// The user's podman CLI (to look, to kill a container, and to clean up).
    fn podman(&self, args: &[&str]) -> String {
        let out = self.command("podman").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?} as {USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first sub-uid of the user (from /etc/subuid).
    fn first_subuid(&self) -> u64 {
        std::fs::read_to_string("/etc/subuid")
            .unwrap()
            .lines()
            .find_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(USER)).then(|| f.next().unwrap().parse().unwrap())
            })
            .expect("the user has sub-uids")
    }
}

/// `pss-agent` as the rootless user: `runuser` in its own process group, so a SIGKILL of the
/// group kills the agent (runuser forks it) with no goodbye.
struct RootlessAgent {
    node: String,
    port: u16,
    child: Child,
}

impl RootlessAgent {
    fn start(env: &RootlessEnv, bin: &Path, node: &str, port: u16, controller: &str) -> Self {
        // The controller's CA and a state directory the user can reach (root's temporary
        // directories are 0700).
        let shared = bin.parent().unwrap();
        let ca = shared.join("ca.crt");
        let ca_src = support::ca_file(controller.parse().unwrap()).expect("a TLS controller");
        std::fs::copy(ca_src, &ca).unwrap();
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
        let state = shared.join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let child = env
            .command(bin.to_str().unwrap())
            .args(["--controller", controller])
            .args([
                "--ca",
                ca.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--node-name", node])
            .args(["--metrics-interval", "2s", "--cpu", "4000", "--mem", "4096"])
            // No --socket: the agent must find $XDG_RUNTIME_DIR/podman/podman.sock itself.
            .env("PSS_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pss-agent via runuser");
        RootlessAgent {
            node: node.to_string(),
            port,
            child,
        }
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for RootlessAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes the user's pods of `node` when dropped (also when the test failed).
struct RootlessCleanup<'a> {
    env: &'a RootlessEnv,
    node: String,
}

impl Drop for RootlessCleanup<'_> {
    fn drop(&mut self) {
        let ids = self
            .env
            .command("podman")
            .args(["pod", "ps", "-q", "--filter"])
            .arg(format!("label=pss.node={}", self.node))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.lines() {
            let _ = self
                .env
                .command("podman")
                .args(["pod", "rm", "-f", "-t", "0", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A copy of the `pss-agent` binary the user can execute (the target directory may be under
/// a home only root can read).
fn agent_binary_for_user(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("pss-agent");
    std::fs::copy(support::workspace_bin("pss-agent"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// `/proc/<pid>/status` Uid (real) and `/proc/<pid>/uid_map` of a container's main process.
fn host_uid_and_map(pid: &str) -> (u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    (uid, map)
}

/// `(reason, object)` of every event.
async fn events(c: &support::RunningController) -> Vec<(String, String)> {
    let out = c.ctl(&["get", "events", "-o", "json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["object"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn container_ids(pods: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .flat_map(|p| {
            p["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_and_a_rootless_node_serve_one_workload_and_service() {
    let env = rootless_setup();
    assert_eq!(
        env.socket,
        format!("{}/podman/podman.sock", env.runtime_dir),
        "the user's socket is where the agent looks first (no --socket)"
    );
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = agent_binary_for_user(bin_dir.path());

    // The root node (root's socket, as every other Podman test) ...
    let cluster = Cluster::start(&["root"]).await;
    let c = &cluster.controller;
    let root_node = cluster.nodes[0].clone();
    // ... and the rootless node, named alike.
    let rootless_node = root_node.replacen("root", "rootless", 1);
    let _cleanup = RootlessCleanup {
        env: &env,
        node: rootless_node.clone(),
    };
    let controller = c.addr.to_string();
    let mut agent = RootlessAgent::start(&env, &bin, &rootless_node, free_port(), &controller);
    let nodes_ready = || async {
        let v: serde_json::Value =
            serde_json::from_str(&c.ctl(&["get", "nodes", "-o", "json"]).await.ok()?).ok()?;
        let ready = v["items"]
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "Ready")
            .count();
        (ready == 2).then_some(())
    };
    eventually(Duration::from_secs(30), "both nodes Ready", nodes_ready).await;

    // The rootless node says which limits its Podman cannot enforce.
    let info: serde_json::Value =
        serde_json::from_str(&env.podman(&["info", "--format", "json"])).unwrap();
    let controllers = info["host"]["cgroupControllers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let enforced = ["cpu", "memory"]
        .iter()
        .all(|k| controllers.iter().any(|c| c.as_str() == Some(k)));
    let warned_on = |node: &str, events: &[(String, String)]| {
        events.iter().any(|(reason, object)| {
            reason == "LimitsNotEnforced" && *object == format!("node/{node}")
        })
    };
    let all = events(c).await;
    assert_eq!(
        warned_on(&rootless_node, &all),
        !enforced,
        "a LimitsNotEnforced warning on node/{rootless_node} exactly when the user's Podman \
         lacks cpu or memory controllers ({controllers:?}): {all:?}"
    );
    assert!(
        !warned_on(&root_node, &all),
        "root's Podman enforces limits: {all:?}"
    );
    // ... and the node shows it.
    let nodes: serde_json::Value =
        serde_json::from_str(&c.ctl(&["get", "nodes", "-o", "json"]).await.unwrap()).unwrap();
    let shown = |node: &str| {
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap()["limitsUnenforced"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(shown(&root_node), "");
    assert_eq!(shown(&rootless_node).is_empty(), enforced, "{nodes}");
    let wide = c.ctl(&["get", "nodes", "-o", "wide"]).await.unwrap();
    assert!(wide.contains("LIMITS"), "{wide}");

    // Apply: four pods with resources, two on each node (spread).
    cluster.apply_text(WEB).await;
    let pods = cluster
        .wait_running("mixed", 4, Duration::from_secs(90))
        .await;
    let mut per_node: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for p in &pods {
        per_node
            .entry(p["node"].as_str().unwrap().to_string())
            .or_default()
            .push(p.clone());
    }
    assert_eq!(
        per_node.keys().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![root_node.clone(), rootless_node.clone()];
            v.sort();
            v
        },
        "spread over the root and the rootless node"
    );
    assert_eq!(per_node[&rootless_node].len(), 2, "{per_node:?}");
    for p in &pods {
        let addr = p["addresses"][0]["address"].as_str().unwrap();
        let body = http_get(addr).unwrap_or_else(|e| panic!("pod {} at {addr}: {e}", p["name"]));
        assert!(
            body.contains(" 200 ") && body.contains(p["name"].as_str().unwrap()),
            "{addr}: {body}"
        );
    }

    // The rootless pods are the user's: in its store, not root's, and their processes run as
    // the user, in a user namespace mapped onto its sub-uids.
    let subuid = env.first_subuid();
    let user_pods = env.podman(&[
        "pod",
        "ps",
        "--filter",
        &format!("label=pss.node={rootless_node}"),
        "--format",
        "{{.Name}}",
    ]);
    for p in &per_node[&rootless_node] {
        let name = p["name"].as_str().unwrap();
        assert!(
            user_pods.lines().any(|l| l == name),
            "{name} in:\n{user_pods}"
        );
        let container = p["containers"][0]["id"].as_str().unwrap();
        let pid = env.podman(&["inspect", "--format", "{{.State.Pid}}", container]);
        let (uid, map) = host_uid_and_map(pid.trim());
        assert_eq!(
            uid,
            u64::from(env.uid),
            "container root is {USER} on the host"
        );
        let mapped: Vec<Vec<u64>> = map
            .lines()
            .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
            .collect();
        assert!(
            mapped.iter().any(|m| m[1] == subuid),
            "uid_map of {name} uses {USER}'s sub-uids from {subuid}: {map}"
        );
        let memory = env.podman(&["inspect", "--format", "{{.HostConfig.Memory}}", container]);
        if !enforced {
            assert_eq!(
                memory.trim(),
                "0",
                "no limit asked of a Podman that cannot apply it"
            );
        }
    }
    for p in &per_node[&root_node] {
        let container = p["containers"][0]["id"].as_str().unwrap();
        let pid = podman(&["inspect", "--format", "{{.State.Pid}}", container]);
        let (uid, map) = host_uid_and_map(pid.trim());
        assert_eq!(uid, 0, "rootful container");
        assert!(map.split_whitespace().eq(["0", "0", "4294967295"]), "{map}");
        let memory = podman(&["inspect", "--format", "{{.HostConfig.Memory}}", container]);
        assert_eq!(
            memory.trim(),
            (16u64 << 20).to_string(),
            "root enforces limits"
        );
    }
    assert!(
        support::cluster::podman_pods_on(&rootless_node).is_empty(),
        "root's Podman does not hold the rootless node's pods"
    );

    // The service answers through the proxy from the pods of both nodes.
    let (proxy, _proxy_handle, stop_proxy) = start_proxy(c.addr, "mixed").await;
    let want: Vec<String> = pods
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    eventually(
        Duration::from_secs(30),
        "every pod of both nodes answered through the proxy",
        || {
            if let Ok(body) = http_get(&proxy.to_string()) {
                if let Some(name) = want.iter().find(|n| body.contains(n.as_str())) {
                    seen.insert(name.clone());
                }
            }
            let done = seen.len() == want.len();
            async move { done.then_some(()) }
        },
    )
    .await;

    // Logs of a rootless pod.
    let rootless_pod = per_node[&rootless_node][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let logs = eventually(
        Duration::from_secs(20),
        "logs of a rootless pod",
        || async {
            let out = c
                .ctl(&["logs", &format!("pod/{rootless_pod}")])
                .await
                .ok()?;
            out.contains("serving-as-").then_some(out)
        },
    )
    .await;
    assert!(
        logs.contains(&format!("serving-as-{rootless_pod}")),
        "{logs}"
    );

    // Kill a rootless pod's container: the agent sees it and it is restarted.
    let container = per_node[&rootless_node][0]["containers"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.podman(&["kill", &container]);
    let back = eventually(
        Duration::from_secs(30),
        "the killed rootless pod restarted and ready",
        || async {
            let p = cluster
                .pods()
                .await
                .into_iter()
                .find(|p| p["name"] == rootless_pod.as_str())?;
            (p["restarts"].as_u64()? >= 1 && p["phase"] == "Running" && p["ready"] == true)
                .then_some(p)
        },
    )
    .await;
    let addr = back["addresses"][0]["address"].as_str().unwrap();
    assert!(
        http_get(addr).unwrap().contains(" 200 "),
        "the restarted pod serves"
    );

    // Restart the rootless agent: it adopts its pods (same containers).
    let before = cluster
        .wait_running("mixed", 4, Duration::from_secs(30))
        .await;
    let registrations = |events: &[(String, String)]| -> usize {
        events
            .iter()
            .filter(|(reason, object)| {
                reason == "Registered" && *object == format!("node/{rootless_node}")
            })
            .count()
    };
    let registered = registrations(&events(c).await);
    let port = agent.port;
    agent.kill();
    agent = RootlessAgent::start(&env, &bin, &agent.node.clone(), port, &controller);
    eventually(
        Duration::from_secs(30),
        "the rootless agent registers again",
        || async { (registrations(&events(c).await) > registered).then_some(()) },
    )
    .await;
    let after = cluster
        .wait_running("mixed", 4, Duration::from_secs(30))
        .await;
    assert_eq!(
        container_ids(&after),
        container_ids(&before),
        "adopted, not recreated"
    );
    // Still served through the proxy by the rootless pods.
    let rootless_names: Vec<String> = after
        .iter()
        .filter(|p| p["node"] == rootless_node.as_str())
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    eventually(
        Duration::from_secs(20),
        "a rootless pod answers through the proxy after the agent restart",
        || {
            let hit = http_get(&proxy.to_string())
                .map(|b| rootless_names.iter().any(|n| b.contains(n.as_str())))
                .unwrap_or(false);
            async move { hit.then_some(()) }
        },
    )
    .await;

    c.ctl(&["delete", "workload/mixed"]).await.unwrap();
    eventually(
        Duration::from_secs(60),
        "no pod left on either node",
        || async {
            let user_left = env.podman(&[
                "pod",
                "ps",
                "-q",
                "--filter",
                &format!("label=pss.node={rootless_node}"),
            ]);
            (user_left.trim().is_empty() && cluster.podman_pods().is_empty()).then_some(())
        },
    )
    .await;
    stop_proxy.cancel();
    drop(agent);
}
