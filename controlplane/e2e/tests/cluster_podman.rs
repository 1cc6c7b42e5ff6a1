//! PSS on real Podman (issue 3): controller + two pss-agent processes + pssctl. Needs root
//! and Podman; `scripts/podman-setup.sh` (run by the tests) prepares the machine.

mod support;

use std::time::Duration;

use support::cluster::{examples, http_get, podman, Cluster};
use support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_runs_spreads_scales_logs_and_deletes_on_podman() {
    let cluster = Cluster::start(&["node-a", "node-b"]).await;
    let c = &cluster.controller;
    let out = c
        .ctl(&[
            "apply",
            "-f",
            examples().join("my-app.yaml").to_str().unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(out.trim(), "workload/my-app created");

    let pods = cluster
        .wait_running("my-app", 3, Duration::from_secs(120))
        .await;
    let mut per_node = std::collections::BTreeMap::new();
    for p in &pods {
        *per_node
            .entry(p["node"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_node.len(), 2, "spread over both nodes: {per_node:?}");
    assert!(per_node.values().all(|&n| n == 1 || n == 2), "{per_node:?}");
    for p in &pods {
        let addr = p["addresses"][0]["address"].as_str().unwrap();
        let body = http_get(addr).unwrap_or_else(|e| panic!("pod {} at {addr}: {e}", p["name"]));
        assert!(
            body.starts_with("HTTP/1.") && body.contains("200"),
            "{addr}: {body}"
        );
        assert!(
            body.contains(p["name"].as_str().unwrap()),
            "the page names its pod: {body}"
        );
    }
    // The demo image logs one access line per request: `pssctl logs` shows it.
    let first = pods[0]["name"].as_str().unwrap().to_string();
    let access = support::eventually(Duration::from_secs(10), "an access-log line", || async {
        let out = c.ctl(&["logs", &first]).await.ok()?;
        out.lines().any(|l| l.ends_with("GET / 200")).then_some(out)
    })
    .await;
    assert!(access.contains(" GET / 200"), "{access}");
    // Podman shows them, labelled.
    let listing = podman(&[
        "pod",
        "ps",
        "--filter",
        "label=pss.workload=my-app",
        "--format",
        "{{.Name}} {{.Labels}}",
    ]);
    for p in &pods {
        let name = p["name"].as_str().unwrap();
        let line = listing
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in podman pod ps:\n{listing}"));
        assert!(
            line.contains("pss.workload:my-app")
                && line.contains("pss.pod:")
                && line.contains("pss.node:"),
            "{line}"
        );
    }

    c.ctl(&["scale", "workload/my-app", "--replicas", "5"])
        .await
        .unwrap();
    cluster
        .wait_running("my-app", 5, Duration::from_secs(120))
        .await;
    support::eventually(Duration::from_secs(60), "5 pods in podman", || async {
        (cluster.podman_pods().len() == 5).then_some(())
    })
    .await;
    c.ctl(&["scale", "workload/my-app", "--replicas", "1"])
        .await
        .unwrap();
    cluster
        .wait_running("my-app", 1, Duration::from_secs(120))
        .await;
    support::eventually(Duration::from_secs(60), "1 pod in podman", || async {
        (cluster.podman_pods().len() == 1).then_some(())
    })
    .await;

    // Logs: a workload that prints.
    cluster
        .apply_text(
            "kind: Workload\nmetadata: {name: talker}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: main\n        image: localhost/pss-demo:latest\n        command: [\"/bin/sh\", \"-c\", \"echo hello-from-talker; echo second-line; exec sleep 3600\"]\n",
        )
        .await;
    let talker = cluster
        .wait_running("talker", 1, Duration::from_secs(120))
        .await;
    let id = format!("pod/{}", talker[0]["name"].as_str().unwrap());
    let logs = support::eventually(Duration::from_secs(20), "logs printed", || async {
        let out = c.ctl(&["logs", &id]).await.ok()?;
        out.contains("second-line").then_some(out)
    })
    .await;
    assert!(
        logs.contains("hello-from-talker\nsecond-line\n"),
        "{logs:?}"
    );
    // -f: the output arrives and the stream stays open for more.
    let followed = support::SharedBuf::default();
    let follow_task = {
        let (addr, out) = (c.addr.to_string(), followed.clone());
        let ca = support::ca_file(c.addr).unwrap().display().to_string();
        let id = id.clone();
        tokio::spawn(async move {
            let argv = [
                "pssctl",
                "--controller",
                addr.as_str(),
                "--token",
                support::TOKEN,
                "--ca",
                ca.as_str(),
                "logs",
                id.as_str(),
                "-f",
            ];
            let cli = <pssctl::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let mut out = out;
            pssctl::execute(cli, &mut out).await
        })
    };
    support::eventually(Duration::from_secs(20), "followed logs", || async {
        followed.text().contains("second-line").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!follow_task.is_finished(), "logs -f keeps streaming");
    follow_task.abort();

    c.ctl(&["delete", "workload/my-app"]).await.unwrap();
    c.ctl(&["delete", "workload/talker"]).await.unwrap();
    support::eventually(
        Duration::from_secs(60),
        "no PSS pod left in podman",
        || async { cluster.podman_pods().is_empty().then_some(()) },
    )
    .await;
    support::eventually(Duration::from_secs(10), "no pod records left", || async {
        cluster.pods().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_running_pods() {
    let mut cluster = Cluster::start(&["node-a"]).await;
    let c = &cluster.controller;
    cluster
        .apply_text(
            "kind: Workload\nmetadata: {name: adopt}\nspec:\n  replicas: 2\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    ports:\n      - containerPort: 80\n",
        )
        .await;
    let before = cluster
        .wait_running("adopt", 2, Duration::from_secs(120))
        .await;
    let ids = |pods: &[serde_json::Value]| {
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
    };
    let containers_before = ids(&before);
    assert_eq!(containers_before.len(), 2);

    let node = cluster.agents[0].node.clone();
    let port = cluster.agents[0].port;
    // Registrations of this node so far; the restarted agent must add one.
    let registrations = |events: &str| -> Vec<u64> {
        let events: serde_json::Value = serde_json::from_str(events).unwrap();
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "Registered" && e["object"] == format!("node/{node}"))
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    let last_registration = registrations(&c.ctl(&["get", "events", "-o", "json"]).await.unwrap())
        .into_iter()
        .max()
        .expect("the agent registered at start");
    cluster.agents[0].kill();
    // Pods keep running without their agent.
    for p in &before {
        let addr = p["addresses"][0]["address"].as_str().unwrap();
        assert!(
            http_get(addr).unwrap().contains("200"),
            "{addr} serves with the agent dead"
        );
    }
    cluster.agents[0] = support::cluster::AgentProcess::start(&node, port, &c.addr.to_string());
    // Adoption is only shown once the new agent has registered (with its running pods).
    eventually(
        Duration::from_secs(30),
        "the restarted agent registers again",
        || async {
            let events = c.ctl(&["get", "events", "-o", "json"]).await.ok()?;
            registrations(&events)
                .into_iter()
                .any(|id| id > last_registration)
                .then_some(())
        },
    )
    .await;
    let after = cluster
        .wait_running("adopt", 2, Duration::from_secs(60))
        .await;
    assert_eq!(
        ids(&after),
        containers_before,
        "same containers: adopted, not recreated"
    );
    let names = |pods: &[serde_json::Value]| {
        let mut v: Vec<String> = pods
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&after), names(&before));
    assert_eq!(cluster.podman_pods().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_pod_with_its_reason_and_backs_off() {
    let cluster = Cluster::start(&["node-a"]).await;
    let c = &cluster.controller;
    cluster
        .apply_text(
            "kind: Workload\nmetadata: {name: ghost}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: main\n        image: localhost/does-not-exist:1.0\n",
        )
        .await;
    let pod = support::eventually(
        Duration::from_secs(60),
        "a Failed pod with ImageNotFound",
        || async {
            cluster
                .pods()
                .await
                .into_iter()
                .find(|p| p["phase"] == "Failed" && p["reason"] == "ImageNotFound")
        },
    )
    .await;
    let table = c.ctl(&["get", "pods"]).await.unwrap();
    assert!(table.contains("ImageNotFound"), "{table}");
    // No hot loop: over the next 8 seconds at most the immediate retry and one 10 s back-off
    // retry can happen.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pods = cluster.pods().await;
    assert_eq!(pods.len(), 1, "the pod is retried in place, not multiplied");
    assert_eq!(pods[0]["name"], pod["name"]);
    let restarts = pods[0]["restarts"].as_u64().unwrap();
    assert!(restarts <= 2, "backed off, {restarts} restarts in ~8s");
    let events = c.ctl(&["get", "events", "-o", "json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&events).unwrap();
    let failures = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("ImageNotFound")
        })
        .count();
    assert!(
        (1..=3).contains(&failures),
        "{failures} failure events: {events}"
    );
    assert!(
        cluster.podman_pods().is_empty(),
        "nothing half-created in podman"
    );
}
