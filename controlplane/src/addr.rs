//! Addresses and listeners: listen addresses as users write them (`:50051` for all
//! interfaces, `127.0.0.1:0`, `[::1]:80`, `localhost:50051`), the URI a client dials, and the
//! accepted-connection stream every gRPC server of the control plane serves on.

use std::net::SocketAddr;

/// Resolves a listen address; `:PORT` means every IPv4 interface.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        s.to_string()
    };
    if let Ok(a) = full.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("invalid listen address {s:?} (examples: :50051, 127.0.0.1:50051)"))
}

/// The URI tonic dials for a controller address given as `host:port` or a full URI.
pub fn dial_uri(addr: &str) -> String {
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
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_listen("nonsense").unwrap_err().contains("nonsense"));
    }

    #[test]
    fn dial_uri_adds_a_scheme() {
        assert_eq!(dial_uri("localhost:50051"), "http://localhost:50051");
        assert_eq!(dial_uri(":50051"), "http://127.0.0.1:50051");
        assert_eq!(dial_uri("https://c:1"), "https://c:1");
    }
}
