//! Forwarding engines: move bytes both ways between a client and a backend socket until both
//! directions have ended, propagating half-close (`EOF` on one side becomes `shutdown(SHUT_WR)`
//! on the other once everything read has been written).
//!
//! * [`copy`]: readiness-driven userspace copy through per-worker reused buffers; a
//!   connection holds a buffer only while a write is blocked, so idle connections cost none.
//! * [`splice`]: starts as copy, and a direction that reads a big chunk switches to
//!   `splice(2)` through a pooled pipe pair (zero-copy for bulk flows).
//! * [`uring`] (feature `uring`): io_uring reads and writes through tokio-uring.
//!
//! Both directions are driven by one future in the connection's task ([`Duplex`]), like
//! linkerd2-proxy's duplex: no extra tasks, no channels.

pub mod copy;
pub mod splice;
#[cfg(feature = "uring")]
pub mod uring;

use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::config::Engine;
use crate::metrics::Shard;

/// A non-blocking TCP socket registered with the worker's reactor.
pub type Conn = AsyncFd<TcpStream>;

/// Which way a half moves bytes (selects the byte counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to backend.
    Up,
    /// Backend to client.
    Down,
}

/// What a connection's forwarding shares: counters, activity clock, tuning.
pub struct Ctx<'a> {
    /// The worker's counters for this service.
    pub shard: &'a Shard,
    /// When this connection started forwarding; `last_activity` counts from here.
    epoch: Instant,
    /// Nanoseconds after `epoch` when bytes last moved; read by the idle timer. Only this
    /// connection's task touches it (an atomic only so the task stays `Send`).
    last_activity: AtomicU64,
    /// Whether anyone reads `last_activity` (skip the clock read otherwise).
    track_activity: bool,
    /// A direction switches from copy to splice after a read this big.
    pub splice_threshold: usize,
    /// Bytes this connection moved each way, added to its backend's totals when it ends
    /// (only this connection's task writes them).
    moved_up: AtomicU64,
    moved_down: AtomicU64,
}

impl<'a> Ctx<'a> {
    pub fn new(shard: &'a Shard, idle_timeout: Option<Duration>, splice_threshold: usize) -> Self {
        Ctx {
            shard,
            epoch: Instant::now(),
            last_activity: AtomicU64::new(0),
            track_activity: idle_timeout.is_some(),
            splice_threshold,
            moved_up: AtomicU64::new(0),
            moved_down: AtomicU64::new(0),
        }
    }

    /// Bytes moved so far: (client → backend, backend → client).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.moved_up.load(Ordering::Relaxed),
            self.moved_down.load(Ordering::Relaxed),
        )
    }

    /// Records `n` bytes moved in direction `dir`.
    #[inline]
    pub fn moved(&self, dir: Dir, n: usize) {
        let total = match dir {
            Dir::Up => {
                self.shard.bytes_up(n);
                &self.moved_up
            }
            Dir::Down => {
                self.shard.bytes_down(n);
                &self.moved_down
            }
        };
        total.store(total.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
        if self.track_activity {
            let since = Instant::now().saturating_duration_since(self.epoch);
            self.last_activity
                .store(since.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// When bytes last moved (or forwarding started).
    fn last_activity(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed))
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions reached EOF and were propagated.
    Done,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// One direction's state machine; `poll_transfer` returns `Ready(Ok)` once the source's EOF has
/// been propagated to the destination.
///
/// `last` says the other direction is already finished: the connection closes as soon as this
/// one ends, and `close` sends the FIN, so the `shutdown(SHUT_WR)` call can be skipped (both
/// receive queues are drained by then, so the close cannot turn into a reset).
pub trait Half<'a> {
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        src: &Conn,
        dst: &Conn,
        ctx: &'a Ctx<'a>,
        last: bool,
    ) -> Poll<io::Result<()>>;
}

/// Drives both directions of a connection until both are done or one fails.
pub struct Duplex<'a, H> {
    client: &'a Conn,
    server: &'a Conn,
    ctx: &'a Ctx<'a>,
    up: Option<H>,
    down: Option<H>,
}

impl<'a, H: Half<'a> + Unpin> Duplex<'a, H> {
    pub fn new(client: &'a Conn, server: &'a Conn, ctx: &'a Ctx<'a>, up: H, down: H) -> Self {
        Duplex {
            client,
            server,
            ctx,
            up: Some(up),
            down: Some(down),
        }
    }
}

impl<'a, H: Half<'a> + Unpin> Future for Duplex<'a, H> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(h) = &mut this.up {
            let last = this.down.is_none();
            if let Poll::Ready(r) = h.poll_transfer(cx, this.client, this.server, this.ctx, last) {
                r?;
                this.up = None; // drop the half now: its buffer or pipe goes back to the pool
            }
        }
        if let Some(h) = &mut this.down {
            let last = this.up.is_none();
            if let Poll::Ready(r) = h.poll_transfer(cx, this.server, this.client, this.ctx, last) {
                r?;
                this.down = None;
            }
        }
        if this.up.is_none() && this.down.is_none() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Races `fut` against the idle timeout measured from the last byte moved.
pub(crate) async fn with_idle_timeout(
    fut: impl Future<Output = io::Result<()>>,
    ctx: &Ctx<'_>,
    idle: Option<Duration>,
) -> io::Result<Outcome> {
    let Some(idle) = idle else {
        fut.await?;
        return Ok(Outcome::Done);
    };
    let mut fut = std::pin::pin!(fut);
    let sleep = tokio::time::sleep(idle);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r.map(|()| Outcome::Done));
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            let deadline = ctx.last_activity() + idle;
            if Instant::now() >= deadline {
                return Poll::Ready(Ok(Outcome::Idle));
            }
            sleep.as_mut().reset(deadline);
        }
    })
    .await
}

/// Forwards between `client` and `server` with `engine` until both directions end, one side
/// fails, or the connection idles out.
pub async fn forward(
    engine: Engine,
    client: Conn,
    server: Conn,
    ctx: &Ctx<'_>,
    idle: Option<Duration>,
) -> io::Result<Outcome> {
    match engine {
        Engine::Copy => {
            let halves = (copy::CopyHalf::new(Dir::Up), copy::CopyHalf::new(Dir::Down));
            let duplex = Duplex::new(&client, &server, ctx, halves.0, halves.1);
            with_idle_timeout(duplex, ctx, idle).await
        }
        Engine::Splice => {
            let halves = (
                splice::SpliceHalf::new(Dir::Up),
                splice::SpliceHalf::new(Dir::Down),
            );
            let duplex = Duplex::new(&client, &server, ctx, halves.0, halves.1);
            with_idle_timeout(duplex, ctx, idle).await
        }
        // Its future is `!Send` (tokio-uring sockets), so it has its own entry point.
        Engine::Uring => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "uring connections go through forward_uring",
        )),
    }
}

/// [`forward`] for the uring engine; must run on a tokio-uring runtime, in a local task.
#[cfg(feature = "uring")]
pub async fn forward_uring(
    client: Conn,
    server: Conn,
    ctx: &Ctx<'_>,
    idle: Option<Duration>,
) -> io::Result<Outcome> {
    let (client, server) = (client.into_inner(), server.into_inner());
    with_idle_timeout(uring::forward(client, server, ctx), ctx, idle).await
}
