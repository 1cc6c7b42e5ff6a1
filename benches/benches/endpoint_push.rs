//! Endpoint push latency: from the controller learning of a change (an agent's
//! `ReportPodStatus` saying a pod's readiness flipped) to a subscribed proxy's `WatchEndpoints`
//! stream holding the new snapshot. Real controller, real SQLite file, real gRPC on loopback.
//!
//! Issue 11: each is measured with TLS (the default: the controller's own CA, the agent and
//! the proxy authenticated by certificates they joined for) and with `--insecure` (plaintext,
//! the shared token), beside `pssctl get pods` end to end (connect, TLS handshake, ListPods,
//! render) through the same code path as the binary.
//!
//! cargo bench -p pss-benches --bench endpoint_push

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pss_controller::{serve, ControllerConfig};
use pss_core::model::{Container, Placement, PortSpec, Protocol, Resources};
use pss_core::model::{
    NodeRecord, NodeStatus, Object, PodPhase, PodRecord, PodSpec, PortAddress, Service, Workload,
};
use pss_plumbing::clock::now_ms;
use pss_proto::auth::BearerToken;
use pss_proto::v1 as pb;
use pss_store::{SqliteStore, StateStore};

const TOKEN: &str = "pss-bench-token-0123456";

fn seed(store: &SqliteStore) {
    let spec = PodSpec {
        restart_policy: Default::default(),
        restarted_at_ms: 0,
        containers: vec![Container {
            liveness_probe: None,
            limits: None,
            name: "web".into(),
            image: "localhost/pss-demo:latest".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            resources: Resources {
                cpu_millis: 10,
                memory_bytes: 1 << 20,
            },
        }],
        ports: vec![PortSpec {
            container_port: 80,
            protocol: Protocol::Tcp,
        }],
        readiness_probe: None,
    };
    let hash = spec.spec_hash();
    store
        .apply(&[
            Object::Workload(Workload {
                labels: Default::default(),
                rollout: Default::default(),
                name: "w".into(),
                replicas: 2,
                placement: Placement::Spread,
                pod_spec: spec,
            }),
            Object::Service(Service {
                labels: Default::default(),
                name: "s".into(),
                workload: "w".into(),
                port: 80,
                target_port: 80,
            }),
        ])
        .unwrap();
    let now = now_ms();
    store
        .upsert_node(&NodeRecord {
            labels: Default::default(),
            unschedulable: false,
            draining: false,
            name: "n".into(),
            agent_address: "127.0.0.1:1".into(),
            cpu_millis: 4000,
            memory_bytes: 4 << 30,
            status: NodeStatus::Ready,
            cpu_usage_percent: 0.0,
            memory_used_bytes: 0,
            last_heartbeat_ms: now,
            registered_at_ms: now,
            conditions: Default::default(),
            limits_unenforced: String::new(),
        })
        .unwrap();
    for (i, id) in ["w-aaaaa", "w-bbbbb"].iter().enumerate() {
        let mut p = PodRecord::new(id.to_string(), "w", hash, now);
        p.node = Some("n".into());
        p.phase = PodPhase::Running;
        p.ready = true;
        p.started_at_ms = now;
        p.addresses = vec![PortAddress {
            container_port: 80,
            address: format!("127.0.0.1:{}", 20000 + i),
        }];
        store.put_pod(&p).unwrap();
    }
}

