//! The node registry's guard on hostile input, through the real gRPC surface (no Podman): a 3 MB
//! agent address, an unparseable one, `u64::MAX` capacity, NaN metrics, too many pod reports.
//! Each is refused with InvalidArgument naming the field, the value cut short and the limit;
//! the controller stays up and `get nodes` is unchanged.

mod support;

use pss_proto::auth::BearerToken;
use pss_proto::v1 as pb;
use pss_proto::v1::node_registry_client::NodeRegistryClient;
use std::time::Duration;
use support::{RunningController, TOKEN};

fn register(name: &str, address: &str, cpu: u64, memory: u64) -> pb::RegisterNodeRequest {
    pb::RegisterNodeRequest {
        name: name.into(),
        cpu_millis: cpu,
        memory_bytes: memory,
        agent_address: address.into(),
        pods: Vec::new(),
        ..Default::default()
    }
}

/// Asserts InvalidArgument whose message names `field` and `limit` and is short.
fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str, limit: &str) {
    let status = result.expect_err("hostile input must be refused");
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
    let m = status.message();
    assert!(m.contains(field), "names the field {field}: {m}");
    assert!(m.contains(limit), "names the limit {limit:?}: {m}");
    assert!(m.len() < 300, "the value is cut short: {} bytes", m.len());
}

#[tokio::test]
async fn hostile_registrations_and_heartbeats_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let channel = support::channel(c.addr).await;
    let mut reg = NodeRegistryClient::with_interceptor(channel, BearerToken::new(TOKEN).unwrap())
        .max_encoding_message_size(64 << 20);

    // One well-behaved node, so that "unchanged" means something.
    reg.register(register("good", "127.0.0.1:50052", 4000, 4 << 30))
        .await
        .unwrap();
    let before = c.ctl(&["get", "nodes", "-o", "json"]).await.unwrap();

    // Labels: too many, a malformed key, a 1 MiB value.
    let labelled = |labels: Vec<(String, String)>| pb::RegisterNodeRequest {
        labels: labels.into_iter().collect(),
        ..register("n1", "127.0.0.1:1", 4000, 4 << 30)
    };
    refused(
        reg.register(labelled(
            (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
        ))
        .await,
        "labels",
        "at most 64 labels",
    );
    refused(
        reg.register(labelled(vec![("-bad".into(), "v".into())]))
            .await,
        "labels",
        "label key",
    );
    refused(
        reg.register(labelled(vec![("k".into(), "v".repeat(1 << 20))]))
            .await,
        "labels",
        "above the limit of 63",
    );

    let huge = format!("{}:80", "a".repeat(3 << 20));
    refused(
        reg.register(register("n1", &huge, 4000, 4 << 30)).await,
        "agent_address",
        "at most 255 bytes",
    );
    refused(
        reg.register(register("n1", "not an address", 4000, 4 << 30))
            .await,
        "agent_address",
        "host:port",
    );
    refused(
        reg.register(register("n1", "127.0.0.1", 4000, 4 << 30))
            .await,
        "agent_address",
        "host:port",
    );
    refused(
        reg.register(register("n1", "127.0.0.1:1", u64::MAX, 4 << 30))
            .await,
        "cpu_millis",
        "between 1 and 1000000 millicores",
    );
    refused(
        reg.register(register("n1", "127.0.0.1:1", 4000, u64::MAX))
            .await,
        "memory_bytes",
        "64 TiB",
    );
    refused(
        reg.register(register(&"x".repeat(1 << 20), "127.0.0.1:1", 4000, 1))
            .await,
        "name",
        "63",
    );

    for bad in [f64::NAN, f64::INFINITY, -5.0] {
        let hb = pb::HeartbeatRequest {
            node: "good".into(),
            metrics: Some(pb::NodeMetrics {
                cpu_usage_percent: bad,
                ..Default::default()
            }),
            pods: Vec::new(),
        };
        refused(
            reg.heartbeat(hb).await,
            "metrics.cpu_usage_percent",
            "a finite percentage",
        );
    }
    let flood = pb::HeartbeatRequest {
        node: "good".into(),
        metrics: Some(pb::NodeMetrics::default()),
        pods: (0..10_001)
            .map(|i| pb::PodReport {
                id: format!("p-{i}"),
                ..Default::default()
            })
            .collect(),
    };
    refused(
        reg.heartbeat(flood).await,
        "pods",
        "at most 10000 pod reports",
    );
    let long_id = pb::PodStatusUpdate {
        node: "good".into(),
        pod: Some(pb::PodReport {
            id: "p".repeat(100_000),
            ..Default::default()
        }),
    };
    refused(
        reg.report_pod_status(long_id).await,
        "pod.id",
        "1 to 253 bytes",
    );

    // The controller is alive and nothing changed.
    let after = c.ctl(&["get", "nodes", "-o", "json"]).await.unwrap();
    assert_eq!(before, after);
    assert!(!after.contains("NaN"), "{after}");
    let out = c.ctl(&["get", "nodes"]).await.unwrap();
    assert!(out.contains("good") && !out.contains("n1"), "{out}");
    c.stop().await;
}

