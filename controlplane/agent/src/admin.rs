//! What `pss-agent --admin ADDR` serves: Prometheus `/metrics` (Podman call latency and errors
//! by operation, pods by state), `/healthz`, and `/readyz` (registered, the controller answers,
//! and Podman answers in time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use pss_plumbing::admin::Admin;
use pss_plumbing::prom::{render_gauge, CounterVec, HistogramVec};
use pss_proto::v1::PodPhase;

use crate::snapshot::{NodeSnapshot, RuntimeHealth};

/// Podman REST calls, by operation.
static PODMAN_SECONDS: HistogramVec = HistogramVec::new(
    "pss_agent_podman_request_seconds",
    "Duration of Podman REST calls, by operation.",
    &["op"],
);

/// Podman REST calls that failed (unreachable, timed out), by operation.
static PODMAN_ERRORS: CounterVec = CounterVec::new(
    "pss_agent_podman_errors_total",
    "Podman REST calls that did not answer (unreachable or timed out), by operation.",
    &["op"],
);

/// Path words kept in an operation's name; anything else (ids, names) becomes `{id}`, so the
/// label set stays bounded.
const WORDS: [&str; 17] = [
    "libpod",
    "pods",
    "containers",
    "images",
    "create",
    "start",
    "stop",
    "kill",
    "json",
    "stats",
    "logs",
    "events",
    "info",
    "_ping",
    "exists",
    "remove",
    "restart",
];

/// `GET /pods/{id}/json` for a call: the method and the path with ids and the version prefix
/// taken out.
pub(crate) fn podman_op(method: &Method, path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let words: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .filter(|s| !(s.starts_with('v') && s[1..].starts_with(|c: char| c.is_ascii_digit())))
        .filter(|s| *s != "libpod")
        .map(|s| if WORDS.contains(&s) { s } else { "{id}" })
        .collect();
    format!("{method} /{}", words.join("/"))
}

/// Records one Podman call.
pub(crate) fn record_podman_call<T, E>(op: &str, took: Duration, result: &Result<T, E>) {
    PODMAN_SECONDS.observe(&[op], took);
    if result.is_err() {
        PODMAN_ERRORS.inc(&[op]);
    }
}

/// The admin endpoints of one agent.
pub(crate) struct AgentAdmin {
    pub snapshot: Arc<NodeSnapshot>,
    /// Registered, and the controller answered the last call.
    pub reachable: Arc<AtomicBool>,
}

impl Admin for AgentAdmin {
    fn metrics(&self) -> String {
        let mut out = String::new();
        PODMAN_SECONDS.render(&mut out);
        PODMAN_ERRORS.render(&mut out);
        let pods = self.snapshot.pods();
        let states = [
            PodPhase::Pending,
            PodPhase::Starting,
            PodPhase::Running,
            PodPhase::Failed,
            PodPhase::Succeeded,
            PodPhase::Terminating,
            PodPhase::Unknown,
        ];
        let counts: Vec<(String, f64)> = states
            .iter()
            .map(|st| {
                let n = pods.iter().filter(|p| p.phase == *st as i32).count();
                (
                    st.as_str_name()
                        .trim_start_matches("POD_PHASE_")
                        .to_lowercase(),
                    n as f64,
                )
            })
            .collect();
        render_gauge(
            &mut out,
            "pss_agent_pods",
            "Pods on this node by state.",
            "state",
            &counts,
        );
        let responsive = matches!(self.snapshot.health(), RuntimeHealth::Responsive);
        render_gauge(
            &mut out,
            "pss_agent_runtime_responsive",
            "1 when Podman answered the last pod list in time.",
            "runtime",
            &[("podman".to_string(), if responsive { 1.0 } else { 0.0 })],
        );
        out
    }

    fn ready(&self) -> Result<String, String> {
        if !self.reachable.load(Ordering::Relaxed) {
            return Err("not registered with the controller, or it does not answer".into());
        }
        match self.snapshot.health() {
            RuntimeHealth::Responsive => Ok("registered; Podman answers".into()),
            RuntimeHealth::Unresponsive { reason, .. } => {
                Err(format!("the container runtime does not answer: {reason}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_ops_drop_ids_and_versions() {
        assert_eq!(
            podman_op(&Method::GET, "/v4.0.0/libpod/pods/pss-web-abcde/json"),
            "GET /pods/{id}/json"
        );
        assert_eq!(
            podman_op(
                &Method::POST,
                "/v4.0.0/libpod/containers/0123abcd/kill?signal=KILL"
            ),
            "POST /containers/{id}/kill"
        );
        assert_eq!(podman_op(&Method::GET, "/_ping"), "GET /_ping");
    }
}
