//! Endpoint push latency: from the controller learning of a change (an agent's
//! `ReportPodStatus` saying a pod's readiness flipped) to a subscribed proxy's `WatchEndpoints`
//! stream holding the new snapshot. Real controller, real SQLite file, real gRPC on loopback.
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("pss.db")).unwrap();
    seed(&store);
    let (mut registry, mut stream) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ControllerConfig::new(TOKEN);
        config.node_timeout = Duration::from_secs(3600);
        config.reconcile_interval = Duration::from_secs(3600);
        tokio::spawn(serve(
            listener,
            Arc::new(store),
            config,
            tokio_util::sync::CancellationToken::new(),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let token = BearerToken::new(TOKEN).unwrap();
        let registry = pb::node_registry_client::NodeRegistryClient::with_interceptor(
            channel.clone(),
            token.clone(),
        );
        let mut watch =
            pb::endpoint_watch_client::EndpointWatchClient::with_interceptor(channel, token);
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
        (registry, stream)
    });
    let mut ready = true;
    let mut group = c.benchmark_group("endpoint_push");
    group.sample_size(50);
    group.bench_function("status_report_to_proxy_snapshot", |b| {
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
