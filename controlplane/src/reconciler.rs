//! The reconciler's decision: `plan(desired, observed) -> Vec<Action>`, a pure diff in the style
//! of sozu's state diff. The controller's loop (in `controller/`) gathers the inputs from the
//! store, calls [`plan`], and executes the actions (RunPod/StopPod on agents, store updates,
//! events).
//!
//! Properties (proptested): a converged state plans nothing; applying a plan converges.

use crate::model::{Placement, PodPhase, Resources};
use crate::scheduler::NodeState;

/// One workload's desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredWorkload {
    pub name: String,
    pub replicas: u32,
    pub placement: Placement,
    /// Requests of one pod.
    pub request: Resources,
    /// Hash of the current pod spec; pods with another hash run an old spec.
    pub spec_hash: u64,
}

/// One pod as the reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPod {
    pub id: String,
    pub workload: String,
    pub node: Option<String>,
    pub phase: PodPhase,
    pub ready: bool,
    pub spec_hash: u64,
    pub restart_count: u32,
    /// Earliest restart time of a Failed pod (crash-loop back-off); 0 = none.
    pub backoff_until_ms: i64,
}

/// Why a pod is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    ScaledDown,
    WorkloadDeleted,
    /// The workload's spec changed and a pod of the new spec is ready to take over.
    Replaced,
}

/// What the controller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a new pod of `workload` on `node` (the executor names it).
    Create { workload: String, node: String },
    /// Create a new pod of `workload` that fits nowhere yet: it stays Pending with `reason`.
    CreateUnschedulable { workload: String, reason: String },
    /// Place an existing Pending pod on `node`.
    Place { pod: String, node: String },
    /// Restart a Failed pod in place (same id) on its node: its back-off has elapsed.
    Restart { pod: String, node: String },
    /// Stop a pod (drain it out of the endpoints first) and then forget it.
    Stop { pod: String, node: Option<String>, reason: StopReason },
    /// Replace a Lost pod: forget the record (its node's agent stops it if it comes back).
    Forget { pod: String },
}

/// The diff between desired and observed state. `nodes` is the cluster's current allocation,
/// used to place new pods; `now_ms` decides whether back-offs have elapsed.
pub fn plan(desired: &[DesiredWorkload], observed: &[ObservedPod], nodes: &[NodeState], now_ms: i64) -> Vec<Action> {
    let _ = (desired, observed, nodes, now_ms);
    unimplemented!("reconciler::plan")
}
