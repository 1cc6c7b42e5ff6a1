//! How a workload moves from one pod spec to the next: [`RolloutSpec`] (Kubernetes'
//! `strategy: {maxSurge, maxUnavailable}`, `revisionHistoryLimit`, `progressDeadline`, plus
//! Nomad's `autoRevert`) and [`IntOrPercent`], a count or a percentage of the replicas.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Revisions kept per workload when `revisionHistoryLimit` is left out (Kubernetes' default).
pub const DEFAULT_REVISION_HISTORY_LIMIT: u32 = 10;
/// The most revisions a workload may keep.
pub const MAX_REVISION_HISTORY_LIMIT: u32 = 100;
/// Time a rollout may go without progress before it fails, when left out (Kubernetes' 600 s).
pub const DEFAULT_PROGRESS_DEADLINE_MS: u64 = 600_000;
/// The longest progress deadline (a day).
pub const MAX_PROGRESS_DEADLINE_MS: u64 = 86_400_000;

/// A count of pods, or a percentage of the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntOrPercent {
    Count(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// Parses `3` or `25%` (0..=100 for a percentage).
    pub fn parse(text: &str) -> Result<IntOrPercent, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("expected a count or a percentage such as 25%, got {t:?}"))?;
            if v > 100 {
                return Err(format!("a percentage must be at most 100%, got {v}%"));
            }
            return Ok(IntOrPercent::Percent(v));
        }
        t.parse()
            .map(IntOrPercent::Count)
            .map_err(|_| format!("expected a count or a percentage such as 25%, got {t:?}"))
    }

    /// The count for `replicas`: a percentage rounds up (`round_up`, maxSurge) or down
    /// (maxUnavailable), as Kubernetes does.
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => {
                let product = u64::from(replicas) * u64::from(p);
                let v = if round_up {
                    product.div_ceil(100)
                } else {
                    product / 100
                };
                u32::try_from(v).unwrap_or(u32::MAX)
            }
        }
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Count(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How a workload's pods are replaced when its spec changes (and when a node is drained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Pods above `replicas` that may exist during a rollout.
    pub max_surge: IntOrPercent,
    /// Pods below `replicas` that may be unready during a rollout.
    pub max_unavailable: IntOrPercent,
    /// Old revisions kept for `rollout undo`.
    pub revision_history_limit: u32,
    /// A rollout without progress for this long fails (an event, and a revert with
    /// `auto_revert`).
    pub progress_deadline_ms: u64,
    /// Roll back to the last revision that completed when a rollout fails.
    pub auto_revert: bool,
    /// A paused workload starts no new rollout step (`pssctl rollout pause`).
    pub paused: bool,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            max_surge: IntOrPercent::Percent(25),
            max_unavailable: IntOrPercent::Percent(25),
            revision_history_limit: DEFAULT_REVISION_HISTORY_LIMIT,
            progress_deadline_ms: DEFAULT_PROGRESS_DEADLINE_MS,
            auto_revert: false,
            paused: false,
        }
    }
}

impl RolloutSpec {
    /// `(surge, unavailable)` for `replicas`: like Kubernetes, when both come to 0,
    /// unavailable is 1 so that a rollout can move at all.
    pub fn bounds(&self, replicas: u32) -> (u32, u32) {
        let surge = self.max_surge.resolve(replicas, true);
        let unavailable = self.max_unavailable.resolve(replicas, false);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }
}

/// Where a workload's rollout stands (`pssctl rollout status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RolloutState {
    /// Every pod runs the current revision and is ready.
    #[default]
    Complete,
    /// Pods of the current revision are being created or old ones retired.
    Progressing,
    /// `pssctl rollout pause`: no step is taken.
    Paused,
    /// No progress within the progress deadline.
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Complete => "Complete",
            RolloutState::Progressing => "Progressing",
            RolloutState::Paused => "Paused",
            RolloutState::Failed => "Failed",
        }
    }
}

/// What the controller last concluded about a workload's rollout; stored with the workload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub state: RolloutState,
    /// Why, for `Failed` and `Paused` (empty otherwise).
    pub message: String,
    /// The revision this status is about (a new revision starts a new rollout).
    pub revision: u64,
    /// Last time the rollout made progress (a pod of the revision became ready, or an old
    /// one was retired), unix ms; the progress deadline counts from here.
    pub progress_at_ms: i64,
    /// Ready pods of `revision` when last observed.
    pub ready_updated: u32,
    /// Pods of older revisions when last observed.
    #[serde(default)]
    pub old_remaining: u32,
    /// The newest revision whose rollout completed: where `autoRevert` goes back to.
    pub complete_revision: u64,
}

/// One entry of a workload's revision history (`pssctl rollout history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRecord {
    pub revision: u64,
    pub pod_spec: super::PodSpec,
    /// What made it: `apply`, `rollout undo`, `rollout restart`, `auto-revert`.
    pub cause: String,
    pub created_at_ms: i64,
}

impl RevisionRecord {
    /// The images of its containers, comma-separated.
    pub fn images(&self) -> String {
        self.pod_spec
            .containers
            .iter()
            .map(|c| c.image.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve() {
        assert_eq!(IntOrPercent::parse("3"), Ok(IntOrPercent::Count(3)));
        assert_eq!(IntOrPercent::parse("25%"), Ok(IntOrPercent::Percent(25)));
        assert!(IntOrPercent::parse("101%").is_err());
        assert!(IntOrPercent::parse("-1").is_err());
        assert!(IntOrPercent::parse("x%").is_err());
        // Kubernetes: surge rounds up, unavailable down.
        assert_eq!(IntOrPercent::Percent(25).resolve(3, true), 1);
        assert_eq!(IntOrPercent::Percent(25).resolve(3, false), 0);
        assert_eq!(IntOrPercent::Percent(25).resolve(10, false), 2);
        assert_eq!(IntOrPercent::Percent(100).resolve(u32::MAX, true), u32::MAX);
    }

    #[test]
    fn both_zero_still_moves() {
        let spec = RolloutSpec {
            max_surge: IntOrPercent::Count(0),
            max_unavailable: IntOrPercent::Percent(25),
            ..RolloutSpec::default()
        };
        assert_eq!(spec.bounds(2), (0, 1));
        assert_eq!(RolloutSpec::default().bounds(4), (1, 1));
    }
}
