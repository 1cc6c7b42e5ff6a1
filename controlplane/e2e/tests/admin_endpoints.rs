//! Issue 12's observability: `pss-controller --admin` and `pss-agent --admin` serve `/metrics`
//! that Prometheus' own client library parses (Debian's python3-prometheus-client, run as a
//! subprocess), `/healthz`, and a `/readyz` that says why not when it is not.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::cluster::{free_port, AgentProcess};
use support::fake_agent::FakeAgent;
use support::{eventually, fast_config, RunningController};
use tokio_util::sync::CancellationToken;

/// `GET path` on `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: pss\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Parses `text` with prometheus_client's text parser; returns `name type` per family.
fn prometheus_parse(text: &str) -> Vec<String> {
    const SCRIPT: &str = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\nfor f in parse(sys.stdin.read()):\n    for s in f.samples:\n        assert s.value == s.value or f.type == 'gauge', s\n    print(f.name, f.type)\n";
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_metrics_parse_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut config = fast_config();
    config.admin = Some(admin.parse().unwrap());
    let c = RunningController::start_with(&dir.path().join("pss.db"), config).await;
    let stop = CancellationToken::new();
    let _agent = FakeAgent::start("node-m", c.addr, stop.clone()).await;
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        f.path(),
        "kind: Workload\nmetadata: {name: m}\nspec:\n  replicas: 2\n  podSpec:\n    containers: [{name: m, image: m}]\n",
    )
    .unwrap();
    c.ctl(&["apply", "-f", f.path().to_str().unwrap()])
        .await
        .unwrap();
    let _ = c.ctl(&["scale", "workload/nope", "--replicas", "1"]).await;
    eventually(Duration::from_secs(20), "2 pods Running", || async {
        let (_, body) = get(&admin, "/metrics").ok()?;
        body.contains("pss_pods{phase=\"Running\"} 2").then_some(())
    })
    .await;

    let (status, body) = get(&admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let families = prometheus_parse(&body);
    for want in [
        "pss_reconcile_pass_seconds histogram",
        "pss_scheduling_latency_seconds histogram",
        "pss_grpc_requests counter",
        "pss_store_transaction_seconds histogram",
        "pss_pods gauge",
        "pss_nodes gauge",
    ] {
        assert!(
            families.iter().any(|f| f == want),
            "{want} missing: {families:?}"
        );
    }
    assert!(
        body.contains("pss_grpc_requests_total{method=\"Operator/Apply\",code=\"Ok\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("pss_grpc_requests_total{method=\"Operator/Scale\",code=\"NotFound\"} 1"),
        "{body}"
    );
    assert!(body.contains("pss_nodes{status=\"Ready\"} 1"), "{body}");
    assert_eq!(get(&admin, "/healthz").unwrap(), (200, "ok\n".into()));
    let (status, body) = get(&admin, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&admin, "/nope").unwrap().0, 404);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_parse_and_readyz_follows_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let controller_port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let controller_addr = format!("127.0.0.1:{controller_port}");
    // No controller yet: alive, not ready, and the answer says why.
    let _agent = AgentProcess::start_on_socket(
        "node-adm",
        free_port(),
        &controller_addr,
        "/nonexistent.sock",
        &["--runtime", "sim", "--admin", &admin],
    );
    eventually(Duration::from_secs(30), "the agent's /healthz", || async {
        (get(&admin, "/healthz").ok()?.0 == 200).then_some(())
    })
    .await;
    let (status, body) = get(&admin, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not registered"), "{body}");

    // The controller comes: registered, ready.
    let listener = tokio::net::TcpListener::bind(&controller_addr)
        .await
        .unwrap();
    let store = pss_store::SqliteStore::open(dir.path().join("pss.db")).unwrap();
    let shutdown = CancellationToken::new();
    // Plaintext: the agent started before any CA existed (so with --insecure); this test is
    // about the admin endpoints, not the transport.
    let mut config = fast_config();
    config.tls = pss_controller::TlsSetup::Insecure;
    let task = tokio::spawn(pss_controller::serve(
        listener,
        std::sync::Arc::new(store),
        config,
        shutdown.clone(),
    ));
    eventually(Duration::from_secs(30), "the agent's /readyz", || async {
        (get(&admin, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    let (status, body) = get(&admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let families = prometheus_parse(&body);
    for want in [
        "pss_agent_pods gauge",
        "pss_agent_runtime_responsive gauge",
        "pss_agent_podman_request_seconds histogram",
        "pss_agent_podman_errors counter",
    ] {
        assert!(
            families.iter().any(|f| f == want),
            "{want} missing: {families:?}"
        );
    }
    shutdown.cancel();
    let _ = task.await;
}
