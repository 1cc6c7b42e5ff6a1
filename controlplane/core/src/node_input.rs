//! The controller's guard on what agents send: registration, heartbeats and pod reports are
//! checked here before anything is stored. Pure; the registry maps an [`InputError`] to
//! gRPC `InvalidArgument`.
//!
//! What is refused and what is repaired:
//!
//! - **refused** (the whole request): a node name that is not DNS-1123; labels beyond
//!   [`crate::model::MAX_LABELS`] or not in Kubernetes' label syntax; an agent address that
//!   is not `host:port` or is longer than [`MAX_ADDRESS_BYTES`]; a capacity of 0 or above
//!   [`MAX_CPU_MILLIS`] / [`MAX_MEMORY_BYTES`]; node metrics that are NaN, infinite or negative,
//!   or memory above [`MAX_MEMORY_BYTES`]; more than [`MAX_PODS_PER_REPORT`] pod reports; a pod
//!   ID longer than [`MAX_POD_ID_BYTES`] (IDs are keys: cutting them could alias two pods);
//!   more than [`MAX_LIST`] containers or addresses in one pod report.
//! - **clamped**: node CPU usage above 100 % becomes 100 %; a pod's CPU percent that is NaN,
//!   infinite or negative becomes 0 (usage figures only feed the autoscaler's averages).
//! - **cut short**: a pod report's reason, message and container strings longer than their
//!   limits keep their first bytes (at a character boundary) and end in `…`.
//!
//! Every error names the field, the value (cut short by [`crate::model::shorten`]) and the limit.

use std::fmt;

use pss_proto::v1 as pb;

use crate::text::truncate;

/// Longest agent address accepted (a DNS name is at most 253 bytes, plus `:port`).
pub const MAX_ADDRESS_BYTES: usize = 255;
/// CPU capacity bound: a million millicores (1000 cores).
pub const MAX_CPU_MILLIS: u64 = 1_000_000;
/// Memory capacity (and usage) bound: 64 TiB.
pub const MAX_MEMORY_BYTES: u64 = 64 << 40;
/// Pod reports in one registration or heartbeat.
pub const MAX_PODS_PER_REPORT: usize = 10_000;
/// Pod ID length (a DNS-1123 subdomain's bound).
pub const MAX_POD_ID_BYTES: usize = 253;
/// Containers, and addresses, in one pod report.
pub const MAX_LIST: usize = 256;
/// A pod report's reason.
pub const MAX_REASON_BYTES: usize = 128;
/// A pod report's message.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Other short strings of a pod report (workload, container name/id/state, address).
pub const MAX_SHORT_BYTES: usize = 255;
/// How much of an offending value an error shows.
pub const SHOWN_VALUE_BYTES: usize = crate::model::ECHO_CHARS;

/// An input refused, naming the field, the value (cut short) and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub field: String,
    /// The offending value, quoted and cut to [`SHOWN_VALUE_BYTES`] characters.
    pub value: String,
    /// The rule it broke.
    pub limit: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} refused: {}", self.field, self.value, self.limit)
    }
}

impl std::error::Error for InputError {}

fn refuse(
    field: impl Into<String>,
    value: impl fmt::Display,
    limit: impl Into<String>,
) -> InputError {
    InputError {
        field: field.into(),
        value: crate::model::shorten(&value.to_string()),
        limit: limit.into(),
    }
}

/// A node name: DNS-1123 label (checked for length first, so a huge name is not echoed).
pub fn check_node_name(field: &str, name: &str) -> Result<(), InputError> {
    if name.len() > 63 {
        return Err(refuse(
            field,
            name,
            "a DNS-1123 label of at most 63 characters",
        ));
    }
    crate::model::validate_dns1123(name).map_err(|e| refuse(field, name, e))
}

/// An agent address: `host:port` (host a DNS name, IPv4 or `[IPv6]`; port 1-65535), at most
/// [`MAX_ADDRESS_BYTES`].
pub fn check_agent_address(address: &str) -> Result<(), InputError> {
    let field = "agent_address";
    if address.len() > MAX_ADDRESS_BYTES {
        return Err(refuse(
            field,
            address,
            format!("at most {MAX_ADDRESS_BYTES} bytes"),
        ));
    }
    let rule = "host:port (a DNS name, IPv4 address or [IPv6] address, and a port 1-65535)";
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(refuse(field, address, rule));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(refuse(field, address, rule))
    }
}

/// A DNS name: dot-separated labels of letters, digits and `-`, neither starting nor ending
/// with `-`, each at most 63 bytes.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Capacities offered at registration: above 0 and at most the bounds.
pub fn check_capacity(cpu_millis: u64, memory_bytes: u64) -> Result<(), InputError> {
    if cpu_millis == 0 || cpu_millis > MAX_CPU_MILLIS {
        return Err(refuse(
            "cpu_millis",
            cpu_millis,
            format!("between 1 and {MAX_CPU_MILLIS} millicores"),
        ));
    }
    if memory_bytes == 0 || memory_bytes > MAX_MEMORY_BYTES {
        return Err(refuse(
            "memory_bytes",
            memory_bytes,
            format!("between 1 and {MAX_MEMORY_BYTES} bytes (64 TiB)"),
        ));
    }
    Ok(())
}

