//! The proxy: binds listeners, runs the worker threads (accept → pick → connect → forward), and
//! the control tasks (health checks, endpoint watch, admin server, reloads); stops and drains
//! on the shutdown token.
//!
//! Worker model: each of `workers` threads owns one listener per service, so a connection
//! never leaves its thread. By default a worker is a `mio` loop (see `event_loop`); with
//! `EventLoop::Tokio`, or when a service uses the uring engine, it runs a current-thread
//! runtime (a tokio-uring one for uring), described here. Tasks are spawned on the runtime directly rather than through a
//! `LocalSet`: every IO wake-up of a `LocalSet` task also wakes the runtime's root future,
//! which costs an eventfd write and an extra `epoll_wait` round per reactor turn. Only uring
//! connections (tokio-uring sockets are `!Send`) are local tasks.
//!
//! Reload ([`ProxyHandle::reload`], SIGHUP in the binary): the control side diffs the new
//! configuration against the running one ([`crate::reload::plan`]), binds every new listener
//! first (any failure rejects the whole reload), then tells each worker to start or stop
//! accept loops; a service's tuning lives behind an `ArcSwap`, read once per new connection.
//! Connections already open are never touched.
//!
//! Stopping: `shutdown` stops the accept loops and starts the drain; `/metrics` keeps serving
//! until the drain is over. [`Proxy::serve_until`] also takes a `force` token (a second
//! SIGTERM) that ends the drain at once.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balancer::{Backend, Balancer};
use crate::config::{Backends, Engine, EventLoop, ProxyConfig, ServiceConfig};
use crate::fds::BUDGET;
use crate::forward::{self, Conn, Ctx, Outcome};
use crate::health;
use crate::metrics::{Registry, ServiceMetrics, ServiceStats};
use crate::{listener, watch, Error, Result};

/// What every worker and control task shares about one service.
#[derive(Debug)]
pub(crate) struct Service {
    /// Unique per listener generation: a re-bound service is a new `Service` with a new id.
    pub(crate) id: u64,
    /// Tuning; a reload may swap it (new connections read it once).
    pub(crate) config: ArcSwap<ServiceConfig>,
    /// The address actually bound (the port is real even if the config said 0).
    pub(crate) local_addr: SocketAddr,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) metrics: Arc<ServiceMetrics>,
    /// Open connections across workers; maintained only when `max_connections` is set.
    pub(crate) open: AtomicUsize,
}

impl Service {
    pub(crate) fn name(&self) -> String {
        self.config.load().name.clone()
    }
}

static NEXT_SERVICE_ID: AtomicU64 = AtomicU64::new(1);

fn new_service(
    config: ServiceConfig,
    local_addr: SocketAddr,
    balancer: Arc<Balancer>,
    metrics: Arc<ServiceMetrics>,
) -> Arc<Service> {
    Arc::new(Service {
        id: NEXT_SERVICE_ID.fetch_add(1, Ordering::Relaxed),
        config: ArcSwap::from_pointee(config),
        local_addr,
        balancer,
        metrics,
        open: AtomicUsize::new(0),
    })
}

/// A reload request and where its outcome goes.
type ReloadRequest = (ProxyConfig, oneshot::Sender<Result<Vec<String>>>);

/// What handles and the serving proxy share.
#[derive(Debug)]
struct Shared {
    /// Services being served now (replaced as a whole by a reload).
    services: ArcSwap<Vec<Arc<Service>>>,
    /// Reload requests, handled by `serve` while it runs.
    reload: mpsc::UnboundedSender<ReloadRequest>,
}

/// A bound, not yet serving proxy. See the crate docs for the embedding pattern.
pub struct Proxy {
    config: ProxyConfig,
    shared: Arc<Shared>,
    /// `listeners[s][w]`: service `s`'s listening socket for worker `w`.
    listeners: Vec<Vec<TcpListener>>,
    admin: Option<TcpListener>,
    reload_rx: mpsc::UnboundedReceiver<ReloadRequest>,
}