/// Joins the controller at `addr` as `role`/`name` with the operator token and its CA.
async fn member(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    role: pss_security::Role,
    name: &str,
    dir: &std::path::Path,
) -> std::sync::Arc<pss_security::member::Membership> {
    let options = pss_security::member::JoinOptions {
        controller: addr.to_string(),
        identity: pss_security::Identity::new(role, name).unwrap(),
        state_dir: dir.join(name),
        join_token: None,
        operator_token: Some(TOKEN.into()),
        ca_pem: Some(ca_pem.into()),
        ttl: Duration::ZERO,
    };
    pss_security::member::Membership::obtain(options, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
}

fn bench(c: &mut Criterion) {
    for tls in [false, true] {
        bench_mode(c, tls);
    }
}

fn bench_mode(c: &mut Criterion, tls: bool) {
    let mode = if tls { "tls" } else { "plaintext" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("pss.db")).unwrap();
    seed(&store);
    let pki = dir.path().join("pki");
    let (mut registry, mut stream, addr) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ControllerConfig::new(TOKEN);
        config.node_timeout = Duration::from_secs(3600);
        config.reconcile_interval = Duration::from_secs(3600);
        if tls {
            config.tls = pss_controller::TlsSetup::Auto { dir: pki.clone() };
        }
        tokio::spawn(serve(
            listener,
            Arc::new(store),
            config,
            tokio_util::sync::CancellationToken::new(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (agent_channel, proxy_channel, token) = if tls {
            let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
            let agent = member(addr, &ca, pss_security::Role::Agent, "n", dir.path()).await;
            let proxy = member(addr, &ca, pss_security::Role::Proxy, "p", dir.path()).await;
            let connect = |m: Arc<pss_security::member::Membership>| async move {
                let d = m.dialer().unwrap();
                d.connect(d.endpoint(&addr.to_string()).unwrap())
                    .await
                    .unwrap()
            };
            (connect(agent).await, connect(proxy).await, "")
        } else {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            (channel.clone(), channel, TOKEN)
        };
        let token = BearerToken::new(token).unwrap();
        let registry = pb::node_registry_client::NodeRegistryClient::with_interceptor(
            agent_channel,
            token.clone(),
        );
        let mut watch =
            pb::endpoint_watch_client::EndpointWatchClient::with_interceptor(proxy_channel, token);
        let mut stream = watch
            .watch_endpoints(pb::WatchEndpointsRequest {
                service: "s".into(),
                known_version: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.endpoints.len(), 2);
        (registry, stream, addr)
    });
    let mut ready = true;
    let mut group = c.benchmark_group("endpoint_push");
    group.sample_size(50);
    group.bench_function(format!("status_report_to_proxy_snapshot/{mode}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    ready = !ready;
                    let report = pb::PodReport {
                        id: "w-aaaaa".into(),
                        workload: "w".into(),
                        phase: pb::PodPhase::Running as i32,
                        ready,
                        addresses: vec![pb::PortAddress {
                            container_port: 80,
                            address: "127.0.0.1:20000".into(),
                        }],
                        memory_bytes: 1 << 20,
                        ..Default::default()
                    };
                    let start = Instant::now();
                    registry
                        .report_pod_status(pb::PodStatusUpdate {
                            node: "n".into(),
                            pod: Some(report),
                        })
                        .await
                        .unwrap();
                    let snap = stream.message().await.unwrap().unwrap();
                    total += start.elapsed();
                    assert_eq!(snap.endpoints.len(), if ready { 2 } else { 1 });
                }
                total
            })
        })
    });
    group.finish();

    // `pssctl get pods`: a new connection each time, as the binary makes.
    let addr = addr.to_string();
    let ca = pki.join("ca.crt").display().to_string();
    let mut argv = vec!["pssctl", "--controller", addr.as_str(), "--token", TOKEN];
    if tls {
        argv.extend(["--ca", ca.as_str()]);
    } else {
        argv.push("--insecure");
    }
    argv.extend(["get", "pods"]);
    let mut group = c.benchmark_group("pssctl_get_pods");
    group.sample_size(50);
    group.bench_function(mode, |b| {
        b.iter(|| {
            rt.block_on(async {
                let cli = <pssctl::Cli as clap::Parser>::try_parse_from(&argv).unwrap();
                let mut out = Vec::new();
                pssctl::execute(cli, &mut out).await.unwrap();
                assert!(out.starts_with(b"NAME"));
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
