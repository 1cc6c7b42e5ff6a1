//! Controller address lists, for every client of the control plane (agents, proxies, pssctl):
//! `--controller a:50051,b:50051` names several controllers that share one cluster state, and a
//! client moves to the next one when the one it uses stops answering.
//!
//! - [`parse_list`] / [`check_list`]: the list as users write it, bounded ([`MAX_CONTROLLERS`]
//!   addresses of at most [`MAX_ADDRESS_LEN`] bytes) and checked (no empty item, no duplicate,
//!   each `host:port`, `:port` or an `http(s)://` URI); errors say what is wrong with which
//!   item, and the caller names the flag.
//! - [`Rotation`]: which address a client uses now; a failure moves it to the next one (round
//!   robin), once per failure however many callers saw it, with one log line per switch.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Most controller addresses a list may hold (a control plane has a handful).
pub const MAX_CONTROLLERS: usize = 16;
/// Longest address accepted (a DNS name is at most 253 bytes; a URI adds a scheme).
pub const MAX_ADDRESS_LEN: usize = 300;
/// Longest list text accepted: every address at its longest, and the commas.
pub const MAX_LIST_LEN: usize = MAX_CONTROLLERS * (MAX_ADDRESS_LEN + 1);

/// `text` cut short for an error message (never echo a huge value whole).
fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &text[..end], text.len())
}

/// Splits a comma-separated list (`a:1,b:2`; spaces around items are ignored) and checks it
/// with [`check_list`].
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    if text.len() > MAX_LIST_LEN {
        return Err(format!(
            "{} bytes, above the limit of {MAX_LIST_LEN} ({MAX_CONTROLLERS} addresses of at most {MAX_ADDRESS_LEN} bytes)",
            text.len()
        ));
    }
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_string()).collect();
    check_list(&items)?;
    Ok(items)
}

/// Checks a list of addresses: 1 to [`MAX_CONTROLLERS`] of them, none empty, none twice
/// (`:50051` and `127.0.0.1:50051` are the same), each a valid address ([`check_address`]).
pub fn check_list(items: &[String]) -> Result<(), String> {
    if items.is_empty() {
        return Err("no controller address".into());
    }
    if items.len() > MAX_CONTROLLERS {
        return Err(format!(
            "{} addresses, above the limit of {MAX_CONTROLLERS}",
            items.len()
        ));
    }
    let mut seen: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "address {} of {} is empty (a stray comma?)",
                i + 1,
                items.len()
            ));
        }
        check_address(item)?;
        let key = crate::addr::dial_uri(item).to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("{} is given twice", shown(item)));
        }
        seen.push(key);
    }
    Ok(())
}

/// Checks one address: `host:port`, `[v6]:port`, `:port` (this machine), or an `http://` /
/// `https://` URI (port optional, nothing after the authority but `/`). Nothing is resolved
/// here: a name that does not resolve yet is a connection failure later, not a usage error.
pub fn check_address(addr: &str) -> Result<(), String> {
    if addr.len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "{}: longer than {MAX_ADDRESS_LEN} bytes",
            shown(addr)
        ));
    }
    let bad = |why: &str| {
        Err(format!(
            "{}: {why} (expected host:port, e.g. ctl-1:50051 or 10.0.0.5:50051)",
            shown(addr)
        ))
    };
    let (uri, rest) = match addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
    {
        Some(rest) => (true, rest.strip_suffix('/').unwrap_or(rest)),
        None => (false, addr),
    };
    if rest.contains(|c: char| c == '/' || c == '@' || c.is_whitespace() || c.is_control()) {
        return bad("not a plain address");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((ip, after)) = v6.split_once(']') else {
            return bad("unclosed [");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("not an IPv6 address in brackets");
        }
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => return bad("unexpected text after ]"),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(rest), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() && uri {
            return bad("no host");
        }
        if host.contains(':') {
            return bad("an IPv6 address needs brackets: [::1]:50051");
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return bad("not a host name or IP address");
        }
    }
    match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(()),
            _ => bad("bad port"),
        },
        None if uri => Ok(()),
        None => bad("no port"),
    }
}

/// A client's position in its controller list: the address it uses now, and the move to the
/// next one when that fails. Shared by every task of a client (one agent's heartbeats and status
/// pushes move together), so a dead controller costs each of them at most one failed call.
#[derive(Debug)]
pub struct Rotation {
    addresses: Vec<String>,
    current: AtomicUsize,
}

