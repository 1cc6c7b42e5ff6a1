//! Rollout bookkeeping, after each reconcile pass: where each workload's rollout stands
//! ([`pss_core::rollout_progress::assess`]), stored with the workload for `pssctl rollout
//! status`; events when a rollout completes or fails; and the automatic revert to the last
//! revision that completed (`autoRevert: true`).

use std::sync::Arc;

use pss_core::model::{EventRecord, PodPhase, PodRecord};
use pss_core::rollout_progress::{assess, deadline_at, Observation, Transition};
use pss_store::StoredWorkload;

use crate::{Result, Shared};

/// Assesses every workload's rollout from `pods`; returns the earliest time a running
/// progress deadline ends (for the executor's requeue timer).
pub(crate) fn track(
    shared: &Arc<Shared>,
    workloads: &[&StoredWorkload],
    pods: &[PodRecord],
    now_ms: i64,
) -> Result<Option<i64>> {
    let mut due: Option<i64> = None;
    for w in workloads {
        let hash = w.workload.pod_spec.spec_hash();
        let mut obs = Observation {
            revision: w.revision,
            replicas: w.workload.replicas,
            updated: 0,
            updated_ready: 0,
            old: 0,
            paused: w.workload.rollout.paused,
            progress_deadline_ms: w.workload.rollout.progress_deadline_ms,
            auto_revert: w.workload.rollout.auto_revert,
        };
        for p in pods.iter().filter(|p| p.workload == w.workload.name) {
            if p.phase == PodPhase::Lost {
                continue;
            }
            if p.spec_hash != hash {
                obs.old += 1;
            } else if p.phase != PodPhase::Terminating {
                obs.updated += 1;
                if p.ready && p.phase == PodPhase::Running {
                    obs.updated_ready += 1;
                }
            }
        }
        let (status, transitions) = assess(&w.rollout_status, &obs, now_ms);
        if status != w.rollout_status {
            shared.store.set_rollout_status(&w.workload.name, &status)?;
        }
        if let Some(at) = deadline_at(&status, obs.progress_deadline_ms) {
            due = Some(due.map_or(at, |d: i64| d.min(at)));
        }
        for t in transitions {
            on_transition(shared, w, t)?;
        }
    }
    Ok(due)
}

fn on_transition(shared: &Arc<Shared>, w: &StoredWorkload, t: Transition) -> Result<()> {
    let name = &w.workload.name;
    let object = format!("workload/{name}");
    match t {
        Transition::Completed { revision } => shared.event(EventRecord::normal(
            "RolloutComplete",
            object,
            format!(
                "workload {name}: revision {revision} rolled out, {} replicas ready",
                w.workload.replicas
            ),
        )),
        Transition::Failed { revision, message } => shared.event(EventRecord::warning(
            "RolloutFailed",
            object,
            format!("workload {name}: the rollout of revision {revision} failed: {message}"),
        )),
        Transition::Revert {
            from_revision,
            to_revision,
        } => {
            let revisions = shared.store.list_revisions(name)?;
            let Some(target) = revisions.iter().find(|r| r.revision == to_revision) else {
                shared.event(EventRecord::warning(
                    "RolloutRevertFailed",
                    object,
                    format!(
                        "workload {name}: cannot revert to revision {to_revision}: no longer in \
                         the history (revisionHistoryLimit)"
                    ),
                ));
                return Ok(());
            };
            let stored = shared.store.set_pod_spec(
                name,
                &target.pod_spec,
                &format!("auto-revert from revision {from_revision}"),
            )?;
            shared.event(EventRecord::warning(
                "RolloutReverted",
                object,
                format!(
                    "workload {name}: reverted to the pod spec of revision {to_revision} (now \
                     revision {}) after revision {from_revision} failed",
                    stored.revision
                ),
            ));
            shared.kick();
        }
    }
    Ok(())
}
