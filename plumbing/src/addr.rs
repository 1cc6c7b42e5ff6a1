//! Addresses and listeners: listen addresses as users write them (`:50051` for all
//! interfaces, `127.0.0.1:0`, `[::1]:80`, `localhost:50051`), the URI a client dials, and the
//! accepted-connection stream every gRPC server of the control plane serves on.

use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves a listen address; `:PORT` means every IPv4 interface.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            format!("invalid listen address {s:?}: bad port {port:?} (examples: :50051, 127.0.0.1:50051)")
        })?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    resolve(s)
        .map_err(|e| format!("invalid listen address {e} (examples: :50051, 127.0.0.1:50051)"))
}

/// Parses `ip:port`, or resolves `host:port` to its first address.
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?}: not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| format!("{s:?}: resolves to no address"))
}

/// The URI a gRPC client dials for an address given as `host:port`, `:PORT` (this machine) or
/// a full `http://`/`https://` URI.
pub fn dial_uri(addr: &str) -> String {
    let addr = addr.trim();
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else if let Some(port) = addr.strip_prefix(':') {
        format!("http://127.0.0.1:{port}")
    } else {
        format!("http://{addr}")
    }
}

/// The connections accepted on `listener`, with `TCP_NODELAY` set: gRPC exchanges small
/// frames, and with Nagle + delayed ACK each would wait ~40 ms.
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_port_means_all_interfaces() {
        assert_eq!(
            parse_listen(":50051").unwrap(),
            "0.0.0.0:50051".parse().unwrap()
        );
        assert_eq!(
            parse_listen(" 127.0.0.1:0 ").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_listen("nonsense").unwrap_err().contains("nonsense"));
        let e = parse_listen(":x").unwrap_err();
        assert!(e.contains("bad port \"x\""), "{e}");
        assert!(parse_listen(":70000").is_err());
    }

    #[test]
    fn dial_uri_adds_a_scheme() {
        assert_eq!(dial_uri("localhost:50051"), "http://localhost:50051");
        assert_eq!(dial_uri(":50051"), "http://127.0.0.1:50051");
        assert_eq!(dial_uri("https://c:1"), "https://c:1");
    }
}
