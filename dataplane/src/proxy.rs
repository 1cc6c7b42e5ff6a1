//! The proxy: binds listeners, runs the worker threads (accept → pick → connect → forward), and
//! the control tasks (health checks, endpoint watch, admin server); stops and drains on the
//! shutdown token.
//!
//! Worker model: each of `workers` threads runs a current-thread runtime (a tokio-uring one
//! when a service uses the uring engine) with one listener per service, so a connection never
//! leaves its thread. Tasks are spawned on the runtime directly rather than through a
//! `LocalSet`: every IO wake-up of a `LocalSet` task also wakes the runtime's root future,
//! which costs an eventfd write and an extra `epoll_wait` round per reactor turn. Only uring
//! connections (tokio-uring sockets are `!Send`) are local tasks.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balancer::{Backend, Balancer};
use crate::config::{Backends, Engine, ProxyConfig, ServiceConfig};
use crate::forward::{self, Conn, Ctx, Outcome};
use crate::health;
use crate::metrics::{Registry, ServiceMetrics, ServiceStats};
use crate::{listener, watch, Error, Result};

/// What every worker and control task shares about one service.
#[derive(Debug)]
struct Service {
    config: ServiceConfig,
    /// The address actually bound (the port is real even if the config said 0).
    local_addr: SocketAddr,
    balancer: Arc<Balancer>,
    metrics: Arc<ServiceMetrics>,
    /// Open connections across workers; maintained only when `max_connections` is set.
    open: AtomicUsize,
}

/// A bound, not yet serving proxy. See the crate docs for the embedding pattern.
pub struct Proxy {
    config: ProxyConfig,
    services: Vec<Arc<Service>>,
    /// `listeners[s][w]`: service `s`'s listening socket for worker `w`.
    listeners: Vec<Vec<TcpListener>>,
    admin: Option<TcpListener>,
}

impl Proxy {
    /// Validates `config` and binds every listener (and the admin one), so the addresses are
    /// known before serving and a busy port fails here.
    pub fn bind(config: ProxyConfig) -> Result<Proxy> {
        config.validate()?;
        if config.services.iter().any(|s| s.engine == Engine::Uring) {
            probe_uring()?;
        }
        if let Some(ctl) = &config.controller {
            watch::validate(ctl)?;
        }
        let mut services = Vec::new();
        let mut listeners = Vec::new();
        for s in &config.services {
            let socks = listener::bind(s.listen, &s.tuning, config.workers).map_err(|source| {
                Error::Bind {
                    listener: format!("service {}", s.name),
                    addr: s.listen,
                    source,
                }
            })?;
            let local_addr = socks[0].local_addr()?;
            let initial: &[SocketAddr] = match &s.backends {
                Backends::Static(list) => list,
                Backends::Controller(_) => &[],
            };
            services.push(Arc::new(Service {
                config: s.clone(),
                local_addr,
                balancer: Arc::new(Balancer::new(0, initial)),
                metrics: Arc::new(ServiceMetrics::new(&s.name, config.workers)),
                open: AtomicUsize::new(0),
            }));
            listeners.push(socks);
        }
        let admin = match config.admin {
            Some(addr) => {
                let l = TcpListener::bind(addr).map_err(|source| Error::Bind {
                    listener: "admin".into(),
                    addr,
                    source,
                })?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        Ok(Proxy {
            config,
            services,
            listeners,
            admin,
        })
    }

    /// Bound address of the named service.
    pub fn local_addr(&self, service: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|s| s.config.name == service)
            .map(|s| s.local_addr)
    }

    /// Bound address of the admin (`/metrics`) server, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle to metrics and backend sets that stays valid while and after serving.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            services: self.services.clone(),
        }
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets open connections finish
    /// for up to `drain_timeout`, closes the rest and returns. Also returns (with the error)
    /// if a worker fails to start.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let Proxy {
            config,
            services,
            listeners,
            admin,
        } = self;
        // Stops everything: the caller's shutdown, or a failing worker.
        let stop = shutdown.child_token();
        let mut control = tokio::task::JoinSet::new();
        for s in &services {
            control.spawn(health::run(
                s.config.name.clone(),
                Arc::clone(&s.balancer),
                Arc::clone(&s.metrics),
                s.config.health.clone(),
                stop.clone(),
            ));
            if let (Backends::Controller(remote), Some(ctl)) =
                (&s.config.backends, &config.controller)
            {
                control.spawn(watch::run(
                    ctl.clone(),
                    s.config.name.clone(),
                    remote.clone(),
                    Arc::clone(&s.balancer),
                    stop.clone(),
                ));
            }
        }
        if let Some(l) = admin {
            let registry = Arc::new(Registry {
                services: services
                    .iter()
                    .map(|s| (Arc::clone(&s.metrics), Arc::clone(&s.balancer)))
                    .collect(),
            });
            control.spawn(crate::metrics::serve_admin(
                tokio::net::TcpListener::from_std(l)?,
                registry,
                stop.clone(),
            ));
        }

        let uring = services.iter().any(|s| s.config.engine == Engine::Uring);
        let mut per_worker: Vec<Vec<(Arc<Service>, TcpListener)>> =
            (0..config.workers).map(|_| Vec::new()).collect();
        for (s, socks) in services.iter().zip(listeners) {
            for (w, sock) in socks.into_iter().enumerate() {
                per_worker[w].push((Arc::clone(s), sock));
            }
        }
        let mut done = Vec::new();
        let mut result = Ok(());
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            let worker = Worker {
                id,
                listeners,
                stop: stop.clone(),
                drain: config.drain_timeout,
                max_pipes: config.max_pipes_per_worker,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("pss-worker-{id}"))
                .spawn(move || {
                    let r = worker.run(uring);
                    let _ = tx.send(r);
                });
            match spawned {
                Ok(_) => done.push(rx),
                Err(e) => {
                    result = Err(Error::Worker(format!("cannot start worker {id}: {e}")));
                    stop.cancel();
                    break;
                }
            }
        }
        tracing::info!(
            workers = config.workers,
            services = services.len(),
            "pss-proxy serving"
        );
        for (id, rx) in done.into_iter().enumerate() {
            let r = match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Worker(format!("worker {id}: {e}"))),
                Err(_) => Err(Error::Worker(format!("worker {id} panicked"))),
            };
            if let Err(e) = r {
                stop.cancel(); // one worker down takes the others down: never half-serve
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        stop.cancel();
        while control.join_next().await.is_some() {}
        tracing::info!("pss-proxy stopped");
        result
    }
}

