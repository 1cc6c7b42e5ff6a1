//! The autoscaler loop: every `--metrics-interval` it evaluates each policy with the pure
//! [`recommend`] (HPA's algorithm, cooldown, stabilization window), records what it saw for
//! `pssctl get autoscalers`, and applies a decision by setting the workload's replicas, which
//! triggers the reconciler. Every scaling decision, and every held-back one, is an event with
//! its numbers.

use pss_plumbing::clock::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::Result;
use crate::Shared;
use pss_core::autoscaler::{
    pod_metrics, recommend, AutoscalerConfig, AutoscalerInput, AutoscalerState, PodMetrics,
    ScaleReason,
};
use pss_core::model::{AutoscalerStatus, EventRecord, NodeRecord, PodPhase, PodRecord, Resources};
use pss_store::StoredAutoscaler;

/// What the autoscaler remembers between evaluations, per policy name.
#[derive(Default)]
pub(crate) struct AutoscaleMemory {
    /// Keyed by policy name and creation time: a policy deleted and created again under the
    /// same name starts with a clean history (no inherited cooldown or stabilization window).
    policies: Mutex<HashMap<(String, i64), Remembered>>,
}

#[derive(Default, Clone)]
struct Remembered {
    state: AutoscalerState,
    /// The last held-back reason reported as an event (not repeated every evaluation).
    last_reason: Option<ScaleReason>,
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let term = shared.term();
    let mut interval = tokio::time::interval(shared.config.metrics_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = evaluate_all(&shared, now_ms()) {
            tracing::warn!(error = %e, "autoscaler evaluation failed");
        }
    }
}

/// Capacity of the node `pod` is placed on (the base of its utilisation when it requests
/// nothing).
fn node_capacity(pod: &PodRecord, nodes: &[NodeRecord]) -> Resources {
    pod.node
        .as_deref()
        .and_then(|n| nodes.iter().find(|r| r.name == n))
        .map(|n| Resources {
            cpu_millis: n.cpu_millis,
            memory_bytes: n.memory_bytes,
        })
        .unwrap_or_default()
}

/// Evaluates every policy once at `now`.
pub(crate) fn evaluate_all(shared: &Shared, now: i64) -> Result<()> {
    let store = &shared.store;
    let policies = store.list_autoscalers()?;
    {
        // Forget deleted (or re-created) policies.
        let live: std::collections::HashSet<(String, i64)> = policies
            .iter()
            .map(|p| (p.policy.name.clone(), p.created_at_ms))
            .collect();
        shared
            .autoscale
            .policies
            .lock()
            .expect("autoscaler memory poisoned")
            .retain(|key, _| live.contains(key));
    }
    if policies.is_empty() {
        return Ok(());
    }
    let pods = store.list_pods(None)?;
    let nodes = store.list_nodes()?;
    for stored in policies {
        // A stored policy outside today's limits (e.g. maxReplicas above --max-replicas)
        // never scales anything; `get autoscalers` and the workload's status say why.
        if let Err(e) = stored.policy.validate(&shared.config.limits) {
            tracing::debug!(policy = %stored.policy.name, error = %e, "autoscaler outside the limits: skipped");
            continue;
        }
        evaluate(shared, &stored, &pods, &nodes, now)?;
    }
    Ok(())
}

fn evaluate(
    shared: &Shared,
    stored: &StoredAutoscaler,
    pods: &[PodRecord],
    nodes: &[NodeRecord],
    now: i64,
) -> Result<()> {
    let policy = &stored.policy;
    let Some(workload) = shared.store.get_workload(&policy.workload)? else {
        return Ok(());
    };
    let requests = workload.workload.pod_spec.requests();
    let metrics: Vec<PodMetrics> = pods
        .iter()
        .filter(|p| {
            p.workload == policy.workload
                && !matches!(p.phase, PodPhase::Terminating | PodPhase::Lost)
        })
        .map(|p| pod_metrics(p, requests, node_capacity(p, nodes)))
        .collect();
    let mut config = AutoscalerConfig::from_policy(policy);
    config.cooldown = shared.config.autoscale_cooldown;
    config.stabilization_window = shared.config.stabilization_window;

    let mut remembered = {
        let memory = shared
            .autoscale
            .policies
            .lock()
            .expect("autoscaler memory poisoned");
        memory
            .get(&(policy.name.clone(), stored.created_at_ms))
            .cloned()
            .unwrap_or_default()
    };
    if remembered.state.last_scale_at_ms == 0 {
        // After a controller restart the cooldown still holds.
        remembered.state.last_scale_at_ms = stored.status.last_scale_at_ms;
    }
    let current = workload.workload.replicas;
    let rec = recommend(&AutoscalerInput {
        config: &config,
        current_replicas: current,
        pods: &metrics,
        now_ms: now,
        state: &remembered.state,
    });

    let object = format!("autoscalepolicy/{}", policy.name);
    if rec.scales() {
        shared
            .store
            .set_replicas(&policy.workload, rec.desired_replicas)?;
        shared.event(EventRecord::normal(
            "AutoScaled",
            object,
            format!("workload {}: {rec}", policy.workload),
        ));
        shared.kick();
        remembered.last_reason = None;
    } else if matches!(rec.reason, ScaleReason::Cooldown | ScaleReason::Stabilizing)
        && remembered.last_reason != Some(rec.reason)
    {
        shared.event(EventRecord::normal(
            "AutoScaleHeld",
            object,
            format!("workload {}: {rec}", policy.workload),
        ));
        remembered.last_reason = Some(rec.reason);
    } else if !matches!(rec.reason, ScaleReason::Cooldown | ScaleReason::Stabilizing) {
        remembered.last_reason = None;
    }
    let status = AutoscalerStatus {
        current_cpu_percent: rec.current_cpu_percent,
        current_memory_percent: rec.current_memory_percent,
        current_replicas: current,
        desired_replicas: rec.desired_replicas,
        last_scale_at_ms: rec.state.last_scale_at_ms,
    };
    shared.store.set_autoscaler_status(&policy.name, &status)?;
    remembered.state = rec.state;
    shared
        .autoscale
        .policies
        .lock()
        .expect("autoscaler memory poisoned")
        .insert((policy.name.clone(), stored.created_at_ms), remembered);
    Ok(())
}