/// A whole registration request (name, address, capacity, pods).
pub fn check_registration(req: &mut pb::RegisterNodeRequest) -> Result<(), InputError> {
    check_node_name("name", &req.name)?;
    check_agent_address(&req.agent_address)?;
    check_capacity(req.cpu_millis, req.memory_bytes)?;
    check_node_labels(&req.labels)?;
    check_pod_reports(&mut req.pods)
}

/// A node's labels: at most [`crate::model::MAX_LABELS`], each key and value as Kubernetes
/// allows.
pub fn check_node_labels(
    labels: &std::collections::HashMap<String, String>,
) -> Result<(), InputError> {
    if labels.len() > crate::model::MAX_LABELS {
        return Err(refuse(
            "labels",
            format!("({} labels)", labels.len()),
            format!("at most {} labels", crate::model::MAX_LABELS),
        ));
    }
    for (key, value) in labels {
        crate::model::check_key(key)
            .and_then(|()| crate::model::check_value(value))
            .map_err(|e| refuse("labels", key, e))?;
    }
    Ok(())
}

/// Node metrics of a heartbeat: finite, non-negative; CPU above 100 % clamped to 100.
pub fn check_metrics(m: &mut pb::NodeMetrics) -> Result<(), InputError> {
    let cpu = m.cpu_usage_percent;
    if !cpu.is_finite() || cpu < 0.0 {
        return Err(refuse(
            "metrics.cpu_usage_percent",
            cpu,
            "a finite percentage, 0 or more (above 100 is clamped to 100)",
        ));
    }
    m.cpu_usage_percent = cpu.min(100.0);
    for (field, v) in [
        ("metrics.memory_used_bytes", m.memory_used_bytes),
        ("metrics.memory_total_bytes", m.memory_total_bytes),
    ] {
        if v > MAX_MEMORY_BYTES {
            return Err(refuse(
                field,
                v,
                format!("at most {MAX_MEMORY_BYTES} bytes (64 TiB)"),
            ));
        }
    }
    truncate(&mut m.runtime_reason, MAX_MESSAGE_BYTES);
    Ok(())
}

/// A whole heartbeat (node name, metrics, pods).
pub fn check_heartbeat(req: &mut pb::HeartbeatRequest) -> Result<(), InputError> {
    check_node_name("node", &req.node)?;
    if let Some(m) = req.metrics.as_mut() {
        check_metrics(m)?;
    }
    check_pod_reports(&mut req.pods)
}

/// A batch of pod reports: at most [`MAX_PODS_PER_REPORT`], each checked by
/// [`check_pod_report`].
pub fn check_pod_reports(pods: &mut [pb::PodReport]) -> Result<(), InputError> {
    if pods.len() > MAX_PODS_PER_REPORT {
        return Err(refuse(
            "pods",
            format!("{} reports", pods.len()),
            format!("at most {MAX_PODS_PER_REPORT} pod reports per request"),
        ));
    }
    pods.iter_mut().try_for_each(check_pod_report)
}

