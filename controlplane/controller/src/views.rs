//! The objects as clients see them: desired state with the observed fields filled in
//! (workloads with their replica counts and rollout state, services with their endpoints,
//! nodes with their allocation, pods with their workload's labels). The list RPCs and the watch
//! hub both render from here, so a watch event and a list show the same object.

use std::collections::HashMap;

use pss_core::model::{self, Labels, PodPhase, PodRecord, Resources, RolloutState, Selector};
use pss_core::reconciler::{holds_resources, node_states};
use pss_proto::v1 as pb;

use crate::Shared;

type Result<T> = std::result::Result<T, pss_store::Error>;

/// Whether a wire object's labels match `selector`.
pub(crate) fn matches(selector: &Selector, labels: &HashMap<String, String>) -> bool {
    if selector.is_empty() {
        return true;
    }
    let labels: Labels = labels.clone().into_iter().collect();
    selector.matches(&labels)
}

/// Every workload with its observed fields.
pub(crate) fn workloads(shared: &Shared) -> Result<Vec<pb::Workload>> {
    let store = &shared.store;
    let pods = store.list_pods(None)?;
    let mut by_workload: HashMap<&str, Vec<&PodRecord>> = HashMap::new();
    for p in &pods {
        by_workload.entry(p.workload.as_str()).or_default().push(p);
    }
    Ok(store
        .list_workloads()?
        .into_iter()
        .map(|w| {
            let mine = by_workload
                .get(w.workload.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let counted =
                |p: &&&PodRecord| !matches!(p.phase, PodPhase::Terminating | PodPhase::Lost);
            let hash = w.workload.pod_spec.spec_hash();
            let mut out = pb::Workload::from(&w.workload);
            out.current_replicas = mine.iter().filter(counted).count() as u32;
            out.updated_replicas = mine
                .iter()
                .filter(counted)
                .filter(|p| p.spec_hash == hash)
                .count() as u32;
            out.ready_replicas = mine
                .iter()
                .filter(|p| p.ready && p.phase == PodPhase::Running)
                .count() as u32;
            out.created_at_ms = w.created_at_ms;
            out.generation = w.generation;
            out.revision = w.revision;
            let status = &w.rollout_status;
            // The spec's pause wins over a status the next pass has not caught up with, and a
            // status about an older revision is stale: the pass that sees the new one has not
            // run yet.
            out.rollout_state = match (w.workload.rollout.paused, status.state) {
                (true, _) => RolloutState::Paused,
                (false, RolloutState::Paused) => RolloutState::Progressing,
                (false, state) if status.revision == w.revision => state,
                (false, _) => RolloutState::Progressing,
            }
            .as_str()
            .to_string();
            out.rollout_message = status.message.clone();
            if let Err(e) = w.workload.validate(&shared.config.limits) {
                out.problem = format!("not run: {e}");
            }
            out
        })
        .collect())
}

/// Every service with its current endpoints.
pub(crate) fn services(shared: &Shared) -> Result<Vec<pb::Service>> {
    Ok(shared
        .store
        .list_services()?
        .into_iter()
        .map(|s| {
            let mut out = pb::Service::from(&s.service);
            out.created_at_ms = s.created_at_ms;
            if let Some(snap) = shared.services.current(&s.service.name) {
                out.endpoints = snap.endpoints.clone();
                out.snapshot_version = snap.version;
            }
            out
        })
        .collect())
}

/// Every node with its allocation (the scheduler's own view) and pod count.
pub(crate) fn nodes(shared: &Shared) -> Result<Vec<pb::Node>> {
    let store = &shared.store;
    let pods = store.list_pods(None)?;
    let requests: HashMap<String, Resources> = store
        .list_workloads()?
        .into_iter()
        .map(|w| (w.workload.name.clone(), w.workload.pod_spec.requests()))
        .collect();
    let records = store.list_nodes()?;
    let states = node_states(&records, &pods, |w| requests.get(w).copied());
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for p in pods.iter().filter(|p| holds_resources(p.phase)) {
        if let Some(n) = p.node.as_deref() {
            *counts.entry(n).or_default() += 1;
        }
    }
    Ok(records
        .iter()
        .zip(&states)
        .map(|(n, state)| {
            model::node_to_proto(
                n,
                state.allocated,
                counts.get(n.name.as_str()).copied().unwrap_or(0),
            )
        })
        .collect())
}

/// The labels of every workload (what its pods carry).
pub(crate) fn workload_labels(shared: &Shared) -> Result<HashMap<String, Labels>> {
    Ok(shared
        .store
        .list_workloads()?
        .into_iter()
        .map(|w| (w.workload.name, w.workload.labels))
        .collect())
}

/// A pod as listed: with its workload's labels.
pub(crate) fn pod(p: &PodRecord, labels: &HashMap<String, Labels>) -> pb::Pod {
    let mut out = pb::Pod::from(p);
    if let Some(l) = labels.get(&p.workload) {
        out.labels = l.clone().into_iter().collect();
    }
    out
}

/// Every pod.
pub(crate) fn pods(shared: &Shared) -> Result<Vec<pb::Pod>> {
    let labels = workload_labels(shared)?;
    Ok(shared
        .store
        .list_pods(None)?
        .iter()
        .map(|p| pod(p, &labels))
        .collect())
}

/// Every autoscaling policy with what the autoscaler last saw.
pub(crate) fn autoscalers(shared: &Shared) -> Result<Vec<pb::AutoScalePolicy>> {
    Ok(shared
        .store
        .list_autoscalers()?
        .into_iter()
        .map(|a| {
            let mut out = pb::AutoScalePolicy::from(&a.policy);
            out.created_at_ms = a.created_at_ms;
            out.has_metrics =
                a.status.current_cpu_percent.is_some() || a.status.current_memory_percent.is_some();
            out.current_cpu_percent = a.status.current_cpu_percent.unwrap_or_default();
            out.current_memory_percent = a.status.current_memory_percent.unwrap_or_default();
            out.current_replicas = a.status.current_replicas;
            out.desired_replicas = a.status.desired_replicas;
            out.last_scale_at_ms = a.status.last_scale_at_ms;
            out
        })
        .collect())
}
