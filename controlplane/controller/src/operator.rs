//! The `Operator` service pssctl talks to: apply, get, scale, autoscale, delete, logs.
//! Every change triggers a reconcile pass at once.

use crate::error::to_status;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use pss_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{views, Shared};
use pss_core::model::{self, AutoScalePolicy, EventRecord, PodPhase, PodSpec, Resources, Selector};
use pss_core::paging;
use pss_core::reconciler::holds_resources;
use pss_core::text::cut_short;
use pss_store::ApplyAction;

pub(crate) struct OperatorApi {
    shared: Arc<Shared>,
}

impl OperatorApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        OperatorApi { shared }
    }
}

/// Longest manifest source name kept (it is echoed in events and errors).
const MAX_SOURCE_BYTES: usize = 256;

/// Events listed when the request gives no limit.
const DEFAULT_EVENT_LIMIT: usize = 200;

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

/// The objects of a typed Apply, checked by the same rules as a manifest; errors name the
/// object (`objects[1] (Workload web): podSpec...`).
fn typed_objects(
    objects: Vec<pb::TypedObject>,
    limits: &model::Limits,
) -> Result<Vec<model::Object>, Status> {
    if objects.len() > limits.max_documents {
        return Err(Status::invalid_argument(format!(
            "{} objects, above the limit of {} per apply",
            objects.len(),
            limits.max_documents
        )));
    }
    let mut out: Vec<model::Object> = Vec::with_capacity(objects.len());
    for (i, o) in objects.into_iter().enumerate() {
        let at = |kind: &str, name: &str| format!("objects[{i}] ({kind} {})", cut_short(name, 64));
        let object = match o.object {
            Some(pb::typed_object::Object::Workload(w)) => {
                let where_ = at("Workload", &w.name);
                model::Workload::from_proto(w, limits)
                    .map(model::Object::Workload)
                    .map_err(|e| Status::invalid_argument(format!("{where_}: {e}")))?
            }
            Some(pb::typed_object::Object::Service(s)) => {
                let where_ = at("Service", &s.name);
                model::Service::try_from(s)
                    .map(model::Object::Service)
                    .map_err(|e| Status::invalid_argument(format!("{where_}: {e}")))?
            }
            Some(pb::typed_object::Object::Autoscaler(a)) => {
                let where_ = at("AutoScalePolicy", &a.name);
                AutoScalePolicy::from_proto(a, limits)
                    .map(model::Object::AutoScalePolicy)
                    .map_err(|e| Status::invalid_argument(format!("{where_}: {e}")))?
            }
            None => {
                return Err(Status::invalid_argument(format!(
                    "objects[{i}]: empty (set workload, service or autoscaler)"
                )))
            }
        };
        if out
            .iter()
            .any(|o| o.kind() == object.kind() && o.name() == object.name())
        {
            return Err(Status::invalid_argument(format!(
                "{}: duplicate {} {:?} in this apply",
                at(object.kind(), object.name()),
                object.kind(),
                object.name()
            )));
        }
        out.push(object);
    }
    Ok(out)
}

/// The request's label selector, parsed; an invalid one is the caller's error.
fn selector(req: &pb::ListRequest) -> Result<Selector, Status> {
    Selector::parse(&req.label_selector).map_err(|e| {
        Status::invalid_argument(format!(
            "label_selector {:?}: {e}",
            cut_short(&req.label_selector, 128)
        ))
    })
}

