//! Issue 12 on real Podman, with a request loop through a proxy that must see zero failures:
//! drain a node (each replacement ready before the old pod stops), roll out a new image, undo
//! it (the previous image comes back), and a broken rollout that reverts by itself, all with a
//! TCP liveness probe that must never kill a healthy server. The agents serve `--admin`: their
//! `/metrics` count real Podman calls. And an exec liveness probe that starts failing gets its
//! container killed and the pod restarted.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{free_port, podman, Cluster};
use support::eventually;
use support::proxy::start_proxy;
use support::traffic::ClientLoop;

/// The demo web server under `image`, 2 replicas, a surge of one and no unavailability.
fn web(image: &str, extra_spec: &str) -> String {
    format!(
        "kind: Workload\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec:\n  replicas: 2\n  strategy: {{maxSurge: 1, maxUnavailable: 0}}\n{extra_spec}  podSpec:\n    containers:\n      - name: web\n        image: {image}\n        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n        resources: {{cpu: 50m, memory: 16Mi}}\n        livenessProbe: {{tcpSocket: {{port: 80}}, interval: 1s, failureThreshold: 2}}\n    ports:\n      - containerPort: 80\n    readinessProbe: {{port: 80, interval: 500ms, timeout: 1s}}\n---\nkind: Service\nmetadata: {{name: web}}\nspec: {{workload: web, port: 80, targetPort: 80}}\n"
    )
}

const LATEST: &str = "localhost/pss-demo:latest";
/// The same image under a second tag, so that a rollout changes the image.
const V2: &str = "localhost/pss-demo:v2-e2e";

async fn workload(cluster: &Cluster) -> Value {
    let out = cluster
        .controller
        .ctl(&["get", "workload", "web", "-o", "json"])
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rollout_undo_and_auto_revert_drop_no_request() {
    let admin = format!("127.0.0.1:{}", free_port());
    let first_admin = admin.clone();
    let cluster = Cluster::start_with_agent_args(
        &["node-a", "node-b"],
        |_| {},
        move |i| {
            if i == 0 {
                vec!["--admin".into(), first_admin.clone()]
            } else {
                Vec::new()
            }
        },
    )
    .await;
    podman(&["tag", LATEST, V2]);
    let c = &cluster.controller;
    cluster.apply_text(&web(LATEST, "")).await;
    cluster
        .wait_running("web", 2, Duration::from_secs(120))
        .await;
    let (addr, handle, stop_proxy) = start_proxy(c.addr, "web").await;
    eventually(
        Duration::from_secs(20),
        "proxy holds 2 endpoints",
        || async { (handle.service("web").unwrap().backends().len() == 2).then_some(()) },
    )
    .await;
    let client = ClientLoop::start(addr);
    let start = Instant::now();

    // Drain the node of the first pod: its pods move, the node stays cordoned.
    let pods = cluster.pods().await;
    let node = pods[0]["node"].as_str().unwrap().to_string();
    let out = c
        .ctl(&["drain", &format!("node/{node}"), "--timeout", "120s"])
        .await
        .unwrap();
    assert!(out.contains("drained"), "{out}");
    let moved = cluster
        .wait_running("web", 2, Duration::from_secs(60))
        .await;
    assert!(
        moved.iter().all(|p| p["node"] != node.as_str()),
        "{moved:?}"
    );
    assert!(cluster
        .podman_pods()
        .iter()
        .all(|p| !p.contains(node.as_str())));
    c.ctl(&["uncordon", &format!("node/{node}")]).await.unwrap();

    // A new image rolls out; undo brings the previous one back.
    cluster.apply_text(&web(V2, "")).await;
    let out = c
        .ctl(&["rollout", "status", "workload/web", "--timeout", "120s"])
        .await
        .unwrap();
    assert!(out.contains("revision 2"), "{out}");
    assert_eq!(workload(&cluster).await["images"], V2);
    c.ctl(&["rollout", "undo", "workload/web"]).await.unwrap();
    c.ctl(&["rollout", "status", "workload/web", "--timeout", "120s"])
        .await
        .unwrap();
    assert_eq!(workload(&cluster).await["images"], LATEST);
    let running = cluster
        .wait_running("web", 2, Duration::from_secs(60))
        .await;
    for p in &running {
        let id = p["containers"][0]["id"].as_str().unwrap();
        let image = podman(&["inspect", "--format", "{{.ImageName}}", id]);
        assert_eq!(image.trim(), LATEST, "pod {} runs {image}", p["name"]);
    }

    // An image that does not exist: the rollout makes no progress, fails after its deadline
    // and reverts by itself; the old pods serve throughout.
    cluster
        .apply_text(&web(
            "localhost/pss-no-such-image:1",
            "  progressDeadline: 5s\n  autoRevert: true\n",
        ))
        .await;
    eventually(
        Duration::from_secs(60),
        "the broken rollout reverts",
        || async {
            let events = c.ctl(&["get", "events"]).await.ok()?;
            (events.contains("RolloutFailed") && events.contains("RolloutReverted")).then_some(())
        },
    )
    .await;
    c.ctl(&["rollout", "status", "workload/web", "--timeout", "120s"])
        .await
        .unwrap();
    assert_eq!(workload(&cluster).await["images"], LATEST);
    cluster
        .wait_running("web", 2, Duration::from_secs(60))
        .await;

    client.stop_expecting_no_failures(start, 100).await;
    stop_proxy.cancel();

    // The first agent's admin endpoint counted its Podman calls.
    let metrics = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&admin).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("pss_agent_podman_request_seconds_count{op=\"GET /_ping\"}")
            || metrics.contains("pss_agent_podman_request_seconds_count{op=\"GET /pods/json\"}"),
        "{metrics}"
    );
    let _ = podman(&["rmi", V2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exec_liveness_probe_restarts_the_pod() {
    let cluster = Cluster::start(&["node-l"]).await;
    // Healthy for 4 s, then the probe's file is gone: the container is killed after two
    // failed checks and the pod restarted in place (the command itself never exits).
    let manifest = "kind: Workload\nmetadata: {name: sick}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: main\n        image: localhost/pss-demo:latest\n        command: [\"/bin/sh\", \"-c\", \"touch /tmp/alive; sleep 4; rm /tmp/alive; exec sleep 3600\"]\n        livenessProbe:\n          exec: {command: [\"/bin/sh\", \"-c\", \"test -f /tmp/alive\"]}\n          interval: 1s\n          timeout: 2s\n          failureThreshold: 2\n          initialDelay: 1s\n";
    cluster.apply_text(manifest).await;
    cluster
        .wait_running("sick", 1, Duration::from_secs(120))
        .await;
    let restarted = eventually(
        Duration::from_secs(60),
        "the pod restarted by its liveness probe",
        || async {
            let pods = cluster.pods().await;
            let p = pods.into_iter().find(|p| p["workload"] == "sick")?;
            (p["restarts"].as_u64()? >= 1).then_some(p)
        },
    )
    .await;
    assert_eq!(restarted["workload"], "sick");
    let events = cluster.controller.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("Restarting"), "{events}");
}
