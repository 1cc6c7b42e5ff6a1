//! Lists that grow with the cluster page: 10,000 pods list through pssctl with gRPC's default
//! 4 MiB message limit (one message for all of them is ~5 MB). The controller is the real
//! binary, so its memory at that size is measured too (figures: run with `--release
//! --no-capture`, see BENCHMARKS.md).

mod support;

use std::time::{Duration, Instant};

use pss_core::model::{parse_manifests, NodeRecord, NodeStatus, Object, PodPhase, PodRecord};
use pss_plumbing::clock::now_ms;
use pss_store::{SqliteStore, StateStore};
use support::process::ControllerProcess;

const WORKLOADS: usize = 10;
const PER_WORKLOAD: usize = 1_000;

/// A database holding a converged cluster: 10 workloads of 1,000 Running pods on 10 nodes.
fn converged_cluster(db: &std::path::Path) {
    let store = SqliteStore::open(db).unwrap();
    let mut yaml = String::new();
    for w in 0..WORKLOADS {
        yaml += &format!(
            "kind: Workload\nmetadata: {{name: big-{w}}}\nspec:\n  replicas: {PER_WORKLOAD}\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\"]\n    ports:\n      - containerPort: 80\n---\n"
        );
    }
    let objects = parse_manifests(&yaml, "big.yaml").unwrap();
    store.apply(&objects).unwrap();
    let now = now_ms();
    for n in 0..WORKLOADS {
        store
            .upsert_node(&NodeRecord {
                labels: Default::default(),
                unschedulable: false,
                draining: false,
                name: format!("node-{n}"),
                agent_address: format!("127.0.0.1:{}", 1000 + n),
                cpu_millis: 1_000_000,
                memory_bytes: 1 << 40,
                status: NodeStatus::Ready,
                cpu_usage_percent: 0.0,
                memory_used_bytes: 0,
                last_heartbeat_ms: now,
                registered_at_ms: now,
                conditions: Default::default(),
                limits_unenforced: String::new(),
            })
            .unwrap();
    }
    let mut pods = Vec::new();
    for obj in &objects {
        let Object::Workload(w) = obj else { continue };
        for i in 0..PER_WORKLOAD {
            let mut p = PodRecord::new(
                pss_core::model::pod_id(&w.name, i as u64),
                &w.name,
                w.pod_spec.spec_hash(),
                now,
            );
            p.node = Some(format!("node-{}", i % WORKLOADS));
            p.phase = PodPhase::Running;
            p.ready = true;
            p.started_at_ms = now;
            p.message = "a pod message of ordinary length, to look like a real record".into();
            pods.push(p);
        }
    }
    store.put_pods(&pods).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_list_with_default_grpc_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pss.db");
    converged_cluster(&db);
    let c = ControllerProcess::start(&db, &["--node-timeout", "1h"]).await;
    // A few reconcile passes over the 10,000 pods (the first is at once).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = c.rss_kib();
    let started = Instant::now();
    let out = c.ctl(&["get", "pods", "-o", "json"]).await.unwrap();
    let took = started.elapsed();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), WORKLOADS * PER_WORKLOAD);
    let mut ids: Vec<&str> = items.iter().map(|p| p["name"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(
        ids.len(),
        WORKLOADS * PER_WORKLOAD,
        "no pod twice across pages"
    );
    eprintln!("get pods -o json: {} pods in {took:?}", items.len());
    let table = c.ctl(&["get", "pods"]).await.unwrap();
    assert_eq!(table.lines().count(), WORKLOADS * PER_WORKLOAD + 1);
    eprintln!(
        "controller RSS with {} pods: {idle_rss} KiB after start, {} KiB after listing",
        WORKLOADS * PER_WORKLOAD,
        c.rss_kib()
    );
}
