//! Pod placement as a pure function: filter the nodes a pod fits on, then score them.
//!
//! - Filter: the node is Ready and its free CPU and memory (capacity minus the requests of the
//!   pods placed on it) cover the pod's requests.
//! - `spread`: the node with the fewest pods of the workload; ties go to the least allocated node.
//! - `binpack`: the most allocated node that fits.
//!
//! No I/O here: the controller builds [`NodeState`]s from the store and applies the result.

use crate::model::{Placement, Resources};

/// What the scheduler needs to know about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    pub capacity: Resources,
    /// Sum of the requests of the pods placed on it.
    pub allocated: Resources,
    /// Pods of the workload being scheduled that are on this node.
    pub workload_pods: u32,
}

/// Why a pod fits nowhere: a message for the FailedScheduling event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub reason: String,
}

/// Picks the node (index into `nodes`) for one pod requesting `request`.
pub fn place(nodes: &[NodeState], request: Resources, placement: Placement) -> Result<usize, Unschedulable> {
    let _ = (nodes, request, placement);
    unimplemented!("scheduler::place")
}

/// Places `count` pods one after another, updating `nodes` (allocated, workload_pods) as it
/// goes. Returns one result per pod.
pub fn place_many(
    nodes: &mut [NodeState],
    request: Resources,
    placement: Placement,
    count: usize,
) -> Vec<Result<usize, Unschedulable>> {
    let _ = (nodes, request, placement, count);
    unimplemented!("scheduler::place_many")
}
