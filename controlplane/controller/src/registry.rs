//! The `NodeRegistry` service agents talk to: registration (with the pods a node already runs,
//! so a restarted agent's pods are adopted), heartbeats with metrics, and pod status pushes.
//!
//! Every RPC here funnels into [`Ingest`], which applies the pure state machine
//! [`pss_core::podstate::apply_report`] to the stored records and answers which pods the node
//! must stop (pods the controller does not want: never two copies of a pod).
//!
//! Input from agents is checked first by [`pss_core::node_input`] (InvalidArgument naming the
//! field, the value cut short and the limit). A heartbeat is the node's lease: it keeps the
//! node Ready whatever it says about the runtime. When it says the runtime (Podman) does not
//! answer, the node gets the RuntimeUnresponsive condition ([`pss_core::node_condition`]:
//! unschedulable, an event on each flip) and its pod reports are not read: they are the
//! agent's last known ones, so a pod missing from them, or shown in an old phase, says nothing.

use crate::error::to_status;
use pss_plumbing::clock::now_ms;
use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Shared;
use pss_core::model::{EventRecord, NodeRecord, NodeStatus, PodPhase};
use pss_core::node_condition::{
    ConditionFlip, NodeConditions, RUNTIME_RECOVERED, RUNTIME_UNRESPONSIVE,
};
use pss_core::node_input;
use pss_core::podstate::apply_report;
use pss_store::Change;

/// An agent's certificate speaks for its own node only (operators, and the seed's token, for
/// any): a call about another node is refused before anything is read or changed.
fn check_speaks_for<T>(request: &Request<T>, node: &str) -> Result<(), Status> {
    match pss_security::guard::Caller::of(request) {
        Some(c) if c.identity.role == pss_security::Role::Agent && c.identity.name != node => {
            Err(Status::permission_denied(format!(
                "role agent ({}) may not speak for node {node:?}",
                c.identity.name
            )))
        }
        _ => Ok(()),
    }
}

