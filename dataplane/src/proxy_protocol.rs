//! PROXY protocol headers (v1 text, v2 binary) that tell a backend the client's address, as
//! HAProxy's `send-proxy` / `send-proxy-v2` do. Pure encoding; the proxy writes the header to
//! the backend socket right after connecting, before any client byte.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::ProxyProtocol;

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Both addresses in one family: IPv4 only if both are IPv4, otherwise IPv6 (v4-mapped).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (IpAddr, IpAddr) {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The header for a connection from `src` (the client) to `dst` (the proxy's listening
/// address the client reached).
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    match version {
        ProxyProtocol::V1 => v1(src, dst),
        ProxyProtocol::V2 => v2(src, dst),
    }
}

fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(src, dst);
    let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {proto} {s} {d} {} {}\r\n", src.port(), dst.port()).into_bytes()
}

fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + 36);
    h.extend_from_slice(&V2_SIGNATURE);
    h.push(0x21); // version 2, command PROXY
    match same_family(src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&to_v6(s).octets());
            h.extend_from_slice(&to_v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_ipv4_matches_the_spec_example() {
        assert_eq!(
            header(
                ProxyProtocol::V1,
                a("192.168.0.1:56324"),
                a("192.168.0.11:443")
            ),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
    }

    #[test]
    fn v1_mixed_families_use_tcp6() {
        let h = header(ProxyProtocol::V1, a("10.0.0.1:1"), a("[::1]:2"));
        assert_eq!(h, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n");
    }

    #[test]
    fn v2_ipv4_layout() {
        let h = header(ProxyProtocol::V2, a("1.2.3.4:258"), a("5.6.7.8:772"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4]);
        assert_eq!(h, want);
    }

    proptest! {
        /// A v2 header always carries the length it announces, and the addresses decode back.
        #[test]
        fn v2_decodes_back(src in any::<SocketAddr>(), dst in any::<SocketAddr>()) {
            let h = header(ProxyProtocol::V2, src, dst);
            prop_assert_eq!(&h[..12], &V2_SIGNATURE[..]);
            let len = u16::from_be_bytes([h[14], h[15]]) as usize;
            prop_assert_eq!(h.len(), 16 + len);
            let (s, d) = same_family(src, dst);
            let body = &h[16..];
            let (sb, db, ports) = if h[13] == 0x11 {
                (&body[0..4], &body[4..8], &body[8..12])
            } else {
                prop_assert_eq!(h[13], 0x21);
                (&body[0..16], &body[16..32], &body[32..36])
            };
            let ip = |b: &[u8]| -> IpAddr {
                if b.len() == 4 { <[u8; 4]>::try_from(b).unwrap().into() }
                else { <[u8; 16]>::try_from(b).unwrap().into() }
            };
            prop_assert_eq!(ip(sb), s);
            prop_assert_eq!(ip(db), d);
            prop_assert_eq!(u16::from_be_bytes([ports[0], ports[1]]), src.port());
            prop_assert_eq!(u16::from_be_bytes([ports[2], ports[3]]), dst.port());
        }

        /// A v1 header is one line of at most 107 bytes, as the spec bounds it.
        #[test]
        fn v1_fits_the_spec_bound(src in any::<SocketAddr>(), dst in any::<SocketAddr>()) {
            let h = header(ProxyProtocol::V1, src, dst);
            prop_assert!(h.len() <= 107);
            prop_assert!(h.ends_with(b"\r\n"));
            prop_assert_eq!(h.iter().filter(|&&c| c == b'\n').count(), 1);
        }
    }
}
