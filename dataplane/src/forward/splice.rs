//! The `splice` engine: copy small transfers, `splice(2)` bulk ones through a pooled pipe.
//!
//! Each direction starts as [`CopyHalf`]: request/response traffic of a few hundred bytes is
//! cheapest as one `read` + one `write`. After a single read of at least `splice_threshold`
//! bytes (HAProxy uses 4 KiB) the direction takes a pipe from the worker's bounded pool and
//! from then on moves data socket → pipe → socket inside the kernel. An exhausted pool just
//! means the direction keeps copying.
//!
//! Pipe discipline:
//! * fill the pipe from the socket only while it is empty, so an `EAGAIN` from that splice
//!   always means "socket drained", never "pipe full";
//! * drain the pipe into the destination completely before reading again, and before
//!   `shutdown(SHUT_WR)` on EOF;
//! * a pipe goes back to the pool only if it is empty; otherwise it is closed;
//! * a splice read smaller than the threshold sends the direction back to copying once the
//!   pipe is drained, so the mode follows the traffic in both directions.
//!
//! Pipes count in the process's descriptor budget ([`crate::fds`]): a new pipe is refused (the
//! direction copies) before a client would be, a freed pipe is closed rather than pooled under
//! pressure, and pooled pipes unused for a trim period are closed ([`trim_pool`]).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use super::copy::{ignore_not_connected, CopyHalf, Stop};
use super::{Conn, Ctx, Dir, Half};
use crate::fds::{BUDGET, PER_PIPE};
use crate::metrics::Shard;

/// Bytes asked of one socket → pipe splice: the default pipe capacity (16 pages). A 256 KiB
/// pipe (`F_SETPIPE_SZ`) measured no better on loopback iperf3, so pipes keep the default.
pub(crate) const PIPE_SIZE: usize = 64 * 1024;

/// A non-blocking pipe.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        BUDGET.release(PER_PIPE); // the two descriptors close right after
    }
}

impl Pipe {
    /// A new pipe, if the descriptor budget allows one (see [`crate::fds`]).
    fn new() -> io::Result<Pipe> {
        if !BUDGET.take_pipe() {
            return Err(io::Error::other(
                "descriptor budget: no room for a new pipe",
            ));
        }
        Pipe::create().inspect_err(|_| BUDGET.release(PER_PIPE))
    }

    fn create() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }
}

/// `splice(2)` between two descriptors, one of which is a pipe, never blocking.
pub(crate) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from owners
    // that outlive it); null offsets are valid for pipes and sockets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Empty pipes, shared by the workers: one pool, so any worker under descriptor pressure can
/// close all of them (a per-worker pool would keep the other workers' idle pipes open). Taken
/// only when a direction switches to or from splicing, never per read.
struct Pool {
    free: Vec<Pipe>,
    /// Smallest length `free` had since the last trim: that many pipes sat unused all along.
    low_water: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    low_water: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// Pipes of this worker currently leased to connections.
    static IN_USE: Cell<usize> = const { Cell::new(0) };
    /// Upper bound of `IN_USE` (set per worker at start).
    static LIMIT: Cell<usize> = const { Cell::new(4096) };
}

/// Closes the pooled pipes that were not needed since the last call (the pool's low-water
/// mark), so a burst's pipes do not stay open for good. Called about once a second (by one
/// worker). Returns how many were closed.
pub fn trim_pool() -> usize {
    let mut p = pool();
    let idle = p.low_water.min(p.free.len());
    let keep = p.free.len() - idle;
    p.free.truncate(keep);
    p.low_water = keep;
    idle
}

/// Closes every pooled pipe (descriptor pressure: a connection needs them more).
pub fn drop_pool() {
    let mut p = pool();
    p.free.clear();
    p.low_water = 0;
}

/// Pipes pooled now.
pub fn pooled() -> usize {
    pool().free.len()
}

/// Sets this worker's pipe bound (called once when a worker starts).
pub fn set_pipe_limit(n: usize) {
    LIMIT.with(|l| l.set(n));
}

/// A pipe for the event loop's splice path (which keeps its own per-direction state): from
/// the shared pool or new, within this worker's bound and the descriptor budget. Pair with
/// [`put_pipe`].
pub(crate) fn take_pipe() -> Option<Pipe> {
    if IN_USE.with(|c| c.get()) >= LIMIT.with(|l| l.get()) {
        return None;
    }
    let pooled = {
        let mut p = pool();
        let pipe = p.free.pop();
        p.low_water = p.low_water.min(p.free.len());
        pipe
    };
    let pipe = match pooled {
        Some(p) => p,
        None => Pipe::new().ok()?,
    };
    IN_USE.with(|c| c.set(c.get() + 1));
    Some(pipe)
}

/// Gives back a pipe from [`take_pipe`]; `held` bytes still in it mean it is closed instead.
pub(crate) fn put_pipe(pipe: Pipe, held: usize) {
    IN_USE.with(|c| c.set(c.get() - 1));
    if held == 0 && !BUDGET.pressure() {
        let limit = LIMIT.with(|l| l.get());
        let mut pool = pool();
        if pool.free.len() < limit {
            pool.free.push(pipe);
        }
    }
}

