//! Pod placement as a pure function: filter the nodes a pod fits on, then score them.
//!
//! - Filter: the node is Ready and its free CPU and memory (capacity minus the requests of the
//!   pods placed on it, never below zero) cover the pod's requests. A capacity of 0 means the
//!   node offers none of that resource (not "unlimited"): it only fits requests of 0 for it. An
//!   agent that reports no memory therefore only receives pods that request no memory, which is
//!   the safe reading of a missing figure.
//! - `spread`: the node with the fewest pods of the workload; ties go to the least allocated
//!   node, then to the smallest name (so the result is deterministic).
//! - `binpack`: the most allocated node that fits; ties go to the smallest name.
//!
//! "Allocated" is the sum of the CPU and memory fractions of capacity in use, in parts per
//! million, rounded up so that any node with something allocated scores above an empty one.
//! Integer scores keep the ordering total and exact.
//!
//! [`place`] is a linear scan. [`place_many`] places a batch of identical pods in
//! O((n + count) log n): a node's score only changes when a pod lands on it, and a node that
//! stops fitting the (fixed) request never fits again within the batch, so a min-heap keyed by
//! score gives the same answers as calling [`place`] over and over.
//!
//! No I/O here: the controller builds [`NodeState`]s from the store (see
//! [`crate::reconciler::node_states`]) and applies the result.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use crate::model::{Placement, Resources};

/// One whole resource, in parts per million.
const PPM: u64 = 1_000_000;

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

impl NodeState {
    /// Capacity minus allocation, per resource, never below zero (an over-committed node, e.g.
    /// after adopting pods, has nothing free).
    pub fn free(&self) -> Resources {
        Resources {
            cpu_millis: self
                .capacity
                .cpu_millis
                .saturating_sub(self.allocated.cpu_millis),
            memory_bytes: self
                .capacity
                .memory_bytes
                .saturating_sub(self.allocated.memory_bytes),
        }
    }

    /// Whether a pod requesting `request` may be placed here: Ready, and enough free CPU and
    /// memory.
    pub fn fits(&self, request: Resources) -> bool {
        let free = self.free();
        self.ready
            && request.cpu_millis <= free.cpu_millis
            && request.memory_bytes <= free.memory_bytes
    }

    /// How full the node is: CPU fraction plus memory fraction of capacity in use, in parts per
    /// million each (so 0 ..= 2,000,000 unless over-committed). Any non-zero allocation scores
    /// at least 1.
    pub fn allocation_score(&self) -> u64 {
        fraction_ppm(self.allocated.cpu_millis, self.capacity.cpu_millis).saturating_add(
            fraction_ppm(self.allocated.memory_bytes, self.capacity.memory_bytes),
        )
    }

    /// Records a pod requesting `request` placed here.
    pub fn assign(&mut self, request: Resources) {
        self.allocated = Resources {
            cpu_millis: self.allocated.cpu_millis.saturating_add(request.cpu_millis),
            memory_bytes: self
                .allocated
                .memory_bytes
                .saturating_add(request.memory_bytes),
        };
        self.workload_pods = self.workload_pods.saturating_add(1);
    }
}

/// `used / capacity` in parts per million, rounded up. A resource the node does not have
/// counts as full when anything uses it and as empty otherwise.
fn fraction_ppm(used: u64, capacity: u64) -> u64 {
    if capacity == 0 {
        return if used == 0 { 0 } else { PPM };
    }
    match used.checked_mul(PPM) {
        Some(scaled) => scaled.div_ceil(capacity),
        // Beyond ~18 TB (or 18e9 cores): exact in 128 bits.
        None => {
            let ppm = (u128::from(used) * u128::from(PPM)).div_ceil(u128::from(capacity));
            u64::try_from(ppm).unwrap_or(u64::MAX)
        }
    }
}

/// Why a pod fits nowhere: a message for the FailedScheduling event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub reason: String,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Unschedulable {}

