//! The pod state machine: how an agent's report about a pod changes the controller's record of
//! it (phase, readiness, crash-loop back-off), and what the controller must do about it. Pure:
//! the time of the report is an argument.
//!
//! - A `Terminating` record ignores reports (the controller is draining and stopping it).
//! - A `Lost` record (replaced while its node was away) answers every report with "stop it".
//! - Running: the pod starts (once) and its readiness follows the report.
//! - Failed or Succeeded: the pod fails once per run; the crash-loop streak and back-off are
//!   computed by [`crate::crashloop::CrashLoop::on_failure`].

use pss_proto::v1 as pb;

use crate::crashloop::CrashLoop;
use crate::model::{ContainerState, PodPhase, PodRecord, PortAddress};

/// What a report changed in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Phase or readiness changed (endpoints may change).
    pub changed: bool,
    /// The pod just started running.
    pub started: bool,
    /// The pod just failed (the reconciler restarts it after its back-off).
    pub failed: bool,
    /// The controller does not want this pod any more: the agent must stop it.
    pub stop: bool,
}

/// Applies an agent's report about `record` (same pod id) received at `now`.
pub fn apply_report(record: &mut PodRecord, report: &pb::PodReport, now: i64) -> Outcome {
    let mut out = Outcome::default();
    record.cpu_percent = report.cpu_percent;
    record.memory_bytes = report.memory_bytes;
    if !report.containers.is_empty() {
        record.containers = report
            .containers
            .iter()
            .cloned()
            .map(ContainerState::from)
            .collect();
    }
    if !report.addresses.is_empty() {
        record.addresses = report
            .addresses
            .iter()
            .cloned()
            .filter_map(|a| PortAddress::try_from(a).ok())
            .collect();
    }
    match record.phase {
        // Being drained and stopped by the controller: the report changes nothing.
        PodPhase::Terminating => return out,
        // Replaced while its node was away.
        PodPhase::Lost => {
            out.stop = true;
            return out;
        }
        _ => {}
    }
    let phase = pb::PodPhase::try_from(report.phase).unwrap_or(pb::PodPhase::Unknown);
    match phase {
        pb::PodPhase::Running => {
            if record.phase != PodPhase::Running {
                out.started = true;
                out.changed = true;
                record.phase = PodPhase::Running;
                record.started_at_ms = if report.started_at_ms > 0 {
                    report.started_at_ms
                } else {
                    now
                };
                record.reason.clear();
                record.message.clear();
            }
            if record.ready != report.ready {
                out.changed = true;
                record.ready = report.ready;
            }
        }
        pb::PodPhase::Failed | pb::PodPhase::Succeeded if record.phase != PodPhase::Failed => {
            out.failed = true;
            out.changed = true;
            let crash = CrashLoop {
                failure_streak: record.failure_streak,
                backoff_until_ms: record.backoff_until_ms,
            }
            .on_failure(record.started_at_ms, now);
            record.failure_streak = crash.failure_streak;
            record.backoff_until_ms = crash.backoff_until_ms;
            record.phase = PodPhase::Failed;
            record.ready = false;
            record.reason = if report.reason.is_empty() {
                if phase == pb::PodPhase::Succeeded {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            } else {
                report.reason.clone()
            };
            record.message = report.message.clone();
        }
        pb::PodPhase::Pending | pb::PodPhase::Starting if record.ready => {
            out.changed = true;
            record.ready = false;
        }
        _ => {}
    }
    if out.changed {
        record.updated_at_ms = now;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(ready: bool) -> pb::PodReport {
        pb::PodReport {
            id: "w-abcde".into(),
            phase: pb::PodPhase::Running as i32,
            ready,
            ..Default::default()
        }
    }

    fn failed() -> pb::PodReport {
        pb::PodReport {
            id: "w-abcde".into(),
            phase: pb::PodPhase::Failed as i32,
            reason: "Error".into(),
            ..Default::default()
        }
    }

    fn record() -> PodRecord {
        let mut r = PodRecord::new("w-abcde".into(), "w", 7, 0);
        r.node = Some("n".into());
        r.phase = PodPhase::Starting;
        r
    }

    #[test]
    fn running_report_starts_the_pod_and_sets_readiness() {
        let mut r = record();
        let o = apply_report(&mut r, &running(true), 1_000);
        assert!(o.started && o.changed && !o.failed);
        assert_eq!(r.phase, PodPhase::Running);
        assert!(r.ready);
        assert_eq!(
            apply_report(&mut r, &running(true), 2_000),
            Outcome::default()
        );
    }

    #[test]
    fn crash_loop_back_off_grows_and_resets_after_a_long_healthy_run() {
        let mut r = record();
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            apply_report(&mut r, &running(true), now);
            now += 1_000;
            let o = apply_report(&mut r, &failed(), now);
            assert!(o.failed);
            delays.push(r.backoff_until_ms - now);
            r.phase = PodPhase::Starting; // restarted by the reconciler
        }
        assert_eq!(delays, [0, 10_000, 20_000, 40_000]);
        // Ten healthy minutes: the streak resets.
        apply_report(&mut r, &running(true), now);
        now += crate::crashloop::CRASH_RESET_AFTER.as_millis() as i64 + 1;
        apply_report(&mut r, &failed(), now);
        assert_eq!(r.backoff_until_ms, now);
    }

    #[test]
    fn terminating_pods_ignore_reports_and_lost_pods_are_stopped() {
        let mut r = record();
        r.phase = PodPhase::Terminating;
        assert_eq!(apply_report(&mut r, &running(true), 5), Outcome::default());
        assert_eq!(r.phase, PodPhase::Terminating);
        r.phase = PodPhase::Lost;
        assert!(apply_report(&mut r, &running(true), 5).stop);
    }
}
