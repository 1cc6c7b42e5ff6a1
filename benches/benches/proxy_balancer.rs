//! Balancer benchmarks: the lock-free pick under 1, 2 and 4 threads, and the snapshot swap a
//! controller update or health flip costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pss_dataplane::balancer::Balancer;

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)))
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer_pick");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let balancer = Arc::new(Balancer::new(1, &addrs(16)));
    for threads in [1usize, 2, 4] {
        // One iteration = one pick on each of `threads` threads at once.
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let balancer = &balancer;
                            s.spawn(move || {
                                for _ in 0..iters {
                                    let snap = balancer.load();
                                    std::hint::black_box(snap.pick().map(|b| b.addr));
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

fn swap(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer_snapshot_swap");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [8usize, 64] {
        let balancer = Balancer::new(1, &addrs(n));
        // Alternate between two overlapping sets so every swap keeps most backends.
        let a = addrs(n);
        let mut b_set = addrs(n + 1);
        b_set.remove(0);
        let mut version = 1u64;
        g.bench_function(BenchmarkId::new("backends", n), |b| {
            b.iter(|| {
                version += 1;
                let set = if version.is_multiple_of(2) {
                    &a
                } else {
                    &b_set
                };
                std::hint::black_box(balancer.update(version, set));
            })
        });
        g.bench_function(BenchmarkId::new("health_refresh", n), |b| {
            b.iter(|| balancer.refresh())
        });
    }
    g.finish();
}

criterion_group!(benches, pick, swap);
criterion_main!(benches);
