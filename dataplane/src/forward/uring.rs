//! The `uring` engine (cargo feature `uring`): io_uring reads and writes through tokio-uring.
//!
//! tokio-uring needs its own runtime, so when any service uses this engine every worker thread
//! runs a `tokio_uring::Runtime` (a current-thread tokio runtime with the ring attached) instead
//! of a plain one; accepting and connecting still go through the epoll reactor inside it, and
//! the sockets are handed to the ring for the byte moving. Each direction owns one buffer from
//! the worker's pool for the life of the connection (io_uring needs owned buffers in flight).
//! [`probe`] tells at start whether the kernel lets us create a ring at all.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, TcpStream};

use tokio_uring::buf::BoundedBuf;

use super::{Ctx, Dir};

const BUF_SIZE: usize = 64 * 1024;
const POOL_MAX: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
}

fn put_buf(mut buf: Vec<u8>) {
    buf.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// Creates (and drops) a ring to learn whether io_uring is usable here (it can be compiled out
/// of the kernel, disabled by `kernel.io_uring_disabled`, or filtered by a seccomp sandbox).
pub fn probe() -> io::Result<()> {
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
    rt.block_on(async {
        // A real submission, not just ring setup: a no-op completes only if the ring works.
        tokio_uring::no_op().await
    })
}

/// Forwards both ways until both directions end or one fails. Must run inside a tokio-uring
/// runtime.
pub async fn forward(client: TcpStream, server: TcpStream, ctx: &Ctx<'_>) -> io::Result<()> {
    // io_uring completes an operation on an O_NONBLOCK descriptor with EAGAIN instead of
    // waiting for readiness; tokio-uring's own sockets are blocking ones (the ring never blocks
    // the thread either way). Ours come from the epoll side non-blocking: without this a read
    // that found no data yet ended the connection, losing the tail of a transfer.
    client.set_nonblocking(false)?;
    server.set_nonblocking(false)?;
    let client = tokio_uring::net::TcpStream::from_std(client);
    let server = tokio_uring::net::TcpStream::from_std(server);
    let _close = CloseOnDrop([&client, &server]);
    let up = one_way(&client, &server, ctx, Dir::Up);
    let down = one_way(&server, &client, ctx, Dir::Down);
    futures::try_join!(up, down)?;
    Ok(())
}

/// A tokio-uring socket closes only when its in-flight operations complete, and a pending
/// read on a silent peer never does: when this future is dropped (idle timeout, the other
/// direction failed, shutdown) shut both sockets down so those reads finish and the
/// descriptors really close.
struct CloseOnDrop<'a>([&'a tokio_uring::net::TcpStream; 2]);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        for s in self.0 {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

async fn one_way(
    src: &tokio_uring::net::TcpStream,
    dst: &tokio_uring::net::TcpStream,
    ctx: &Ctx<'_>,
    dir: Dir,
) -> io::Result<()> {
    let mut buf = take_buf();
    let result = loop {
        let (r, b) = src.read(buf).await;
        buf = b;
        let n = match r {
            Ok(0) => {
                break dst
                    .shutdown(Shutdown::Write)
                    .or_else(super::copy::ignore_not_connected)
            }
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let (r, slice) = dst.write_all(buf.slice(..n)).await;
        buf = slice.into_inner();
        if let Err(e) = r {
            break Err(e);
        }
        ctx.moved(dir, n);
    };
    put_buf(buf);
    result
}