/// Binds one service's listeners, naming the service in the error.
fn bind_service(s: &ServiceConfig, workers: usize) -> Result<Vec<TcpListener>> {
    listener::bind(s.listen, &s.tuning, workers).map_err(|source| Error::Bind {
        listener: format!("service {}", s.name),
        addr: s.listen,
        source,
    })
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
            let socks = bind_service(s, config.workers)?;
            let local_addr = socks[0].local_addr()?;
            let initial: &[SocketAddr] = match &s.backends {
                Backends::Static(list) => list,
                Backends::Controller(_) => &[],
            };
            services.push(new_service(
                s.clone(),
                local_addr,
                Arc::new(Balancer::new(0, initial)),
                Arc::new(ServiceMetrics::new(&s.name, config.workers)),
            ));
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
        let (reload, reload_rx) = mpsc::unbounded_channel();
        Ok(Proxy {
            config,
            shared: Arc::new(Shared {
                services: ArcSwap::from_pointee(services),
                reload,
            }),
            listeners,
            admin,
            reload_rx,
        })
    }

    /// Bound address of the named service.
    pub fn local_addr(&self, service: &str) -> Option<SocketAddr> {
        self.handle().service(service).map(|s| s.local_addr())
    }

    /// Bound address of the admin (`/metrics`) server, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle to metrics and backend sets that stays valid while and after serving.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets open connections finish
    /// for up to `drain_timeout`, closes the rest and returns. Also returns (with the error)
    /// if a worker fails to start.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        self.serve_until(shutdown, CancellationToken::new()).await
    }

    /// [`Proxy::serve`], where cancelling `force` during the drain closes every remaining
    /// connection at once (the binary's second SIGTERM/SIGINT).
    pub async fn serve_until(
        self,
        shutdown: CancellationToken,
        force: CancellationToken,
    ) -> Result<()> {
        let Proxy {
            config,
            shared,
            listeners,
            admin,
            mut reload_rx,
        } = self;
        match crate::fds::configure() {
            Some(budget) => tracing::info!(
                budget,
                "descriptor budget of the workers (RLIMIT_NOFILE minus those open and a reserve)"
            ),
            None => tracing::warn!("cannot read RLIMIT_NOFILE; descriptor budget unlimited"),
        }
        // Stops accepting: the caller's shutdown, or a failing worker.
        let stop = shutdown.child_token();
        // Stops the control tasks (admin included) once the workers have drained.
        let control_stop = CancellationToken::new();
        let mut control = Control {
            tasks: tokio::task::JoinSet::new(),
            per_service: HashMap::new(),
            stop: control_stop.clone(),
            controller: config.controller.clone(),
        };
        let services = shared.services.load_full();
        for s in services.iter() {
            control.start_service(s);
        }
        if let Some(l) = admin {
            let shared = Arc::clone(&shared);
            control.tasks.spawn(crate::metrics::serve_admin(
                tokio::net::TcpListener::from_std(l)?,
                Arc::new(move || registry(&shared).render()),
                control_stop.clone(),
            ));
        }

        let uring = services
            .iter()
            .any(|s| s.config.load().engine == Engine::Uring);
        let mut per_worker: Vec<Vec<(Arc<Service>, TcpListener)>> =
            (0..config.workers).map(|_| Vec::new()).collect();
        for (s, socks) in services.iter().zip(listeners) {
            for (w, sock) in socks.into_iter().enumerate() {
                per_worker[w].push((Arc::clone(s), sock));
            }
        }
        let mut done = futures::stream::FuturesUnordered::new();
        let mut commands = Vec::new();
        let mut result = Ok(());
        let mio_loop = !uring && config.event_loop == EventLoop::Mio;
        let sched_batch = config.sched_batch;
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let spawned = if mio_loop {
                let (poll, waker) = crate::event_loop::new_poll()?;
                // The loop cannot await the tokens: turn their cancellation into wake-ups.
                let (w, st, f, cs) = (
                    Arc::clone(&waker),
                    stop.clone(),
                    force.clone(),
                    control_stop.clone(),
                );
                control.tasks.spawn(async move {
                    tokio::select! {
                        _ = st.cancelled() => { let _ = w.wake(); }
                        _ = cs.cancelled() => return,
                    }
                    tokio::select! {
                        _ = f.cancelled() => { let _ = w.wake(); }
                        _ = cs.cancelled() => {}
                    }
                });
                let worker = crate::event_loop::MioWorker {
                    id,
                    buffer_size: config.buffer_size,
                    poll,
                    listeners,
                    commands: cmd_rx,
                    stop: stop.clone(),
                    force: force.clone(),
                    drain: config.drain_timeout,
                    max_pipes: config.max_pipes_per_worker,
                };
                commands.push(WorkerLink {
                    tx: cmd_tx,
                    waker: Some(waker),
                });
                std::thread::Builder::new()
                    .name(format!("pss-worker-{id}"))
                    .spawn(move || {
                        if sched_batch {
                            crate::event_loop::sched_batch();
                        }
                        let r = worker.run();
                        let _ = tx.send(r);
                    })
            } else {
                let worker = Worker {
                    id,
                    buffer_size: config.buffer_size,
                    listeners,
                    commands: cmd_rx,
                    stop: stop.clone(),
                    force: force.clone(),
                    drain: config.drain_timeout,
                    max_pipes: config.max_pipes_per_worker,
                };
                commands.push(WorkerLink {
                    tx: cmd_tx,
                    waker: None,
                });
                std::thread::Builder::new()
                    .name(format!("pss-worker-{id}"))
                    .spawn(move || {
                        if sched_batch {
                            crate::event_loop::sched_batch();
                        }
                        let r = worker.run(uring);
                        let _ = tx.send(r);
                    })
            };
            match spawned {
                Ok(_) => done.push(async move { (id, rx.await) }),
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
        let mut running = config;
        loop {
            tokio::select! {
                finished = done.next() => {
                    let Some((id, r)) = finished else { break };
                    let r = match r {
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
                Some((new, reply)) = reload_rx.recv(), if !stop.is_cancelled() => {
                    let r = reload(&shared, &mut running, new, &commands, &mut control);
                    let _ = reply.send(r);
                }
            }
        }
        control_stop.cancel();
        while control.tasks.join_next().await.is_some() {}
        tracing::info!("pss-proxy stopped");
        result
    }
}

/// The control tasks of every service (health checks, endpoint watch) and the admin server.
struct Control {
    tasks: tokio::task::JoinSet<()>,
    /// Per service name: the token stopping its health and watch tasks, with the settings
    /// they were started with (a reload restarts them only when those change).
    per_service: HashMap<String, (CancellationToken, ServiceConfig)>,
    stop: CancellationToken,
    controller: Option<crate::config::ControllerConfig>,
}

impl Control {
    fn start_service(&mut self, s: &Service) {
        let cfg = ServiceConfig::clone(&s.config.load());
        let token = self.stop.child_token();
        self.tasks.spawn(health::run(
            cfg.name.clone(),
            Arc::clone(&s.balancer),
            Arc::clone(&s.metrics),
            cfg.health.clone(),
            token.clone(),
        ));
        if let (Backends::Controller(remote), Some(ctl)) = (&cfg.backends, &self.controller) {
            self.tasks.spawn(watch::run(
                ctl.clone(),
                cfg.name.clone(),
                remote.clone(),
                Arc::clone(&s.balancer),
                token.clone(),
            ));
        }
        if let Some((old, _)) = self.per_service.insert(cfg.name.clone(), (token, cfg)) {
            old.cancel();
        }
    }

    fn stop_service(&mut self, name: &str) {
        if let Some((t, _)) = self.per_service.remove(name) {
            t.cancel();
        }
    }
}

/// Applies a new configuration to the serving proxy (see the module docs); returns what
/// changed, or why nothing did.
fn reload(
    shared: &Shared,
    running: &mut ProxyConfig,
    mut new: ProxyConfig,
    workers: &[WorkerLink],
    control: &mut Control,
) -> Result<Vec<String>> {
    new.validate()?;
    let plan = crate::reload::plan(running, &new)?;
    // Proxy-wide settings stay as they run.
    new.workers = running.workers;
    new.admin = running.admin;
    new.max_pipes_per_worker = running.max_pipes_per_worker;
    new.controller = running.controller.clone();
    new.event_loop = running.event_loop;
    new.sched_batch = running.sched_batch;
    new.buffer_size = running.buffer_size;
    let uring = |c: &ProxyConfig| c.services.iter().any(|s| s.engine == Engine::Uring);
    if uring(&new) {
        if !uring(running) {
            return Err(Error::Config {
                at: None,
                path: "services".into(),
                reason: "a first uring service needs a restart (the workers run another loop)"
                    .into(),
            });
        }
        probe_uring()?;
    }
    // Bind everything new first: a failure leaves the running proxy as it was.
    let mut bound: HashMap<usize, Vec<TcpListener>> = HashMap::new();
    for &i in plan.added.iter().chain(&plan.rebound) {
        bound.insert(i, bind_service(&new.services[i], running.workers)?);
    }
    let old_services = shared.services.load_full();
    let mut services = Vec::with_capacity(new.services.len());
    for (i, cfg) in new.services.iter().enumerate() {
        let old = old_services
            .iter()
            .find(|s| s.config.load().name == cfg.name);
        let svc = match (bound.remove(&i), old) {
            (Some(socks), old) => {
                let local_addr = socks[0].local_addr()?;
                // Backends are in place before any worker may accept on the new sockets.
                let initial: &[SocketAddr] = match &cfg.backends {
                    Backends::Static(list) => list,
                    Backends::Controller(_) => &[],
                };
                let (balancer, metrics) = match old {
                    Some(o) => (Arc::clone(&o.balancer), Arc::clone(&o.metrics)),
                    None => (
                        Arc::new(Balancer::new(0, initial)),
                        Arc::new(ServiceMetrics::new(&cfg.name, running.workers)),
                    ),
                };
                if old.is_some() && !initial.is_empty() {
                    balancer.replace(0, initial);
                }
                let svc = new_service(cfg.clone(), local_addr, balancer, metrics);
                for (w, sock) in workers.iter().zip(socks) {
                    w.send(WorkerCmd::Add(Arc::clone(&svc), sock));
                }
                if let Some(o) = old {
                    for w in workers {
                        w.send(WorkerCmd::Remove(o.id));
                    }
                }
                svc
            }
            (None, Some(o)) => {
                o.config.store(Arc::new(cfg.clone()));
                Arc::clone(o)
            }
            (None, None) => unreachable!("a service absent before is in plan.added"),
        };
        if let Backends::Static(list) = &cfg.backends {
            let held: Vec<SocketAddr> = svc
                .balancer
                .load()
                .backends()
                .iter()
                .map(|b| b.addr)
                .collect();
            if &held != list {
                svc.balancer.replace(0, list);
            }
        }
        let restart_tasks = match control.per_service.get(&cfg.name) {
            Some((_, was)) => was.health != cfg.health || was.backends != cfg.backends,
            None => true,
        };
        if restart_tasks {
            control.start_service(&svc);
        }
        services.push(svc);
    }
    for name in &plan.removed {
        if let Some(o) = old_services.iter().find(|s| &s.config.load().name == name) {
            for w in workers {
                w.send(WorkerCmd::Remove(o.id));
            }
        }
        control.stop_service(name);
    }
    shared.services.store(Arc::new(services));
    let lines = plan.describe(&new);
    *running = new;
    Ok(lines)
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

/// Read access to a running (or finished) proxy's services, and reloads.
#[derive(Clone, Debug)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    /// The named service.
    pub fn service(&self, name: &str) -> Option<ServiceHandle> {
        self.shared
            .services
            .load()
            .iter()
            .find(|s| s.config.load().name == name)
            .map(|s| ServiceHandle(Arc::clone(s)))
    }

    /// Every service's name and bound address.
    pub fn services(&self) -> Vec<(String, SocketAddr)> {
        self.shared
            .services
            .load()
            .iter()
            .map(|s| (s.name(), s.local_addr))
            .collect()
    }

    /// The `/metrics` text, as the admin server would serve it.
    pub fn metrics_text(&self) -> String {
        registry(&self.shared).render()
    }

    /// Applies `config` to the serving proxy without dropping connections: services added,
    /// removed, re-bound or retuned. Returns one line per change; on error (invalid config, a
    /// port that cannot be bound, a change that needs a restart) nothing changed.
    pub async fn reload(&self, config: ProxyConfig) -> Result<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        let not_serving = || Error::Worker("the proxy is not serving".into());
        self.shared
            .reload
            .send((config, tx))
            .map_err(|_| not_serving())?;
        rx.await.map_err(|_| not_serving())?
    }
}

/// The metrics registry over the services being served now.
fn registry(shared: &Shared) -> Registry {
    Registry {
        services: shared
            .services
            .load()
            .iter()
            .map(|s| (Arc::clone(&s.metrics), Arc::clone(&s.balancer)))
            .collect(),
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

    /// The configuration new connections get.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig::clone(&self.0.config.load())
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

/// How often a worker closes the pooled pipes it did not need.
const POOL_TRIM_PERIOD: Duration = Duration::from_secs(1);

/// The control side's line to one worker: its command channel, and the waker of its event
/// loop (a tokio worker wakes on the channel by itself).
struct WorkerLink {
    tx: mpsc::UnboundedSender<WorkerCmd>,
    waker: Option<Arc<mio::Waker>>,
}

impl WorkerLink {
    fn send(&self, cmd: WorkerCmd) {
        let _ = self.tx.send(cmd);
        if let Some(w) = &self.waker {
            let _ = w.wake();
        }
    }
}

/// What the control side asks of a worker.
pub(crate) enum WorkerCmd {
    /// Start accepting on this worker's socket of a (new or re-bound) service.
    Add(Arc<Service>, TcpListener),
    /// Stop accepting for the service with this id (its open connections go on).
    Remove(u64),
}

/// One worker thread's share of the proxy.
struct Worker {
    id: usize,
    buffer_size: usize,
    listeners: Vec<(Arc<Service>, TcpListener)>,
    commands: mpsc::UnboundedReceiver<WorkerCmd>,
    stop: CancellationToken,
    force: CancellationToken,
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

    async fn serve(mut self, uring: bool) -> std::io::Result<()> {
        forward::splice::set_pipe_limit(self.max_pipes);
        forward::copy::set_buffer_size(self.buffer_size);
        let tracker = TaskTracker::new();
        // Inserting a timer that expires before the time driver's next planned wake-up makes
        // tokio unpark the driver (an eventfd write plus a wasted epoll round), and every
        // connection inserts a connect timer. A heartbeat keeps the planned wake-up closer
        // than any connect deadline, so those inserts stay silent.
        let min_connect = self
            .listeners
            .iter()
            .map(|(s, _)| s.config.load().connect_timeout)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let beat = (min_connect / 2).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let heartbeat_stop = self.stop.clone();
        let trims = self.id == 0; // the pipe pool is shared: one worker trims it
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(beat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The same timer closes idle pooled pipes about once a second.
            let mut next_trim = Instant::now() + POOL_TRIM_PERIOD;
            loop {
                tokio::select! {
                    _ = heartbeat_stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                if trims && now >= next_trim {
                    next_trim = now + POOL_TRIM_PERIOD;
                    forward::splice::trim_pool();
                }
            }
        });
        let accepts = TaskTracker::new();
        let mut loops: HashMap<u64, CancellationToken> = HashMap::new();
        let start = |service: Arc<Service>,
                     sock: TcpListener|
         -> std::io::Result<(u64, CancellationToken)> {
            let token = self.stop.child_token();
            let id = service.id;
            let ws = Arc::new(WorkerService {
                worker: self.id,
                service,
                last_warn: Mutex::new(None),
            });
            let l = listener::register_listener(mio::net::TcpListener::from_std(sock))?;
            let accept = accept_loop(ws, l, tracker.clone(), token.clone());
            // On a tokio-uring runtime only tasks inside its LocalSet may spawn the `!Send`
            // uring connection tasks.
            if uring {
                accepts.spawn_local(accept);
            } else {
                accepts.spawn(accept);
            }
            Ok((id, token))
        };
        for (service, sock) in std::mem::take(&mut self.listeners) {
            let (id, token) = start(service, sock)?;
            loops.insert(id, token);
        }
        loop {
            let cmd = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                cmd = self.commands.recv() => cmd,
            };
            match cmd {
                Some(WorkerCmd::Add(service, sock)) => match start(service, sock) {
                    Ok((id, token)) => {
                        loops.insert(id, token);
                    }
                    Err(e) => {
                        tracing::error!(worker = self.id, error = %e, "cannot register a reloaded listener")
                    }
                },
                Some(WorkerCmd::Remove(id)) => {
                    if let Some(t) = loops.remove(&id) {
                        t.cancel();
                    }
                }
                None => {
                    self.stop.cancelled().await;
                    break;
                }
            }
        }
        // The accept loops end at shutdown, dropping (closing) their listeners.
        accepts.close();
        accepts.wait().await;
        tracker.close();
        tokio::select! {
            _ = tracker.wait() => {}
            _ = tokio::time::sleep(self.drain) => tracing::warn!(
                worker = self.id,
                open = tracker.len(),
                "drain deadline reached; closing the remaining connections"
            ),
            _ = self.force.cancelled() => tracing::warn!(
                worker = self.id,
                open = tracker.len(),
                "drain cut short; closing the remaining connections"
            ),
        }
        // Returning drops the runtime, and with it every connection still open.
        Ok(())
    }
}

/// A service as one worker sees it.
pub(crate) struct WorkerService {
    pub(crate) worker: usize,
    pub(crate) service: Arc<Service>,
    /// Last time this worker logged a refused connection (rate limit: one line per second).
    pub(crate) last_warn: Mutex<Option<Instant>>,
}

impl WorkerService {
    pub(crate) fn shard(&self) -> &crate::metrics::Shard {
        self.service.metrics.shard(self.worker)
    }

    pub(crate) fn warn_limited(&self, what: &str) {
        let now = Instant::now();
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(service = %self.service.name(), "closing client connection: {what}");
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
                Ok(Ok((stream, peer))) => admit(&ws, stream, peer, &tracker),
                Ok(Err(e)) => {
                    // EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning, and say so
                    // at most once a second (not once per retry).
                    ws.warn_limited(&format!("accept failed: {e}"));
                    drop(guard);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

fn admit(
    ws: &Arc<WorkerService>,
    stream: mio::net::TcpStream,
    peer: SocketAddr,
    tracker: &TaskTracker,
) {
    let stream = TcpStream::from(OwnedFd::from(stream));
    // One configuration for the connection's whole life, even across a reload.
    let cfg = ws.service.config.load_full();
    let limited = cfg.max_connections;
    if let Some(max) = limited {
        if ws.service.open.fetch_add(1, Ordering::Relaxed) >= max {
            ws.service.open.fetch_sub(1, Ordering::Relaxed);
            ws.shard().rejected();
            ws.warn_limited("max_connections reached");
            return; // dropping the stream closes it at once
        }
    }
    // The connection's two descriptors must fit the budget; idle pipes go first.
    if !BUDGET.take_connection() {
        forward::splice::drop_pool();
        if !BUDGET.take_connection() {
            if limited.is_some() {
                ws.service.open.fetch_sub(1, Ordering::Relaxed);
            }
            ws.shard().no_descriptors();
            ws.warn_limited("out of file descriptors (budget reached); raise `ulimit -n`");
            return;
        }
    }
    ws.shard().connection_opened();
    let ws = Arc::clone(ws);
    let limited = limited.is_some();
    #[cfg(feature = "uring")]
    if cfg.engine == Engine::Uring {
        tracker.spawn_local(serve_connection_uring(ws, cfg, stream, peer, limited));
        return;
    }
    tracker.spawn(serve_connection(ws, cfg, stream, peer, limited));
}

/// Undoes `admit`'s counting however the connection ends.
struct Open<'a> {
    ws: &'a WorkerService,
    limited: bool,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        BUDGET.release(crate::fds::PER_CONNECTION);
        self.ws.shard().connection_closed();
        if self.limited {
            self.ws.service.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve_connection(
    ws: Arc<WorkerService>,
    cfg: Arc<ServiceConfig>,
    client: TcpStream,
    peer: SocketAddr,
    limited: bool,
) {
    let _open = Open { ws: &ws, limited };
    let Some((client, server, backend)) = setup(&ws, &cfg, client, peer).await else {
        return;
    };
    let ctx = Ctx::new(ws.shard(), cfg.idle_timeout, cfg.splice_threshold);
    let r = forward::forward(cfg.engine, client, server, &ctx, cfg.idle_timeout).await;
    finish(&ws, r, &backend, &ctx);
}

#[cfg(feature = "uring")]
async fn serve_connection_uring(
    ws: Arc<WorkerService>,
    cfg: Arc<ServiceConfig>,
    client: TcpStream,
    peer: SocketAddr,
    limited: bool,
) {
    let _open = Open { ws: &ws, limited };
    let Some((client, server, backend)) = setup(&ws, &cfg, client, peer).await else {
        return;
    };
    let ctx = Ctx::new(ws.shard(), cfg.idle_timeout, cfg.splice_threshold);
    let r = forward::forward_uring(client, server, &ctx, cfg.idle_timeout).await;
    finish(&ws, r, &backend, &ctx);
}

/// Connects a backend for `client` and registers both sockets; `None` (counted, logged) when
/// no backend could be reached.
///
/// The client is registered first so the readiness of its first bytes arrives in the same
/// reactor turn as the backend's connect completion, not one turn later.
async fn setup(
    ws: &WorkerService,
    cfg: &ServiceConfig,
    client: TcpStream,
    peer: SocketAddr,
) -> Option<(Conn, Conn, Arc<Backend>)> {
    let client = match listener::register(client) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register client socket");
            return None;
        }
    };
    let Some((server, backend)) = connect_backend(ws, cfg).await else {
        ws.shard().no_backend();
        ws.warn_limited("no backend up or reachable");
        return None;
    };
    if let Some(version) = cfg.send_proxy {
        // The address the client reached (the listener may be a wildcard).
        let local = client
            .get_ref()
            .local_addr()
            .unwrap_or(ws.service.local_addr);
        let header = crate::proxy_protocol::header(version, peer, local);
        if let Err(e) = write_all(&server, &header).await {
            tracing::debug!(service = %cfg.name, error = %e, "cannot send the PROXY header");
            return None;
        }
    }
    backend.stats.opened();
    Some((client, server, backend))
}

/// Writes all of `buf` to a freshly connected socket (a PROXY header: it fits the empty send
/// buffer, so this normally takes one `write`).
async fn write_all(sock: &Conn, mut buf: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    while !buf.is_empty() {
        let mut guard = sock.writable().await?;
        match guard.try_io(|s| (&mut s.get_ref()).write(buf)) {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

fn finish(ws: &WorkerService, r: std::io::Result<Outcome>, backend: &Backend, ctx: &Ctx<'_>) {
    let (up, down) = ctx.totals();
    backend.stats.closed(up, down);
    match r {
        Ok(Outcome::Done) => {}
        Ok(Outcome::Idle) => ws.shard().idle_closed(),
        Err(e) => {
            tracing::debug!(service = %ws.service.name(), error = %e, "connection ended with an error")
        }
    }
}

/// One client's walk over the backends: which to try next (shared by both worker loops).
///
/// Without active checks nothing but a client connect can show that an ejected backend is
/// back, so when none is up every backend is tried anyway (a restarted single backend serves
/// again at once), and a success clears the ejection.
pub(crate) struct Pick {
    start: usize,
    /// No backend was up: walk all of them.
    any: bool,
    attempt: usize,
    failed: Option<SocketAddr>,
}

impl Pick {
    /// A pick that offers nothing (a placeholder while one is moved around).
    pub(crate) fn empty() -> Pick {
        Pick {
            start: 0,
            any: false,
            attempt: usize::MAX,
            failed: None,
        }
    }

    /// Backends handed out so far.
    pub(crate) fn attempts(&self) -> usize {
        self.attempt
    }

    /// Starts a pick; `None` when no backend may be tried at all.
    pub(crate) fn begin(svc: &Service, cfg: &ServiceConfig) -> Option<Pick> {
        let snap = svc.balancer.load();
        let (start, any) = match snap.start() {
            Some(start) => (start, false),
            None if cfg.health.interval.is_zero() => (snap.start_any()?, true),
            None => return None,
        };
        Some(Pick {
            start,
            any,
            attempt: 0,
            failed: None,
        })
    }

    /// The next backend to try, within `connect_attempts`. Each attempt looks at the current
    /// snapshot (a failure may just have changed it) and skips the one that just failed.
    pub(crate) fn next(&mut self, svc: &Service, cfg: &ServiceConfig) -> Option<Arc<Backend>> {
        if self.attempt >= cfg.connect_attempts as usize {
            return None;
        }
        let snap = svc.balancer.load();
        let n = if self.any {
            snap.backends().len()
        } else {
            snap.healthy_count()
        };
        let b = (0..n)
            .filter_map(|i| {
                let k = (self.attempt + i) % n;
                if self.any {
                    snap.candidate_any(self.start, k)
                } else {
                    snap.candidate(self.start, k)
                }
            })
            .find(|b| Some(b.addr) != self.failed)
            .cloned();
        self.attempt += 1;
        b
    }
}

/// Bookkeeping after a successful backend connect (passive readmission).
pub(crate) fn connect_succeeded(svc: &Service, cfg: &ServiceConfig, backend: &Backend) {
    if cfg.health.interval.is_zero() && (backend.on_probation() || !backend.is_up()) {
        health::report(
            &cfg.name,
            &svc.balancer,
            &svc.metrics,
            &cfg.health,
            backend.addr,
            true,
            health::Source::ClientConnect,
        );
    }
}

/// Bookkeeping after a failed backend connect; returns whether another backend may be tried
/// (not when the proxy itself is out of descriptors: the backend is not to blame).
pub(crate) fn connect_failed(
    ws: &WorkerService,
    cfg: &ServiceConfig,
    pick: &mut Pick,
    addr: SocketAddr,
    err: &std::io::Error,
) -> bool {
    if crate::fds::is_local_exhaustion(err) {
        ws.warn_limited(&format!("cannot open a backend socket: {err}"));
        return false;
    }
    pick.failed = Some(addr);
    ws.shard().connect_error();
    tracing::debug!(service = %cfg.name, backend = %addr, error = %err, "backend connect failed");
    health::report(
        &cfg.name,
        &ws.service.balancer,
        &ws.service.metrics,
        &cfg.health,
        addr,
        false,
        health::Source::ClientConnect,
    );
    true
}

/// Connects to the next healthy backend, retrying the following ones on failure (each failure
/// counts toward that backend's `fall`). `None` when no backend is up or every attempt failed.
async fn connect_backend(ws: &WorkerService, cfg: &ServiceConfig) -> Option<(Conn, Arc<Backend>)> {
    let svc = &ws.service;
    let mut pick = Pick::begin(svc, cfg)?;
    while let Some(backend) = pick.next(svc, cfg) {
        if pick.attempt > 1 {
            ws.shard().retry();
        }
        let addr = backend.addr;
        let err =
            match tokio::time::timeout(cfg.connect_timeout, listener::connect(addr, &cfg.tuning))
                .await
            {
                Ok(Ok(conn)) => {
                    connect_succeeded(svc, cfg, &backend);
                    return Some((conn, backend));
                }
                Ok(Err(e)) => e,
                Err(_) => std::io::ErrorKind::TimedOut.into(),
            };
        if !connect_failed(ws, cfg, &mut pick, addr, &err) {
            return None;
        }
    }
    None
}