impl OperatorApi {
    /// Parses and validates a manifest on a blocking thread, at most [`crate::PARSE_SLOTS`] at
    /// a time: the runtime threads keep answering heartbeats and reads meanwhile, and no lock
    /// or store handle is held while a large or hostile manifest is being rejected.
    async fn parse(&self, manifest: String, source: &str) -> Result<Vec<model::Object>, Status> {
        let _slot = self
            .shared
            .parse_slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the controller is shutting down"))?;
        let source = source.to_string();
        let limits = self.shared.config.limits.clone();
        tokio::task::spawn_blocking(move || {
            model::parse_manifests_with(&manifest, &source, &limits)
        })
        .await
        .map_err(|e| Status::internal(format!("manifest parser failed: {e}")))?
        .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// An autoscaling policy needs its workload, in the store or in the same apply, as
    /// `pssctl autoscale` does.
    fn check_autoscaled_workloads_exist(
        &self,
        objects: &[model::Object],
        source: &str,
    ) -> Result<(), Status> {
        for obj in objects {
            let model::Object::AutoScalePolicy(p) = obj else {
                continue;
            };
            let in_apply = objects
                .iter()
                .any(|o| matches!(o, model::Object::Workload(w) if w.name == p.workload));
            if !in_apply
                && self
                    .shared
                    .store
                    .get_workload(&p.workload)
                    .map_err(to_status)?
                    .is_none()
            {
                return Err(Status::invalid_argument(format!(
                    "{source}: AutoScalePolicy {}: workload {} not found (apply the workload first, or in the same file)",
                    p.name, p.workload
                )));
            }
        }
        Ok(())
    }

    /// A workload has at most one autoscaling policy: two would fight over its replicas.
    fn check_one_autoscaler_per_workload(
        &self,
        objects: &[model::Object],
        source: &str,
    ) -> Result<(), Status> {
        let existing = self.shared.store.list_autoscalers().map_err(to_status)?;
        let mut seen: std::collections::HashMap<&str, &str> = existing
            .iter()
            .map(|a| (a.policy.workload.as_str(), a.policy.name.as_str()))
            .collect();
        for obj in objects {
            let model::Object::AutoScalePolicy(p) = obj else {
                continue;
            };
            match seen.insert(p.workload.as_str(), p.name.as_str()) {
                Some(other) if other != p.name => {
                    return Err(Status::invalid_argument(format!(
                    "{source}: AutoScalePolicy {}: workload {} already has the autoscaler {other} \
                         (delete it first, or apply the change to {other})",
                    p.name, p.workload
                )))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl OperatorApi {
    /// `pssctl delete pod/NAME`: the pod leaves the endpoints, is stopped, and the reconciler
    /// replaces it (a way to force a reschedule).
    fn delete_pod(&self, id: &str) -> Result<Response<pb::DeleteResponse>, Status> {
        let store = &self.shared.store;
        let mut pod = store
            .get_pod(id)
            .map_err(to_status)?
            .ok_or_else(|| Status::not_found(format!("pod \"{}\" not found", cut_short(id, 64))))?;
        if pod.phase != PodPhase::Terminating {
            let was_ready = pod.ready;
            pod.phase = PodPhase::Terminating;
            pod.ready = false;
            pod.updated_at_ms = pss_plumbing::clock::now_ms();
            store.put_pod(&pod).map_err(to_status)?;
            self.shared.event(EventRecord::normal(
                "Killing",
                format!("pod/{id}"),
                format!("stopping pod {id}: deleted by an operator; a replacement is scheduled"),
            ));
            self.shared.refresh_endpoints();
            // Out of the endpoints first, then stopped after the drain period.
            crate::executor::spawn_stop(&self.shared, id.to_string(), was_ready);
        }
        self.shared.kick();
        Ok(Response::new(pb::DeleteResponse {}))
    }
}

#[tonic::async_trait]
impl pb::operator_server::Operator for OperatorApi {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let req = request.into_inner();
        // The source is a file name for messages: never let it make them large.
        let source = if req.source.is_empty() {
            "<request>".to_string()
        } else {
            cut_short(&req.source, MAX_SOURCE_BYTES).into_owned()
        };
        let source = source.as_str();
        let objects = if req.objects.is_empty() {
            self.parse(req.manifest, source).await?
        } else if !req.manifest.is_empty() {
            return Err(Status::invalid_argument(
                "give the manifest text or typed objects, not both",
            ));
        } else {
            typed_objects(req.objects, &self.shared.config.limits)?
        };
        self.check_one_autoscaler_per_workload(&objects, source)?;
        self.check_autoscaled_workloads_exist(&objects, source)?;
        let actions = self.shared.store.apply(&objects).map_err(to_status)?;
        let mut out = Vec::with_capacity(objects.len());
        for (obj, action) in objects.iter().zip(actions) {
            if action != ApplyAction::Unchanged {
                self.shared.event(EventRecord::normal(
                    if action == ApplyAction::Created {
                        "Created"
                    } else {
                        "Configured"
                    },
                    format!("{}/{}", obj.kind().to_lowercase(), obj.name()),
                    format!(
                        "{} {} {} from {source}",
                        obj.kind(),
                        obj.name(),
                        action.as_str()
                    ),
                ));
            }
            out.push(pb::AppliedObject {
                kind: obj.kind().into(),
                name: obj.name().into(),
                action: action.as_str().into(),
            });
        }
        self.shared.refresh_endpoints();
        self.shared.kick();
        Ok(Response::new(pb::ApplyResponse { objects: out }))
    }

    async fn list_pods(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        let req = request.into_inner();
        let selector = selector(&req)?;
        let size = paging::page_size(req.page_size);
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        // One row more than the page tells whether another page follows.
        let batch = self
            .shared
            .store
            .list_pods_page(
                (!req.filter.is_empty()).then_some(req.filter.as_str()),
                after,
                size + 1,
            )
            .map_err(to_status)?;
        let (page, next) = paging::page(&batch, |p| p.id.clone(), None, size);
        // Pods carry their workload's labels; a selector keeps those that match (a page may
        // then hold fewer than `page_size` pods, and the token still leads on).
        let labels = views::workload_labels(&self.shared).map_err(to_status)?;
        let pods = page
            .iter()
            .map(|p| views::pod(p, &labels))
            .filter(|p| views::matches(&selector, &p.labels))
            .collect();
        Ok(Response::new(pb::ListPodsResponse {
            pods,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_workloads(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        let selector = selector(request.get_ref())?;
        let workloads = views::workloads(&self.shared)
            .map_err(to_status)?
            .into_iter()
            .filter(|w| views::matches(&selector, &w.labels))
            .collect();
        Ok(Response::new(pb::ListWorkloadsResponse { workloads }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let selector = selector(request.get_ref())?;
        let services = views::services(&self.shared)
            .map_err(to_status)?
            .into_iter()
            .filter(|s| views::matches(&selector, &s.labels))
            .collect();
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let selector = selector(request.get_ref())?;
        let nodes = views::nodes(&self.shared)
            .map_err(to_status)?
            .into_iter()
            .filter(|n| views::matches(&selector, &n.labels))
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_EVENT_LIMIT
        } else {
            req.limit as usize
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!(
                    "page_token {:?} is not an event id",
                    cut_short(&req.page_token, 32)
                ))
            })?)
        };
        let events: Vec<_> = self
            .shared
            .store
            .list_events(limit)
            .map_err(to_status)?
            .into_iter()
            .filter(|e| req.filter.is_empty() || e.object.starts_with(&req.filter))
            .collect();
        let (page, next) = paging::page(
            &events,
            |e| e.id,
            after.as_ref(),
            paging::page_size(req.page_size),
        );
        Ok(Response::new(pb::ListEventsResponse {
            events: page.iter().map(pb::Event::from).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn list_autoscalers(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListAutoscalersResponse>, Status> {
        let filter = request.into_inner().filter;
        let autoscalers = views::autoscalers(&self.shared)
            .map_err(to_status)?
            .into_iter()
            .filter(|a| filter.is_empty() || a.workload == filter)
            .collect();
        Ok(Response::new(pb::ListAutoscalersResponse { autoscalers }))
    }

    async fn scale(
        &self,
        request: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::ScaleResponse>, Status> {
        let req = request.into_inner();
        model::validate_replicas(req.replicas, &self.shared.config.limits).map_err(|e| {
            Status::invalid_argument(format!("workload {}: {e}", cut_short(&req.workload, 64)))
        })?;
        let previous = self
            .shared
            .store
            .set_replicas(&req.workload, req.replicas)
            .map_err(to_status)?;
        if previous != req.replicas {
            self.shared.event(EventRecord::normal(
                "Scaled",
                format!("workload/{}", req.workload),
                format!(
                    "scaled workload {} from {previous} to {} replicas",
                    req.workload, req.replicas
                ),
            ));
        }
        self.shared.kick();
        Ok(Response::new(pb::ScaleResponse {
            previous_replicas: previous,
            replicas: req.replicas,
        }))
    }

    async fn autoscale(
        &self,
        request: Request<pb::AutoscaleRequest>,
    ) -> Result<Response<pb::AutoscaleResponse>, Status> {
        let req = request.into_inner();
        if self
            .shared
            .store
            .get_workload(&req.workload)
            .map_err(to_status)?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "workload \"{}\" not found",
                req.workload
            )));
        }
        // `pssctl autoscale` and an AutoScalePolicy manifest set the same thing: the workload's
        // one policy, whatever it was named.
        let existing = self
            .shared
            .store
            .list_autoscalers()
            .map_err(to_status)?
            .into_iter()
            .find(|a| a.policy.workload == req.workload);
        let name = if !req.name.is_empty() {
            req.name.clone()
        } else if let Some(a) = existing {
            a.policy.name
        } else {
            req.workload.clone()
        };
        let policy = AutoScalePolicy {
            name: name.clone(),
            workload: req.workload.clone(),
            min_replicas: req.min_replicas,
            max_replicas: req.max_replicas,
            cpu_percent: (req.cpu_percent > 0).then_some(req.cpu_percent),
            memory_percent: (req.memory_percent > 0).then_some(req.memory_percent),
        };
        // The one definition of the autoscaling rules, as for an AutoScalePolicy manifest.
        policy.validate(&self.shared.config.limits).map_err(|e| {
            Status::invalid_argument(format!("autoscaler {}: {e}", cut_short(&name, 64)))
        })?;
        let action = self
            .shared
            .store
            .upsert_autoscaler(&policy)
            .map_err(to_status)?;
        if action != ApplyAction::Unchanged {
            self.shared.event(EventRecord::normal(
                "Configured",
                format!("autoscalepolicy/{name}"),
                format!(
                    "autoscaler {name} for workload {}: {}..{} replicas, cpu {}%, memory {}%",
                    req.workload,
                    req.min_replicas,
                    req.max_replicas,
                    req.cpu_percent,
                    req.memory_percent
                ),
            ));
        }
        self.shared.kick();
        let mut out = pb::AutoScalePolicy::from(&policy);
        out.created_at_ms = self
            .shared
            .store
            .get_autoscaler(&name)
            .map_err(to_status)?
            .map_or(0, |a| a.created_at_ms);
        Ok(Response::new(pb::AutoscaleResponse {
            policy: Some(out),
            action: action.as_str().into(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = request.into_inner();
        let store = &self.shared.store;
        if matches!(req.kind.as_str(), "pod" | "pods" | "po") {
            return self.delete_pod(&req.name);
        }
        let (kind, existed) = match req.kind.as_str() {
            "workload" | "workloads" => ("workload", store.delete_workload(&req.name)),
            "service" | "services" | "svc" => ("service", store.delete_service(&req.name)),
            "autoscaler" | "autoscalers" | "autoscalepolicy" | "hpa" => {
                ("autoscaler", store.delete_autoscaler(&req.name))
            }
            "node" | "nodes" | "no" => {
                // The node's certificates are revoked (it cannot call in again, and the
                // controller no longer trusts it) and it is NotReady: its pods are replaced.
                let known = store.get_node(&req.name).map_err(to_status)?.is_some();
                let revoked = crate::credentials::revoke_node(&self.shared, &req.name)?;
                if known {
                    store
                        .set_node_status(&req.name, pss_core::model::NodeStatus::NotReady)
                        .map_err(to_status)?;
                }
                if known || revoked > 0 {
                    self.shared.event(EventRecord::warning(
                        "NodeRevoked",
                        format!("node/{}", req.name),
                        format!(
                            "node {} deleted: {revoked} certificate(s) revoked, its pods are replaced",
                            req.name
                        ),
                    ));
                }
                ("node", Ok(known || revoked > 0))
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "cannot delete kind {other:?}: use workload, service, autoscaler, pod or node"
                )))
            }
        };
        if !existed.map_err(to_status)? {
            return Err(Status::not_found(format!(
                "{kind} \"{}\" not found",
                req.name
            )));
        }
        self.shared.event(EventRecord::normal(
            "Deleted",
            format!("{kind}/{}", req.name),
            format!("{kind} {} deleted", req.name),
        ));
        self.shared.refresh_endpoints();
        self.shared.kick();
        Ok(Response::new(pb::DeleteResponse {}))
    }

    type PodLogsStream = LogStream;

    async fn pod_logs(
        &self,
        request: Request<pb::PodLogsRequest>,
    ) -> Result<Response<Self::PodLogsStream>, Status> {
        let req = request.into_inner();
        let store = &self.shared.store;
        let pod = store
            .get_pod(&req.pod)
            .map_err(to_status)?
            .ok_or_else(|| Status::not_found(format!("pod \"{}\" not found", req.pod)))?;
        let node_name = pod.node.ok_or_else(|| {
            Status::failed_precondition(format!("pod {} is not placed on a node yet", req.pod))
        })?;
        let node = store
            .get_node(&node_name)
            .map_err(to_status)?
            .ok_or_else(|| {
                Status::unavailable(format!("node {node_name} of pod {} is unknown", req.pod))
            })?;
        let mut client = self
            .shared
            .agents
            .client(&node.name, &node.agent_address)
            .map_err(to_status)?;
        let upstream = client.pod_logs(req).await?.into_inner();
        let shutdown = self.shared.shutdown.clone();
        let stream = upstream.take_until(shutdown.cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_node_scheduling(
        &self,
        request: Request<pb::NodeSchedulingRequest>,
    ) -> Result<Response<pb::NodeSchedulingResponse>, Status> {
        let req = request.into_inner();
        let (unschedulable, draining, reason, what) = match req.action.as_str() {
            "cordon" => (true, false, "Cordoned", "cordoned: no new pods"),
            "uncordon" => (false, false, "Uncordoned", "uncordoned: schedulable again"),
            "drain" => (
                true,
                true,
                "Draining",
                "draining: its pods are replaced elsewhere, each new pod ready before the old one stops",
            ),
            other => {
                return Err(Status::invalid_argument(format!(
                    "action {:?}: expected cordon, uncordon or drain",
                    cut_short(other, 32)
                )))
            }
        };
        let node = self
            .shared
            .store
            .set_node_scheduling(&req.node, unschedulable, draining)
            .map_err(to_status)?;
        self.shared.event(EventRecord::normal(
            reason,
            format!("node/{}", node.name),
            format!("node {} {what}", node.name),
        ));
        let pods = self
            .shared
            .store
            .list_pods(None)
            .map_err(to_status)?
            .iter()
            .filter(|p| p.node.as_deref() == Some(node.name.as_str()))
            .filter(|p| holds_resources(p.phase))
            .count();
        self.shared.kick();
        Ok(Response::new(pb::NodeSchedulingResponse {
            node: Some(node.to_proto(Resources::default(), pods as u32)),
            pods: pods as u32,
        }))
    }

    async fn rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutResponse>, Status> {
        let req = request.into_inner();
        let store = &self.shared.store;
        let name = req.workload.as_str();
        let current = store
            .get_workload(name)
            .map_err(to_status)?
            .ok_or_else(|| {
                Status::not_found(format!("workload \"{}\" not found", cut_short(name, 64)))
            })?;
        let (stored, message) = match req.action.as_str() {
            "undo" => {
                let revisions = store.list_revisions(name).map_err(to_status)?;
                let target = if req.to_revision == 0 {
                    // The newest revision other than the current one.
                    revisions
                        .iter()
                        .rev()
                        .find(|r| r.pod_spec != current.workload.pod_spec)
                } else {
                    revisions.iter().find(|r| r.revision == req.to_revision)
                };
                let Some(target) = target else {
                    let known: Vec<String> =
                        revisions.iter().map(|r| r.revision.to_string()).collect();
                    return Err(Status::failed_precondition(if req.to_revision == 0 {
                        format!("workload {name} has no previous revision to go back to")
                    } else {
                        format!(
                            "workload {name} has no revision {} (kept: {})",
                            req.to_revision,
                            known.join(", ")
                        )
                    }));
                };
                let cause = format!("rollout undo to revision {}", target.revision);
                let stored = store
                    .set_pod_spec(name, &target.pod_spec, &cause)
                    .map_err(to_status)?;
                (
                    stored,
                    format!("rolled back to revision {}", target.revision),
                )
            }
            "restart" => {
                let spec = PodSpec {
                    restarted_at_ms: pss_plumbing::clock::now_ms(),
                    ..current.workload.pod_spec.clone()
                };
                let stored = store
                    .set_pod_spec(name, &spec, "rollout restart")
                    .map_err(to_status)?;
                (stored, "restarted: every pod is replaced".to_string())
            }
            "pause" => (
                store.set_paused(name, true).map_err(to_status)?,
                "paused".to_string(),
            ),
            "resume" => (
                store.set_paused(name, false).map_err(to_status)?,
                "resumed".to_string(),
            ),
            other => {
                return Err(Status::invalid_argument(format!(
                    "action {:?}: expected undo, restart, pause or resume",
                    cut_short(other, 32)
                )))
            }
        };
        self.shared.event(EventRecord::normal(
            "Rollout",
            format!("workload/{name}"),
            format!("workload {name} {message} (revision {})", stored.revision),
        ));
        self.shared.kick();
        let mut out = pb::Workload::from(&stored.workload);
        out.revision = stored.revision;
        out.generation = stored.generation;
        out.created_at_ms = stored.created_at_ms;
        Ok(Response::new(pb::RolloutResponse {
            workload: Some(out),
            message,
        }))
    }

    async fn rollout_history(
        &self,
        request: Request<pb::RolloutHistoryRequest>,
    ) -> Result<Response<pb::RolloutHistoryResponse>, Status> {
        let req = request.into_inner();
        let store = &self.shared.store;
        if store
            .get_workload(&req.workload)
            .map_err(to_status)?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "workload \"{}\" not found",
                cut_short(&req.workload, 64)
            )));
        }
        let revisions = store
            .list_revisions(&req.workload)
            .map_err(to_status)?
            .into_iter()
            .map(|r| pb::Revision {
                revision: r.revision,
                spec_hash: r.pod_spec.spec_hash(),
                created_at_ms: r.created_at_ms,
                images: r.images(),
                cause: r.cause,
                pod_spec: Some((&r.pod_spec).into()),
            })
            .collect();
        Ok(Response::new(pb::RolloutHistoryResponse { revisions }))
    }

    type WatchStream = crate::watch_hub::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let kind = crate::watch_hub::Kind::parse(&req.kind).ok_or_else(|| {
            Status::invalid_argument(format!(
                "kind {:?}: expected pods, workloads, services, nodes or autoscalers",
                cut_short(&req.kind, 32)
            ))
        })?;
        let selector = Selector::parse(&req.label_selector).map_err(|e| {
            Status::invalid_argument(format!(
                "label_selector {:?}: {e}",
                cut_short(&req.label_selector, 128)
            ))
        })?;
        // The initial list must be current: nobody may have watched (and the hub rendered)
        // since the last writes.
        crate::watch_hub::refresh(&self.shared).await;
        let stream = self.shared.watch.watch(kind, selector, req.resume_from)?;
        let shutdown = self.shared.shutdown.clone();
        Ok(Response::new(Box::pin(
            stream.take_until(shutdown.cancelled_owned()),
        )))
    }

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
