//! Shared helpers for the proxy integration tests: loopback backends and an embedded proxy.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use pss_dataplane::{Engine, EventLoop, Proxy, ProxyConfig, ProxyHandle, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything a test waits on (the machine is small and shared).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Engines this build can run.
pub fn engines() -> Vec<Engine> {
    let mut v = vec![Engine::Copy, Engine::Splice];
    if cfg!(feature = "uring") {
        v.push(Engine::Uring);
    }
    v
}

/// Every engine on every worker loop that can run it (uring always runs on tokio).
pub fn engine_loops() -> Vec<(Engine, EventLoop)> {
    let mut v = Vec::new();
    for e in engines() {
        if e != Engine::Uring {
            v.push((e, EventLoop::Mio));
        }
        v.push((e, EventLoop::Tokio));
    }
    v
}

/// [`config`] on a given worker loop.
pub fn config_on(event_loop: EventLoop, services: Vec<ServiceConfig>) -> ProxyConfig {
    ProxyConfig {
        event_loop,
        ..config(services)
    }
}

/// A backend that stops (closes its listener and every connection) when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts `handler` for every connection accepted on `addr` (port 0 for a fresh one).
    pub async fn start<F, Fut>(addr: SocketAddr, handler: F) -> Backend
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Connections live in this set so aborting the backend kills them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((s, _)) = r else { continue };
                        conns.spawn(handler(s));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Backend { addr, task }
    }

    /// Echoes everything, and shuts its write side after the client's EOF.
    pub async fn echo() -> Backend {
        Self::echo_at("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn echo_at(addr: SocketAddr) -> Backend {
        Self::start(addr, |mut s| async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .await
    }

    /// Answers every connection with `tag` and closes.
    pub async fn tagged(tag: u8) -> Backend {
        Self::tagged_at("127.0.0.1:0".parse().unwrap(), tag).await
    }

    pub async fn tagged_at(addr: SocketAddr, tag: u8) -> Backend {
        Self::start(addr, move |mut s| async move {
            let _ = s.write_all(&[tag]).await;
            let _ = s.shutdown().await;
            let mut sink = [0u8; 64];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await
    }
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    // A port just freed can take a moment to be bindable again.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

/// A proxy serving in the background of the test's runtime.
pub struct Running {
    pub handle: ProxyHandle,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), pss_dataplane::Error>>,
    pub admin: Option<SocketAddr>,
}

impl Running {
    pub fn addr(&self, service: &str) -> SocketAddr {
        self.handle.service(service).unwrap().local_addr()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("proxy stops")
            .unwrap()
            .unwrap();
    }
}

pub fn start(config: ProxyConfig) -> Running {
    let proxy = Proxy::bind(config).expect("bind proxy");
    let handle = proxy.handle();
    let admin = proxy.admin_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy.serve(shutdown.clone()));
    Running {
        handle,
        shutdown,
        task,
        admin,
    }
}

/// A one-service config on 127.0.0.1:0 with `backends`, two workers, fast health checks.
pub fn service(engine: Engine, backends: Vec<SocketAddr>) -> ServiceConfig {
    let mut s =
        ServiceConfig::with_static_backends("svc", "127.0.0.1:0".parse().unwrap(), backends);
    s.engine = engine;
    s.health.interval = Duration::from_millis(100);
    s.health.timeout = Duration::from_millis(500);
    s
}

pub fn config(services: Vec<ServiceConfig>) -> ProxyConfig {
    ProxyConfig {
        workers: 2,
        drain_timeout: Duration::from_secs(5),
        ..ProxyConfig::new(services)
    }
}

/// Connects to `addr` and returns the single tag byte the backend sends (None if the proxy
/// closed the connection without one).
pub async fn fetch_tag(addr: SocketAddr) -> Option<u8> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut b = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut b))
        .await
        .ok()?
        .ok()?;
    b.first().copied()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Sends `data` through `addr` to an echo backend (writing and reading concurrently), shuts
/// the write side, and returns everything read back until EOF.
pub async fn echo_roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(data).await.expect("write");
        w.shutdown().await.expect("shutdown write");
    };
    let read = async {
        let mut got = Vec::with_capacity(data.len());
        r.read_to_end(&mut got).await.expect("read");
        got
    };
    let ((), got) = tokio::time::timeout(PATIENCE, async { tokio::join!(write, read) })
        .await
        .expect("round trip finishes");
    got
}

/// Polls `cond` until true (or panics after [`PATIENCE`]).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
