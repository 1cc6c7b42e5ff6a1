//! Scheduler throughput: 10,000 pods placed on 1,000 nodes (Nomad's "C1M" placed ~3,300
//! containers/s; PSS's target is >= 5,000 placements/s).
//!
//! - `place_many/spread` and `place_many/binpack`: one batch through the heap-based
//!   [`place_many`];
//! - `place_loop/spread`: the same batch through 10,000 linear-scan [`place`] calls, for scale;
//! - `plan/create_10k`: the reconciler planning a 10,000-replica workload from nothing (10,000
//!   `Create` actions, scheduler included).
//!
//! Run: `cargo bench -p pss-benches --bench scheduler`. Throughput is in pods per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pss_core::model::{Placement, Resources};
use pss_core::reconciler::{plan, DesiredWorkload};
use pss_core::scheduler::{place, place_many, NodeState};

const NODES: usize = 1_000;
const PODS: usize = 10_000;
const MI: u64 = 1 << 20;

/// A cluster of mixed node sizes (4 to 16 cores, 8 to 32 GiB), some already partly used.
fn cluster() -> Vec<NodeState> {
    (0..NODES)
        .map(|i| {
            let size = 1 + (i % 4) as u64;
            let capacity = Resources {
                cpu_millis: 4_000 * size,
                memory_bytes: 8_192 * MI * size,
            };
            let used = (i % 5) as u64;
            NodeState {
                name: format!("node-{i:04}"),
                ready: i % 100 != 99,
                capacity,
                allocated: Resources {
                    cpu_millis: capacity.cpu_millis * used / 10,
                    memory_bytes: capacity.memory_bytes * used / 10,
                },
                workload_pods: 0,
            }
        })
        .collect()
}

fn request() -> Resources {
    Resources {
        cpu_millis: 100,
        memory_bytes: 64 * MI,
    }
}

fn bench_scheduler(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(PODS as u64));
    let nodes = cluster();

    for (name, placement) in [
        ("place_many/spread", Placement::Spread),
        ("place_many/binpack", Placement::Binpack),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || nodes.clone(),
                |mut nodes| {
                    let results = place_many(&mut nodes, request(), placement, PODS);
                    assert!(results.iter().all(Result::is_ok));
                    black_box(results)
                },
                BatchSize::LargeInput,
            )
        });
    }

    group.bench_function("place_loop/spread", |b| {
        b.iter_batched(
            || nodes.clone(),
            |mut nodes| {
                for _ in 0..PODS {
                    let i =
                        place(&nodes, request(), Placement::Spread).expect("room for every pod");
                    nodes[i].assign(request());
                }
                black_box(nodes)
            },
            BatchSize::LargeInput,
        )
    });

    let desired = [DesiredWorkload {
        name: "big".to_string(),
        replicas: PODS as u32,
        placement: Placement::Spread,
        request: request(),
        spec_hash: 1,
        max_surge: 1,
        max_unavailable: 0,
        paused: false,
        restart_policy: Default::default(),
    }];
    group.bench_function("plan/create_10k", |b| {
        b.iter(|| {
            let actions = plan(&desired, &[], &nodes, 0);
            assert_eq!(actions.len(), PODS);
            black_box(actions)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_scheduler);
criterion_main!(benches);
