//! Where a workload's rollout stands, as a pure function: [`assess`] takes the last
//! [`RolloutStatus`] and what the pods show now, and returns the new status and what changed
//! (completion, a failure past the progress deadline, an automatic revert to the last revision
//! that completed — Nomad's `auto_revert`). The controller's executor stores the status, records
//! the events and carries out the revert.

use crate::model::{RolloutState, RolloutStatus};

/// What the pods of one workload show, counted by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The revision of the current pod spec.
    pub revision: u64,
    pub replicas: u32,
    /// Pods of the current revision that count toward the replicas.
    pub updated: u32,
    /// Of those, the ready ones.
    pub updated_ready: u32,
    /// Pods of other revisions still there (Terminating ones included).
    pub old: u32,
    pub paused: bool,
    pub progress_deadline_ms: u64,
    pub auto_revert: bool,
}

/// A change worth an event (and, for a revert, an action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Every replica runs the current revision and is ready.
    Completed { revision: u64 },
    /// No progress within the deadline.
    Failed { revision: u64, message: String },
    /// Roll back to `to_revision`, the newest revision that completed.
    Revert {
        from_revision: u64,
        to_revision: u64,
    },
}

/// The new status of a rollout, and the transitions since `prev`. `now_ms` is the time of the
/// observation.
pub fn assess(
    prev: &RolloutStatus,
    obs: &Observation,
    now_ms: i64,
) -> (RolloutStatus, Vec<Transition>) {
    let mut status = prev.clone();
    let mut transitions = Vec::new();
    let new_rollout = prev.revision != obs.revision;
    if new_rollout {
        status.revision = obs.revision;
        status.progress_at_ms = now_ms;
        status.ready_updated = obs.updated_ready;
        status.old_remaining = obs.old;
        status.message.clear();
        status.state = RolloutState::Progressing;
    }
    let complete = obs.updated_ready >= obs.replicas && obs.updated >= obs.replicas && obs.old == 0;
    if complete {
        if prev.state != RolloutState::Complete || new_rollout {
            transitions.push(Transition::Completed {
                revision: obs.revision,
            });
        }
        status.state = RolloutState::Complete;
        status.message.clear();
        status.complete_revision = obs.revision;
        status.progress_at_ms = now_ms;
        status.ready_updated = obs.updated_ready;
        status.old_remaining = 0;
        return (status, transitions);
    }
    // Progress: more ready pods of the revision, or fewer old ones; a resume restarts the clock.
    let resumed = prev.state == RolloutState::Paused && !obs.paused;
    if resumed || obs.updated_ready > status.ready_updated || obs.old < status.old_remaining {
        status.progress_at_ms = now_ms;
        if status.state == RolloutState::Failed {
            status.state = RolloutState::Progressing;
            status.message.clear();
        }
    }
    status.ready_updated = obs.updated_ready;
    status.old_remaining = obs.old;
    if obs.paused {
        // The deadline does not run while paused; it starts again on resume.
        status.state = RolloutState::Paused;
        status.message = "paused (pssctl rollout resume continues it)".into();
        status.progress_at_ms = now_ms;
        return (status, transitions);
    }
    if status.state == RolloutState::Failed {
        return (status, transitions);
    }
    status.state = RolloutState::Progressing;
    status.message.clear();
    let stalled_ms = now_ms.saturating_sub(status.progress_at_ms);
    if stalled_ms > i64::try_from(obs.progress_deadline_ms).unwrap_or(i64::MAX) {
        let message = format!(
            "no progress for {} s (deadline {} s): {} of {} pods of revision {} ready, {} old pods left",
            stalled_ms / 1000,
            obs.progress_deadline_ms / 1000,
            obs.updated_ready,
            obs.replicas,
            obs.revision,
            obs.old
        );
        status.state = RolloutState::Failed;
        status.message = message.clone();
        transitions.push(Transition::Failed {
            revision: obs.revision,
            message,
        });
        if obs.auto_revert
            && status.complete_revision != 0
            && status.complete_revision != obs.revision
        {
            transitions.push(Transition::Revert {
                from_revision: obs.revision,
                to_revision: status.complete_revision,
            });
        }
    }
    (status, transitions)
}

