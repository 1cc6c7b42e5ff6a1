//! Forwarding engines through a real loopback proxy (one worker): echo round trips over
//! payload sizes 64 B .. 1 MiB, many small segments, and a connection with half-close. The
//! `direct` rows go straight to the backend and show what the proxy adds.

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pss_dataplane::{CancellationToken, Engine, Proxy, ProxyConfig, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIZES: [usize; 6] = [64, 1024, 4096, 65_536, 262_144, 1 << 20];

/// An echo backend on its own thread; lives for the whole benchmark run.
fn start_echo() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// A one-worker proxy to `backend` with `engine`, serving on its own thread.
fn start_proxy(engine: Engine, backend: SocketAddr) -> SocketAddr {
    let mut svc =
        ServiceConfig::with_static_backends("bench", "127.0.0.1:0".parse().unwrap(), vec![backend]);
    svc.engine = engine;
    let config = ProxyConfig {
        workers: 1,
        ..ProxyConfig::new(vec![svc])
    };
    let proxy = Proxy::bind(config).expect("bind proxy");
    let addr = proxy.local_addr("bench").unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(proxy.serve(CancellationToken::new())).unwrap();
    });
    addr
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Writes `data` and reads it back concurrently on one connection.
async fn echo(s: &mut TcpStream, data: &[u8], buf: &mut [u8]) {
    let (mut r, mut w) = s.split();
    let (a, b) = tokio::join!(w.write_all(data), r.read_exact(buf));
    a.unwrap();
    b.unwrap();
}

fn targets() -> Vec<(String, SocketAddr)> {
    let backend = start_echo();
    let mut t = vec![("direct".to_owned(), backend)];
    for engine in [Engine::Copy, Engine::Splice] {
        t.push((engine.to_string(), start_proxy(engine, backend)));
    }
    t
}

fn engines(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let targets = targets();
    std::thread::sleep(Duration::from_millis(300));

    let mut g = c.benchmark_group("proxy_echo");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for &size in &SIZES {
        let data = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(2 * size as u64));
        for (name, addr) in &targets {
            let mut s = rt.block_on(connect(*addr));
            let mut buf = vec![0u8; size];
            g.bench_function(BenchmarkId::new(name.as_str(), size), |b| {
                b.iter(|| rt.block_on(echo(&mut s, &data, &mut buf)))
            });
        }
    }
    g.finish();

    // 256 writes of 16 bytes (nodelay), read back as they come.
    let mut g = c.benchmark_group("proxy_small_segments");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(256));
    for (name, addr) in &targets {
        let mut s = rt.block_on(connect(*addr));
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (mut r, mut w) = s.split();
                    let write = async {
                        for i in 0..256u32 {
                            w.write_all(&[i as u8; 16]).await.unwrap();
                        }
                    };
                    let mut buf = vec![0u8; 256 * 16];
                    let (_, read) = tokio::join!(write, r.read_exact(&mut buf));
                    read.unwrap();
                })
            })
        });
    }
    g.finish();

    // A fresh connection per iteration: 4 KiB up, client half-close, echo read to EOF.
    let mut g = c.benchmark_group("proxy_half_close");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let data = vec![7u8; 4096];
    for (name, addr) in &targets {
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut s = connect(*addr).await;
                    s.write_all(&data).await.unwrap();
                    s.shutdown().await.unwrap();
                    let mut got = Vec::with_capacity(4096);
                    s.read_to_end(&mut got).await.unwrap();
                    assert_eq!(got.len(), 4096);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