/// Pipes this worker has leased out.
pub fn pipes_in_use() -> usize {
    IN_USE.with(|c| c.get())
}

/// A pipe on loan from the pool, with the number of bytes it holds.
struct Lease<'a> {
    pipe: Option<Pipe>,
    /// Bytes spliced in and not yet out.
    held: usize,
    shard: &'a Shard,
}

impl<'a> Lease<'a> {
    fn take(shard: &'a Shard) -> Option<Lease<'a>> {
        if IN_USE.with(|c| c.get()) >= LIMIT.with(|l| l.get()) {
            return None;
        }
        let pooled = {
            let mut p = pool();
            let pipe = p.free.pop();
            p.low_water = p.low_water.min(p.free.len());
            pipe
        };
        let pipe = match pooled {
            Some(p) => p,
            None => match Pipe::new() {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "pipe2 failed; copying instead");
                    return None;
                }
            },
        };
        IN_USE.with(|c| c.set(c.get() + 1));
        shard.pipe_taken();
        Some(Lease {
            pipe: Some(pipe),
            held: 0,
            shard,
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        IN_USE.with(|c| c.set(c.get() - 1));
        self.shard.pipe_returned();
        if let Some(p) = self.pipe.take() {
            // Under descriptor pressure a free pipe is closed rather than pooled.
            if self.held == 0 && !BUDGET.pressure() {
                let limit = LIMIT.with(|l| l.get());
                let mut pool = pool();
                if pool.free.len() < limit {
                    pool.free.push(p);
                }
            } // else: bytes stuck in it belong to a dead connection; closing frees them.
        }
    }
}

/// One direction of the splice engine.
pub struct SpliceHalf<'a> {
    copy: CopyHalf,
    lease: Option<Lease<'a>>,
    /// The pool was empty when this direction wanted a pipe: keep copying.
    copy_only: bool,
    /// The last splice read was small: once the pipe is drained, go back to copying (a
    /// request/response flow after one big transfer should not pay splice's extra calls).
    back_to_copy: bool,
    dir: Dir,
    eof: bool,
}

impl SpliceHalf<'_> {
    pub fn new(dir: Dir) -> Self {
        SpliceHalf {
            copy: CopyHalf::new(dir),
            lease: None,
            copy_only: false,
            back_to_copy: false,
            dir,
            eof: false,
        }
    }
}

impl<'a> Half<'a> for SpliceHalf<'a> {
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        src: &Conn,
        dst: &Conn,
        ctx: &'a Ctx<'a>,
        last: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            let Some(lease) = &mut self.lease else {
                let big = if self.copy_only {
                    usize::MAX
                } else {
                    ctx.splice_threshold
                };
                match ready!(self.copy.poll_copy(cx, src, dst, ctx, big, last))? {
                    Stop::Eof => return Poll::Ready(Ok(())),
                    Stop::Big => match Lease::take(ctx.shard) {
                        Some(l) => self.lease = Some(l),
                        None => self.copy_only = true,
                    },
                }
                continue;
            };
            let pipe = lease
                .pipe
                .as_ref()
                .expect("a lease holds its pipe until dropped");
            // Drain the pipe into the destination first.
            while lease.held > 0 {
                let mut guard = ready!(dst.poll_write_ready(cx))?;
                match guard.try_io(|s| splice(pipe.read.as_raw_fd(), s.as_raw_fd(), lease.held)) {
                    Ok(Ok(n)) => {
                        lease.held -= n;
                        ctx.moved(self.dir, n);
                    }
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => {} // send buffer full: readiness cleared, wait
                }
            }
            if self.back_to_copy && !self.eof {
                self.back_to_copy = false;
                self.lease = None; // empty: back to the pool
                continue;
            }
            if self.eof {
                if !last {
                    dst.get_ref()
                        .shutdown(Shutdown::Write)
                        .or_else(ignore_not_connected)?;
                }
                return Poll::Ready(Ok(()));
            }
            // The pipe is empty: EAGAIN here can only mean the socket has nothing to give.
            let mut guard = ready!(src.poll_read_ready(cx))?;
            match guard.try_io(|s| splice(s.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE)) {
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(n)) => {
                    lease.held = n;
                    self.back_to_copy = n < ctx.splice_threshold;
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (adversarial test, issue 10): after a 1,000-connection soak the pool kept
    /// every pipe (2,348 descriptors) for good. Now pipes idle for a whole trim period close.
    #[test]
    fn idle_pooled_pipes_are_closed_by_the_next_trims() {
        let shard = Shard::default();
        drop_pool();
        let leases: Vec<_> = (0..10).map(|_| Lease::take(&shard).unwrap()).collect();
        drop(leases); // all back in the pool
        assert_eq!(pooled(), 10);
        trim_pool(); // starts a period: the pool was empty at its low point
        assert_eq!(pooled(), 10);
        // During this period three pipes are used at once, the others sit idle.
        let busy: Vec<_> = (0..3).map(|_| Lease::take(&shard).unwrap()).collect();
        drop(busy);
        assert_eq!(trim_pool(), 7, "the seven never needed are closed");
        assert_eq!(pooled(), 3);
        assert_eq!(trim_pool(), 3, "a period without use empties the pool");
        assert_eq!(pooled(), 0);
    }
}
