//! Issue 5 on real Podman: services that drain before pods stop, self-healing after a container
//! dies or a node goes silent, crash-loop back-off, and CPU autoscaling up and back down.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{podman, podman_pods_on, AgentProcess, Cluster};
use support::eventually;
use support::proxy::start_proxy;
use support::traffic::ClientLoop;

const WEB: &str = "kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 3\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n        resources: {cpu: 50m, memory: 16Mi}\n    ports:\n      - containerPort: 80\n    readinessProbe: {port: 80, interval: 500ms, timeout: 1s}\n---\nkind: Service\nmetadata: {name: web}\nspec: {workload: web, port: 80, targetPort: 80}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_containers_are_replaced_and_scaling_drops_no_request() {
    let cluster = Cluster::start(&["node-a", "node-b"]).await;
    let c = &cluster.controller;
    cluster.apply_text(WEB).await;
    let pods = cluster
        .wait_running("web", 3, Duration::from_secs(120))
        .await;
    let (addr, handle, stop_proxy) = start_proxy(c.addr, "web").await;
    eventually(
        Duration::from_secs(20),
        "proxy holds 3 endpoints",
        || async { (handle.service("web").unwrap().backends().len() == 3).then_some(()) },
    )
    .await;
    let client = ClientLoop::start(addr);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // podman kill one pod's container: it is restarted at once and serves again.
    let victim = &pods[0];
    let victim_id = victim["name"].as_str().unwrap().to_string();
    let container = victim["containers"][0]["id"].as_str().unwrap().to_string();
    let killed_at = Instant::now();
    podman(&["kill", &container]);
    let back = eventually(
        Duration::from_secs(30),
        "the killed pod is replaced and ready",
        || async {
            let pods = cluster.pods().await;
            let p = pods.into_iter().find(|p| p["name"] == victim_id.as_str())?;
            let restarted =
                p["restarts"].as_u64()? >= 1 && p["phase"] == "Running" && p["ready"] == true;
            restarted.then_some(p)
        },
    )
    .await;
    let replaced_after = killed_at.elapsed();
    let addr_new = back["addresses"][0]["address"].as_str().unwrap();
    assert!(
        support::cluster::http_get(addr_new)
            .unwrap()
            .contains(" 200 "),
        "the replacement serves"
    );
    eprintln!("self-healing: pod replaced and ready {replaced_after:?} after podman kill");
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("Restarting"), "{events}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kill_failures = client.failures_since(killed_at);
    assert!(
        kill_failures.len() <= 2,
        "only requests in flight to the killed pod may fail: {kill_failures:?}"
    );

    // Scale 3 -> 1 -> 3 under the loop: zero failed requests.
    let scaling_from = Instant::now();
    c.ctl(&["scale", "workload/web", "--replicas", "1"])
        .await
        .unwrap();
    cluster
        .wait_running("web", 1, Duration::from_secs(60))
        .await;
    eventually(Duration::from_secs(60), "one Podman pod left", || async {
        (cluster.podman_pods().len() == 1).then_some(())
    })
    .await;
    c.ctl(&["scale", "workload/web", "--replicas", "3"])
        .await
        .unwrap();
    cluster
        .wait_running("web", 3, Duration::from_secs(120))
        .await;
    eventually(
        Duration::from_secs(20),
        "proxy holds 3 endpoints again",
        || async { (handle.service("web").unwrap().backends().len() == 3).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.stop_expecting_no_failures(scaling_from, 50).await;
    stop_proxy.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_s_pods_move_and_no_duplicate_remains_when_it_returns() {
    let mut cluster = Cluster::start(&["node-a", "node-b"]).await;
    let c = &cluster.controller;
    cluster.apply_text(WEB).await;
    cluster
        .wait_running("web", 3, Duration::from_secs(120))
        .await;
    let node_a = cluster.agents[0].node.clone();
    let port_a = cluster.agents[0].port;
    let on_a = podman_pods_on(&node_a).len();
    assert!(on_a >= 1, "spread put pods on {node_a}");

    let killed_at = Instant::now();
    cluster.agents[0].kill();
    // node_timeout is 6 s in tests (3 x a 2 s heartbeat): the pods move to node-b.
    eventually(
        Duration::from_secs(60),
        "pods replaced on the other node",
        || async {
            let pods = cluster.pods().await;
            let ready: Vec<_> = pods
                .iter()
                .filter(|p| p["phase"] == "Running" && p["ready"] == true)
                .collect();
            (ready.len() == 3 && ready.iter().all(|p| p["node"] != node_a.as_str())).then_some(())
        },
    )
    .await;
    eprintln!(
        "node loss: pods replaced {:?} after the agent was killed",
        killed_at.elapsed()
    );
    let nodes = c.ctl(&["get", "nodes"]).await.unwrap();
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with(&node_a) && l.contains("NotReady")),
        "{nodes}"
    );
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(
        events.contains("NodeNotReady") && events.contains("PodLost"),
        "{events}"
    );

    // The agent comes back: it is told to stop the pods that were replaced.
    cluster.agents[0] = AgentProcess::start(&node_a, port_a, &c.addr.to_string());
    eventually(
        Duration::from_secs(60),
        "no duplicate pods left on the returning node",
        || async { podman_pods_on(&node_a).is_empty().then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.podman_pods().len(),
        3,
        "exactly the 3 wanted pods exist in Podman"
    );
    let pods = cluster.pods().await;
    assert_eq!(pods.len(), 3, "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_pod_backs_off_exponentially() {
    let cluster = Cluster::start(&["node-a"]).await;
    let c = &cluster.controller;
    cluster
        .apply_text(
            "kind: Workload\nmetadata: {name: crasher}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: main\n        image: localhost/pss-demo:latest\n        command: [\"/bin/sh\", \"-c\", \"echo crashing; exit 3\"]\n",
        )
        .await;
    // Restarts at ~0 s, then after 10 s, then after 20 s: wait for the third restart.
    let restart_times = eventually(Duration::from_secs(90), "three restarts", || async {
        let out = c.ctl(&["get", "events", "-o", "json"]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let times: Vec<i64> = v["items"]
            .as_array()?
            .iter()
            .filter(|e| {
                e["reason"] == "Restarting"
                    && e["object"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("pod/crasher-")
            })
            .map(|e| e["timeMs"].as_i64().unwrap())
            .collect();
        (times.len() >= 3).then_some(times)
    })
    .await;
    let gaps: Vec<i64> = restart_times.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("crash loop: gaps between restarts {gaps:?} ms");
    assert!(
        gaps[0] >= 9_000,
        "second restart waited the 10 s back-off: {gaps:?}"
    );
    assert!(gaps[1] >= gaps[0] + 5_000, "the back-off grows: {gaps:?}");
    let pods = cluster.pods().await;
    assert_eq!(pods.len(), 1);
    assert!(pods[0]["restarts"].as_u64().unwrap() >= 3);
    let table = c.ctl(&["get", "pods"]).await.unwrap();
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 3,
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_burning_workload_scales_up_and_back_down() {
    // Short cooldown and window so the test takes a minute, not ten.
    let dir = tempfile::tempdir().unwrap();
    let _ = dir;
    let mut cluster = Cluster::start_with_config(&["node-a"], |cfg| {
        cfg.autoscale_cooldown = Duration::from_secs(3);
        cfg.stabilization_window = Duration::from_secs(6);
    })
    .await;
    let c = &cluster.controller;
    // Each pod burns CPU for 25 s after it starts, then idles: the load stops by itself.
    cluster
        .apply_text(
            "kind: Workload\nmetadata: {name: burner}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: main\n        image: localhost/pss-demo:latest\n        command: [\"/bin/sh\", \"-c\", \"end=$(( $(date +%s) + 25 )); while [ $(date +%s) -lt $end ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done; exec sleep 3600\"]\n        resources: {cpu: 100m, memory: 16Mi}\n---\nkind: AutoScalePolicy\nmetadata: {name: burner}\nspec: {workload: burner, minReplicas: 1, maxReplicas: 3, cpu: 50}\n",
        )
        .await;
    eventually(Duration::from_secs(90), "scaled up", || async {
        let out = c.ctl(&["get", "workloads", "-o", "json"]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (v["items"][0]["replicas"].as_u64()? > 1).then_some(())
    })
    .await;
    let hpa = c.ctl(&["get", "autoscalers"]).await.unwrap();
    assert!(hpa.contains("burner"), "{hpa}");
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(
        events.contains("AutoScaled") && events.contains("cpu"),
        "{events}"
    );
    // The load stops; after the stabilization window it scales back to the minimum.
    eventually(
        Duration::from_secs(150),
        "scaled back down to 1",
        || async {
            let out = c.ctl(&["get", "workloads", "-o", "json"]).await.ok()?;
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            (v["items"][0]["replicas"].as_u64()? == 1).then_some(())
        },
    )
    .await;
    cluster
        .wait_running("burner", 1, Duration::from_secs(60))
        .await;
    // The status is written by each evaluation (every metrics interval) and the one that
    // scaled down still shows the replicas it started from: wait for the next one. (Pods now
    // stop in well under a second, so wait_running can return before that evaluation.)
    eventually(
        Duration::from_secs(10),
        "the autoscaler's status shows 1 replica",
        || async {
            let hpa = c.ctl(&["get", "autoscalers", "-o", "json"]).await.ok()?;
            let v: serde_json::Value = serde_json::from_str(&hpa).ok()?;
            (v["items"][0]["currentReplicas"] == 1).then_some(())
        },
    )
    .await;
    cluster.agents.clear();
}