/// Builds the Kubernetes-style message for a request that fits nowhere, e.g.
/// `0/3 nodes are available: 1 node is not ready, 2 nodes have insufficient cpu.`
///
/// A node that is not ready is counted only as such; a Ready node short of both resources is
/// counted under both (as Kubernetes does), so the counts may add up to more than the total.
pub fn unschedulable(nodes: &[NodeState], request: Resources) -> Unschedulable {
    if nodes.is_empty() {
        return Unschedulable {
            reason: "0/0 nodes are available: no nodes are registered.".to_string(),
        };
    }
    let (mut not_ready, mut short_cpu, mut short_memory) = (0usize, 0usize, 0usize);
    for node in nodes {
        if !node.ready {
            not_ready += 1;
            continue;
        }
        let free = node.free();
        short_cpu += usize::from(request.cpu_millis > free.cpu_millis);
        short_memory += usize::from(request.memory_bytes > free.memory_bytes);
    }
    let mut parts = Vec::new();
    if not_ready > 0 {
        parts.push(count_phrase(not_ready, "is not ready", "are not ready"));
    }
    if short_cpu > 0 {
        parts.push(count_phrase(
            short_cpu,
            "has insufficient cpu",
            "have insufficient cpu",
        ));
    }
    if short_memory > 0 {
        parts.push(count_phrase(
            short_memory,
            "has insufficient memory",
            "have insufficient memory",
        ));
    }
    if parts.is_empty() {
        // Only reachable when called for a request that does fit somewhere.
        parts.push("no reason found".to_string());
    }
    Unschedulable {
        reason: format!(
            "0/{} nodes are available: {}.",
            nodes.len(),
            parts.join(", ")
        ),
    }
}

/// "1 node is not ready" / "2 nodes are not ready".
fn count_phrase(n: usize, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 node {singular}")
    } else {
        format!("{n} nodes {plural}")
    }
}

/// The score of a fitting node: lower is better. Ties between equal scores are broken by name
/// (then by index) by the callers.
fn score(node: &NodeState, placement: Placement) -> (u64, u64) {
    match placement {
        Placement::Spread => (u64::from(node.workload_pods), node.allocation_score()),
        Placement::Binpack => (u64::MAX - node.allocation_score(), 0),
    }
}

/// Picks the node (index into `nodes`) for one pod requesting `request`.
pub fn place(
    nodes: &[NodeState],
    request: Resources,
    placement: Placement,
) -> Result<usize, Unschedulable> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.fits(request))
        .min_by_key(|&(i, node)| (score(node, placement), &node.name, i))
        .map(|(i, _)| i)
        .ok_or_else(|| unschedulable(nodes, request))
}

