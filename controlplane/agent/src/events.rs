//! Podman's event stream, watched continuously: when a PSS container of this node dies
//! (`died`, `exited`) or is OOM-killed (`oom`), the pod's fresh report goes to the reporter at
//! once (which pushes it to the controller), instead of waiting for the next heartbeat. The
//! stream is reopened with back-off when it drops, and the pods that ended meanwhile are pushed.

use std::sync::Arc;

use pss_proto::v1::{ContainerStatus, PodPhase, PodReport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::podman::{ContainerState, Event};
use crate::runtime::{derive_phase, Runtime, LABEL_NODE, LABEL_POD};
use pss_plumbing::Backoff;

/// Watches events until `shutdown`.
pub async fn run(
    runtime: Arc<Runtime>,
    updates: mpsc::Sender<PodReport>,
    shutdown: CancellationToken,
) {
    // Simulated pods never die by themselves: no events to watch.
    let Some(podman) = runtime.podman().cloned() else {
        shutdown.cancelled().await;
        return;
    };
    let filters = serde_json::json!({
        "type": ["container"],
        "event": ["died", "exited", "oom"],
        "label": [format!("{LABEL_NODE}={}", runtime.node())],
    });
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            opened = podman.events(&filters) => opened,
        };
        match opened {
            Ok(mut stream) => {
                if attempt > 0 {
                    tracing::info!("Podman event stream reconnected");
                    resync(&runtime, &updates).await;
                }
                attempt = 0;
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = stream.next_event() => next,
                    };
                    match next {
                        Ok(Some(event)) => handle(&runtime, &updates, event).await,
                        Ok(None) => {
                            tracing::warn!("Podman closed the event stream; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Podman event stream failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, attempt, "cannot open Podman's event stream"),
        }
        let delay = backoff.next_delay(attempt, &mut rand::rng());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// After a gap in the stream: pushes every pod whose containers are no longer running, since
/// their deaths may have happened while nobody listened.
async fn resync(runtime: &Runtime, updates: &mpsc::Sender<PodReport>) {
    let reports = match runtime.reports().await {
        Ok(reports) => reports,
        Err(e) => {
            tracing::warn!(error = %e, "resync after the event stream came back");
            return;
        }
    };
    let ended = [PodPhase::Failed as i32, PodPhase::Succeeded as i32];
    for report in reports.into_iter().filter(|r| ended.contains(&r.phase)) {
        runtime.set_ready(&report.id, false);
        let _ = updates.try_send(PodReport {
            ready: false,
            ..report
        });
    }
}

async fn handle(runtime: &Runtime, updates: &mpsc::Sender<PodReport>, event: Event) {
    let Some(pod) = event.actor.attributes.get(LABEL_POD).cloned() else {
        return;
    };
    if runtime.is_stopping(&pod) {
        return;
    }
    let exit_code: i32 = event
        .actor
        .attributes
        .get("containerExitCode")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let oom = event.action == "oom";
    tracing::info!(pod = %pod, container = %event.actor.id, action = %event.action, exit_code, "container event");
    runtime.set_ready(&pod, false);
    let report = match runtime.report(&pod).await {
        Ok(Some(report)) => report,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(pod = %pod, error = %e, "inspecting a pod after a container event");
            return;
        }
    };
    let report = apply_event(report, &event.actor.id, exit_code, oom);
    if updates.try_send(report).is_err() {
        tracing::warn!(pod = %pod, "status update queue full; the next heartbeat carries it");
    }
}

/// Podman may report the container as still running for a moment after the event: the event
/// is authoritative for the container it names.
pub fn apply_event(
    mut report: PodReport,
    container_id: &str,
    exit_code: i32,
    oom: bool,
) -> PodReport {
    let mut changed = false;
    for c in report
        .containers
        .iter_mut()
        .filter(|c| c.id == container_id)
    {
        let running = ContainerState::parse(&c.state) == ContainerState::Running;
        if running || oom {
            *c = ContainerStatus {
                state: ContainerState::Exited.as_str().into(),
                exit_code: if running { exit_code } else { c.exit_code },
                oom_killed: c.oom_killed || oom,
                ..c.clone()
            };
            changed = true;
        }
    }
    if changed {
        let (phase, reason, message) = derive_phase(&report.containers);
        report.phase = phase as i32;
        report.reason = reason;
        report.message = message;
    }
    report.ready = false;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_overrides_a_stale_running_state() {
        let report = PodReport {
            phase: PodPhase::Running as i32,
            ready: true,
            containers: vec![ContainerStatus {
                name: "web".into(),
                id: "c1".into(),
                state: "running".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = apply_event(report.clone(), "c1", 137, false);
        assert_eq!(r.phase, PodPhase::Failed as i32);
        assert_eq!(r.containers[0].exit_code, 137);
        assert!(!r.ready);
        let r = apply_event(report, "c1", 137, true);
        assert_eq!(r.reason, "OOMKilled");
    }
}