/// When the rollout's deadline runs out if nothing changes (for the executor's requeue timer);
/// `None` when no deadline is running.
pub fn deadline_at(status: &RolloutStatus, progress_deadline_ms: u64) -> Option<i64> {
    (status.state == RolloutState::Progressing).then(|| {
        status
            .progress_at_ms
            .saturating_add(i64::try_from(progress_deadline_ms).unwrap_or(i64::MAX))
            .saturating_add(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obs(revision: u64, updated_ready: u32, old: u32) -> Observation {
        Observation {
            revision,
            replicas: 3,
            updated: 3,
            updated_ready,
            old,
            paused: false,
            progress_deadline_ms: 10_000,
            auto_revert: true,
        }
    }

    fn complete_at(revision: u64) -> RolloutStatus {
        RolloutStatus {
            state: RolloutState::Complete,
            revision,
            complete_revision: revision,
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_progresses_then_completes() {
        let (s, t) = assess(&complete_at(1), &obs(2, 0, 3), 1_000);
        assert_eq!(s.state, RolloutState::Progressing);
        assert!(t.is_empty());
        let (s, t) = assess(&s, &obs(2, 3, 0), 2_000);
        assert_eq!(s.state, RolloutState::Complete);
        assert_eq!(s.complete_revision, 2);
        assert_eq!(t, vec![Transition::Completed { revision: 2 }]);
        // Complete stays quiet.
        let (_, t) = assess(&s, &obs(2, 3, 0), 3_000);
        assert!(t.is_empty());
    }

    #[test]
    fn no_progress_past_the_deadline_fails_and_reverts() {
        let (s, _) = assess(&complete_at(1), &obs(2, 0, 3), 0);
        let (s, t) = assess(&s, &obs(2, 1, 3), 5_000);
        assert!(t.is_empty(), "progress resets the clock");
        let (s, t) = assess(&s, &obs(2, 1, 3), 14_000);
        assert!(t.is_empty());
        let (s, t) = assess(&s, &obs(2, 1, 3), 15_001);
        assert_eq!(s.state, RolloutState::Failed);
        assert!(matches!(t[0], Transition::Failed { revision: 2, .. }));
        assert_eq!(
            t[1],
            Transition::Revert {
                from_revision: 2,
                to_revision: 1
            }
        );
        // Failed is reported once.
        let (_, t) = assess(&s, &obs(2, 1, 3), 20_000);
        assert!(t.is_empty());
    }

    #[test]
    fn without_auto_revert_or_a_good_revision_it_only_fails() {
        let mut o = obs(2, 0, 3);
        o.auto_revert = false;
        let (s, _) = assess(&complete_at(1), &o, 0);
        let (_, t) = assess(&s, &o, 10_001);
        assert_eq!(t.len(), 1);
        // A first rollout that never completed has nothing to go back to.
        let o = obs(1, 0, 0);
        let (s, _) = assess(&RolloutStatus::default(), &o, 0);
        let (_, t) = assess(&s, &o, 10_001);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn paused_stops_the_clock() {
        let mut o = obs(2, 0, 3);
        o.paused = true;
        let (s, _) = assess(&complete_at(1), &o, 0);
        let (s, t) = assess(&s, &o, 60_000);
        assert_eq!(s.state, RolloutState::Paused);
        assert!(t.is_empty());
        o.paused = false;
        let (s, t) = assess(&s, &o, 65_000);
        assert_eq!(s.state, RolloutState::Progressing);
        assert!(t.is_empty());
        assert_eq!(deadline_at(&s, o.progress_deadline_ms), Some(75_001));
    }

    proptest! {
        /// However the counts move, a revert only ever targets a revision that completed, and
        /// never the current one.
        #[test]
        fn reverts_go_to_a_completed_other_revision(
            steps in prop::collection::vec((1u64..4, 0u32..4, 0u32..4, 0i64..20_000), 1..20)
        ) {
            let mut status = RolloutStatus::default();
            let mut completed = std::collections::HashSet::new();
            let mut now = 0;
            for (revision, ready, old, dt) in steps {
                now += dt;
                let (next, transitions) = assess(&status, &obs(revision, ready, old), now);
                for t in &transitions {
                    match t {
                        Transition::Completed { revision } => { completed.insert(*revision); }
                        Transition::Revert { from_revision, to_revision } => {
                            prop_assert!(completed.contains(to_revision));
                            prop_assert_ne!(from_revision, to_revision);
                        }
                        Transition::Failed { .. } => {}
                    }
                }
                status = next;
            }
        }
    }
}
