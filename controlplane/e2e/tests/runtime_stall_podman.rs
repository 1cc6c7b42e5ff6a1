//! Issue 9 on real Podman: a healthy node whose Podman is slow is not declared dead.
//!
//! A controller (`--node-timeout 6s`), one agent (`--metrics-interval 2s`) on a Podman API
//! service of the test's own, a 2-pod workload behind a service, a pss-proxy and a request
//! loop through it. The Podman service is frozen with SIGSTOP for 20 s: the node must stay
//! Ready (no NodeNotReady, no pod replaced, zero failed requests) while it is shown
//! RuntimeUnresponsive and is unschedulable (a scale-up stays Pending); after SIGCONT the
//! condition clears by itself and the pending pod is placed.
//!
//! The frozen service is private (`PodmanService`), not the shared one on
//! /run/pss/podman.sock, so other Podman tests (and other people's) keep working meanwhile.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{free_port, podman_pods_on, AgentProcess, Cluster, PodmanService};
use support::eventually;
use support::proxy::start_proxy;
use tokio_util::sync::CancellationToken;

const WEB: &str = "kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 2\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n        resources: {cpu: 50m, memory: 16Mi}\n    ports:\n      - containerPort: 80\n    readinessProbe: {port: 80, interval: 500ms, timeout: 1s}\n---\nkind: Service\nmetadata: {name: web}\nspec: {workload: web, port: 80, targetPort: 80}\n";

