//! pss-proxy fed by a real controller (issue 4): endpoint changes reach the proxy; with the
//! controller stopped the proxy keeps forwarding its last snapshot; with the controller back the
//! proxy resubscribes and follows new changes. Pods come from a stand-in agent (TCP listeners on
//! loopback), so this runs without Podman.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use pss_dataplane::{ControllerConfig as WatchConfig, Proxy, ProxyConfig, ServiceConfig};
use support::fake_agent::FakeAgent;
use support::{eventually, fast_config, RunningController, TOKEN};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const APP: &str = "kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 2\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n    ports:\n      - containerPort: 80\n---\nkind: Service\nmetadata: {name: web-svc}\nspec: {workload: web, port: 80, targetPort: 80}\n";

/// Connects through the proxy and returns the pod id the backend answered with.
async fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf)).await??;
    Ok(buf.trim().to_string())
}

async fn backends(handle: &pss_dataplane::ProxyHandle) -> usize {
    handle.service("web-svc").unwrap().backends().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_follows_the_controller_and_survives_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pss.db");
    let mut config = fast_config();
    config.node_timeout = Duration::from_secs(60);
    // The restarted controller keeps its CA (beside the database).
    config.tls = pss_controller::TlsSetup::Auto {
        dir: db.parent().unwrap().join("pki"),
    };
    let c = RunningController::start_with(&db, config.clone()).await;
    let stop_agent = CancellationToken::new();
    let agent = FakeAgent::start("node-x", c.addr, stop_agent.clone()).await;
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), APP).unwrap();
    c.ctl(&["apply", "-f", f.path().to_str().unwrap()])
        .await
        .unwrap();

    let mut svc = ServiceConfig::with_controller_service(
        "web-svc",
        "127.0.0.1:0".parse().unwrap(),
        "web-svc",
    );
    svc.health.interval = Duration::from_millis(200);
    let mut pc = ProxyConfig::new(vec![svc]);
    pc.workers = 1;
    let mut watch = WatchConfig::new(c.addr.to_string(), TOKEN);
    watch.backoff_max = Duration::from_millis(500);
    // Joins as a proxy with the operator token and the controller's CA.
    watch.ca = support::ca_file(c.addr);
    watch.state_dir =
        Some(std::env::temp_dir().join(format!("pss-e2e-pc-{}", rand::random::<u64>())));
    watch.name = Some("pc-proxy".into());
    pc.controller = Some(watch);
    let proxy = Proxy::bind(pc).unwrap();
    let addr = proxy.local_addr("web-svc").unwrap();
    let handle = proxy.handle();
    let stop_proxy = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.serve(stop_proxy.clone()));

    // Endpoint changes reach the proxy.
    eventually(
        Duration::from_secs(20),
        "proxy holds 2 endpoints",
        || async { (backends(&handle).await == 2).then_some(()) },
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(fetch(addr).await.unwrap());
    }
    assert_eq!(seen.len(), 2, "round robin over both pods: {seen:?}");
    c.ctl(&["scale", "workload/web", "--replicas", "3"])
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "proxy holds 3 endpoints",
        || async { (backends(&handle).await == 3).then_some(()) },
    )
    .await;
    let version_before = handle.service("web-svc").unwrap().stats().snapshot_version;

    // Controller stopped: the proxy keeps forwarding its last snapshot.
    let port = c.addr.port();
    c.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..6 {
        let id = fetch(addr)
            .await
            .expect("forwarding continues without the controller");
        assert!(id.starts_with("web-"), "{id}");
    }
    assert_eq!(backends(&handle).await, 3);

    // Controller back on the same address and file: the proxy resubscribes and follows.
    let listener_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let store = pss_store::SqliteStore::open(&db).unwrap();
    let listener = tokio::net::TcpListener::bind(listener_addr).await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pss_controller::serve(
        listener,
        std::sync::Arc::new(store),
        config,
        shutdown.clone(),
    ));
    let c = RunningController {
        addr: listener_addr,
        shutdown,
        task,
    };
    c.ctl(&["scale", "workload/web", "--replicas", "1"])
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "proxy resubscribed and holds 1 endpoint",
        || async { (backends(&handle).await == 1).then_some(()) },
    )
    .await;
    assert!(
        handle.service("web-svc").unwrap().stats().snapshot_version > version_before,
        "versions keep increasing across restarts"
    );
    eventually(Duration::from_secs(20), "agent runs 1 pod", || async {
        (agent.pod_count() == 1).then_some(())
    })
    .await;
    let only = fetch(addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(fetch(addr).await.unwrap(), only);
    }

    stop_proxy.cancel();
    proxy_task.await.unwrap().unwrap();
    stop_agent.cancel();
    c.stop().await;
}
