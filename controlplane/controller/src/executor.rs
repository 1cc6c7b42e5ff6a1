//! The reconciler's executor: runs a pass at once when something changes (apply, scale, delete,
//! a pod's status, a node's liveness), every `--reconcile-interval`, and when the last plan
//! asked to be requeued. Each pass gathers desired and observed state from the store, asks the
//! pure [`reconcile`] what to do, and executes the actions:
//! records are updated in the store first (so the next pass sees the intent), then the slow
//! part — RunPod/StopPod on an agent, the drain before a stop — runs in a task of its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1 as pb;

use crate::Result;
use crate::Shared;
use pss_core::model::{EventRecord, NodeStatus, PodPhase, PodRecord};
use pss_core::podstate::apply_report;
use pss_core::reconciler::{
    mark_evicted, node_states, observed_from_records, reconcile, Action, DesiredWorkload, Plan,
    StopReason,
};
use pss_plumbing::clock::now_ms;
use pss_store::Change;

/// The longest pause between two passes that pacing imposes (see [`run`]).
const MAX_PASS_GAP: Duration = Duration::from_secs(2);

/// Runs passes until shutdown: at once on a kick, every `--reconcile-interval`, and when the
/// last plan asked to be requeued (a crash-loop back-off ending).
pub(crate) async fn run(shared: Arc<Shared>) {
    // Runs for one term of leadership (with SQLite: until shutdown).
    let term = shared.term();
    let mut interval = tokio::time::interval(shared.config.reconcile_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requeue: Option<tokio::time::Instant> = None;
    // Paces passes under a stream of kicks (pods turning ready one after another in a large
    // cluster): the next pass starts no sooner than three times what the last one took (at
    // most [`MAX_PASS_GAP`]) after it ended, so passes take at most about a quarter of the
    // time; a small cluster's pass takes a millisecond and is not delayed noticeably.
    let mut next_allowed = tokio::time::Instant::now();
    loop {
        let requeued = async {
            match requeue {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.cancelled() => return,
            _ = shared.trigger.notified() => {}
            _ = interval.tick() => {}
            _ = requeued => {}
        }
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep_until(next_allowed) => {}
        }
        let started = std::time::Instant::now();
        let outcome = pass(&shared);
        let took = started.elapsed();
        crate::metrics::RECONCILE_SECONDS.observe(&[], took);
        next_allowed = tokio::time::Instant::now() + (took * 3).min(MAX_PASS_GAP);
        requeue = match outcome {
            Ok(after) => after.map(|d| tokio::time::Instant::now() + d),
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass failed");
                requeue
            }
        };
    }
}

