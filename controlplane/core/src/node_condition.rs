//! Node conditions besides readiness, like Kubernetes' node conditions: a node can be Ready (its
//! agent heartbeats) and still be unfit for new pods. Pure: the registry calls
//! [`NodeConditions::on_heartbeat`] with what a heartbeat said and writes the result.
//!
//! The one condition so far is **RuntimeUnresponsive**: the agent heartbeats (its lease is
//! fresh, so the node is Ready and its pods are not replaced) but Podman does not answer within
//! the agent's deadline. Such a node is unschedulable ([`NodeConditions::schedulable`]: the
//! scheduler places nothing new there), and the pod reports in its heartbeats are the agent's
//! last known ones, stale: a pod missing from them is not gone. The condition clears by itself
//! with the first heartbeat that says the runtime answers again.
//!
//! Properties (tested below, with a proptest over heartbeat sequences): a flip is reported
//! exactly when schedulability changes; `since` is the start of the stall and does not move
//! while it lasts; a node is never made NotReady here.

use serde::{Deserialize, Serialize};

/// Name of the runtime condition, as `get nodes` and events show it.
pub const RUNTIME_UNRESPONSIVE: &str = "RuntimeUnresponsive";
/// Reason of the event when the runtime answers again.
pub const RUNTIME_RECOVERED: &str = "RuntimeRecovered";

/// The conditions set on a node (none: a plain schedulable node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConditions {
    /// Set while the node's agent reports its container runtime unresponsive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_unresponsive: Option<RuntimeUnresponsive>,
}

/// The runtime of a node does not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeUnresponsive {
    /// When the stall began (unix ms).
    pub since_ms: i64,
    /// The agent's explanation, e.g. "GET /pods/json: no answer within 5s".
    pub reason: String,
}

/// What a heartbeat changed about the conditions (events are emitted on flips only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionFlip {
    /// Nothing changed that anybody needs to hear about.
    None,
    /// The runtime stopped answering: Warning `RuntimeUnresponsive`.
    RuntimeUnresponsive,
    /// The runtime answers again: Normal `RuntimeRecovered`.
    RuntimeRecovered,
}

impl NodeConditions {
    /// Whether the scheduler may place new pods here.
    pub fn schedulable(&self) -> bool {
        self.runtime_unresponsive.is_none()
    }

    /// Whether the pod reports of this node's heartbeats are current (false: they are the
    /// agent's last known ones and must not be read as "this pod is gone").
    pub fn reports_are_current(&self) -> bool {
        self.runtime_unresponsive.is_none()
    }

