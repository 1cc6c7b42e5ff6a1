//! The `NodeRegistry` service agents talk to: registration (with the pods a node already runs,
//! so a restarted agent's pods are adopted), heartbeats with metrics, and pod status pushes.
//!
//! [`apply_report`] is the pure state transition from an agent's pod report to the
//! controller's record; every RPC here funnels into [`Ingest`], which also answers which pods
//! the node must stop (pods the controller does not want: never two copies of a pod).

use crate::error::to_status;
use pss_plumbing::clock::now_ms;
use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Shared;
use pss_core::crashloop::CrashLoop;
use pss_core::model::{
    ContainerState, EventRecord, NodeRecord, NodeStatus, PodPhase, PodRecord, PortAddress,
};

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

/// Folds a batch of pod reports from one node into the store.
struct Ingest<'a> {
    shared: &'a Arc<Shared>,
    node: &'a str,
    now: i64,
    stop: Vec<String>,
    endpoints_changed: bool,
    kick: bool,
}

impl<'a> Ingest<'a> {
    fn new(shared: &'a Arc<Shared>, node: &'a str) -> Self {
        Ingest {
            shared,
            node,
            now: now_ms(),
            stop: Vec::new(),
            endpoints_changed: false,
            kick: false,
        }
    }

    fn pod(&mut self, report: &pb::PodReport) -> Result<(), Status> {
        let store = &self.shared.store;
        let Some(mut record) = store.get_pod(&report.id).map_err(to_status)? else {
            tracing::info!(node = self.node, pod = %report.id, "node runs a pod the controller does not want: stopping it");
            self.stop.push(report.id.clone());
            return Ok(());
        };
        if record.node.as_deref() != Some(self.node) {
            tracing::warn!(node = self.node, pod = %report.id, placed = ?record.node, "pod reported by the wrong node: stopping that copy");
            self.stop.push(report.id.clone());
            return Ok(());
        }
        let before = record.clone();
        let out = apply_report(&mut record, report, self.now);
        if out.stop {
            self.stop.push(record.id.clone());
        }
        if record != before {
            store.put_pod(&record).map_err(to_status)?;
        }
        let obj = format!("pod/{}", record.id);
        if out.started {
            self.shared.event(EventRecord::normal(
                "Started",
                obj.clone(),
                format!("pod {} is running on {}", record.id, self.node),
            ));
        }
        if out.failed {
            let wait = (record.backoff_until_ms - self.now).max(0);
            let detail = if record.message.is_empty() {
                String::new()
            } else {
                format!(": {}", record.message)
            };
            self.shared.event(EventRecord::warning(
                "BackOff",
                obj,
                format!(
                    "pod failed ({}{detail}); restart {} in {}",
                    record.reason,
                    record.restart_count + 1,
                    humantime::format_duration(Duration::from_millis(wait as u64 / 1000 * 1000))
                ),
            ));
            self.kick = true;
            schedule_kick(self.shared, Duration::from_millis(wait as u64));
        }
        self.endpoints_changed |= out.changed;
        Ok(())
    }

    fn finish(self) -> Vec<String> {
        if self.endpoints_changed {
            self.shared.refresh_endpoints();
        }
        if self.kick {
            self.shared.kick();
        }
        self.stop
    }
}

/// Wakes the reconciler once `after` has passed (a back-off ending), unless shutting down.
pub(crate) fn schedule_kick(shared: &Arc<Shared>, after: Duration) {
    if after.is_zero() {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = tokio::time::sleep(after) => shared.kick(),
        }
    });
}

pub(crate) struct RegistryApi {
    shared: Arc<Shared>,
}

impl RegistryApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        RegistryApi { shared }
    }
}