#[cfg(feature = "uring")]
fn probe_uring() -> Result<()> {
    // On its own thread: a tokio-uring runtime cannot start inside the caller's runtime.
    std::thread::spawn(forward::uring::probe)
        .join()
        .map_err(|_| Error::Worker("io_uring probe panicked".into()))?
        .map_err(|e| Error::EngineUnavailable {
            engine: Engine::Uring,
            reason: format!(
                "io_uring cannot be used on this kernel or in this sandbox ({e}); use --engine splice or copy"
            ),
        })
}

#[cfg(not(feature = "uring"))]
fn probe_uring() -> Result<()> {
    Err(Error::EngineUnavailable {
        engine: Engine::Uring,
        reason: "pss-proxy was built without the `uring` cargo feature".into(),
    })
}

/// Read access to a running (or finished) proxy's services.
#[derive(Clone, Debug)]
pub struct ProxyHandle {
    services: Vec<Arc<Service>>,
}

impl ProxyHandle {
    /// The named service.
    pub fn service(&self, name: &str) -> Option<ServiceHandle> {
        self.services
            .iter()
            .find(|s| s.config.name == name)
            .map(|s| ServiceHandle(Arc::clone(s)))
    }

    /// Every service's name and bound address.
    pub fn services(&self) -> Vec<(String, SocketAddr)> {
        self.services
            .iter()
            .map(|s| (s.config.name.clone(), s.local_addr))
            .collect()
    }

    /// The `/metrics` text, as the admin server would serve it.
    pub fn metrics_text(&self) -> String {
        Registry {
            services: self
                .services
                .iter()
                .map(|s| (Arc::clone(&s.metrics), Arc::clone(&s.balancer)))
                .collect(),
        }
        .render()
    }
}

/// One service of a proxy.
#[derive(Clone, Debug)]
pub struct ServiceHandle(Arc<Service>);

impl ServiceHandle {
    /// Bound listen address.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr
    }

    /// Current counters.
    pub fn stats(&self) -> ServiceStats {
        self.0.metrics.stats(&self.0.balancer)
    }

    /// Backends of the current snapshot with their health verdict.
    pub fn backends(&self) -> Vec<(SocketAddr, bool)> {
        self.0
            .balancer
            .load()
            .backends()
            .iter()
            .map(|b| (b.addr, b.is_up()))
            .collect()
    }

    /// Installs a new backend set if `version` is newer than the one held (what the watch
    /// client does for each controller snapshot); returns whether it was applied.
    pub fn update_backends(&self, version: u64, addrs: &[SocketAddr]) -> bool {
        self.0.balancer.update(version, addrs)
    }
}