    /// The names of the conditions set, for display (`Ready,RuntimeUnresponsive`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.runtime_unresponsive.is_some() {
            out.push(RUNTIME_UNRESPONSIVE);
        }
        out
    }

    /// The conditions after a heartbeat that reported the runtime `unresponsive` (with the
    /// agent's `since_ms`, 0 when unknown, and reason) or responsive (`None`), at `now_ms`.
    ///
    /// `since` is the agent's when it is plausible (not in the future, not 0), else `now_ms`;
    /// once set it stays until the runtime recovers, so a long stall shows its real length.
    pub fn on_heartbeat(
        &self,
        unresponsive: Option<(i64, &str)>,
        now_ms: i64,
    ) -> (NodeConditions, ConditionFlip) {
        match (&self.runtime_unresponsive, unresponsive) {
            (None, None) => (self.clone(), ConditionFlip::None),
            (Some(_), None) => (
                NodeConditions {
                    runtime_unresponsive: None,
                },
                ConditionFlip::RuntimeRecovered,
            ),
            (current, Some((since_ms, reason))) => {
                let since_ms = match current {
                    Some(c) => c.since_ms,
                    None if since_ms > 0 && since_ms <= now_ms => since_ms,
                    None => now_ms,
                };
                let flip = if current.is_none() {
                    ConditionFlip::RuntimeUnresponsive
                } else {
                    ConditionFlip::None
                };
                (
                    NodeConditions {
                        runtime_unresponsive: Some(RuntimeUnresponsive {
                            since_ms,
                            reason: reason.to_string(),
                        }),
                    },
                    flip,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_stall_sets_the_condition_once_and_recovery_clears_it() {
        let fresh = NodeConditions::default();
        assert!(fresh.schedulable() && fresh.names().is_empty());

        let (stalled, flip) =
            fresh.on_heartbeat(Some((900, "pod list: no answer within 5s")), 1_000);
        assert_eq!(flip, ConditionFlip::RuntimeUnresponsive);
        assert!(!stalled.schedulable());
        assert!(!stalled.reports_are_current());
        assert_eq!(stalled.names(), [RUNTIME_UNRESPONSIVE]);
        assert_eq!(stalled.runtime_unresponsive.as_ref().unwrap().since_ms, 900);

        // Still stalled: no new flip, `since` stays, the reason follows the agent.
        let (still, flip) = stalled.on_heartbeat(Some((1_500, "other")), 3_000);
        assert_eq!(flip, ConditionFlip::None);
        let c = still.runtime_unresponsive.as_ref().unwrap();
        assert_eq!((c.since_ms, c.reason.as_str()), (900, "other"));

        let (back, flip) = still.on_heartbeat(None, 5_000);
        assert_eq!(flip, ConditionFlip::RuntimeRecovered);
        assert_eq!(back, NodeConditions::default());
        assert_eq!(back.on_heartbeat(None, 6_000).1, ConditionFlip::None);
    }

    #[test]
    fn an_implausible_since_is_replaced_by_now() {
        let fresh = NodeConditions::default();
        for since in [0, -5, 2_000] {
            let (c, _) = fresh.on_heartbeat(Some((since, "x")), 1_000);
            assert_eq!(c.runtime_unresponsive.unwrap().since_ms, 1_000, "{since}");
        }
    }

    #[test]
    fn conditions_survive_a_json_round_trip() {
        let c = NodeConditions {
            runtime_unresponsive: Some(RuntimeUnresponsive {
                since_ms: 7,
                reason: "r".into(),
            }),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<NodeConditions>(&json).unwrap(), c);
        assert_eq!(
            serde_json::from_str::<NodeConditions>("{}").unwrap(),
            NodeConditions::default()
        );
    }

    #[test]
    fn an_unresponsive_runtime_makes_a_ready_node_unplaceable() {
        use crate::model::{NodeRecord, NodeStatus, Resources};
        let mut n = NodeRecord {
            labels: Default::default(),
            unschedulable: false,
            draining: false,
            name: "n".into(),
            agent_address: "127.0.0.1:1".into(),
            cpu_millis: 4000,
            memory_bytes: 1 << 30,
            status: NodeStatus::Ready,
            cpu_usage_percent: 0.0,
            memory_used_bytes: 0,
            last_heartbeat_ms: 0,
            registered_at_ms: 0,
            conditions: NodeConditions::default(),
            limits_unenforced: String::new(),
        };
        let request = Resources {
            cpu_millis: 100,
            memory_bytes: 1,
        };
        let placeable = |n: &NodeRecord| {
            crate::reconciler::node_states(std::slice::from_ref(n), &[], |_| None)[0].fits(request)
        };
        assert!(placeable(&n));
        n.conditions = n.conditions.on_heartbeat(Some((1, "stall")), 5).0;
        assert_eq!(n.status, NodeStatus::Ready);
        assert!(
            !placeable(&n),
            "no new pod on a node whose runtime does not answer"
        );
        n.conditions = n.conditions.on_heartbeat(None, 9).0;
        assert!(placeable(&n));
    }

    proptest! {
        /// Over any sequence of heartbeats: a flip is reported exactly when schedulability
        /// changes, and `since` never moves during one stall.
        #[test]
        fn flips_match_schedulability_changes(
            beats in proptest::collection::vec(proptest::option::of(0i64..10_000), 1..40),
        ) {
            let mut c = NodeConditions::default();
            let mut now = 10_000;
            for beat in beats {
                now += 1_000;
                let before = c.clone();
                let (after, flip) = c.on_heartbeat(beat.map(|s| (s, "stall")), now);
                match flip {
                    ConditionFlip::RuntimeUnresponsive => prop_assert!(before.schedulable() && !after.schedulable()),
                    ConditionFlip::RuntimeRecovered => prop_assert!(!before.schedulable() && after.schedulable()),
                    ConditionFlip::None => prop_assert_eq!(before.schedulable(), after.schedulable()),
                }
                if let (Some(b), Some(a)) = (&before.runtime_unresponsive, &after.runtime_unresponsive) {
                    prop_assert_eq!(b.since_ms, a.since_ms);
                }
                if let Some(a) = &after.runtime_unresponsive {
                    prop_assert!(a.since_ms > 0 && a.since_ms <= now);
                }
                c = after;
            }
        }
    }
}
