//! The `Operator` service pssctl talks to: apply, get, scale, autoscale, delete, logs.
//! Every change triggers a reconcile pass at once.

use crate::error::to_status;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use pss_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Shared;
use pss_core::model::{self, AutoScalePolicy, EventRecord, PodPhase, Resources};
use pss_core::paging;
use pss_core::reconciler::{holds_resources, node_states};
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
        let objects = self.parse(req.manifest, source).await?;
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
        Ok(Response::new(pb::ListPodsResponse {
            pods: page.iter().map(pb::Pod::from).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_workloads(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        let store = &self.shared.store;
        let pods = store.list_pods(None).map_err(to_status)?;
        let workloads = store
            .list_workloads()
            .map_err(to_status)?
            .into_iter()
            .map(|w| {
                let mine = pods.iter().filter(|p| p.workload == w.workload.name);
                let current = mine
                    .clone()
                    .filter(|p| !matches!(p.phase, PodPhase::Terminating | PodPhase::Lost))
                    .count();
                let ready = mine
                    .filter(|p| p.ready && p.phase == PodPhase::Running)
                    .count();
                let mut out = pb::Workload::from(&w.workload);
                out.current_replicas = current as u32;
                out.ready_replicas = ready as u32;
                out.created_at_ms = w.created_at_ms;
                out.generation = w.generation;
                if let Err(e) = w.workload.validate(&self.shared.config.limits) {
                    out.problem = format!("not run: {e}");
                }
                out
            })
            .collect();
        Ok(Response::new(pb::ListWorkloadsResponse { workloads }))
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let services = self
            .shared
            .store
            .list_services()
            .map_err(to_status)?
            .into_iter()
            .map(|s| {
                let mut out = pb::Service::from(&s.service);
                out.created_at_ms = s.created_at_ms;
                if let Some(snap) = self.shared.services.current(&s.service.name) {
                    out.endpoints = snap.endpoints.clone();
                    out.snapshot_version = snap.version;
                }
                out
            })
            .collect();
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn list_nodes(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let store = &self.shared.store;
        let pods = store.list_pods(None).map_err(to_status)?;
        let requests: std::collections::HashMap<String, Resources> = store
            .list_workloads()
            .map_err(to_status)?
            .into_iter()
            .map(|w| (w.workload.name.clone(), w.workload.pod_spec.requests()))
            .collect();
        let records = store.list_nodes().map_err(to_status)?;
        // The scheduler's own view: allocation is what the reconciler places against.
        let states = node_states(&records, &pods, |w| requests.get(w).copied());
        let mut counts: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        for p in pods.iter().filter(|p| holds_resources(p.phase)) {
            if let Some(n) = p.node.as_deref() {
                *counts.entry(n).or_default() += 1;
            }
        }
        let nodes = records
            .iter()
            .zip(&states)
            .map(|(n, state)| {
                model::node_to_proto(
                    n,
                    state.allocated,
                    counts.get(n.name.as_str()).copied().unwrap_or(0),
                )
            })
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
        let autoscalers = self
            .shared
            .store
            .list_autoscalers()
            .map_err(to_status)?
            .into_iter()
            .filter(|a| filter.is_empty() || a.policy.workload == filter)
            .map(|a| {
                let mut out = pb::AutoScalePolicy::from(&a.policy);
                out.created_at_ms = a.created_at_ms;
                out.has_metrics = a.status.current_cpu_percent.is_some()
                    || a.status.current_memory_percent.is_some();
                out.current_cpu_percent = a.status.current_cpu_percent.unwrap_or_default();
                out.current_memory_percent = a.status.current_memory_percent.unwrap_or_default();
                out.current_replicas = a.status.current_replicas;
                out.desired_replicas = a.status.desired_replicas;
                out.last_scale_at_ms = a.status.last_scale_at_ms;
                out
            })
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
                    "cannot delete kind {other:?}: use workload, service, autoscaler or node"
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

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