/// One worker thread's share of the proxy.
struct Worker {
    id: usize,
    listeners: Vec<(Arc<Service>, TcpListener)>,
    stop: CancellationToken,
    drain: Duration,
    max_pipes: usize,
}

impl Worker {
    fn run(self, uring: bool) -> std::io::Result<()> {
        if uring {
            #[cfg(feature = "uring")]
            {
                let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
                return rt.block_on(self.serve(true));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.serve(false))
    }

    async fn serve(self, uring: bool) -> std::io::Result<()> {
        forward::splice::set_pipe_limit(self.max_pipes);
        let tracker = TaskTracker::new();
        // Inserting a timer that expires before the time driver's next planned wake-up makes
        // tokio unpark the driver (an eventfd write plus a wasted epoll round), and every
        // connection inserts a connect timer. A heartbeat keeps the planned wake-up closer
        // than any connect deadline, so those inserts stay silent.
        let min_connect = self
            .listeners
            .iter()
            .map(|(s, _)| s.config.connect_timeout)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let beat = (min_connect / 2).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let heartbeat_stop = self.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(beat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = heartbeat_stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
            }
        });
        let mut accepts = Vec::with_capacity(self.listeners.len());
        for (service, sock) in self.listeners {
            let ws = Arc::new(WorkerService {
                worker: self.id,
                service,
                last_warn: Mutex::new(None),
            });
            let l = listener::register_listener(mio::net::TcpListener::from_std(sock))?;
            let accept = accept_loop(ws, l, tracker.clone(), self.stop.clone());
            // On a tokio-uring runtime only tasks inside its LocalSet may spawn the `!Send`
            // uring connection tasks.
            accepts.push(if uring {
                tokio::task::spawn_local(accept)
            } else {
                tokio::spawn(accept)
            });
        }
        for a in accepts {
            // The accept loops end at shutdown, dropping (closing) their listeners.
            let _ = a.await;
        }
        tracker.close();
        if tokio::time::timeout(self.drain, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                worker = self.id,
                open = tracker.len(),
                "drain deadline reached; closing the remaining connections"
            );
        }
        // Returning drops the runtime, and with it every connection still open.
        Ok(())
    }
}

/// A service as one worker sees it.
struct WorkerService {
    worker: usize,
    service: Arc<Service>,
    /// Last time this worker logged a refused connection (rate limit: one line per second).
    last_warn: Mutex<Option<Instant>>,
}

impl WorkerService {
    fn shard(&self) -> &crate::metrics::Shard {
        self.service.metrics.shard(self.worker)
    }

    fn warn_limited(&self, what: &str) {
        let now = Instant::now();
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(service = %self.service.config.name, "closing client connection: {what}");
        }
    }
}