/// One pod report: the ID is refused when empty or too long, list lengths are bounded, every
/// other string is cut short, usage figures are clamped.
pub fn check_pod_report(p: &mut pb::PodReport) -> Result<(), InputError> {
    if p.id.is_empty() || p.id.len() > MAX_POD_ID_BYTES {
        return Err(refuse(
            "pod.id",
            &p.id,
            format!("1 to {MAX_POD_ID_BYTES} bytes"),
        ));
    }
    for (field, len) in [
        ("pod.containers", p.containers.len()),
        ("pod.addresses", p.addresses.len()),
    ] {
        if len > MAX_LIST {
            return Err(refuse(
                field,
                format!("{len} entries"),
                format!(
                    "at most {MAX_LIST} entries in pod {}",
                    crate::model::shorten(&p.id)
                ),
            ));
        }
    }
    truncate(&mut p.workload, MAX_SHORT_BYTES);
    truncate(&mut p.reason, MAX_REASON_BYTES);
    truncate(&mut p.message, MAX_MESSAGE_BYTES);
    for c in &mut p.containers {
        truncate(&mut c.name, MAX_SHORT_BYTES);
        truncate(&mut c.id, MAX_SHORT_BYTES);
        truncate(&mut c.state, MAX_SHORT_BYTES);
    }
    for a in &mut p.addresses {
        truncate(&mut a.address, MAX_SHORT_BYTES);
    }
    if !p.cpu_percent.is_finite() || p.cpu_percent < 0.0 {
        p.cpu_percent = 0.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_must_be_host_port() {
        for ok in [
            "127.0.0.1:50052",
            "node-a.example:1",
            "[::1]:80",
            "localhost:65535",
        ] {
            assert_eq!(check_agent_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "a:b",
            ":80",
            "host:99999",
            "a b:80",
            "::1:80",
            "-x:1",
            "x..y:1",
        ] {
            let e = check_agent_address(bad).unwrap_err();
            assert_eq!(e.field, "agent_address", "{bad}");
            assert!(e.to_string().contains("host:port"), "{e}");
        }
    }

    #[test]
    fn a_huge_value_is_shown_cut_short() {
        let huge = format!("{}:80", "a".repeat(3 << 20));
        let e = check_agent_address(&huge).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("at most 255 bytes"), "{e}");
        assert!(e.contains(&format!("({} bytes)", huge.len())), "{e}");
        let e = check_node_name("name", &"x".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200 && e.contains("63"), "{e}");
    }

    #[test]
    fn capacities_are_bounded() {
        assert!(check_capacity(4000, 4 << 30).is_ok());
        let e = check_capacity(u64::MAX, 1).unwrap_err();
        assert_eq!(e.field, "cpu_millis");
        assert!(e.to_string().contains("18446744073709551615"), "{e}");
        assert_eq!(check_capacity(0, 1).unwrap_err().field, "cpu_millis");
        assert_eq!(check_capacity(1, 0).unwrap_err().field, "memory_bytes");
        assert_eq!(
            check_capacity(1, u64::MAX).unwrap_err().field,
            "memory_bytes"
        );
        assert!(check_capacity(MAX_CPU_MILLIS, MAX_MEMORY_BYTES).is_ok());
    }

    #[test]
    fn metrics_refuse_nan_and_clamp_above_100() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            let mut m = pb::NodeMetrics {
                cpu_usage_percent: bad,
                ..Default::default()
            };
            let e = check_metrics(&mut m).unwrap_err();
            assert_eq!(e.field, "metrics.cpu_usage_percent", "{bad}");
        }
        let mut m = pb::NodeMetrics {
            cpu_usage_percent: 250.0,
            ..Default::default()
        };
        check_metrics(&mut m).unwrap();
        assert_eq!(m.cpu_usage_percent, 100.0);
        let mut m = pb::NodeMetrics {
            memory_used_bytes: u64::MAX,
            ..Default::default()
        };
        assert_eq!(
            check_metrics(&mut m).unwrap_err().field,
            "metrics.memory_used_bytes"
        );
    }

    #[test]
    fn pod_reports_are_bounded() {
        let mut pods = vec![
            pb::PodReport {
                id: "p".into(),
                ..Default::default()
            };
            MAX_PODS_PER_REPORT + 1
        ];
        let e = check_pod_reports(&mut pods).unwrap_err();
        assert!(e.to_string().contains("at most 10000 pod reports"), "{e}");
        let mut p = pb::PodReport {
            id: "w-1".into(),
            reason: "R".repeat(10_000),
            message: "é".repeat(10_000),
            cpu_percent: f64::NAN,
            ..Default::default()
        };
        check_pod_report(&mut p).unwrap();
        assert!(p.reason.len() <= MAX_REASON_BYTES && p.reason.ends_with('…'));
        assert!(p.message.len() <= MAX_MESSAGE_BYTES && p.message.ends_with('…'));
        assert_eq!(p.cpu_percent, 0.0);
        let mut long_id = pb::PodReport {
            id: "x".repeat(300),
            ..Default::default()
        };
        assert_eq!(check_pod_report(&mut long_id).unwrap_err().field, "pod.id");
    }

    proptest! {
        #[test]
        fn cut_short_keeps_a_valid_prefix_within_the_limit(s in "\\PC{0,300}", max in 4usize..200) {
            let mut t = s.clone();
            let cut = truncate(&mut t, max);
            prop_assert!(t.len() <= max.max(s.len().min(max)));
            prop_assert_eq!(cut, s.len() > max);
            if cut {
                prop_assert!(s.starts_with(t.trim_end_matches('…')));
            } else {
                prop_assert_eq!(t, s);
            }
        }

        #[test]
        fn errors_never_echo_more_than_the_shown_bytes(s in "\\PC{0,2000}") {
            if let Err(e) = check_agent_address(&s) {
                prop_assert!(e.value.len() <= SHOWN_VALUE_BYTES * 4 + 40, "{}", e.value);
            }
            if let Err(e) = check_node_name("name", &s) {
                prop_assert!(e.value.len() <= SHOWN_VALUE_BYTES * 4 + 40, "{}", e.value);
            }
        }

        #[test]
        fn accepted_addresses_parse_as_host_and_port(host in "[a-z][a-z0-9-]{0,20}[a-z0-9]", port in 1u16..) {
            let addr = format!("{host}:{port}");
            prop_assert!(check_agent_address(&addr).is_ok());
        }
    }
}