/// GETs / through the proxy every 20 ms until stopped; counts and keeps the failures.
struct ClientLoop {
    ok: Arc<Mutex<usize>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ClientLoop {
    fn start(addr: SocketAddr) -> Self {
        let ok = Arc::new(Mutex::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (o, f, t) = (ok.clone(), failures.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !t.is_cancelled() {
                let a = addr.to_string();
                let r = tokio::task::spawn_blocking(move || support::cluster::http_get(&a))
                    .await
                    .unwrap();
                match r {
                    Ok(body) if body.contains(" 200 ") => *o.lock().unwrap() += 1,
                    Ok(body) => f
                        .lock()
                        .unwrap()
                        .push(body.lines().next().unwrap_or("").to_string()),
                    Err(e) => f.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        ClientLoop {
            ok,
            failures,
            stop,
            task,
        }
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        let _ = self.task.await;
        let ok = *self.ok.lock().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}

/// `get nodes -o json`'s one node.
async fn the_node(cluster: &Cluster) -> serde_json::Value {
    let out = cluster
        .controller
        .ctl(&["get", "nodes", "-o", "json"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"][0].clone()
}

fn pod_ids(pods: &[serde_json::Value]) -> BTreeSet<String> {
    pods.iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_podman_makes_the_node_unschedulable_never_dead() {
    let podman = PodmanService::start().await;
    // fast_config: --node-timeout 6s, drain 0.5 s; a 10 s stop grace, so that a stop that
    // waits for SIGKILL cannot pass for a prompt one.
    let mut cluster = Cluster::start_with_config(&[], |c| {
        c.stop_grace = Duration::from_secs(10);
    })
    .await;
    let node = format!("stall-{}", rand::random::<u32>());
    let controller = cluster.controller.addr.to_string();
    cluster.agents.push(AgentProcess::start_on_socket(
        &node,
        free_port(),
        &controller,
        &podman.socket,
        &[],
    ));
    cluster.nodes.push(node.clone());
    eventually(Duration::from_secs(60), "the node is Ready", || async {
        let out = cluster
            .controller
            .ctl(&["get", "nodes", "-o", "json"])
            .await
            .ok()?;
        out.contains("\"Ready\"").then_some(())
    })
    .await;
    let c = &cluster.controller;
    cluster.apply_text(WEB).await;
    let before = pod_ids(
        &cluster
            .wait_running("web", 2, Duration::from_secs(120))
            .await,
    );
    let (addr, handle, stop_proxy) = start_proxy(c.addr, "web").await;
    eventually(
        Duration::from_secs(20),
        "proxy holds 2 endpoints",
        || async { (handle.service("web").unwrap().backends().len() == 2).then_some(()) },
    )
    .await;
    let client = ClientLoop::start(addr);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Freeze Podman's API for 20 s (the guard thaws it on every exit path, panics included).
    let frozen = podman.freeze();
    let frozen_at = Instant::now();
    let stalled = eventually(
        Duration::from_secs(15),
        "the node shows RuntimeUnresponsive",
        || async {
            let n = the_node(&cluster).await;
            (n["conditions"] == serde_json::json!(["RuntimeUnresponsive"])).then_some(n)
        },
    )
    .await;
    let detected_after = frozen_at.elapsed();
    assert_eq!(stalled["status"], "Ready", "{stalled}");
    assert_eq!(stalled["unschedulable"], true, "{stalled}");
    assert!(
        stalled["runtimeReason"]
            .as_str()
            .unwrap()
            .contains("within"),
        "{stalled}"
    );
    let table = c.ctl(&["get", "nodes"]).await.unwrap();
    assert!(table.contains("Ready,RuntimeUnresponsive"), "{table}");

    // A scale-up during the stall places nothing on the node: the new pod stays Pending.
    c.ctl(&["scale", "workload/web", "--replicas", "3"])
        .await
        .unwrap();
    while frozen_at.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pods: Vec<_> = cluster
            .pods()
            .await
            .into_iter()
            .filter(|p| p["workload"] == "web")
            .collect();
        let running: Vec<_> = pods
            .iter()
            .filter(|p| p["phase"] == "Running" && p["ready"] == true)
            .cloned()
            .collect();
        assert_eq!(
            pod_ids(&running),
            before,
            "the original pods keep running, none replaced: {pods:?}"
        );
        let others: Vec<_> = pods
            .iter()
            .filter(|p| !before.contains(p["name"].as_str().unwrap()))
            .collect();
        assert!(
            others
                .iter()
                .all(|p| p["phase"] == "Pending" && p["node"].as_str().unwrap_or("").is_empty()),
            "nothing new is placed on the unschedulable node: {others:?}"
        );
        let n = the_node(&cluster).await;
        assert_eq!(
            n["status"], "Ready",
            "never NotReady while heartbeating: {n}"
        );
    }
    let pending = cluster
        .pods()
        .await
        .into_iter()
        .filter(|p| p["workload"] == "web" && p["phase"] == "Pending")
        .count();
    assert_eq!(pending, 1, "the scaled-up pod waits");
    frozen.thaw();
    let thawed_at = Instant::now();

    // The condition clears by itself and the pending pod is placed.
    eventually(Duration::from_secs(30), "the condition clears", || async {
        let n = the_node(&cluster).await;
        (n["conditions"] == serde_json::json!([]) && n["unschedulable"] == false).then_some(())
    })
    .await;
    let cleared_after = thawed_at.elapsed();
    let after = cluster
        .wait_running("web", 3, Duration::from_secs(60))
        .await;
    let placed_after = thawed_at.elapsed();
    assert!(
        pod_ids(&after).is_superset(&before),
        "the original pods are still there"
    );
    assert_eq!(podman_pods_on(&node).len(), 3);

    // An ordinary scale-down: the pod is drained (0.5 s here) and stopped with a 10 s grace.
    // busybox httpd ignores SIGTERM as PID 1; with Podman's init in the container the stop
    // takes well under a second instead of the whole grace period.
    let scaled_at = Instant::now();
    c.ctl(&["scale", "workload/web", "--replicas", "2"])
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "one Podman pod is gone",
        || async { (podman_pods_on(&node).len() == 2).then_some(()) },
    )
    .await;
    let scale_down = scaled_at.elapsed();
    assert!(
        scale_down < Duration::from_secs(5),
        "drain 0.5 s + a prompt stop, not drain + the 10 s grace: {scale_down:?}"
    );
    let n = the_node(&cluster).await;
    assert_eq!(n["status"], "Ready", "{n}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failures) = client.stop().await;
    stop_proxy.cancel();
    assert!(ok > 200, "the client loop ran ({ok} requests)");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );

    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(!events.contains("NodeNotReady"), "{events}");
    assert!(!events.contains("PodLost"), "{events}");
    assert!(events.contains("RuntimeUnresponsive"), "{events}");
    assert!(events.contains("RuntimeRecovered"), "{events}");
    eprintln!(
        "runtime stall: condition shown {detected_after:?} after SIGSTOP; cleared \
         {cleared_after:?} and pending pod running {placed_after:?} after SIGCONT; \
         scale 3->2 done (Podman pod gone) {scale_down:?} after pssctl scale; \
         {ok} requests through the proxy, 0 failed"
    );
    drop(cluster);
    drop(podman);
}
