//! The `mio` worker loop, for the copy and splice engines: one edge-triggered epoll instance per
//! worker thread, no task, future or waker per connection.
//!
//! * Each socket is registered once, for read and write, and never deregistered: closing it
//!   takes it out of the epoll set (tokio's `AsyncFd` costs an `epoll_ctl` to add and another
//!   to delete, for the client and for the backend socket of every connection).
//! * Readiness is kept per socket as two flags set by events and cleared by `EAGAIN` or a short
//!   read/write, and both directions of a connection are pumped inline from its events.
//! * Timers are one coarse sweep every [`SWEEP`] over the worker's connections (connect
//!   deadlines, idle timeouts), instead of a timer per connection.
//! * A listener's whole backlog is accepted per wake-up.
//!
//! The forwarding rules are those of [`crate::forward`]: copy through a pooled buffer, switch a
//! direction to `splice(2)` through a pooled pipe after a big read, propagate half-close, and
//! never hold a buffer for an idle connection. Accounting (metrics, descriptor budget,
//! `max_connections`, per-backend counters) lives in [`Conn`]'s `Drop`, so every way a
//! connection ends is counted once.
//!
//! The control side talks to the loop through the same [`WorkerCmd`] channel as to a tokio
//! worker, plus a `mio::Waker`; shutdown and force are cancellation tokens whose cancellation
//! the control runtime turns into a wake-up.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::balancer::Backend;
use crate::config::ServiceConfig;
use crate::fds::{BUDGET, PER_CONNECTION};
use crate::forward::copy::{put_buf, take_buf};
use crate::forward::splice::{self, put_pipe, take_pipe, Pipe, PIPE_SIZE};
use crate::proxy::{self, Pick, Service, WorkerCmd, WorkerService};

/// Granularity of connect deadlines and idle timeouts.
pub(crate) const SWEEP: Duration = Duration::from_millis(100);
/// How often worker 0 trims the shared pipe pool.
const TRIM: Duration = Duration::from_secs(1);
/// Token of the waker.
const WAKER: Token = Token(usize::MAX);
/// Listener tokens are `LISTENERS + index`; connection tokens are `2 * slot + side` below it.
const LISTENERS: usize = usize::MAX / 2;

/// Puts the calling thread under `SCHED_BATCH` (logged, not fatal, if refused).
#[allow(unsafe_code)]
pub(crate) fn sched_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param that outlives the
    // call, and SCHED_BATCH requires priority 0.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot set SCHED_BATCH");
    }
}

/// A worker's poller and the waker the control side uses to reach it.
pub(crate) fn new_poll() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((poll, waker))
}

/// One worker thread running the loop.
pub(crate) struct MioWorker {
    pub(crate) id: usize,
    pub(crate) buffer_size: usize,
    pub(crate) poll: Poll,
    pub(crate) listeners: Vec<(Arc<Service>, std::net::TcpListener)>,
    pub(crate) commands: mpsc::UnboundedReceiver<WorkerCmd>,
    pub(crate) stop: CancellationToken,
    pub(crate) force: CancellationToken,
    pub(crate) drain: Duration,
    pub(crate) max_pipes: usize,
}

/// A listening socket in the loop.
struct Listening {
    ws: Arc<WorkerService>,
    sock: TcpListener,
    /// `accept` failed for lack of resources: try again at the next sweep (edge-triggered, the
    /// listener will not report the waiting backlog again).
    retry: bool,
}

/// Which socket of a connection an event is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client = 0,
    Server = 1,
}

/// Readiness flags of one socket: set by events, cleared by `EAGAIN` or a short transfer.
#[derive(Default, Clone, Copy)]
struct Ready {
    read: bool,
    write: bool,
    /// The peer's FIN is queued (`EPOLLRDHUP`): a short read no longer means "drained", the
    /// next read returns the EOF, and no new edge will announce it.
    read_closed: bool,
}