#[tonic::async_trait]
impl pb::node_registry_server::NodeRegistry for RegistryApi {
    async fn register(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let req = request.into_inner();
        pss_core::model::validate_dns1123(&req.name)
            .map_err(|e| Status::invalid_argument(format!("node name {:?}: {e}", req.name)))?;
        if req.agent_address.is_empty() {
            return Err(Status::invalid_argument("agent_address is required"));
        }
        let shared = &self.shared;
        let now = now_ms();
        let previous = shared.store.get_node(&req.name).map_err(to_status)?;
        shared
            .store
            .upsert_node(&NodeRecord {
                name: req.name.clone(),
                agent_address: req.agent_address.clone(),
                cpu_millis: req.cpu_millis,
                memory_bytes: req.memory_bytes,
                status: NodeStatus::Ready,
                cpu_usage_percent: 0.0,
                memory_used_bytes: 0,
                last_heartbeat_ms: now,
                registered_at_ms: now,
            })
            .map_err(to_status)?;
        let msg = format!(
            "node {} registered: {} at {}, {}m CPU, {} MiB, {} pods running",
            req.name,
            if previous.is_some() { "again" } else { "new" },
            req.agent_address,
            req.cpu_millis,
            req.memory_bytes / (1024 * 1024),
            req.pods.len()
        );
        shared.event(EventRecord::normal(
            "Registered",
            format!("node/{}", req.name),
            msg,
        ));

        let mut ingest = Ingest::new(shared, &req.name);
        for p in &req.pods {
            ingest.pod(p)?;
        }
        // Pods the controller placed here that the node no longer has (host rebooted, pods
        // removed by hand): they failed; the reconciler restarts them.
        let reported: std::collections::HashSet<&str> =
            req.pods.iter().map(|p| p.id.as_str()).collect();
        let placed = shared.store.list_pods(None).map_err(to_status)?;
        for mut pod in placed
            .into_iter()
            .filter(|p| p.node.as_deref() == Some(req.name.as_str()))
        {
            if pod.phase == PodPhase::Running && !reported.contains(pod.id.as_str()) {
                let missing = pb::PodReport {
                    id: pod.id.clone(),
                    phase: pb::PodPhase::Failed as i32,
                    reason: "PodMissing".into(),
                    message: "the node no longer runs this pod".into(),
                    ..Default::default()
                };
                let before = pod.clone();
                apply_report(&mut pod, &missing, ingest.now);
                if pod != before {
                    shared.store.put_pod(&pod).map_err(to_status)?;
                    ingest.endpoints_changed = true;
                    ingest.kick = true;
                }
            }
        }
        ingest.kick = true;
        let stop_pods = ingest.finish();
        Ok(Response::new(pb::RegisterNodeResponse { stop_pods }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let shared = &self.shared;
        let Some(node) = shared.store.get_node(&req.node).map_err(to_status)? else {
            return Ok(Response::new(pb::HeartbeatResponse {
                stop_pods: Vec::new(),
                known: false,
            }));
        };
        let m = req.metrics.unwrap_or_default();
        shared
            .store
            .record_heartbeat(
                &req.node,
                m.cpu_usage_percent,
                m.memory_used_bytes,
                now_ms(),
            )
            .map_err(to_status)?;
        let mut ingest = Ingest::new(shared, &req.node);
        if node.status != NodeStatus::Ready {
            shared.event(EventRecord::normal(
                "NodeReady",
                format!("node/{}", req.node),
                format!("node {} is sending heartbeats again", req.node),
            ));
            ingest.kick = true;
        }
        for p in &req.pods {
            ingest.pod(p)?;
        }
        let stop_pods = ingest.finish();
        Ok(Response::new(pb::HeartbeatResponse {
            stop_pods,
            known: true,
        }))
    }

    async fn report_pod_status(
        &self,
        request: Request<pb::PodStatusUpdate>,
    ) -> Result<Response<pb::PodStatusAck>, Status> {
        let req = request.into_inner();
        let pod = req
            .pod
            .ok_or_else(|| Status::invalid_argument("pod is required"))?;
        let mut ingest = Ingest::new(&self.shared, &req.node);
        ingest.pod(&pod)?;
        let stop_pods = ingest.finish();
        Ok(Response::new(pb::PodStatusAck { stop_pods }))
    }
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
        now += pss_core::crashloop::CRASH_RESET_AFTER.as_millis() as i64 + 1;
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