impl Rotation {
    /// Starts at the first address. `addresses` must not be empty (see [`check_list`]).
    pub fn new(addresses: Vec<String>) -> Self {
        assert!(!addresses.is_empty(), "a rotation needs an address");
        Rotation {
            addresses,
            current: AtomicUsize::new(0),
        }
    }

    /// Every address, in order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The index and address in use.
    pub fn current(&self) -> (usize, &str) {
        let i = self.current.load(Ordering::Relaxed) % self.addresses.len();
        (i, &self.addresses[i])
    }

    /// The call to address `index` failed because of `reason`: moves to the next address
    /// (round robin) unless another caller has moved already, and logs the switch. Returns the
    /// index now in use. With a single address nothing moves and nothing is logged.
    pub fn failed(&self, index: usize, reason: &str) -> usize {
        let n = self.addresses.len();
        let next = (index + 1) % n;
        if n == 1 {
            return index;
        }
        match self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                tracing::warn!(
                    "switched controller from {} to {}: {reason}",
                    self.addresses[index],
                    self.addresses[next]
                );
                next
            }
            Err(now) => now % n,
        }
    }

    /// The call to address `index` worked: it becomes the one in use (e.g. a join that
    /// reached the third address).
    pub fn succeeded(&self, index: usize) {
        self.current
            .store(index % self.addresses.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_one_address_stays_one() {
        assert_eq!(parse_list("127.0.0.1:50051").unwrap(), ["127.0.0.1:50051"]);
        assert_eq!(
            parse_list(" a:1 , b.example:2,[::1]:3,:4,https://c:5/,http://d").unwrap(),
            [
                "a:1",
                "b.example:2",
                "[::1]:3",
                ":4",
                "https://c:5/",
                "http://d"
            ]
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        let e = |t: &str| parse_list(t).unwrap_err();
        assert!(e("").contains("empty"), "{}", e(""));
        assert!(e("a:1,,b:2").contains("address 2 of 3 is empty"));
        assert!(e("a:1,").contains("empty"));
        assert!(e("a:1,a:1").contains("twice"));
        assert!(e(":5,127.0.0.1:5").contains("twice"), "same address");
        assert!(e("A:1,a:1").contains("twice"), "host names ignore case");
        let many: Vec<String> = (1..=17).map(|i| format!("h{i}:1")).collect();
        assert!(e(&many.join(",")).contains("17 addresses"));
        let sixteen: Vec<String> = (1..=16).map(|i| format!("h{i}:1")).collect();
        assert_eq!(parse_list(&sixteen.join(",")).unwrap().len(), 16);
        assert!(e("nonsense").contains("no port"));
        assert!(e("a:0").contains("bad port"));
        assert!(e("a:99999").contains("bad port"));
        assert!(e("a:x").contains("bad port"));
        assert!(e("::1:5").contains("brackets"));
        assert!(e("[::1:5").contains("unclosed"));
        assert!(e("a b:1").contains("not a plain address"));
        assert!(e("user@a:1").contains("not a plain address"));
        assert!(e("http://a:1/path").contains("not a plain address"));
        assert!(e("http://:1").contains("no host"));
        assert!(e("a$:1").contains("not a host name"));
        let long = format!("{}:1", "h".repeat(400));
        let msg = e(&long);
        assert!(msg.contains("longer than") && msg.len() < 200, "{msg}");
        let huge = "a:1,".repeat(100_000);
        let msg = e(&huge);
        assert!(
            msg.contains("bytes, above the limit") && msg.len() < 200,
            "{msg}"
        );
    }

    #[test]
    fn rotation_moves_once_per_failure_and_wraps_around() {
        let r = Rotation::new(vec!["a:1".into(), "b:2".into(), "c:3".into()]);
        assert_eq!(r.current(), (0, "a:1"));
        assert_eq!(r.failed(0, "refused"), 1);
        // A second caller that saw the same address fail does not skip b.
        assert_eq!(r.failed(0, "refused"), 1);
        assert_eq!(r.current(), (1, "b:2"));
        assert_eq!(r.failed(1, "timeout"), 2);
        assert_eq!(r.failed(2, "timeout"), 0, "round robin");
        r.succeeded(2);
        assert_eq!(r.current(), (2, "c:3"));
        let one = Rotation::new(vec!["a:1".into()]);
        assert_eq!(one.failed(0, "refused"), 0);
        assert_eq!(one.current(), (0, "a:1"));
    }
}
