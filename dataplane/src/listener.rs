//! Sockets, tuned with socket2: one listening socket per worker (`SO_REUSEPORT`) or one shared
//! one, and non-blocking backend connects with the same options.
//!
//! Options are set on the listening socket once; Linux copies them (`TCP_NODELAY`,
//! `SO_KEEPALIVE` and its idle time, buffer sizes) to every accepted socket, so accepting costs
//! no extra `setsockopt` calls. A test below pins that inheritance.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::unix::AsyncFd;

use crate::config::ListenerTuning;

/// Applies the per-connection options (nodelay, keepalive, buffer sizes) to a socket.
pub fn tune(sock: SockRef<'_>, t: &ListenerTuning) -> io::Result<()> {
    if t.nodelay {
        sock.set_tcp_nodelay(true)?;
    }
    if let Some(idle) = t.keepalive {
        sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if let Some(n) = t.send_buffer {
        sock.set_send_buffer_size(n)?;
    }
    if let Some(n) = t.recv_buffer {
        sock.set_recv_buffer_size(n)?;
    }
    Ok(())
}

fn bind_one(addr: SocketAddr, t: &ListenerTuning) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if t.reuseport {
        sock.set_reuse_port(true)?;
    }
    tune(SockRef::from(&sock), t)?;
    if t.defer_accept {
        set_defer_accept(&sock, 1)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(t.backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}

/// Binds the listening socket(s) of one service: one per worker with `SO_REUSEPORT` (all on
/// the port the first one got, so port 0 works), otherwise one socket shared by every worker.
/// Every returned socket is non-blocking.
pub fn bind(addr: SocketAddr, t: &ListenerTuning, workers: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr, t)?;
    let bound = first.local_addr()?;
    let mut all = Vec::with_capacity(workers);
    all.push(first);
    for _ in 1..workers {
        let next = if t.reuseport {
            bind_one(bound, t)?
        } else {
            all[0].try_clone()?
        };
        all.push(next);
    }
    Ok(all)
}

/// Registers a connected socket with the current runtime's reactor (read and write interest).
///
/// `AsyncFd::new` is deprecated (unsound for lack of I/O safety: an arbitrary `T: AsRawFd`
/// may close or swap its descriptor while registered); `AsyncFd::register` states that
/// contract as `unsafe`, and we uphold it here.
#[allow(unsafe_code)]
pub fn register(stream: TcpStream) -> io::Result<AsyncFd<TcpStream>> {
    // SAFETY: a `TcpStream` owns its descriptor (an `OwnedFd` inside) from creation to drop
    // and always reports that one; nothing in this crate replaces the value inside an
    // `AsyncFd` (no writes through `get_mut`), so the descriptor stays open and the same
    // until the `AsyncFd` is dropped or `into_inner` is called.
    unsafe { AsyncFd::register(stream) }.map_err(io::Error::from)
}

/// Registers a listening socket for read readiness (see [`register`] on soundness).
#[allow(unsafe_code)]
pub fn register_listener(
    listener: mio::net::TcpListener,
) -> io::Result<AsyncFd<mio::net::TcpListener>> {
    // SAFETY: as in `register`: a mio `TcpListener` owns its descriptor for its whole life
    // and the registered value is never replaced.
    unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// `TCP_DEFER_ACCEPT` on a listening socket: the kernel completes the handshake but queues
/// the connection for `accept` only once data arrived, so the proxy wakes once per connection
/// instead of twice. A client that stays silent past `secs` is still accepted, at the
/// kernel's next SYN-ACK retransmission (a second or more later): server-first protocols are
/// slowed, never lost — keep the option off for them.
#[allow(unsafe_code)]
fn set_defer_accept(sock: &Socket, secs: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open (borrowed from `sock` for the call); the option value is
    // a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts a non-blocking connect with the service's socket options; the socket becomes
/// writable when the handshake is over, one way or the other.
pub fn start_connect(addr: SocketAddr, t: &ListenerTuning) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    tune(SockRef::from(&sock), t)?;
    if t.smart_connect {
        sock.set_tcp_quickack(false)?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from(sock))
}

/// Connects to a backend without blocking, with the service's socket options, and registers
/// the socket with the current runtime.
pub async fn connect(addr: SocketAddr, t: &ListenerTuning) -> io::Result<AsyncFd<TcpStream>> {
    let fd = register(start_connect(addr, t)?)?;
    // Writable means the handshake finished, one way or the other. A failed one also reports
    // HUP/ERR (seen as write-closed); only then is SO_ERROR worth a system call.
    let ready = fd.writable().await?;
    if ready.ready().is_write_closed() || ready.ready().is_error() {
        drop(ready);
        if let Some(e) = fd.get_ref().take_error()? {
            return Err(e);
        }
        return Err(io::ErrorKind::ConnectionRefused.into());
    }
    drop(ready);
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression guard for the "no setsockopt per accept" optimisation.
    #[test]
    fn accepted_sockets_inherit_listener_options() {
        let t = ListenerTuning {
            nodelay: true,
            keepalive: Some(std::time::Duration::from_secs(77)),
            ..ListenerTuning::default()
        };
        let ls = bind("127.0.0.1:0".parse().unwrap(), &t, 1).unwrap();
        ls[0].set_nonblocking(false).unwrap();
        let _c = TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        let (s, _) = ls[0].accept().unwrap();
        let r = SockRef::from(&s);
        assert!(r.tcp_nodelay().unwrap());
        assert!(r.keepalive().unwrap());
        assert_eq!(r.tcp_keepalive_time().unwrap().as_secs(), 77);
    }

    #[test]
    fn reuseport_listeners_share_the_port_of_the_first() {
        let ls = bind(
            "127.0.0.1:0".parse().unwrap(),
            &ListenerTuning::default(),
            3,
        )
        .unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }

    #[tokio::test]
    async fn connect_reports_refusal() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = connect(addr, &ListenerTuning::default()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