/// One reconcile pass; returns how long until the plan wants the next pass for time alone.
pub(crate) fn pass(shared: &Arc<Shared>) -> Result<Option<Duration>> {
    if !shared.leadership.may_act() {
        return Ok(None);
    }
    let store = &shared.store;
    let workloads = store.list_workloads()?;
    let pods = store.list_pods(None)?;
    let nodes = store.list_nodes()?;
    let now = now_ms();

    // A stored workload outside today's limits (stored by an older version, or before
    // --max-replicas was lowered) is reported once and frozen: not planned, its pods left as
    // they are. Memory stays bounded by the objects, never by a number inside one.
    let invalid: HashSet<&str> = workloads
        .iter()
        .filter_map(|w| {
            let err = w.workload.validate(&shared.config.limits).err()?;
            report_invalid(shared, &w.workload.name, w.generation, &err.to_string());
            Some(w.workload.name.as_str())
        })
        .collect();
    let desired: Vec<DesiredWorkload> = workloads
        .iter()
        .filter(|w| !invalid.contains(w.workload.name.as_str()))
        .map(|w| DesiredWorkload::of(&w.workload))
        .collect();
    let mut observed: Vec<_> = observed_from_records(&pods)
        .into_iter()
        .filter(|p| !invalid.contains(p.workload.as_str()))
        .collect();
    mark_evicted(&mut observed, &nodes);
    let requests: HashMap<&str, pss_core::model::Resources> = workloads
        .iter()
        .map(|w| (w.workload.name.as_str(), w.workload.pod_spec.requests()))
        .collect();
    let node_states = node_states(&nodes, &pods, |name| requests.get(name).copied());

    let Plan {
        actions,
        requeue_at_ms,
    } = reconcile(&desired, &observed, &node_states, now);
    let by_id: HashMap<&str, &PodRecord> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
    // IDs of pods created in this pass (those of existing pods are `by_id`'s keys).
    let mut fresh: HashSet<String> = HashSet::new();
    // A fresh, unplaced record for a new pod of `workload` (None if it was deleted meanwhile).
    let mut new_pod = |workload: &str| {
        let w = workloads.iter().find(|w| w.workload.name == workload)?;
        let id = unique_pod_id(workload, |id| by_id.contains_key(id), &mut fresh);
        Some(PodRecord::new(
            id,
            workload,
            w.workload.pod_spec.spec_hash(),
            now,
        ))
    };
    let mut endpoints_changed = false;
    // Every record change of the pass goes to the store in one transaction, before any agent
    // is called (so the next pass, or a restarted controller, sees the intent); then the
    // events, and the calls in tasks of their own.
    let mut changes: Vec<Change> = Vec::new();
    let mut events: Vec<EventRecord> = Vec::new();
    let mut starts: Vec<String> = Vec::new();
    let mut stops: Vec<(String, bool)> = Vec::new();
    for action in actions {
        tracing::debug!(?action, "reconcile");
        match action {
            Action::Create { workload, node } => {
                let Some(mut pod) = new_pod(&workload) else {
                    continue;
                };
                pod.node = Some(node.clone());
                pod.phase = PodPhase::Starting;
                crate::metrics::SCHEDULING_SECONDS.observe(&[], Duration::ZERO);
                events.push(EventRecord::normal(
                    "Scheduled",
                    format!("pod/{}", pod.id),
                    format!("assigned pod {} to node {node}", pod.id),
                ));
                starts.push(pod.id.clone());
                changes.push(Change::PutPod(pod));
            }
            Action::CreateUnschedulable { workload, reason } => {
                let Some(mut pod) = new_pod(&workload) else {
                    continue;
                };
                pod.reason = "Unschedulable".into();
                pod.message = reason.clone();
                events.push(EventRecord::warning(
                    "FailedScheduling",
                    format!("pod/{}", pod.id),
                    reason,
                ));
                changes.push(Change::PutPod(pod));
            }
            Action::Place { pod, node } => {
                let Some(mut rec) = by_id.get(pod.as_str()).map(|p| (*p).clone()) else {
                    continue;
                };
                rec.node = Some(node.clone());
                rec.phase = PodPhase::Starting;
                rec.reason.clear();
                rec.message.clear();
                rec.updated_at_ms = now;
                crate::metrics::SCHEDULING_SECONDS.observe(
                    &[],
                    Duration::from_millis(u64::try_from(now - rec.created_at_ms).unwrap_or(0)),
                );
                changes.push(Change::PutPod(rec));
                events.push(EventRecord::normal(
                    "Scheduled",
                    format!("pod/{pod}"),
                    format!("assigned pod {pod} to node {node}"),
                ));
                starts.push(pod);
            }
            Action::Restart { pod, node: _ } => {
                let Some(mut rec) = by_id.get(pod.as_str()).map(|p| (*p).clone()) else {
                    continue;
                };
                if rec.phase != PodPhase::Failed && rec.phase != PodPhase::Succeeded {
                    continue;
                }
                rec.phase = PodPhase::Starting;
                rec.restart_count += 1;
                rec.updated_at_ms = now;
                events.push(EventRecord::normal(
                    "Restarting",
                    format!("pod/{pod}"),
                    format!(
                        "restarting pod {pod} (restart {}, after {})",
                        rec.restart_count, rec.reason
                    ),
                ));
                changes.push(Change::PutPod(rec));
                starts.push(pod);
            }
            Action::Stop {
                pod,
                node: _,
                reason,
            } => {
                let Some(mut rec) = by_id.get(pod.as_str()).map(|p| (*p).clone()) else {
                    continue;
                };
                if rec.phase == PodPhase::Terminating {
                    continue;
                }
                let was_ready = rec.ready;
                rec.phase = PodPhase::Terminating;
                rec.ready = false;
                rec.updated_at_ms = now;
                changes.push(Change::PutPod(rec));
                endpoints_changed |= was_ready;
                let why = match reason {
                    StopReason::ScaledDown => "scaled down",
                    StopReason::WorkloadDeleted => "workload deleted",
                    StopReason::Replaced => "replaced by a pod of the new spec",
                    StopReason::Evicted => "its node is drained; a replacement elsewhere is ready",
                };
                events.push(EventRecord::normal(
                    "Killing",
                    format!("pod/{pod}"),
                    format!("stopping pod {pod}: {why}"),
                ));
                stops.push((pod, was_ready));
            }
            Action::Forget { pod } => {
                events.push(EventRecord::normal(
                    "Replaced",
                    format!("pod/{pod}"),
                    format!("pod {pod} was lost with its node; a replacement is scheduled"),
                ));
                changes.push(Change::DeletePod(pod));
                endpoints_changed = true;
            }
        }
    }
    store.write_batch(&changes)?;
    for e in events {
        shared.event(e);
    }
    for pod in starts {
        spawn_start(shared, pod);
    }
    for (pod, drain) in stops {
        spawn_stop(shared, pod, drain);
    }
    if endpoints_changed {
        shared.refresh_endpoints();
    }
    // Work left over by a previous controller run or a failed call: pods stuck mid-way (the
    // pods changed by this pass have their tasks already; a claimed pod is skipped).
    for p in &pods {
        if in_flight(shared, &p.id) {
            continue;
        }
        match p.phase {
            PodPhase::Terminating => spawn_stop(shared, p.id.clone(), false),
            PodPhase::Starting if p.node.is_some() => spawn_start(shared, p.id.clone()),
            _ => {}
        }
    }
    let valid: Vec<_> = workloads
        .iter()
        .filter(|w| !invalid.contains(w.workload.name.as_str()))
        .collect();
    let rollout_due = crate::rollouts::track(shared, &valid, &pods, now)?;
    let requeue_at_ms = match (requeue_at_ms, rollout_due) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(requeue_at_ms.map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0))))
}

