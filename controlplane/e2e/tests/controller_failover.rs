//! Issue 15: clients given several controllers fail over by themselves. Real processes on
//! loopback, no Podman: controllers on SQLite (each its own database: the point is the
//! clients' switch, not shared state), the real `pss-agent` binary on the simulated runtime,
//! pss-proxy's watch in this process, pssctl through its own `execute`.
//!
//! - pssctl with `--controller DEAD,LIVE` works as with `LIVE` alone; a write that reached a
//!   controller and failed there is not sent to the next one.
//! - pss-agent with `--controller DEAD,LIVE` registers and heartbeats; with `A,B` and A killed
//!   (SIGKILL) it registers with B and stays Ready there.
//! - a proxy following `[A, B]` keeps forwarding when A is killed after its first snapshot,
//!   and takes B's snapshots although B's version is lower than the one A sent.
//! - malformed lists make the binaries exit non-zero naming `--controller`.
//!
//! `support::workspace_bin` builds a missing binary but does not rebuild a stale one: run
//! `cargo build -p pss-agent -p pss-dataplane -p pss-controller` first (as `cargo nextest run
//! --workspace` does).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pss_dataplane::{ControllerConfig as WatchConfig, Proxy, ProxyConfig, ServiceConfig};
use pssctl::CliError;
use support::fake_agent::FakeAgent;
use support::process::ControllerProcess;
use support::{ctl_raw, eventually, fast_config, workspace_bin, RunningController, TOKEN};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const APP: &str = "kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 2\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n    ports:\n      - containerPort: 80\n---\nkind: Service\nmetadata: {name: web-svc}\nspec: {workload: web, port: 80, targetPort: 80}\n";

/// A loopback address nothing listens on (bound, then closed).
fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An in-process controller in plaintext (`--insecure`), on its own database in `dir`.
async fn plaintext_controller(dir: &std::path::Path) -> RunningController {
    let mut config = fast_config();
    config.tls = pss_controller::TlsSetup::Insecure;
    config.node_timeout = Duration::from_secs(30);
    RunningController::start_with(&dir.join("pss.db"), config).await
}

/// pssctl in plaintext against the list `controllers`.
async fn ctl(controllers: &str, args: &[&str]) -> Result<String, CliError> {
    let mut argv = vec![
        "pssctl",
        "--controller",
        controllers,
        "--insecure",
        "--token",
        TOKEN,
    ];
    argv.extend_from_slice(args);
    ctl_raw(&argv).await
}

async fn apply(controllers: &str) -> Result<String, CliError> {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), APP).unwrap();
    ctl(controllers, &["apply", "-f", f.path().to_str().unwrap()]).await
}

