//! The `copy` engine: readiness-driven userspace copy.
//!
//! A direction waits for its source to be readable *without* holding a buffer, then borrows one
//! from the worker's pool, reads, writes as much as the destination takes, and returns the
//! buffer as soon as it is fully written. A buffer stays with a connection only while its
//! destination is full, so memory follows the bytes in flight, not the connection count.
//!
//! A read shorter than the buffer means the socket's receive queue is empty (TCP `recv` drains
//! the queue up to the length asked), so readiness is cleared without a wasted `EAGAIN` read;
//! a short write likewise means the send buffer is full. New data raises a new edge either way.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use super::{Conn, Ctx, Dir, Half};

/// Default size of a pooled buffer.
pub const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per worker beyond those in use.
const POOL_MAX: usize = 64;

thread_local! {
    /// This worker's free buffers.
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    /// Size of this worker's buffers (`buffer_size`, set when the worker starts).
    static LEN: Cell<usize> = const { Cell::new(BUF_SIZE) };
}

/// Sets this worker's buffer size (called once when a worker starts).
pub fn set_buffer_size(n: usize) {
    LEN.with(|l| l.set(n));
    POOL.with(|p| p.borrow_mut().clear());
}

pub(crate) fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; LEN.with(|l| l.get())].into_boxed_slice())
}

pub(crate) fn put_buf(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX && buf.len() == LEN.with(|l| l.get()) {
            p.push(buf);
        }
    });
}

/// What a copy step stopped for, besides `Pending`.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Source EOF propagated: the direction is finished.
    Eof,
    /// A read of at least the requested size was fully written and no buffer is held: the
    /// caller may switch this direction to splicing.
    Big,
}

/// One direction of the copy engine.
#[derive(Debug)]
pub struct CopyHalf {
    dir: Dir,
    /// Borrowed from the pool only while `pos < len`.
    buf: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    /// Source reached EOF; propagate once the buffer is written.
    eof: bool,
}

impl CopyHalf {
    pub fn new(dir: Dir) -> Self {
        CopyHalf {
            dir,
            buf: None,
            pos: 0,
            len: 0,
            eof: false,
        }
    }

    /// Copies until the source or destination would block (`Pending`), the source's EOF has
    /// been propagated ([`Stop::Eof`]), or a read of at least `big` bytes has been flushed
    /// ([`Stop::Big`]).
    pub fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        src: &Conn,
        dst: &Conn,
        ctx: &Ctx<'_>,
        big: usize,
        last: bool,
    ) -> Poll<io::Result<Stop>> {
        loop {
            if let Some(buf) = &self.buf {
                while self.pos < self.len {
                    let mut guard = ready!(dst.poll_write_ready(cx))?;
                    match guard.try_io(|s| (&mut s.get_ref()).write(&buf[self.pos..self.len])) {
                        Ok(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(Ok(n)) => {
                            self.pos += n;
                            ctx.moved(self.dir, n);
                            if self.pos < self.len {
                                guard.clear_ready(); // short write: send buffer full
                            }
                        }
                        Ok(Err(e)) => return Poll::Ready(Err(e)),
                        Err(_would_block) => {}
                    }
                }
                let was_big = self.len >= big;
                put_buf(self.buf.take().expect("checked above"));
                if was_big {
                    return Poll::Ready(Ok(Stop::Big));
                }
            }
            if self.eof {
                if !last {
                    dst.get_ref()
                        .shutdown(Shutdown::Write)
                        .or_else(ignore_not_connected)?;
                }
                return Poll::Ready(Ok(Stop::Eof));
            }
            let mut guard = ready!(src.poll_read_ready(cx))?;
            let mut buf = take_buf();
            match guard.try_io(|s| (&mut s.get_ref()).read(&mut buf)) {
                Ok(Ok(0)) => {
                    put_buf(buf);
                    self.eof = true;
                }
                Ok(Ok(n)) => {
                    if n < buf.len() {
                        guard.clear_ready();
                    }
                    self.buf = Some(buf);
                    self.pos = 0;
                    self.len = n;
                }
                Ok(Err(e)) => {
                    put_buf(buf);
                    return Poll::Ready(Err(e));
                }
                Err(_would_block) => put_buf(buf),
            }
        }
    }
}

/// `shutdown(SHUT_WR)` on a socket the peer already closed is not a forwarding failure.
pub(crate) fn ignore_not_connected(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotConnected {
        Ok(())
    } else {
        Err(e)
    }
}

impl<'a> Half<'a> for CopyHalf {
    fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        src: &Conn,
        dst: &Conn,
        ctx: &'a Ctx<'a>,
        last: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if ready!(self.poll_copy(cx, src, dst, ctx, usize::MAX, last))? == Stop::Eof {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl Drop for CopyHalf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            put_buf(buf);
        }
    }
}