/// Places `count` pods one after another, updating `nodes` (allocated, workload_pods) as it
/// goes. Returns one result per pod; the results are those of calling [`place`] and
/// [`NodeState::assign`] `count` times.
pub fn place_many(
    nodes: &mut [NodeState],
    request: Resources,
    placement: Placement,
    count: usize,
) -> Vec<Result<usize, Unschedulable>> {
    let mut results = Vec::with_capacity(count);
    if count == 0 {
        return results;
    }
    // by_name[rank] is the index of the node whose (name, index) is rank-th smallest.
    let mut by_name: Vec<usize> = (0..nodes.len()).collect();
    by_name.sort_by(|&i, &j| nodes[i].name.cmp(&nodes[j].name).then(i.cmp(&j)));
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = by_name
        .iter()
        .enumerate()
        .filter(|&(_, &i)| nodes[i].fits(request))
        .map(|(rank, &i)| {
            let (primary, secondary) = score(&nodes[i], placement);
            Reverse((primary, secondary, rank))
        })
        .collect();
    while results.len() < count {
        let Some(Reverse((_, _, rank))) = heap.pop() else {
            let failure = unschedulable(nodes, request);
            results.resize(count, Err(failure));
            break;
        };
        let i = by_name[rank];
        nodes[i].assign(request);
        results.push(Ok(i));
        if nodes[i].fits(request) {
            let (primary, secondary) = score(&nodes[i], placement);
            heap.push(Reverse((primary, secondary, rank)));
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MI: u64 = 1 << 20;

    fn node(name: &str, cpu: u64, mem_mi: u64) -> NodeState {
        NodeState {
            name: name.to_string(),
            ready: true,
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: mem_mi * MI,
            },
            allocated: Resources::default(),
            workload_pods: 0,
        }
    }

    fn req(cpu: u64, mem_mi: u64) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem_mi * MI,
        }
    }

    #[test]
    fn spread_prefers_fewest_workload_pods_then_least_allocated_then_name() {
        let mut nodes = vec![
            node("c", 1000, 1024),
            node("b", 1000, 1024),
            node("a", 1000, 1024),
        ];
        nodes[2].workload_pods = 1;
        nodes[0].allocated = req(500, 0);
        assert_eq!(place(&nodes, req(100, 32), Placement::Spread), Ok(1));
        nodes[1].allocated = req(600, 0);
        assert_eq!(place(&nodes, req(100, 32), Placement::Spread), Ok(0));
        nodes[0].allocated = req(600, 0);
        assert_eq!(
            place(&nodes, req(100, 32), Placement::Spread),
            Ok(1),
            "equal scores: smallest name wins"
        );
    }

    #[test]
    fn binpack_prefers_the_most_allocated_node_that_fits() {
        let mut nodes = vec![
            node("a", 1000, 1024),
            node("b", 1000, 1024),
            node("c", 1000, 1024),
        ];
        nodes[1].allocated = req(900, 0);
        nodes[2].allocated = req(500, 0);
        assert_eq!(place(&nodes, req(100, 32), Placement::Binpack), Ok(1));
        assert_eq!(
            place(&nodes, req(200, 32), Placement::Binpack),
            Ok(2),
            "b has no room left for 200m"
        );
        assert_eq!(place(&nodes, req(600, 32), Placement::Binpack), Ok(0));
    }

    #[test]
    fn zero_capacity_fits_only_zero_requests() {
        let nodes = vec![node("no-mem", 1000, 0)];
        assert_eq!(place(&nodes, req(100, 0), Placement::Spread), Ok(0));
        let err = place(&nodes, req(100, 1), Placement::Spread).unwrap_err();
        assert_eq!(
            err.reason,
            "0/1 nodes are available: 1 node has insufficient memory."
        );
    }

    #[test]
    fn unschedulable_reason_counts_each_cause() {
        let mut nodes = vec![
            node("a", 1000, 1024),
            node("b", 100, 1024),
            node("c", 100, 16),
        ];
        nodes[0].ready = false;
        let err = place(&nodes, req(500, 32), Placement::Spread).unwrap_err();
        assert_eq!(
            err.reason,
            "0/3 nodes are available: 1 node is not ready, 2 nodes have insufficient cpu, \
             1 node has insufficient memory."
        );
        assert_eq!(err.to_string(), err.reason);
        let none = place(&[], req(1, 1), Placement::Binpack).unwrap_err();
        assert_eq!(
            none.reason,
            "0/0 nodes are available: no nodes are registered."
        );
    }

    #[test]
    fn overcommitted_node_has_nothing_free() {
        let mut n = node("a", 1000, 1024);
        n.allocated = req(1500, 0);
        assert_eq!(n.free(), req(0, 1024));
        assert!(!n.fits(req(1, 0)));
        assert!(n.fits(req(0, 1)));
    }

    #[test]
    fn any_allocation_scores_above_an_empty_node() {
        let mut n = node("a", u64::MAX, 1024);
        assert_eq!(n.allocation_score(), 0);
        n.allocated = req(1, 0);
        assert_eq!(n.allocation_score(), 1);
        n.allocated = req(u64::MAX, 1024);
        assert_eq!(n.allocation_score(), 2 * PPM);
    }

    #[test]
    fn place_many_fills_then_reports_the_same_reason_for_the_rest() {
        let mut nodes = vec![node("a", 250, 1024), node("b", 250, 1024)];
        let results = place_many(&mut nodes, req(100, 32), Placement::Spread, 6);
        let placed: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(placed, vec![0, 1, 0, 1]);
        let reason = "0/2 nodes are available: 2 nodes have insufficient cpu.";
        assert_eq!(
            results[4],
            Err(Unschedulable {
                reason: reason.to_string()
            })
        );
        assert_eq!(results[5], results[4]);
        assert_eq!(nodes[0].allocated, req(200, 64));
        assert_eq!(nodes[1].workload_pods, 2);
    }

    fn arb_node() -> impl Strategy<Value = NodeState> {
        (
            any::<bool>(),
            prop::sample::select(vec![0u64, 500, 1000, 4000]),
            0u64..=4096,
            0u64..=100,
            0u32..4,
            0u8..=10,
        )
            .prop_map(|(not_ready, cpu, mem_mi, used_pct, pods, name)| {
                let mut n = node(&format!("n{name}"), cpu, mem_mi);
                n.ready = !not_ready || name % 3 != 0;
                n.allocated = Resources {
                    cpu_millis: cpu * used_pct / 100,
                    memory_bytes: mem_mi * MI * used_pct / 100,
                };
                n.workload_pods = pods;
                n
            })
    }

    fn arb_request() -> impl Strategy<Value = Resources> {
        (
            prop::sample::select(vec![0u64, 50, 100, 250, 1000]),
            prop::sample::select(vec![0u64, 16, 64, 512]),
        )
            .prop_map(|(cpu, mem)| req(cpu, mem))
    }

    fn arb_placement() -> impl Strategy<Value = Placement> {
        prop_oneof![Just(Placement::Spread), Just(Placement::Binpack)]
    }

    proptest! {
        #[test]
        fn never_overcommits(
            mut nodes in prop::collection::vec(arb_node(), 0..12),
            request in arb_request(),
            placement in arb_placement(),
            count in 0usize..40,
        ) {
            let results = place_many(&mut nodes, request, placement, count);
            prop_assert_eq!(results.len(), count);
            for node in &nodes {
                prop_assert!(node.allocated.cpu_millis <= node.capacity.cpu_millis);
                prop_assert!(node.allocated.memory_bytes <= node.capacity.memory_bytes);
            }
            for &i in results.iter().flatten() {
                prop_assert!(nodes[i].ready);
            }
            if results.iter().any(Result::is_err) {
                prop_assert!(!nodes.iter().any(|n| n.fits(request)), "gave up while a node fits");
            }
        }

        #[test]
        fn spread_keeps_counts_within_one_when_capacity_allows(n in 1usize..30, pods in 0usize..200) {
            let mut nodes: Vec<_> = (0..n).map(|i| node(&format!("node-{i:02}"), 1_000_000, 1 << 20)).collect();
            let results = place_many(&mut nodes, req(100, 64), Placement::Spread, pods);
            prop_assert!(results.iter().all(Result::is_ok));
            let max = nodes.iter().map(|n| n.workload_pods).max().unwrap();
            let min = nodes.iter().map(|n| n.workload_pods).min().unwrap();
            prop_assert!(max - min <= 1, "counts {:?}", nodes.iter().map(|n| n.workload_pods).collect::<Vec<_>>());
        }

        #[test]
        fn binpack_never_opens_an_empty_node_while_a_used_one_fits(
            mut nodes in prop::collection::vec(arb_node(), 1..10),
            requests in prop::collection::vec(arb_request(), 1..30),
        ) {
            for request in requests {
                let Ok(chosen) = place(&nodes, request, Placement::Binpack) else { continue };
                let used_fits = nodes.iter().any(|n| n.allocation_score() > 0 && n.fits(request));
                prop_assert!(!used_fits || nodes[chosen].allocation_score() > 0);
                let best = nodes.iter().filter(|n| n.fits(request)).map(NodeState::allocation_score).max();
                prop_assert_eq!(Some(nodes[chosen].allocation_score()), best);
                nodes[chosen].assign(request);
            }
        }

        #[test]
        fn place_many_equals_repeated_place(
            nodes in prop::collection::vec(arb_node(), 0..12),
            request in arb_request(),
            placement in arb_placement(),
            count in 0usize..40,
        ) {
            let mut batch = nodes.clone();
            let batch_results = place_many(&mut batch, request, placement, count);
            let mut single = nodes;
            let mut single_results = Vec::new();
            for _ in 0..count {
                let r = place(&single, request, placement);
                if let Ok(i) = r {
                    single[i].assign(request);
                }
                single_results.push(r);
            }
            prop_assert_eq!(batch_results, single_results);
            prop_assert_eq!(batch, single);
        }
    }
}