/// While a node's runtime is unresponsive, the pod reports in its heartbeats are the agent's
/// last known ones: a stale report saying a pod failed is not read (no BackOff, no restart),
/// and the node stays Ready. A heartbeat saying the runtime answers again clears the condition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pod_reports_of_an_unresponsive_runtime_are_not_read() {
    use support::eventually;
    use support::fake_agent::FakeAgent;
    use tokio_util::sync::CancellationToken;
    const APP: &str = "kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n    ports:\n      - containerPort: 80\n";

    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let stop_agent = CancellationToken::new();
    let _agent = FakeAgent::start("node-x", c.addr, stop_agent.clone()).await;
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), APP).unwrap();
    c.ctl(&["apply", "-f", f.path().to_str().unwrap()])
        .await
        .unwrap();
    let pod = eventually(Duration::from_secs(20), "the pod runs", || async {
        let out = c.ctl(&["get", "pods", "-o", "json"]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let p = v["items"].as_array()?.first()?.clone();
        (p["phase"] == "Running").then_some(p)
    })
    .await;
    let id = pod["name"].as_str().unwrap().to_string();

    let channel = support::channel(c.addr).await;
    let mut reg = NodeRegistryClient::with_interceptor(channel, BearerToken::new(TOKEN).unwrap());
    let stale = pb::HeartbeatRequest {
        node: "node-x".into(),
        metrics: Some(pb::NodeMetrics {
            runtime_unresponsive: true,
            runtime_reason: "GET /pods/json: no answer within 5s".into(),
            ..Default::default()
        }),
        pods: vec![pb::PodReport {
            id: id.clone(),
            workload: "web".into(),
            phase: pb::PodPhase::Failed as i32,
            reason: "Error".into(),
            message: "container web exited with code 137".into(),
            ..Default::default()
        }],
    };
    let answer = reg.heartbeat(stale).await.unwrap().into_inner();
    assert!(answer.known && answer.stop_pods.is_empty(), "{answer:?}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("RuntimeUnresponsive"), "{events}");
    assert!(
        !events.contains("BackOff"),
        "the stale report was read: {events}"
    );
    let out = c.ctl(&["get", "pods", "-o", "json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["items"][0];
    assert_eq!(
        (p["name"].as_str(), p["restarts"].as_u64()),
        (Some(id.as_str()), Some(0)),
        "{p}"
    );
    // The fake agent's own heartbeats (runtime answering) clear the condition.
    eventually(Duration::from_secs(5), "RuntimeRecovered", || async {
        let events = c.ctl(&["get", "events"]).await.ok()?;
        events.contains("RuntimeRecovered").then_some(())
    })
    .await;
    let out = c.ctl(&["get", "nodes"]).await.unwrap();
    assert!(
        out.contains("Ready") && !out.contains("RuntimeUnresponsive"),
        "{out}"
    );
    stop_agent.cancel();
}