/// One direction of a connection.
#[derive(Default)]
struct Half {
    /// Bytes read and not yet written (`buf[pos..len]`); held only while the destination is
    /// full (or for the PROXY header).
    buf: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    /// Source EOF seen.
    eof: bool,
    /// EOF propagated: the direction is finished.
    done: bool,
    /// Splicing through this pipe, holding `held` bytes.
    pipe: Option<Pipe>,
    held: usize,
    /// The last splice read was small: go back to copying once the pipe is empty.
    back_to_copy: bool,
    /// No pipe could be had: keep copying.
    copy_only: bool,
}

/// What a step of a half did.
enum Step {
    /// Moved bytes; call again.
    Moved(usize),
    /// Waiting for readiness.
    Blocked,
    /// Finished (EOF propagated).
    Done,
}

impl Half {
    /// Moves what can be moved from `src` to `dst` until blocked or done; returns the bytes
    /// moved.
    #[allow(clippy::too_many_arguments)]
    fn pump(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        src_ready: &mut Ready,
        dst_ready: &mut Ready,
        threshold: usize,
        other_done: bool,
    ) -> io::Result<usize> {
        let mut total = 0;
        loop {
            match self.step(src, dst, src_ready, dst_ready, threshold, other_done)? {
                Step::Moved(n) => total += n,
                Step::Blocked | Step::Done => return Ok(total),
            }
        }
    }

    fn step(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        src_ready: &mut Ready,
        dst_ready: &mut Ready,
        threshold: usize,
        other_done: bool,
    ) -> io::Result<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        // 1. Flush what is held.
        if let Some(buf) = &self.buf {
            if self.pos < self.len {
                if !dst_ready.write {
                    return Ok(Step::Blocked);
                }
                return match (&*dst).write(&buf[self.pos..self.len]) {
                    Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.pos += n;
                        if self.pos < self.len {
                            dst_ready.write = false; // short write: send buffer full
                        }
                        Ok(Step::Moved(n))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dst_ready.write = false;
                        Ok(Step::Blocked)
                    }
                    Err(e) => Err(e),
                };
            }
            let big = self.len >= threshold && !self.copy_only;
            put_buf(self.buf.take().expect("checked"));
            if big && self.pipe.is_none() {
                match take_pipe() {
                    Some(p) => self.pipe = Some(p),
                    None => self.copy_only = true,
                }
            }
        }
        if let Some(pipe) = &self.pipe {
            if self.held > 0 {
                if !dst_ready.write {
                    return Ok(Step::Blocked);
                }
                return match splice::splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), self.held) {
                    Ok(n) => {
                        self.held -= n;
                        Ok(Step::Moved(n))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dst_ready.write = false;
                        Ok(Step::Blocked)
                    }
                    Err(e) => Err(e),
                };
            }
            if self.back_to_copy && !self.eof {
                self.back_to_copy = false;
                put_pipe(self.pipe.take().expect("checked"), 0);
                return Ok(Step::Moved(0));
            }
        }
        // 2. Everything read is written: propagate EOF, or read more.
        if self.eof {
            if !other_done {
                match dst.shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Err(e),
                }
            }
            self.done = true;
            if let Some(p) = self.pipe.take() {
                put_pipe(p, 0);
            }
            return Ok(Step::Done);
        }
        if !src_ready.read {
            return Ok(Step::Blocked);
        }
        if let Some(pipe) = &self.pipe {
            // The pipe is empty here, so EAGAIN can only mean the socket is drained.
            return match splice::splice(src.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE) {
                Ok(0) => {
                    self.eof = true;
                    Ok(Step::Moved(0))
                }
                Ok(n) => {
                    self.held = n;
                    self.back_to_copy = n < threshold;
                    Ok(Step::Moved(0)) // counted when written
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    src_ready.read = false;
                    Ok(Step::Blocked)
                }
                Err(e) => Err(e),
            };
        }
        let mut buf = take_buf();
        match (&*src).read(&mut buf) {
            Ok(0) => {
                put_buf(buf);
                self.eof = true;
                Ok(Step::Moved(0))
            }
            Ok(n) => {
                if n < buf.len() {
                    if src_ready.read_closed {
                        // The FIN was queued before this read, behind every byte: a short read
                        // took them all, so the next read could only return the EOF. Skip it.
                        self.eof = true;
                    } else {
                        src_ready.read = false; // a short read drained the receive queue
                    }
                }
                self.buf = Some(buf);
                self.pos = 0;
                self.len = n;
                Ok(Step::Moved(0))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                put_buf(buf);
                src_ready.read = false;
                Ok(Step::Blocked)
            }
            Err(e) => {
                put_buf(buf);
                Err(e)
            }
        }
    }

    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            put_buf(b);
        }
        if let Some(p) = self.pipe.take() {
            put_pipe(p, self.held);
        }
    }
}

