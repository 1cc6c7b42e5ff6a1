//! Liveness probes (a container's `livenessProbe`): a TCP connect to a published port, or a
//! command run in the container through Podman's exec API. After `failure_threshold` failures
//! in a row the container is killed; its pod then exits and the controller restarts it as the
//! pod's `restartPolicy` says (with the crash-loop back-off), and the pod's report says why
//! (`Unhealthy`).
//!
//! The probe travels with the container as a label ([`LABEL_LIVENESS`]), like the readiness
//! probe, so an agent restarted next to running pods keeps probing them; the pod carries the
//! same label as a marker, so pods without probes cost the loop nothing but one list call. [`Tracker`] is the pure
//! part (when a check is due, when the container must go); [`run`] is the loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1::{self as pb, PodPhase, PodReport};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// Label on containers: the liveness probe, as JSON ([`LivenessSpec`]).
pub const LABEL_LIVENESS: &str = "pss.liveness";
/// How often the loop looks for due checks.
const TICK: Duration = Duration::from_millis(500);
/// How often it lists the node's containers and their probes.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// A container's liveness probe as the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessSpec {
    /// TCP check of this container port (through its published host port)...
    pub tcp_port: Option<u16>,
    /// ...or this command, which must exit 0.
    pub command: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub initial_delay_ms: u64,
}

impl LivenessSpec {
    /// From the wire form the controller sends (validated there).
    pub fn from_proto(p: &pb::LivenessProbe) -> Self {
        LivenessSpec {
            tcp_port: (p.exec_command.is_empty())
                .then(|| u16::try_from(p.tcp_port).ok())
                .flatten(),
            command: p.exec_command.clone(),
            interval_ms: p.interval_ms.max(1),
            timeout_ms: p.timeout_ms.max(1),
            failure_threshold: p.failure_threshold.max(1),
            initial_delay_ms: p.initial_delay_ms,
        }
    }

    pub fn to_label(&self) -> String {
        serde_json::to_string(self).expect("serialises")
    }

    pub fn from_label(label: &str) -> Option<Self> {
        serde_json::from_str(label).ok()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One container to probe, as found in Podman.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub container_id: String,
    pub container: String,
    pub running: bool,
    pub spec: LivenessSpec,
    /// `host:port` for a TCP check (`None`: the port is not published).
    pub address: Option<String>,
}

/// Where one container's probe stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub spec: LivenessSpec,
    pub failures: u32,
    pub next_due: Instant,
}

/// What a check's result asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Failed, but fewer than `failure_threshold` times in a row.
    Failing(u32),
    /// Failed `failure_threshold` times in a row: kill the container.
    Kill,
}

impl Tracker {
    /// A container seen running for the first time: its first check after the initial delay.
    pub fn new(spec: LivenessSpec, now: Instant) -> Self {
        let next_due = now + Duration::from_millis(spec.initial_delay_ms) + spec.interval();
        Tracker {
            spec,
            failures: 0,
            next_due,
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_due
    }

    /// Records one check's result at `now`.
    pub fn record(&mut self, ok: bool, now: Instant) -> Verdict {
        self.next_due = now + self.spec.interval();
        if ok {
            self.failures = 0;
            return Verdict::Healthy;
        }
        self.failures += 1;
        if self.failures >= self.spec.failure_threshold {
            self.failures = 0;
            Verdict::Kill
        } else {
            Verdict::Failing(self.failures)
        }
    }
}

/// Runs one check.
async fn check(runtime: &Runtime, target: &Target) -> Result<(), String> {
    let timeout = target.spec.timeout();
    if let Some(port) = target.spec.tcp_port {
        let Some(address) = &target.address else {
            return Err(format!("port {port} is not published"));
        };
        return if crate::readiness::tcp_probe(address, timeout).await {
            Ok(())
        } else {
            Err(format!("TCP connect to port {port} ({address}) failed"))
        };
    }
    let podman = runtime.podman().ok_or("no Podman")?;
    match podman
        .exec(&target.container_id, &target.spec.command, timeout)
        .await
    {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!(
            "command {:?} exited with {code}",
            target.spec.command
        )),
        Err(e) => Err(format!("command {:?}: {e}", target.spec.command)),
    }
}