/// Records a Warning event for a workload the controller will not run, once per generation.
fn report_invalid(shared: &Shared, workload: &str, generation: u64, why: &str) {
    let first = shared
        .reported_invalid
        .lock()
        .expect("reported_invalid poisoned")
        .insert((workload.to_string(), generation));
    if first {
        shared.event(EventRecord::warning(
            "InvalidSpec",
            format!("workload/{workload}"),
            format!("workload {workload} is not run: {why}; fix it with pssctl scale or apply"),
        ));
    }
}

/// A fresh pod id for `workload`: not `existing`, not in `fresh`; records it in `fresh`.
fn unique_pod_id(
    workload: &str,
    existing: impl Fn(&str) -> bool,
    fresh: &mut HashSet<String>,
) -> String {
    loop {
        let id = pss_core::model::pod_id(workload, rand::random());
        if !existing(&id) && fresh.insert(id.clone()) {
            return id;
        }
    }
}

/// Claims `pod` for one task; false when a task already works on it.
fn claim(shared: &Shared, pod: &str) -> bool {
    shared
        .inflight
        .lock()
        .expect("inflight poisoned")
        .insert(pod.to_string())
}

/// Whether a task works on `pod` (a cheap look before [`claim`], which copies the id).
fn in_flight(shared: &Shared, pod: &str) -> bool {
    shared
        .inflight
        .lock()
        .expect("inflight poisoned")
        .contains(pod)
}

fn release(shared: &Shared, pod: &str) {
    shared
        .inflight
        .lock()
        .expect("inflight poisoned")
        .remove(pod);
}

/// Runs `work` on `pod` in a task of its own, unless a task already works on that pod.
fn spawn_claimed<Fut>(
    shared: &Arc<Shared>,
    pod: String,
    what: &'static str,
    work: impl FnOnce(Arc<Shared>, String) -> Fut,
) where
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    if !claim(shared, &pod) {
        return;
    }
    let fut = work(shared.clone(), pod.clone());
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::warn!(pod = %pod, error = %e, "{what} failed; a later pass retries");
        }
        release(&shared, &pod);
    });
}

/// Starts (or restarts) `pod` on its node in a task of its own.
/// The call waits for one of the [`crate::START_SLOTS`]; the task holds only its pod id until
/// then (the call's state is boxed after the wait), so many queued starts stay small.
fn spawn_start(shared: &Arc<Shared>, pod: String) {
    spawn_claimed(shared, pod, "starting pod", |shared, pod| async move {
        let Ok(_slot) = shared.start_slots.clone().acquire_owned().await else {
            return Ok(());
        };
        Box::pin(start(&shared, &pod)).await
    });
}