/// Where a connection is in its life.
enum Phase {
    /// Connecting to `backend`; a failure tries the next one of `pick`.
    Connecting {
        pick: Pick,
        backend: Arc<Backend>,
        deadline: Instant,
    },
    /// Moving bytes.
    Forwarding,
}

/// One client connection and its backend connection.
struct Conn {
    ws: Arc<WorkerService>,
    cfg: Arc<ServiceConfig>,
    client: TcpStream,
    peer: SocketAddr,
    server: Option<TcpStream>,
    /// Set once connected (counted in its stats then).
    backend: Option<Arc<Backend>>,
    phase: Phase,
    ready: [Ready; 2],
    up: Half,
    down: Half,
    /// Last time bytes moved (the loop's clock, per batch of events).
    last_activity: Instant,
    moved: [u64; 2],
    /// Counted in the service's `open` (max_connections set).
    limited: bool,
    /// Closed by the idle timeout (for the metrics).
    idle: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.up.release();
        self.down.release();
        BUDGET.release(PER_CONNECTION);
        self.ws.shard().connection_closed();
        if self.limited {
            self.ws.service.open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.backend {
            b.stats.closed(self.moved[0], self.moved[1]);
        }
        if self.idle {
            self.ws.shard().idle_closed();
        }
    }
}

/// What handling an event decided for the connection.
enum Fate {
    Keep,
    Close,
}

impl Conn {
    /// Pumps both directions until nothing moves; `Close` once both are done or on error.
    fn forward(&mut self, now: Instant) -> Fate {
        let Some(server) = &self.server else {
            return Fate::Keep;
        };
        let threshold = self.cfg.splice_threshold;
        let [c, s] = &mut self.ready;
        let r = (|| -> io::Result<(usize, usize)> {
            let up = self
                .up
                .pump(&self.client, server, c, s, threshold, self.down.done)?;
            let down = self
                .down
                .pump(server, &self.client, s, c, threshold, self.up.done)?;
            // The down direction may have finished after up last looked (and vice versa):
            // one more pass lets a finished-last direction skip its shutdown.
            Ok((up, down))
        })();
        match r {
            Ok((up, down)) => {
                if up + down > 0 {
                    self.last_activity = now;
                    if up > 0 {
                        self.moved[0] += up as u64;
                        self.ws.shard().bytes_up(up);
                    }
                    if down > 0 {
                        self.moved[1] += down as u64;
                        self.ws.shard().bytes_down(down);
                    }
                }
                if self.up.done && self.down.done {
                    Fate::Close
                } else {
                    Fate::Keep
                }
            }
            Err(e) => {
                tracing::debug!(service = %self.cfg.name, error = %e, "connection ended with an error");
                Fate::Close
            }
        }
    }
}

/// The connection table: slots reused only after the batch of events that freed them, so an
/// event already fetched for a closed connection cannot reach its successor.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    freed_this_batch: Vec<usize>,
    len: usize,
}

impl Slab {
    fn vacant(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        })
    }

    fn insert(&mut self, i: usize, c: Conn) {
        self.slots[i] = Some(c);
        self.len += 1;
    }

    fn remove(&mut self, i: usize) {
        if self.slots[i].take().is_some() {
            self.len -= 1;
            self.freed_this_batch.push(i);
        }
    }

    fn end_batch(&mut self) {
        self.free.append(&mut self.freed_this_batch);
    }
}

fn conn_token(slot: usize, side: Side) -> Token {
    Token(slot * 2 + side as usize)
}

