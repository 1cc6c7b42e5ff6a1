//! The state store on SQLite beside etcd (issue 15): what an `apply` costs, how many pod
//! records per second a reconcile pass can commit (batches of 100, as the executor writes
//! them), and a read served from the following cache. etcd is a real single member from
//! Debian's `etcd-server`, started here on a free loopback port (with fsync, as in
//! production); without it the etcd half is skipped with a message.
//!
//! `cargo bench -p pss-benches --bench store_backends`

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pss_core::model::{Object, PodPhase, PodRecord};
use pss_store::{CachedStore, Change, EtcdStore, SqliteStore, StateStore};

/// The etcd process, its data directory (removed with it) and its `etcd://` address.
struct Etcd(Child, #[allow(dead_code)] tempfile::TempDir, String);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd() -> Option<Etcd> {
    let dir = tempfile::tempdir().ok()?;
    let (c, p) = (port(), port());
    let child = Command::new("etcd")
        .args(["--name", "b0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{c}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{c}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-cluster",
            &format!("b0=http://127.0.0.1:{p}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let etcd = Etcd(child, dir, format!("etcd://127.0.0.1:{c}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(format!("127.0.0.1:{c}")).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(etcd)
}

use pss_store::fixtures::workload;

fn pods(round: u64) -> Vec<Change> {
    (0..100)
        .map(|i| {
            let mut p = PodRecord::new(format!("web-{round:08}-{i:03}"), "web", 42, 1_000);
            p.phase = PodPhase::Running;
            Change::PutPod(p)
        })
        .collect()
}

fn bench_store(c: &mut Criterion, label: &str, store: Arc<dyn StateStore>) {
    let mut group = c.benchmark_group(format!("store/{label}"));
    group.sample_size(20);
    let mut n = 0u32;
    group.bench_function("apply one workload (changed)", |b| {
        b.iter(|| {
            n += 1;
            store
                .apply(&[Object::Workload(workload("web", n % 50))])
                .unwrap()
        })
    });
    let mut round = 0u64;
    group.bench_function("commit 100 pod records", |b| {
        b.iter_batched(
            || {
                round += 1;
                pods(round)
            },
            |changes| store.write_batch(&changes).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("get workload (cache)", |b| {
        b.iter(|| store.get_workload("web").unwrap())
    });
    group.finish();
}

fn store_backends(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open(dir.path().join("pss.db")).unwrap());
    let cached = Arc::new(CachedStore::load(sqlite).unwrap());
    bench_store(c, "sqlite", cached);
    let Some(etcd) = start_etcd() else {
        eprintln!("etcd is not installed (apt-get install etcd-server): etcd half skipped");
        return;
    };
    let store = loop {
        match EtcdStore::connect(&etcd.2, "/bench/", Default::default()) {
            Ok(s) => break Arc::new(s),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let cached = CachedStore::follow(store).unwrap();
    bench_store(c, "etcd", cached);
    drop(etcd);
}

criterion_group!(benches, store_backends);
criterion_main!(benches);