/// The gRPC error for input the guard refused.
fn refused(e: node_input::InputError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Folds a batch of pod reports from one node into the store: the records that changed are
/// written together in [`Ingest::finish`] (one group commit), and only then are their events
/// recorded and the reconciler and proxies told.
struct Ingest<'a> {
    shared: &'a Arc<Shared>,
    node: &'a str,
    now: i64,
    stop: Vec<String>,
    /// Changed records, written in `finish`.
    changes: Vec<Change>,
    /// Events of those changes, recorded once they are written.
    events: Vec<EventRecord>,
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
            changes: Vec::new(),
            events: Vec::new(),
            endpoints_changed: false,
            kick: false,
        }
    }

    fn pod(&mut self, report: &pb::PodReport) -> Result<(), Status> {
        let Some(mut record) = self.shared.store.get_pod(&report.id).map_err(to_status)? else {
            tracing::info!(node = self.node, pod = %report.id, "node runs a pod the controller does not want: stopping it");
            self.stop.push(report.id.clone());
            return Ok(());
        };
        if record.node.as_deref() != Some(self.node) {
            tracing::warn!(node = self.node, pod = %report.id, placed = ?record.node, "pod reported by the wrong node: stopping that copy");
            self.stop.push(report.id.clone());
            return Ok(());
        }
        let out = apply_report(&mut record, report, self.now);
        if out.stop {
            self.stop.push(record.id.clone());
        }
        let obj = format!("pod/{}", record.id);
        if out.started {
            self.events.push(EventRecord::normal(
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
            self.events.push(EventRecord::warning(
                "BackOff",
                obj,
                format!(
                    "pod failed ({}{detail}); restart {} in {}",
                    record.reason,
                    record.restart_count + 1,
                    humantime::format_duration(Duration::from_millis(wait as u64 / 1000 * 1000))
                ),
            ));
            // The pass plans the restart, and requeues itself for when the back-off ends.
            self.kick = true;
        }
        self.endpoints_changed |= out.changed;
        // Most reports repeat what is known: compared with the stored record, not copied.
        if !self.shared.cache.pod_unchanged(&record) {
            self.changes.push(Change::PutPod(record));
        }
        Ok(())
    }

    /// Writes the changed records (the RPC fails, acknowledging nothing, if that fails), then
    /// records their events and tells the reconciler and the proxies.
    async fn finish(self) -> Result<Vec<String>, Status> {
        // A heartbeat that changed no pod (the common case) is not held up by the write of
        // its time and metrics: the lease is renewed in memory once that commits, a
        // millisecond or so later, and nothing depends on it being acknowledged.
        let heartbeat_only = self
            .changes
            .iter()
            .all(|c| matches!(c, Change::Heartbeat { .. }));
        if heartbeat_only {
            self.shared.writer.submit(self.changes).await
        } else {
            self.shared.writer.commit(self.changes).await
        }
        .map_err(to_status)?;
        for e in self.events {
            self.shared.event(e);
        }
        if self.endpoints_changed {
            self.shared.refresh_endpoints();
        }
        // A pod that became ready (or stopped being) may let a rollout or a drain take its
        // next step: a pass runs at once rather than at the next resync.
        if self.kick || self.endpoints_changed {
            self.shared.kick();
        }
        Ok(self.stop)
    }
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
        check_speaks_for(&request, &request.get_ref().name)?;
        let mut req = request.into_inner();
        node_input::check_registration(&mut req).map_err(refused)?;
        let shared = &self.shared;
        let now = now_ms();
        let previous = shared.store.get_node(&req.name).map_err(to_status)?;
        shared
            .store
            .upsert_node(&NodeRecord {
                labels: req.labels.clone().into_iter().collect(),
                // Kept as stored: a re-registering agent does not undo a cordon or drain.
                unschedulable: false,
                draining: false,
                name: req.name.clone(),
                agent_address: req.agent_address.clone(),
                cpu_millis: req.cpu_millis,
                memory_bytes: req.memory_bytes,
                status: NodeStatus::Ready,
                cpu_usage_percent: 0.0,
                memory_used_bytes: 0,
                last_heartbeat_ms: now,
                registered_at_ms: now,
                // An agent registers once Podman answered it: no condition.
                conditions: NodeConditions::default(),
                limits_unenforced: req.limits_unenforced.clone(),
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
        if !req.limits_unenforced.is_empty() {
            // Rootless Podman that cannot apply cgroup limits: pods still run and are still
            // scheduled by their requests, but nothing holds them to their limits.
            shared.event(EventRecord::warning(
                "LimitsNotEnforced",
                format!("node/{}", req.name),
                format!(
                    "node {}: {}; pods are scheduled by their requests but not held to their limits",
                    req.name, req.limits_unenforced
                ),
            ));
        }

        let mut ingest = Ingest::new(shared, &req.name);
        for p in &req.pods {
            ingest.pod(p)?;
        }
        // Pods the controller placed here that the node no longer has (host rebooted, pods
        // removed by hand): they failed; the reconciler restarts them.
        let reported: std::collections::HashSet<&str> =
            req.pods.iter().map(|p| p.id.as_str()).collect();
        for mut pod in shared.cache.pods_on_node(&req.name) {
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
                    ingest.changes.push(Change::PutPod(pod));
                    ingest.endpoints_changed = true;
                    ingest.kick = true;
                }
            }
        }
        ingest.kick = true;
        let stop_pods = ingest.finish().await?;
        Ok(Response::new(pb::RegisterNodeResponse { stop_pods }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        check_speaks_for(&request, &request.get_ref().node)?;
        let mut req = request.into_inner();
        node_input::check_heartbeat(&mut req).map_err(refused)?;
        let shared = &self.shared;
        let Some(node) = shared.store.get_node(&req.node).map_err(to_status)? else {
            return Ok(Response::new(pb::HeartbeatResponse {
                stop_pods: Vec::new(),
                known: false,
            }));
        };
        let m = req.metrics.unwrap_or_default();
        let now = now_ms();
        let mut ingest = Ingest::new(shared, &req.node);
        // Written with the pod reports' changes, in one group commit (in `finish`).
        ingest.changes.push(Change::Heartbeat {
            node: req.node.clone(),
            cpu_usage_percent: m.cpu_usage_percent,
            memory_used_bytes: m.memory_used_bytes,
            now_ms: now,
        });
        if node.status != NodeStatus::Ready {
            shared.event(EventRecord::normal(
                "NodeReady",
                format!("node/{}", req.node),
                format!("node {} is sending heartbeats again", req.node),
            ));
            ingest.kick = true;
        }
        let reported = m
            .runtime_unresponsive
            .then_some((m.runtime_unresponsive_since_ms, m.runtime_reason.as_str()));
        let (conditions, flip) = node.conditions.on_heartbeat(reported, now);
        if conditions != node.conditions {
            shared
                .store
                .set_node_conditions(&req.node, &conditions)
                .map_err(to_status)?;
        }
        let object = format!("node/{}", req.node);
        match flip {
            ConditionFlip::None => {}
            ConditionFlip::RuntimeUnresponsive => {
                tracing::warn!(node = %req.node, reason = %m.runtime_reason, "node runtime unresponsive: unschedulable, its pods are kept");
                shared.event(EventRecord::warning(
                    RUNTIME_UNRESPONSIVE,
                    object,
                    format!(
                        "node {}: the container runtime does not answer ({}); no new pods go \
                         there, its pods are kept",
                        req.node, m.runtime_reason
                    ),
                ));
            }
            ConditionFlip::RuntimeRecovered => {
                tracing::info!(node = %req.node, "node runtime answers again");
                shared.event(EventRecord::normal(
                    RUNTIME_RECOVERED,
                    object,
                    format!(
                        "node {}: the container runtime answers again; schedulable",
                        req.node
                    ),
                ));
                // Pods left Pending while the node was unschedulable can go there now.
                ingest.kick = true;
            }
        }
        // Stale reports (the runtime did not answer the agent) are not read at all.
        if conditions.reports_are_current() {
            for p in &req.pods {
                ingest.pod(p)?;
            }
        }
        let stop_pods = ingest.finish().await?;
        Ok(Response::new(pb::HeartbeatResponse {
            stop_pods,
            known: true,
        }))
    }

    async fn report_pod_status(
        &self,
        request: Request<pb::PodStatusUpdate>,
    ) -> Result<Response<pb::PodStatusAck>, Status> {
        check_speaks_for(&request, &request.get_ref().node)?;
        let req = request.into_inner();
        node_input::check_node_name("node", &req.node).map_err(refused)?;
        let mut pod = req
            .pod
            .ok_or_else(|| Status::invalid_argument("pod is required"))?;
        node_input::check_pod_report(&mut pod).map_err(refused)?;
        let mut ingest = Ingest::new(&self.shared, &req.node);
        ingest.pod(&pod)?;
        let stop_pods = ingest.finish().await?;
        Ok(Response::new(pb::PodStatusAck { stop_pods }))
    }
}