impl MioWorker {
    pub(crate) fn run(mut self) -> io::Result<()> {
        splice::set_pipe_limit(self.max_pipes);
        crate::forward::copy::set_buffer_size(self.buffer_size);
        let mut listeners: Vec<Option<(u64, Listening)>> = Vec::new();
        for (service, sock) in std::mem::take(&mut self.listeners) {
            self.add_listener(&mut listeners, service, sock)?;
        }
        let mut conns = Slab::default();
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        let mut next_trim = Instant::now() + TRIM;
        let mut drain_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let timeout = if conns.len > 0 || listeners.iter().flatten().any(|(_, l)| l.retry) {
                next_sweep.saturating_duration_since(now)
            } else {
                next_trim
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                let t = ev.token().0;
                if ev.token() == WAKER {
                    self.commands(&mut listeners)?;
                } else if t >= LISTENERS {
                    if let Some(Some((_, l))) = listeners.get_mut(t - LISTENERS) {
                        accept_all(l, &mut conns, self.poll.registry(), now);
                    }
                } else {
                    let (slot, side) = (
                        t / 2,
                        if t % 2 == 0 {
                            Side::Client
                        } else {
                            Side::Server
                        },
                    );
                    let fate = match conns.slots.get_mut(slot).and_then(Option::as_mut) {
                        Some(c) => on_event(c, slot, side, ev, self.poll.registry(), now),
                        None => Fate::Keep,
                    };
                    if let Fate::Close = fate {
                        conns.remove(slot);
                    }
                }
            }
            conns.end_batch();
            if now >= next_sweep {
                next_sweep = now + SWEEP;
                sweep(&mut conns, self.poll.registry(), now);
                for (_, l) in listeners.iter_mut().flatten() {
                    if l.retry {
                        l.retry = false;
                        accept_all(l, &mut conns, self.poll.registry(), now);
                    }
                }
                conns.end_batch();
            }
            if self.id == 0 && now >= next_trim {
                next_trim = now + TRIM;
                splice::trim_pool();
            }
            if drain_until.is_none() && self.stop.is_cancelled() {
                // Stop accepting: deregister explicitly (a shared listener is a dup, and an
                // epoll registration outlives a close while another descriptor remains).
                for (_, l) in listeners.iter_mut().flatten() {
                    let _ = self.poll.registry().deregister(&mut l.sock);
                }
                listeners.clear();
                drain_until = Some(now + self.drain);
            }
            if let Some(until) = drain_until {
                if conns.len == 0 {
                    break;
                }
                if self.force.is_cancelled() {
                    tracing::warn!(
                        worker = self.id,
                        open = conns.len,
                        "drain cut short; closing the remaining connections"
                    );
                    break;
                }
                if now >= until {
                    tracing::warn!(
                        worker = self.id,
                        open = conns.len,
                        "drain deadline reached; closing the remaining connections"
                    );
                    break;
                }
            }
        }
        // Dropping the table closes every connection still open (and counts it).
        Ok(())
    }

    fn add_listener(
        &mut self,
        listeners: &mut Vec<Option<(u64, Listening)>>,
        service: Arc<Service>,
        sock: std::net::TcpListener,
    ) -> io::Result<()> {
        let i = match listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                listeners.push(None);
                listeners.len() - 1
            }
        };
        let mut sock = TcpListener::from_std(sock);
        self.poll
            .registry()
            .register(&mut sock, Token(LISTENERS + i), Interest::READABLE)?;
        let id = service.id;
        let ws = Arc::new(WorkerService {
            worker: self.id,
            service,
            last_warn: Mutex::new(None),
        });
        listeners[i] = Some((
            id,
            Listening {
                ws,
                sock,
                retry: true, // connections may already wait in the backlog
            },
        ));
        Ok(())
    }

    fn commands(&mut self, listeners: &mut Vec<Option<(u64, Listening)>>) -> io::Result<()> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                WorkerCmd::Add(service, sock) => {
                    if let Err(e) = self.add_listener(listeners, service, sock) {
                        tracing::error!(worker = self.id, error = %e, "cannot register a reloaded listener");
                    }
                }
                WorkerCmd::Remove(id) => {
                    for slot in listeners.iter_mut() {
                        if matches!(slot, Some((sid, _)) if *sid == id) {
                            if let Some((_, mut l)) = slot.take() {
                                let _ = self.poll.registry().deregister(&mut l.sock);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Accepts the whole backlog of `l`.
fn accept_all(l: &mut Listening, conns: &mut Slab, registry: &mio::Registry, now: Instant) {
    loop {
        match l.sock.accept() {
            Ok((stream, peer)) => admit(&l.ws, stream, peer, conns, registry, now),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: try again at the next sweep, say so once a second.
                l.ws.warn_limited(&format!("accept failed: {e}"));
                l.retry = true;
                return;
            }
        }
    }
}

/// Takes a new client: limits, then the first backend connect.
fn admit(
    ws: &Arc<WorkerService>,
    client: TcpStream,
    peer: SocketAddr,
    conns: &mut Slab,
    registry: &mio::Registry,
    now: Instant,
) {
    let cfg = ws.service.config.load_full();
    let limited = cfg.max_connections;
    if let Some(max) = limited {
        if ws.service.open.fetch_add(1, Ordering::Relaxed) >= max {
            ws.service.open.fetch_sub(1, Ordering::Relaxed);
            ws.shard().rejected();
            ws.warn_limited("max_connections reached");
            return;
        }
    }
    if !BUDGET.take_connection() {
        splice::drop_pool();
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
    let Some(mut pick) = Pick::begin(&ws.service, &cfg) else {
        // Counted as a connection that found no backend.
        let conn_ws = Arc::clone(ws);
        drop(Conn::stub(
            conn_ws,
            cfg,
            client,
            peer,
            limited.is_some(),
            now,
        ));
        ws.shard().no_backend();
        ws.warn_limited("no backend up or reachable");
        return;
    };
    let slot = conns.vacant();
    let mut client = client;
    if let Err(e) = registry.register(
        &mut client,
        conn_token(slot, Side::Client),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        tracing::warn!(error = %e, "cannot register client socket");
        conns.free.push(slot);
        drop(Conn::stub(
            Arc::clone(ws),
            cfg,
            client,
            peer,
            limited.is_some(),
            now,
        ));
        return;
    }
    let mut conn = Conn::stub(Arc::clone(ws), cfg, client, peer, limited.is_some(), now);
    if connect_next(&mut conn, &mut pick, slot, registry, now) {
        conns.insert(slot, conn);
    } else {
        conns.free.push(slot);
    }
}

impl Conn {
    fn stub(
        ws: Arc<WorkerService>,
        cfg: Arc<ServiceConfig>,
        client: TcpStream,
        peer: SocketAddr,
        limited: bool,
        now: Instant,
    ) -> Conn {
        Conn {
            ws,
            cfg,
            client,
            peer,
            server: None,
            backend: None,
            phase: Phase::Forwarding,
            ready: [Ready::default(); 2],
            up: Half::default(),
            down: Half::default(),
            last_activity: now,
            moved: [0; 2],
            limited,
            idle: false,
        }
    }
}

/// Starts connecting to the next backend of `pick`; false (counted, logged) when none is left.
fn connect_next(
    conn: &mut Conn,
    pick: &mut Pick,
    slot: usize,
    registry: &mio::Registry,
    now: Instant,
) -> bool {
    let mut pick = std::mem::replace(pick, Pick::empty());
    loop {
        let Some(backend) = pick.next(&conn.ws.service, &conn.cfg) else {
            conn.ws.shard().no_backend();
            conn.ws.warn_limited("no backend up or reachable");
            return false;
        };
        if pick.attempts() > 1 {
            conn.ws.shard().retry();
        }
        let started =
            crate::listener::start_connect(backend.addr, &conn.cfg.tuning).and_then(|s| {
                let mut s = TcpStream::from_std(s);
                registry.register(
                    &mut s,
                    conn_token(slot, Side::Server),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            });
        match started {
            Ok(s) => {
                conn.server = Some(s);
                conn.ready[Side::Server as usize] = Ready::default();
                conn.phase = Phase::Connecting {
                    pick,
                    backend,
                    deadline: now + conn.cfg.connect_timeout,
                };
                return true;
            }
            Err(e) => {
                if !proxy::connect_failed(&conn.ws, &conn.cfg, &mut pick, backend.addr, &e) {
                    return false;
                }
            }
        }
    }
}

/// A failed connect: the next backend, or the end of the connection.
fn connect_failed(
    conn: &mut Conn,
    slot: usize,
    err: io::Error,
    registry: &mio::Registry,
    now: Instant,
) -> Fate {
    let Phase::Connecting {
        mut pick, backend, ..
    } = std::mem::replace(&mut conn.phase, Phase::Forwarding)
    else {
        return Fate::Close;
    };
    conn.server = None; // closing it removes it from the epoll set
    if !proxy::connect_failed(&conn.ws, &conn.cfg, &mut pick, backend.addr, &err) {
        return Fate::Close;
    }
    if connect_next(conn, &mut pick, slot, registry, now) {
        Fate::Keep
    } else {
        Fate::Close
    }
}

fn on_event(
    conn: &mut Conn,
    slot: usize,
    side: Side,
    ev: &mio::event::Event,
    registry: &mio::Registry,
    now: Instant,
) -> Fate {
    let r = &mut conn.ready[side as usize];
    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
        r.read = true;
    }
    if ev.is_read_closed() {
        r.read_closed = true;
    }
    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
        r.write = true;
    }
    if side == Side::Server {
        if let Phase::Connecting { .. } = conn.phase {
            if ev.is_error() || ev.is_write_closed() {
                let server = conn.server.as_ref().expect("connecting has a socket");
                let err = match server.take_error() {
                    Ok(Some(e)) | Err(e) => e,
                    Ok(None) => io::ErrorKind::ConnectionRefused.into(),
                };
                return connect_failed(conn, slot, err, registry, now);
            }
            if !ev.is_writable() {
                return Fate::Keep;
            }
            if let Fate::Close = connected(conn) {
                return Fate::Close;
            }
        }
    }
    if let Phase::Connecting { .. } = conn.phase {
        return Fate::Keep; // client bytes wait for the backend
    }
    conn.forward(now)
}

/// The backend accepted: start forwarding (after the PROXY header, if configured).
fn connected(conn: &mut Conn) -> Fate {
    let Phase::Connecting { backend, .. } = std::mem::replace(&mut conn.phase, Phase::Forwarding)
    else {
        return Fate::Keep;
    };
    proxy::connect_succeeded(&conn.ws.service, &conn.cfg, &backend);
    backend.stats.opened();
    conn.backend = Some(backend);
    if let Some(version) = conn.cfg.send_proxy {
        let local = conn
            .client
            .local_addr()
            .unwrap_or(conn.ws.service.local_addr);
        let header = crate::proxy_protocol::header(version, conn.peer, local);
        let mut buf = take_buf();
        buf[..header.len()].copy_from_slice(&header);
        conn.up.buf = Some(buf);
        conn.up.pos = 0;
        conn.up.len = header.len();
    }
    Fate::Keep
}

/// Connect deadlines and idle timeouts, at [`SWEEP`] granularity.
fn sweep(conns: &mut Slab, registry: &mio::Registry, now: Instant) {
    for slot in 0..conns.slots.len() {
        let Some(conn) = conns.slots[slot].as_mut() else {
            continue;
        };
        let fate = match &conn.phase {
            Phase::Connecting { deadline, .. } if now >= *deadline => {
                connect_failed(conn, slot, io::ErrorKind::TimedOut.into(), registry, now)
            }
            Phase::Connecting { .. } => Fate::Keep,
            Phase::Forwarding => match conn.cfg.idle_timeout {
                Some(idle) if now.duration_since(conn.last_activity) >= idle => {
                    conn.idle = true;
                    Fate::Close
                }
                _ => Fate::Keep,
            },
        };
        if let Fate::Close = fate {
            conns.remove(slot);
        }
    }
}