async fn accept_loop(
    ws: Arc<WorkerService>,
    listener: AsyncFd<mio::net::TcpListener>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let stopped = stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let mut guard = tokio::select! {
            biased;
            _ = &mut stopped => return,
            g = listener.readable() => match g {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "listener failed");
                    return;
                }
            },
        };
        // Accept the whole backlog before going back to the reactor.
        loop {
            match guard.try_io(|l| l.get_ref().accept()) {
                Ok(Ok((stream, _peer))) => admit(&ws, stream, &tracker),
                Ok(Err(e)) => {
                    // EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning.
                    tracing::warn!(service = %ws.service.config.name, error = %e, "accept failed");
                    drop(guard);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

fn admit(ws: &Arc<WorkerService>, stream: mio::net::TcpStream, tracker: &TaskTracker) {
    let stream = TcpStream::from(OwnedFd::from(stream));
    let limited = ws.service.config.max_connections;
    if let Some(max) = limited {
        if ws.service.open.fetch_add(1, Ordering::Relaxed) >= max {
            ws.service.open.fetch_sub(1, Ordering::Relaxed);
            ws.shard().rejected();
            ws.warn_limited("max_connections reached");
            return; // dropping the stream closes it at once
        }
    }
    ws.shard().connection_opened();
    let ws = Arc::clone(ws);
    let limited = limited.is_some();
    #[cfg(feature = "uring")]
    if ws.service.config.engine == Engine::Uring {
        tracker.spawn_local(serve_connection_uring(ws, stream, limited));
        return;
    }
    tracker.spawn(serve_connection(ws, stream, limited));
}

/// Undoes `admit`'s counting however the connection ends.
struct Open<'a> {
    ws: &'a WorkerService,
    limited: bool,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.ws.shard().connection_closed();
        if self.limited {
            self.ws.service.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve_connection(ws: Arc<WorkerService>, client: TcpStream, limited: bool) {
    let _open = Open { ws: &ws, limited };
    let Some((client, server, backend)) = setup(&ws, client).await else {
        return;
    };
    let cfg = &ws.service.config;
    let ctx = Ctx::new(ws.shard(), cfg.idle_timeout, cfg.splice_threshold);
    let r = forward::forward(cfg.engine, client, server, &ctx, cfg.idle_timeout).await;
    finish(&ws, r, &backend, &ctx);
}

#[cfg(feature = "uring")]
async fn serve_connection_uring(ws: Arc<WorkerService>, client: TcpStream, limited: bool) {
    let _open = Open { ws: &ws, limited };
    let Some((client, server, backend)) = setup(&ws, client).await else {
        return;
    };
    let cfg = &ws.service.config;
    let ctx = Ctx::new(ws.shard(), cfg.idle_timeout, cfg.splice_threshold);
    let r = forward::forward_uring(client, server, &ctx, cfg.idle_timeout).await;
    finish(&ws, r, &backend, &ctx);
}

/// Connects a backend for `client` and registers both sockets; `None` (counted, logged) when
/// no backend could be reached.
///
/// The client is registered first so the readiness of its first bytes arrives in the same
/// reactor turn as the backend's connect completion, not one turn later.
async fn setup(ws: &WorkerService, client: TcpStream) -> Option<(Conn, Conn, Arc<Backend>)> {
    let client = match listener::register(client) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register client socket");
            return None;
        }
    };
    let Some((server, backend)) = connect_backend(ws).await else {
        ws.shard().no_backend();
        ws.warn_limited("no backend up or reachable");
        return None;
    };
    backend.stats.opened();
    Some((client, server, backend))
}

fn finish(ws: &WorkerService, r: std::io::Result<Outcome>, backend: &Backend, ctx: &Ctx<'_>) {
    let (up, down) = ctx.totals();
    backend.stats.closed(up, down);
    match r {
        Ok(Outcome::Done) => {}
        Ok(Outcome::Idle) => ws.shard().idle_closed(),
        Err(e) => {
            tracing::debug!(service = %ws.service.config.name, error = %e, "connection ended with an error")
        }
    }
}

/// Connects to the next healthy backend, retrying the following ones on failure (each failure
/// counts toward that backend's `fall`). `None` when no backend is up or every attempt failed.
///
/// Without active checks nothing but a client connect can show that an ejected backend is
/// back, so when none is up every backend is tried anyway (a restarted single backend serves
/// again at once), and a success clears the ejection.
async fn connect_backend(ws: &WorkerService) -> Option<(Conn, Arc<Backend>)> {
    let svc = &ws.service;
    let cfg = &svc.config;
    let passive = cfg.health.interval.is_zero();
    let (start, any) = {
        let snap = svc.balancer.load();
        match snap.start() {
            Some(start) => (start, false),
            None if passive => (snap.start_any()?, true),
            None => return None,
        }
    };
    // Each attempt looks at the current snapshot (a failure may just have changed it) and
    // takes the next backend in it other than the one that just failed.
    let pick = |attempt: usize, failed: Option<SocketAddr>| {
        let snap = svc.balancer.load();
        let n = if any {
            snap.backends().len()
        } else {
            snap.healthy_count()
        };
        (0..n)
            .filter_map(|i| {
                let k = (attempt + i) % n;
                if any {
                    snap.candidate_any(start, k)
                } else {
                    snap.candidate(start, k)
                }
            })
            .find(|b| Some(b.addr) != failed)
            .cloned()
    };
    let mut failed: Option<SocketAddr> = None;
    for attempt in 0..cfg.connect_attempts as usize {
        let backend = pick(attempt, failed)?;
        if attempt > 0 {
            ws.shard().retry();
        }
        let addr = backend.addr;
        let err =
            match tokio::time::timeout(cfg.connect_timeout, listener::connect(addr, &cfg.tuning))
                .await
            {
                Ok(Ok(conn)) => {
                    if passive && (backend.on_probation() || !backend.is_up()) {
                        health::report(
                            &cfg.name,
                            &svc.balancer,
                            &svc.metrics,
                            &cfg.health,
                            addr,
                            true,
                            health::Source::ClientConnect,
                        );
                    }
                    return Some((conn, backend));
                }
                Ok(Err(e)) => e,
                Err(_) => std::io::ErrorKind::TimedOut.into(),
            };
        failed = Some(addr);
        ws.shard().connect_error();
        tracing::debug!(service = %cfg.name, backend = %addr, error = %err, "backend connect failed");
        health::report(
            &cfg.name,
            &svc.balancer,
            &svc.metrics,
            &cfg.health,
            addr,
            false,
            health::Source::ClientConnect,
        );
    }
    None
}