/// Probes the node's containers that have a liveness probe until `shutdown`; kills those that
/// keep failing and sends their pod's report, marked `Unhealthy`, to `updates`.
pub async fn run(
    runtime: Arc<Runtime>,
    updates: mpsc::Sender<PodReport>,
    shutdown: CancellationToken,
) {
    if runtime.podman().is_none() {
        return; // simulated pods have no containers to probe
    }
    let mut trackers: HashMap<String, Tracker> = HashMap::new();
    let mut targets: Vec<Target> = Vec::new();
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
            match runtime.liveness_targets().await {
                Ok(found) => {
                    targets = found.into_iter().filter(|t| t.running).collect();
                    trackers.retain(|id, _| targets.iter().any(|t| &t.container_id == id));
                    for t in &targets {
                        trackers
                            .entry(t.container_id.clone())
                            .or_insert_with(|| Tracker::new(t.spec.clone(), now));
                    }
                    listed_at = Some(now);
                }
                Err(e) => tracing::debug!(error = %e, "liveness: listing containers"),
            }
        }
        for target in &targets {
            let Some(tracker) = trackers.get_mut(&target.container_id) else {
                continue;
            };
            if !tracker.due(now) || runtime.is_stopping(&target.pod) {
                continue;
            }
            let result = check(&runtime, target).await;
            let verdict = tracker.record(result.is_ok(), Instant::now());
            let Err(why) = result else { continue };
            match verdict {
                Verdict::Healthy => {}
                Verdict::Failing(n) => {
                    tracing::info!(pod = %target.pod, container = %target.container, failures = n, "liveness probe failed: {why}")
                }
                Verdict::Kill => {
                    tracing::warn!(pod = %target.pod, container = %target.container, "liveness probe failed {} times in a row: killing the container ({why})", target.spec.failure_threshold);
                    if let Some(podman) = runtime.podman() {
                        if let Err(e) = podman.kill_container(&target.container_id, "KILL").await {
                            tracing::warn!(pod = %target.pod, error = %e, "killing an unhealthy container");
                        }
                    }
                    // Until it runs again, nothing to probe.
                    trackers.remove(&target.container_id);
                    if let Ok(Some(report)) = runtime.report(&target.pod).await {
                        let report = PodReport {
                            phase: PodPhase::Failed as i32,
                            ready: false,
                            reason: "Unhealthy".into(),
                            message: format!(
                                "container {} failed its liveness probe {} times: {why}",
                                target.container, target.spec.failure_threshold
                            ),
                            ..report
                        };
                        if updates.try_send(report).is_err() {
                            tracing::warn!(pod = %target.pod, "status update queue full; the next heartbeat carries it");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(threshold: u32) -> LivenessSpec {
        LivenessSpec {
            tcp_port: Some(80),
            command: Vec::new(),
            interval_ms: 1000,
            timeout_ms: 500,
            failure_threshold: threshold,
            initial_delay_ms: 5000,
        }
    }

    #[test]
    fn kills_after_the_threshold_in_a_row_only() {
        let t0 = Instant::now();
        let mut t = Tracker::new(spec(3), t0);
        assert!(!t.due(t0 + Duration::from_millis(5999)));
        assert!(t.due(t0 + Duration::from_secs(6)));
        assert_eq!(t.record(false, t0), Verdict::Failing(1));
        assert_eq!(t.record(false, t0), Verdict::Failing(2));
        assert_eq!(t.record(true, t0), Verdict::Healthy);
        assert_eq!(t.record(false, t0), Verdict::Failing(1));
        assert_eq!(t.record(false, t0), Verdict::Failing(2));
        assert_eq!(t.record(false, t0), Verdict::Kill);
        assert_eq!(t.next_due, t0 + Duration::from_secs(1));
    }

    #[test]
    fn the_label_round_trips_and_a_bad_one_is_ignored() {
        let s = spec(3);
        assert_eq!(LivenessSpec::from_label(&s.to_label()), Some(s));
        assert_eq!(LivenessSpec::from_label("{not json"), None);
        let exec = LivenessSpec::from_proto(&pb::LivenessProbe {
            tcp_port: 80,
            exec_command: vec!["true".into()],
            ..Default::default()
        });
        assert_eq!(exec.tcp_port, None);
        assert_eq!(exec.failure_threshold, 1);
    }
}