async fn start(shared: &Arc<Shared>, pod_id: &str) -> Result<()> {
    let store = &shared.store;
    let Some(rec) = store.get_pod(pod_id)? else {
        return Ok(());
    };
    let Some(node_name) = rec.node.clone() else {
        return Ok(());
    };
    // Queued behind the slots, the pod may have moved on (stopped, started by a report).
    if rec.phase != PodPhase::Starting {
        return Ok(());
    }
    let Some(workload) = store.get_workload(&rec.workload)? else {
        return Ok(());
    };
    let Some(node) = store.get_node(&node_name)? else {
        return Ok(());
    };
    let spec = &workload.workload.pod_spec;
    let hash = spec.spec_hash();
    if !shared.leadership.may_act() {
        // No longer certainly the leader: the next one starts it.
        return Ok(());
    }
    let mut client = shared.agents.client(&node.name, &node.agent_address)?;
    // A restart is a RunPod too: the agent starts the ended containers of an existing pod in
    // place (same address), or creates the pod if it is gone.
    let call = async {
        let req = pb::RunPodRequest {
            id: pod_id.to_string(),
            workload: rec.workload.clone(),
            spec: Some(spec.into()),
            spec_hash: hash,
        };
        client.run_pod(req).await.map(|r| r.into_inner())
    };
    let result = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(()),
        r = call => r,
    };
    // The record may have moved on (scaled down, deleted) while the agent worked.
    let Some(mut rec) = store.get_pod(pod_id)? else {
        return Ok(());
    };
    if rec.phase != PodPhase::Starting {
        return Ok(());
    }
    rec.spec_hash = hash;
    let report = match result {
        Ok(resp) => resp.pod.unwrap_or_default(),
        Err(status) => pb::PodReport {
            id: pod_id.to_string(),
            phase: pb::PodPhase::Failed as i32,
            reason: if status.code() == tonic::Code::Unavailable {
                "AgentUnreachable".into()
            } else {
                "RunPodFailed".into()
            },
            message: status.message().to_string(),
            ..Default::default()
        },
    };
    let now = now_ms();
    let outcome = apply_report(&mut rec, &report, now);
    // Group commit with every other start finishing now.
    shared
        .writer
        .commit(vec![Change::PutPod(rec.clone())])
        .await?;
    let obj = format!("pod/{pod_id}");
    if outcome.started {
        shared.event(EventRecord::normal(
            "Started",
            obj,
            format!("pod {pod_id} is running on {node_name}"),
        ));
    } else if outcome.failed {
        let wait = Duration::from_millis((rec.backoff_until_ms - now).max(0) as u64);
        shared.event(EventRecord::warning(
            "Failed",
            obj,
            format!(
                "pod {pod_id} failed to start on {node_name}: {}: {}; retry in {}",
                rec.reason,
                rec.message,
                humantime::format_duration(Duration::from_secs(wait.as_secs()))
            ),
        ));
        // The pass requeues itself for when this back-off ends.
        shared.kick();
    }
    if outcome.changed {
        shared.refresh_endpoints();
    }
    Ok(())
}

/// Drains `pod` (if it was serving), stops it on its node and forgets it, in a task.
pub(crate) fn spawn_stop(shared: &Arc<Shared>, pod: String, drain: bool) {
    spawn_claimed(shared, pod, "stopping pod", move |shared, pod| async move {
        if drain {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(shared.config.drain_period) => {}
            }
        }
        stop(&shared, &pod).await
    });
}

async fn stop(shared: &Arc<Shared>, pod_id: &str) -> Result<()> {
    let store = &shared.store;
    let Some(rec) = store.get_pod(pod_id)? else {
        return Ok(());
    };
    if let Some(node_name) = &rec.node {
        if let Some(node) = store.get_node(node_name)? {
            if node.status == NodeStatus::Ready {
                if !shared.leadership.may_act() {
                    return Ok(());
                }
                let mut client = shared.agents.client(&node.name, &node.agent_address)?;
                let req = pb::StopPodRequest {
                    id: pod_id.to_string(),
                    grace_period_ms: shared.config.stop_grace.as_millis() as u64,
                };
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return Ok(()),
                    r = client.stop_pod(req) => { r?; }
                }
            }
            // A NotReady node's agent stops the pod itself when it comes back: the controller
            // will no longer know it.
        }
    }
    store.delete_pod(pod_id)?;
    shared.event(EventRecord::normal(
        "Stopped",
        format!("pod/{pod_id}"),
        format!("pod {pod_id} stopped and removed"),
    ));
    shared.refresh_endpoints();
    shared.kick();
    Ok(())
}
