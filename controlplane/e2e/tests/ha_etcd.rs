//! Issue 15: several `pss-controller` processes on a real 3-member etcd (Debian's
//! `etcd-server`, on loopback ports): one leader acts, a killed or paused leader is replaced
//! within the lease TTL, no acknowledged write is lost, no pod runs twice, traffic through a
//! service never fails, and losing etcd stops writes (clearly) but not reads.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::etcd::EtcdCluster;
use support::fake_agent::FakeAgent;
use support::process::ControllerProcess;
use support::traffic::{line_probe, ClientLoop};
use tokio_util::sync::CancellationToken;

/// The default `--leader-ttl`.
const TTL: Duration = Duration::from_secs(5);

async fn start_controllers(etcd: &EtcdCluster, dir: &Path, n: usize) -> Vec<ControllerProcess> {
    let store = etcd.store_url();
    let mut out = Vec::new();
    for i in 0..n {
        let data = dir.join(format!("c{i}"));
        std::fs::create_dir_all(&data).unwrap();
        out.push(
            ControllerProcess::start(
                &data.join("unused.db"),
                &[
                    "--store",
                    &store,
                    "--insecure",
                    "--reconcile-interval",
                    "1s",
                ],
            )
            .await,
        );
    }
    out
}

/// The address of the controller the leader key names, once one leads.
async fn leader(etcd: &EtcdCluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for i in 0..etcd.len() {
            if let Ok(Some(l)) = etcd.get(i, "/pss/leader") {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no controller leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn index_of(controllers: &[ControllerProcess], addr: &str) -> usize {
    controllers
        .iter()
        .position(|c| c.addr.to_string() == addr)
        .unwrap_or_else(|| panic!("leader {addr} is none of the controllers"))
}

const APP: &str = "kind: Workload
metadata: {name: web}
spec:
  replicas: 3
  podSpec:
    containers:
      - name: web
        image: localhost/pss-demo:latest
    ports: [{containerPort: 80}]
---
kind: Service
metadata: {name: web}
spec: {workload: web, port: 8080, targetPort: 80}
";

async fn apply(
    c: &ControllerProcess,
    dir: &Path,
    name: &str,
    yaml: &str,
) -> Result<String, String> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    c.ctl(&["apply", "-f", path.to_str().unwrap()])
        .await
        .map_err(|e| e.to_string())
}

/// Every pod the agents run, checking that none runs on two of them.
fn running(agents: &[FakeAgent]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    for a in agents {
        for id in a.pod_ids() {
            assert!(seen.insert(id.clone()), "pod {id} runs on two nodes");
        }
    }
    seen.into_iter().collect()
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A follower with agents and a proxy on it, a service with 3 pods serving through the proxy.
struct Serving {
    agents: Vec<FakeAgent>,
    proxy: SocketAddr,
    stop: CancellationToken,
}

async fn serve_app(follower: &ControllerProcess, dir: &Path) -> Serving {
    let stop = CancellationToken::new();
    let mut agents = Vec::new();
    for n in ["n1", "n2", "n3"] {
        agents.push(FakeAgent::start(n, follower.addr, stop.clone()).await);
    }
    apply(follower, dir, "app", APP).await.unwrap();
    wait_for("3 pods", Duration::from_secs(20), || {
        running(&agents).len() == 3
    })
    .await;
    let (proxy, _handle, proxy_stop) = support::proxy::start_proxy(follower.addr, "web").await;
    let child = stop.clone();
    tokio::spawn(async move {
        child.cancelled().await;
        proxy_stop.cancel();
    });
    // The proxy has the endpoints once a request gets through.
    let deadline = Instant::now() + Duration::from_secs(20);
    while line_probe(proxy).is_err() {
        assert!(Instant::now() < deadline, "no traffic through the proxy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Serving {
        agents,
        proxy,
        stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_mid_applies_loses_nothing_and_a_new_leader_acts_within_the_ttl() {
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mut controllers = start_controllers(&etcd, dir.path(), 3).await;
    let old = leader(&etcd).await;
    let li = index_of(&controllers, &old);
    let fi = (li + 1) % 3;
    let app = serve_app(&controllers[fi], dir.path()).await;
    let before = running(&app.agents);
    let traffic_from = Instant::now();
    let traffic = ClientLoop::with_probe(app.proxy, line_probe);

    // A stream of applies, through the two controllers that stay, while the leader is killed.
    let mut acknowledged = Vec::new();
    let mut killed_at = None;
    let mut new_leader_after = None;
    for i in 0..40 {
        if i == 10 {
            controllers[li].kill();
            killed_at = Some(Instant::now());
        }
        let target = if i % 2 == 0 { fi } else { (li + 2) % 3 };
        let name = format!("load-{i}");
        let yaml = format!(
            "kind: Workload\nmetadata: {{name: {name}}}\nspec:\n  replicas: 0\n  podSpec:\n    containers:\n      - {{name: c, image: localhost/pss-demo:latest}}\n"
        );
        if apply(&controllers[target], dir.path(), &name, &yaml)
            .await
            .is_ok()
        {
            acknowledged.push(name);
        }
        if let (Some(at), None) = (killed_at, new_leader_after) {
            if let Ok(Some(l)) = etcd.get(0, "/pss/leader") {
                if l != old {
                    new_leader_after = Some(at.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed_at = killed_at.unwrap();
    while new_leader_after.is_none() {
        if let Ok(Some(l)) = etcd.get(0, "/pss/leader") {
            if l != old {
                new_leader_after = Some(killed_at.elapsed());
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = new_leader_after.unwrap();
    eprintln!("new leader elected {took:?} after the kill (TTL {TTL:?})");
    // Within --leader-ttl: the lease is a second shorter, which covers etcd's lease-expiry
    // tick (500 ms) and a follower's look (200 ms).
    assert!(took <= TTL, "failover took {took:?}");
    assert!(
        acknowledged.len() >= 38,
        "applies failed: {}",
        40 - acknowledged.len()
    );

    // Every acknowledged apply is there, on both remaining controllers.
    for c in [fi, (li + 2) % 3] {
        let list = controllers[c].ctl(&["get", "workloads"]).await.unwrap();
        for name in &acknowledged {
            assert!(
                list.contains(name.as_str()),
                "{name} missing on {c}: {list}"
            );
        }
    }
    // The new leader acts: a scale-up is carried out, by one controller only.
    controllers[fi]
        .ctl(&["scale", "workload/web", "--replicas", "5"])
        .await
        .unwrap();
    wait_for("5 pods after the failover", Duration::from_secs(20), || {
        running(&app.agents).len() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = running(&app.agents);
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(
        before.iter().all(|p| after.contains(p)),
        "pods were replaced: {before:?} → {after:?}"
    );
    traffic.stop_expecting_no_failures(traffic_from, 50).await;
    app.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_paused_past_its_lease_never_acts_again_on_waking() {
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let controllers = start_controllers(&etcd, dir.path(), 3).await;
    let old = leader(&etcd).await;
    let li = index_of(&controllers, &old);
    let fi = (li + 1) % 3;
    let app = serve_app(&controllers[fi], dir.path()).await;
    let traffic_from = Instant::now();
    let traffic = ClientLoop::with_probe(app.proxy, line_probe);

    // Pause the leader past its TTL; another takes over.
    let pid = controllers[li].pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let paused = Instant::now();
    let deadline = paused + Duration::from_secs(30);
    loop {
        if let Ok(Some(l)) = etcd.get(0, "/pss/leader") {
            if l != old {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader while the old one is paused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("new leader {:?} after the pause", paused.elapsed());
    // While the old leader sleeps, the new one scales down: the old one's memory, when it
    // wakes, still says 3 replicas and would start one again if it acted.
    controllers[fi]
        .ctl(&["scale", "workload/web", "--replicas", "2"])
        .await
        .unwrap();
    wait_for("2 pods", Duration::from_secs(20), || {
        running(&app.agents).len() == 2
    })
    .await;
    let settled = running(&app.agents);
    tokio::time::sleep(TTL).await;
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    // Watch for a while: the set of running pods never changes (no start, no stop by the
    // woken leader), and the new leader still leads.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(running(&app.agents), settled, "the woken leader acted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = leader(&etcd).await;
    assert_ne!(now, old, "the paused leader took the lead back");
    // Both serve reads of the same state.
    for c in &controllers {
        let list = c.ctl(&["get", "workloads"]).await.unwrap();
        assert!(list.contains("2/2") || list.contains(" 2 "), "{list}");
    }
    traffic.stop_expecting_no_failures(traffic_from, 50).await;
    app.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_an_etcd_member_changes_nothing_and_losing_etcd_stops_writes_not_reads() {
    let mut etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let controllers = start_controllers(&etcd, dir.path(), 2).await;
    leader(&etcd).await;
    let one = "kind: Workload\nmetadata: {name: one}\nspec:\n  replicas: 0\n  podSpec:\n    containers:\n      - {name: c, image: localhost/pss-demo:latest}\n";
    apply(&controllers[0], dir.path(), "one", one)
        .await
        .unwrap();

    // One member (etcd's own leader, the hardest case) is killed: everything goes on.
    let member = etcd.leader().unwrap_or(0);
    etcd.kill(member);
    let two = one.replace("name: one", "name: two");
    let started = Instant::now();
    let mut result = apply(&controllers[1], dir.path(), "two", &two).await;
    while result.is_err() && started.elapsed() < Duration::from_secs(10) {
        // etcd elects a new leader among the two left (election timeout 500 ms here).
        tokio::time::sleep(Duration::from_millis(200)).await;
        result = apply(&controllers[1], dir.path(), "two", &two).await;
    }
    result.expect("apply with one etcd member down");
    for c in &controllers {
        let list = c.ctl(&["get", "workloads"]).await.unwrap();
        assert!(list.contains("one") && list.contains("two"), "{list}");
    }

    // All of etcd is gone: reads are served from the last state, writes refused clearly and
    // quickly, and nothing is half-applied.
    etcd.kill_all();
    let three = one.replace("name: one", "name: three");
    for c in &controllers {
        let list = c.ctl(&["get", "workloads"]).await.unwrap();
        assert!(list.contains("one") && list.contains("two"), "{list}");
        let t = Instant::now();
        let err = apply(c, dir.path(), "three", &three).await.unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a refused write took {:?}",
            t.elapsed()
        );
        assert!(err.contains("unavailable"), "{err}");
    }

    // etcd comes back: writes resume, and both controllers see them.
    etcd.restart_all();
    let started = Instant::now();
    loop {
        if apply(&controllers[0], dir.path(), "three", &three)
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes never resumed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in &controllers {
        loop {
            let list = c.ctl(&["get", "workloads"]).await.unwrap();
            if list.contains("three") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw the write: {list}",
                c.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And someone leads again.
    let _ = leader(&etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_a_sqlite_cluster_to_etcd_once_and_refuses_bad_stores() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pss.db");
    {
        let mut sqlite = ControllerProcess::start(&db, &["--insecure"]).await;
        apply(&sqlite, dir.path(), "app", APP).await.unwrap();
        sqlite
            .ctl(&["scale", "workload/web", "--replicas", "4"])
            .await
            .unwrap();
        sqlite.kill();
    }
    let bin = support::workspace_bin("pss-controller");
    let migrate = |from: String, to: String| {
        std::process::Command::new(&bin)
            .args(["migrate", "--from", &from, "--to", &to])
            .output()
            .unwrap()
    };
    let from = format!("sqlite://{}", db.display());
    let out = migrate(from.clone(), etcd.store_url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 workloads, 1 services"), "{stdout}");
    // A source that is not there, or not SQLite, is named.
    let out = migrate(
        format!("sqlite://{}/nope.db", dir.path().display()),
        etcd.store_url(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = migrate(etcd.store_url(), etcd.store_url());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
    // A second migration would overwrite a live cluster's state: refused, etcd untouched.
    let out = migrate(from, etcd.store_url());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to import"));

    let c = ControllerProcess::start(
        &dir.path().join("unused.db"),
        &["--store", &etcd.store_url(), "--insecure"],
    )
    .await;
    let list = c.ctl(&["get", "workloads"]).await.unwrap();
    assert!(list.contains("web") && list.contains(" 4 "), "{list}");
    let history = c
        .ctl(&["rollout", "history", "workload/web"])
        .await
        .unwrap();
    assert!(history.contains('1'), "{history}");

    // Bad stores are named, with a non-zero exit, before anything starts.
    let long_prefix = format!("/{}/", "p".repeat(100_000));
    for (args, says) in [
        (vec!["--store", "etcd://"], "--store"),
        (
            vec!["--store", "mysql://x"],
            "expected sqlite://PATH or etcd://",
        ),
        (
            vec!["--store", "etcd://127.0.0.1:1,127.0.0.1:1"],
            "given twice",
        ),
        (vec!["--leader-ttl", "2s"], "--leader-ttl"),
        (vec!["--etcd-prefix", "pss"], "prefix"),
        (vec!["--store", "sqlite://"], "needs a path"),
        (vec!["--etcd-prefix", &long_prefix], "prefix"),
    ] {
        let out = run_for_at_most(
            std::process::Command::new(&bin)
                .args(&args)
                .args(["--insecure", "--listen", "127.0.0.1:0"])
                .env("PSS_TOKEN", support::TOKEN),
            Duration::from_secs(15),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let started = Instant::now();
    let out = std::process::Command::new(&bin)
        .args([
            "--store",
            "etcd://127.0.0.1:1",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("PSS_TOKEN", support::TOKEN)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unavailable"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_etcd_blocks_no_read_and_refuses_writes_within_the_bound() {
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let controllers = start_controllers(&etcd, dir.path(), 2).await;
    leader(&etcd).await;
    let one = "kind: Workload\nmetadata: {name: one}\nspec:\n  replicas: 0\n  podSpec:\n    containers:\n      - {name: c, image: localhost/pss-demo:latest}\n";
    apply(&controllers[0], dir.path(), "one", one)
        .await
        .unwrap();
    // Every member paused: connections stay open, nothing answers (the hardest failure:
    // no reset, only silence).
    for i in 0..3 {
        etcd.stop(i);
    }
    let c = &controllers[1];
    // Many writes at once, each waiting on etcd...
    let mut writes = Vec::new();
    for i in 0..8 {
        let yaml = one.replace("name: one", &format!("name: hung-{i}"));
        let path = dir.path().join(format!("hung-{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let addr = c.addr.to_string();
        writes.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = support::ctl_raw(&[
                "pssctl",
                "--controller",
                &addr,
                "--token",
                support::TOKEN,
                "--insecure",
                "apply",
                "-f",
                path.to_str().unwrap(),
            ])
            .await;
            (r.map_err(|e| e.to_string()), started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...while reads are answered from memory at once.
    for _ in 0..5 {
        let t = Instant::now();
        let list = c.ctl(&["get", "workloads"]).await.unwrap();
        assert!(list.contains("one"), "{list}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a read took {:?}",
            t.elapsed()
        );
    }
    for w in writes {
        let (result, took) = w.await.unwrap();
        let err = result.expect_err("a write acknowledged while etcd is hung");
        assert!(err.contains("unavailable"), "{err}");
        assert!(
            took < Duration::from_secs(8),
            "a refused write took {took:?}"
        );
    }
    // Once etcd answers again, so do writes.
    for i in 0..3 {
        etcd.cont(i);
    }
    let two = one.replace("name: one", "name: two");
    let started = Instant::now();
    while apply(c, dir.path(), "two", &two).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes never resumed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs `cmd` to its end, killing it after `limit` (a binary that should have refused its
/// flags but serves instead must not hang the test).
fn run_for_at_most(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