/// `get KIND -o json` items.
async fn items(controllers: &str, kind: &str) -> Vec<serde_json::Value> {
    let out = ctl(controllers, &["get", kind, "-o", "json"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The node called `name` on the controller at `addr`, if registered there.
async fn node(addr: &str, name: &str) -> Option<serde_json::Value> {
    let out = ctl(addr, &["get", "nodes", "-o", "json"]).await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pssctl_passes_over_a_dead_controller_and_never_sends_a_write_twice() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = plaintext_controller(da.path()).await;
    let b = plaintext_controller(db.path()).await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let dead = dead_address().to_string();

    // One address, as before; a dead one first costs nothing visible.
    let version = ctl(&b_addr, &["version"]).await.unwrap();
    assert!(version.contains("pss-controller"), "{version}");
    let both = format!("{dead},{b_addr}");
    assert_eq!(ctl(&both, &["version"]).await.unwrap(), version);
    apply(&both).await.unwrap();
    let names: Vec<_> = items(&both, "workloads").await;
    assert_eq!(names.len(), 1, "applied through the dead-first list");
    assert_eq!(
        items(&b_addr, "workloads").await.len(),
        1,
        "on the live one"
    );

    // Nobody home: the error names every address tried.
    match ctl(&dead, &["get", "nodes"]).await {
        Err(CliError::Unreachable { addr, .. }) => assert_eq!(addr, dead),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let dead2 = dead_address().to_string();
    match ctl(&format!("{dead},{dead2}"), &["get", "nodes"]).await {
        Err(e @ CliError::Unreachable { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&dead) && text.contains(&dead2), "{text}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // A write that reached the first controller and failed there is not sent on: `web`
    // exists on b only, and scaling it through `a,b` is a's NotFound, b untouched.
    let e = ctl(
        &format!("{a_addr},{b_addr}"),
        &["scale", "workload/web", "--replicas", "3"],
    )
    .await
    .unwrap_err();
    assert!(matches!(e, CliError::NotFound(_)), "{e}");
    let web = &items(&b_addr, "workloads").await[0];
    assert_eq!(web["replicas"], 2, "b was not scaled: {web}");
    // And a write that succeeds is applied once, on the first controller.
    apply(&format!("{a_addr},{b_addr}")).await.unwrap();
    assert_eq!(items(&a_addr, "workloads").await.len(), 1);

    // Malformed lists are usage errors naming the flag.
    for bad in [",", "a:1,,b:2", "127.0.0.1:1,127.0.0.1:1", "nonsense"] {
        let e = ctl(bad, &["get", "nodes"]).await.unwrap_err();
        assert!(
            matches!(e, CliError::Usage(_)) && e.to_string().contains("--controller"),
            "{bad}: {e}"
        );
    }

    // The configuration file's controllers are all used, and `config view` shows them.
    let cfg = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        cfg.path(),
        format!("controllers: ['{dead}', '{b_addr}']\ntoken: {TOKEN}\n"),
    )
    .unwrap();
    let path = cfg.path().to_str().unwrap();
    let out = ctl_raw(&["pssctl", "--config", path, "--insecure", "get", "workloads"])
        .await
        .unwrap();
    assert!(out.contains("web"), "{out}");
    let view = ctl_raw(&["pssctl", "--config", path, "config", "view"])
        .await
        .unwrap();
    assert!(
        view.contains(&dead) && view.contains(&b_addr) && !view.contains(TOKEN),
        "{view}"
    );

    a.stop().await;
    b.stop().await;
}

/// A `pss-agent` process on the simulated runtime (no Podman), in plaintext.
struct SimAgent(Child);

impl SimAgent {
    fn start(node: &str, controllers: &str) -> SimAgent {
        let port = dead_address().port();
        let child = Command::new(workspace_bin("pss-agent"))
            .args(["--controller", controllers, "--insecure", "--token", TOKEN])
            .args(["--runtime", "sim", "--node-name", node])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-interval", "1s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pss-agent");
        SimAgent(child)
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node's last heartbeat (unix ms) once it is Ready on the controller at `addr`.
async fn ready_heartbeat(addr: &str, name: &str) -> Option<i64> {
    let n = node(addr, name).await?;
    (n["status"] == "Ready").then(|| n["lastHeartbeatMs"].as_i64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_past_a_dead_controller_and_moves_when_its_controller_dies() {
    let dir = tempfile::tempdir().unwrap();
    let live = plaintext_controller(dir.path()).await;
    let live_addr = live.addr.to_string();

    // DEAD,LIVE: registers and heartbeats.
    let _agent = SimAgent::start("fo-agent-1", &format!("{},{live_addr}", dead_address()));
    let first = eventually(Duration::from_secs(20), "fo-agent-1 Ready", || {
        ready_heartbeat(&live_addr, "fo-agent-1")
    })
    .await;
    eventually(Duration::from_secs(20), "fo-agent-1 heartbeats", || async {
        let now = ready_heartbeat(&live_addr, "fo-agent-1").await?;
        (now > first).then_some(())
    })
    .await;

    // A,B with A killed: the agent registers with B (which never heard of it) and heartbeats.
    let adir = tempfile::tempdir().unwrap();
    let mut a = ControllerProcess::start(&adir.path().join("pss.db"), &["--insecure"]).await;
    let a_addr = a.addr.to_string();
    let _moving = SimAgent::start("fo-agent-2", &format!("{a_addr},{live_addr}"));
    eventually(Duration::from_secs(20), "fo-agent-2 Ready on A", || {
        ready_heartbeat(&a_addr, "fo-agent-2")
    })
    .await;
    assert!(
        node(&live_addr, "fo-agent-2").await.is_none(),
        "B unused while A answers"
    );
    a.kill();
    let registered = eventually(Duration::from_secs(20), "fo-agent-2 Ready on B", || {
        ready_heartbeat(&live_addr, "fo-agent-2")
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "fo-agent-2 heartbeats on B",
        || async {
            let now = ready_heartbeat(&live_addr, "fo-agent-2").await?;
            (now > registered).then_some(())
        },
    )
    .await;
    live.stop().await;
}

#[tokio::test]
async fn the_binaries_refuse_malformed_controller_lists() {
    let many: Vec<String> = (1..=17).map(|i| format!("127.0.0.1:{i}")).collect();
    let many = many.join(",");
    for list in [
        "a:1,,b:2",
        "127.0.0.1:1,127.0.0.1:1",
        "nonsense",
        many.as_str(),
    ] {
        let agent = Command::new(workspace_bin("pss-agent"))
            .args(["--controller", list, "--insecure", "--token", TOKEN])
            .args(["--runtime", "sim", "--listen", "127.0.0.1:0"])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let proxy = Command::new(workspace_bin("pss-proxy"))
            .args(["--controller", list, "--insecure", "--token", TOKEN])
            .args(["--service", "web", "--listen", "127.0.0.1:0"])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        for (what, out) in [("pss-agent", agent), ("pss-proxy", proxy)] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("--controller"),
                "{what} --controller {list}: {:?} {err}",
                out.status
            );
        }
    }
}

/// Connects through the proxy; the pod id the backend answered with.
async fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf)).await??;
    Ok(buf.trim().to_string())
}

/// The ids of the pods of the controllers at `controllers`.
async fn pod_ids(controllers: &str) -> BTreeSet<String> {
    items(controllers, "pods")
        .await
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_keeps_forwarding_when_its_controller_is_killed_and_follows_the_next() {
    // A: a process (killed with SIGKILL); B: in this process. Each has its stand-in node
    // whose pods are TCP listeners answering with their pod id.
    let adir = tempfile::tempdir().unwrap();
    let mut a = ControllerProcess::start(&adir.path().join("pss.db"), &["--insecure"]).await;
    let bdir = tempfile::tempdir().unwrap();
    let b = plaintext_controller(bdir.path()).await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let stop_agents = CancellationToken::new();
    let _node_a = FakeAgent::start("fo-node-a", a.addr, stop_agents.clone()).await;
    let _node_b = FakeAgent::start("fo-node-b", b.addr, stop_agents.clone()).await;
    apply(&a_addr).await.unwrap();
    apply(&b_addr).await.unwrap();
    let running = |addr: String, want: usize| async move {
        let pods = items(&addr, "pods").await;
        let ready = pods.iter().filter(|p| p["ready"] == true).count();
        (ready == want && pods.len() == want).then_some(())
    };
    eventually(Duration::from_secs(30), "B's pods ready", || {
        running(b_addr.clone(), 2)
    })
    .await;
    // A is further along (more endpoint changes, so a higher snapshot version than B's).
    eventually(Duration::from_secs(30), "A's pods ready", || {
        running(a_addr.clone(), 2)
    })
    .await;
    ctl(&a_addr, &["scale", "workload/web", "--replicas", "3"])
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "A's third pod ready", || {
        running(a_addr.clone(), 3)
    })
    .await;
    let (a_pods, b_pods) = (pod_ids(&a_addr).await, pod_ids(&b_addr).await);
    assert!(a_pods.is_disjoint(&b_pods));

    let mut svc = ServiceConfig::with_controller_service(
        "web-svc",
        "127.0.0.1:0".parse().unwrap(),
        "web-svc",
    );
    svc.health.interval = Duration::from_millis(200);
    let mut pc = ProxyConfig::new(vec![svc]);
    pc.workers = 1;
    let mut watch = WatchConfig::new("", TOKEN);
    watch.addresses = vec![a_addr.clone(), b_addr.clone()];
    watch.insecure = true;
    watch.backoff_initial = Duration::from_millis(50);
    watch.backoff_max = Duration::from_millis(300);
    pc.controller = Some(watch);
    let proxy = Proxy::bind(pc).unwrap();
    let addr = proxy.local_addr("web-svc").unwrap();
    let handle = proxy.handle();
    let stop_proxy = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.serve(stop_proxy.clone()));

    // The first snapshot comes from A.
    eventually(
        Duration::from_secs(20),
        "forwarding to A's pods",
        || async {
            let id = fetch(addr).await.ok()?;
            a_pods.contains(&id).then_some(())
        },
    )
    .await;
    let version_a = handle.service("web-svc").unwrap().stats().snapshot_version;

    // A dies. Its pods (in this process) still answer: the proxy keeps forwarding on A's
    // snapshot until B's replaces it, whatever the two versions.
    a.kill();
    let mut answers = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let id = fetch(addr).await.expect("forwarding never stops");
        answers += 1;
        if b_pods.contains(&id) {
            break;
        }
        assert!(a_pods.contains(&id), "{id} is nobody's pod");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never followed B (A's v{version_a} held)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answers >= 1);
    // From now on only B's pods, and every connection answered.
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let id = fetch(addr).await.unwrap();
        assert!(b_pods.contains(&id), "{id} is not B's");
        seen.insert(id);
    }
    assert_eq!(seen, b_pods, "round robin over B's two pods");
    let version_b = handle.service("web-svc").unwrap().stats().snapshot_version;
    // B numbers its snapshots on its own, so its version may be below, equal to or above A's
    // (how many snapshots each published): B's pods are served whichever. That an older
    // version is taken on a new stream is checked exactly in dataplane/tests/watch.rs.
    eprintln!("A's last snapshot v{version_a}, B's v{version_b}");

    stop_proxy.cancel();
    let _ = proxy_task.await;
    stop_agents.cancel();
    b.stop().await;
}
