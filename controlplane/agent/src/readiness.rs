//! Readiness: a pod is ready when all its containers run and its probe port (the spec's
//! readiness-probe port, else its first declared port) accepts a TCP connection at the pod's
//! host address. A pod without ports is ready as soon as it runs.
//!
//! The loop probes each pod of the node at its probe interval (default 2 s) and pushes a status
//! update to the reporter whenever a pod's readiness flips; only flips are logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1::{PodPhase, PodReport};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::{Probe, Runtime, DEFAULT_PROBE_INTERVAL};

/// How often the loop looks for due probes (and for new pods).
const TICK: Duration = Duration::from_millis(250);
/// How often the node's pod list is refreshed from Podman.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// True when `address` (`host:port`) accepts a TCP connection within `timeout`.
pub async fn tcp_probe(address: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

/// The readiness verdict for a pod report and its probe.
pub async fn check(report: &PodReport, probe: Option<Probe>) -> bool {
    if report.phase != PodPhase::Running as i32 {
        return false;
    }
    let Some(probe) = probe else { return true };
    match report
        .addresses
        .iter()
        .find(|a| a.container_port == u32::from(probe.container_port))
    {
        Some(a) => tcp_probe(&a.address, probe.timeout).await,
        // The probe port is not published: nothing outside the pod can reach it.
        None => false,
    }
}

/// Every pod of the node with its readiness probed now (and recorded), so that a registration
/// after an agent restart does not report adopted, serving pods as unready.
pub async fn probe_all(runtime: &Runtime) -> crate::Result<Vec<PodReport>> {
    let mut out = Vec::new();
    for id in runtime.pod_ids().await? {
        let Some((report, probe)) = runtime.report_and_probe(&id).await? else {
            continue;
        };
        let ready = check(&report, probe).await;
        runtime.set_ready(&id, ready);
        out.push(PodReport { ready, ..report });
    }
    Ok(out)
}

/// Probes the node's pods until `shutdown`; sends the report of every pod whose readiness
/// flipped to `updates`.
pub async fn run(
    runtime: Arc<Runtime>,
    updates: mpsc::Sender<PodReport>,
    shutdown: CancellationToken,
) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut listed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if listed_at.is_none_or(|t| now.duration_since(t) >= LIST_EVERY) {
            match runtime.pod_ids().await {
                Ok(ids) => {
                    due.retain(|id, _| ids.contains(id));
                    for id in ids {
                        due.entry(id).or_insert(now);
                    }
                    listed_at = Some(now);
                }
                Err(e) => tracing::debug!(error = %e, "readiness: listing pods"),
            }
        }
        let ready_to_probe: Vec<String> = due
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready_to_probe {
            if runtime.is_stopping(&id) {
                due.insert(id, now + DEFAULT_PROBE_INTERVAL);
                continue;
            }
            let (report, probe) = match runtime.report_and_probe(&id).await {
                Ok(Some(found)) => found,
                Ok(None) => {
                    due.remove(&id);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(pod = %id, error = %e, "readiness: inspecting the pod");
                    due.insert(id, now + DEFAULT_PROBE_INTERVAL);
                    continue;
                }
            };
            let ready = check(&report, probe).await;
            due.insert(
                id.clone(),
                Instant::now() + probe.map_or(DEFAULT_PROBE_INTERVAL, |p| p.interval),
            );
            if runtime.set_ready(&id, ready) {
                tracing::info!(pod = %id, ready, "readiness changed");
                let report = PodReport { ready, ..report };
                if updates.try_send(report).is_err() {
                    tracing::warn!(pod = %id, "status update queue full; the next heartbeat carries it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pss_proto::v1::PortAddress;

    fn running(addr: &str) -> PodReport {
        PodReport {
            phase: PodPhase::Running as i32,
            addresses: vec![PortAddress {
                container_port: 80,
                address: addr.into(),
            }],
            ..Default::default()
        }
    }

    fn probe() -> Option<Probe> {
        Some(Probe {
            container_port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        })
    }

    #[tokio::test]
    async fn ready_when_running_and_the_port_accepts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(check(&running(&addr), probe()).await);
        drop(listener);
        assert!(!check(&running(&addr), probe()).await);
    }

    #[tokio::test]
    async fn without_ports_running_is_ready() {
        let report = PodReport {
            phase: PodPhase::Running as i32,
            ..Default::default()
        };
        assert!(check(&report, None).await);
        let starting = PodReport {
            phase: PodPhase::Starting as i32,
            ..Default::default()
        };
        assert!(!check(&starting, None).await);
    }
}
