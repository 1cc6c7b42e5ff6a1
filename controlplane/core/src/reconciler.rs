//! The reconciler's decision: `plan(desired, observed) -> Vec<Action>`, a pure diff in the style
//! of sozu's state diff, and [`reconcile`], which adds when the next pass is due for time alone
//! (a crash-loop back-off ending). The controller's executor (`pss-controller`'s
//! `executor.rs`) gathers the inputs from the store, calls [`reconcile`], and executes the
//! actions (RunPod/StopPod on agents, store updates, events). [`observed_from_records`] and
//! [`node_states`] build the inputs from store records.
//!
//! Per workload, in this order:
//! - Pods whose node is gone or that are `Lost` get [`Action::Forget`]: they are replaced.
//!   `Terminating` pods are on their way out and ignored.
//! - The other pods count toward the replicas: unplaced ones (Pending or Failed with no node),
//!   active ones (Pending on a node, Starting, Running, Unknown) and crashed ones (Failed or
//!   Succeeded on a node; restarted in place once their back-off has elapsed, as Kubernetes
//!   restarts a container).
//! - Rollout: only pods of the current spec hash count toward the target, so new pods are
//!   created beside the old ones; old pods that serve nothing (unplaced, crashed) are stopped at
//!   once, and old active pods only as current pods become ready: `max(0, replicas -
//!   ready_current)` of them are kept (zero-downtime). A rollout on a full cluster therefore waits
//!   for room, like Kubernetes with `maxUnavailable: 0`.
//! - Surplus current pods are stopped (`ScaledDown`), choosing unplaced pods first, then not
//!   ready ones, then pods on the node with the most pods of the workload, then the newest (the
//!   pod listed later in `observed`; [`observed_from_records`] lists oldest first).
//! - Missing pods: unplaced pods that now fit are placed first, then new pods are created with
//!   the scheduler, the node states updated between placements; a pod that fits nowhere is
//!   created anyway as [`Action::CreateUnschedulable`] and stays Pending.
//!
//! Pods of workloads that no longer exist are stopped (`WorkloadDeleted`).
//!
//! Properties (proptested): a converged state plans nothing; applying a plan converges; never
//! more scale-down stops than the surplus; no ready current pod is stopped while the workload
//! is below target.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use crate::model::{
    NodeRecord, NodeStatus, Placement, PodPhase, PodRecord, Resources, RestartPolicy, Workload,
};
use crate::scheduler::{self, NodeState};

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
    /// Pods above `replicas` a rollout may create ([`RolloutSpec::bounds`]).
    pub max_surge: u32,
    /// Ready pods below `replicas` a rollout may leave ([`RolloutSpec::bounds`]).
    pub max_unavailable: u32,
    /// A paused rollout neither retires old pods nor creates pods beyond `replicas`.
    pub paused: bool,
    /// Which exited pods are restarted in place.
    pub restart_policy: RestartPolicy,
}

impl DesiredWorkload {
    /// The reconciler's view of a workload.
    pub fn of(w: &Workload) -> Self {
        let (max_surge, max_unavailable) = w.rollout.bounds(w.replicas);
        DesiredWorkload {
            name: w.name.clone(),
            replicas: w.replicas,
            placement: w.placement,
            request: w.pod_spec.requests(),
            spec_hash: w.pod_spec.spec_hash(),
            max_surge,
            max_unavailable,
            paused: w.rollout.paused,
            restart_policy: w.pod_spec.restart_policy,
        }
    }
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
    /// Its node is being drained: the pod is replaced elsewhere, and stopped only once the
    /// workload has `replicas` ready pods without it.
    pub evicted: bool,
}

/// Why a pod is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    ScaledDown,
    WorkloadDeleted,
    /// The workload's spec changed and a pod of the new spec is ready to take over.
    Replaced,
    /// Its node is being drained and a pod elsewhere is ready to take over.
    Evicted,
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
    Stop {
        pod: String,
        node: Option<String>,
        reason: StopReason,
    },
    /// Replace a Lost pod: forget the record (its node's agent stops it if it comes back).
    Forget { pod: String },
}

/// The reconciler's whole answer for one pass: what to do now, and when it next needs to run
/// even if nothing changes (kube-runtime's `Action::requeue_after`), so the executor sets one
/// timer instead of spawning a sleep per back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The earliest crash-loop back-off still running (unix ms), if any.
    pub requeue_at_ms: Option<i64>,
}

/// [`plan`] and [`requeue_at`] together: one reconcile decision.
pub fn reconcile(
    desired: &[DesiredWorkload],
    observed: &[ObservedPod],
    nodes: &[NodeState],
    now_ms: i64,
) -> Plan {
    Plan {
        actions: plan(desired, observed, nodes, now_ms),
        requeue_at_ms: requeue_at(observed, now_ms),
    }
}

/// When a pass must run again for time alone: the earliest back-off of a crashed, placed pod
/// that has not elapsed at `now_ms` (its restart is due then).
pub fn requeue_at(observed: &[ObservedPod], now_ms: i64) -> Option<i64> {
    observed
        .iter()
        .filter(|p| {
            matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded)
                && p.node.is_some()
                && p.backoff_until_ms > now_ms
        })
        .map(|p| p.backoff_until_ms)
        .min()
}

/// The diff between desired and observed state. `nodes` is the cluster's current allocation,
/// used to place new pods (`workload_pods` is ignored: it is recounted per workload from
/// `observed`); `now_ms` decides whether back-offs have elapsed.
pub fn plan(
    desired: &[DesiredWorkload],
    observed: &[ObservedPod],
    nodes: &[NodeState],
    now_ms: i64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut cluster = nodes.to_vec();
    let node_index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut by_workload: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, pod) in observed.iter().enumerate() {
        by_workload
            .entry(pod.workload.as_str())
            .or_default()
            .push(i);
    }
    for workload in desired {
        let indices = by_workload
            .remove(workload.name.as_str())
            .unwrap_or_default();
        WorkloadPlan {
            workload,
            observed,
            node_index: &node_index,
            now_ms,
        }
        .run(&indices, &mut cluster, &mut actions);
    }
    let live: HashSet<&str> = desired.iter().map(|w| w.name.as_str()).collect();
    for pod in observed
        .iter()
        .filter(|p| !live.contains(p.workload.as_str()))
    {
        match pod.phase {
            PodPhase::Terminating => {}
            PodPhase::Lost => actions.push(Action::Forget {
                pod: pod.id.clone(),
            }),
            _ => actions.push(stop(pod, StopReason::WorkloadDeleted)),
        }
    }
    actions
}

/// How a counted pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No node yet (Pending, or Failed before it was ever placed): waits for one.
    Unplaced,
    /// Pending on a node, Starting, Running or Unknown.
    Active,
    /// Failed or Succeeded on its node: restarted in place after its back-off.
    Crashed,
}

/// A pod that counts toward its workload's replicas.
#[derive(Debug, Clone, Copy)]
struct Counted<'a> {
    pod: &'a ObservedPod,
    /// Position in `observed`: later means newer.
    position: usize,
    state: State,
    node: Option<usize>,
}

impl Counted<'_> {
    fn is_ready(&self) -> bool {
        self.state == State::Active && self.pod.phase == PodPhase::Running && self.pod.ready
    }

    /// Scale-down order, smallest first: unplaced, then not ready, then on the node with the
    /// most pods of the workload (`per_node`), then newest.
    fn stop_rank(&self, per_node: &[u32]) -> (bool, bool, Reverse<u32>, Reverse<usize>) {
        let on_node = self.node.map_or(0, |n| per_node[n]);
        (
            self.state != State::Unplaced,
            self.is_ready(),
            Reverse(on_node),
            Reverse(self.position),
        )
    }
}

/// The inputs shared by every step of one workload's plan.
struct WorkloadPlan<'a> {
    workload: &'a DesiredWorkload,
    observed: &'a [ObservedPod],
    node_index: &'a HashMap<&'a str, usize>,
    now_ms: i64,
}

impl<'a> WorkloadPlan<'a> {
    /// Plans one workload whose pods are `observed[i]` for `i` in `indices`.
    fn run(&self, indices: &[usize], cluster: &mut [NodeState], actions: &mut Vec<Action>) {
        let w = self.workload;
        let mut current = Vec::new();
        let mut old = Vec::new();
        let mut evicted = Vec::new();
        for &position in indices {
            let pod = &self.observed[position];
            let Some(counted) = self.classify(pod, position, actions) else {
                continue;
            };
            if pod.evicted {
                evicted.push(counted);
            } else if pod.spec_hash == w.spec_hash {
                current.push(counted);
            } else {
                old.push(counted);
            }
        }
        let mut per_node = vec![0u32; cluster.len()];
        for node in current
            .iter()
            .chain(&old)
            .chain(&evicted)
            .filter_map(|c| c.node)
        {
            per_node[node] += 1;
        }
        let replicas = w.replicas as usize;
        // Old and evicted pods that serve nothing go at once (unless paused: no rollout step).
        let old = if w.paused {
            old
        } else {
            retire_idle(old, &mut per_node, StopReason::Replaced, actions)
        };
        let evicted = retire_idle(evicted, &mut per_node, StopReason::Evicted, actions);
        let surplus = current.len().saturating_sub(replicas);
        let kept = pick_stops(
            current,
            surplus,
            &mut per_node,
            StopReason::ScaledDown,
            actions,
        );
        // Availability: old pods may go while `replicas - max_unavailable` stay ready; evicted
        // ones only while `replicas` stay ready (a drain never lowers what a service serves).
        // Pods that are not ready serve nothing: they go first and cost no availability
        // (`pick_stops` takes not-ready pods first).
        let ready = |pods: &[Counted<'_>]| pods.iter().filter(|c| c.is_ready()).count();
        let available = ready(&kept) + ready(&old) + ready(&evicted);
        let old = if w.paused {
            old
        } else {
            let floor = replicas.saturating_sub(w.max_unavailable as usize);
            let budget = (old.len() - ready(&old)) + available.saturating_sub(floor);
            pick_stops(old, budget, &mut per_node, StopReason::Replaced, actions)
        };
        let available = ready(&kept) + ready(&old) + ready(&evicted);
        let budget = (evicted.len() - ready(&evicted)) + available.saturating_sub(replicas);
        let evicted = pick_stops(evicted, budget, &mut per_node, StopReason::Evicted, actions);

        self.restart_crashed(&kept, cluster, actions);
        count_workload_pods(cluster, &kept);
        self.place_unplaced(&kept, cluster, actions);
        let missing = replicas.saturating_sub(kept.len());
        let creates = if old.is_empty() && evicted.is_empty() {
            missing
        } else {
            // A rollout in progress: at most `replicas + max_surge` pods in all, plus one
            // replacement per evicted pod.
            let surge = if w.paused { 0 } else { w.max_surge as usize };
            let total = kept.len() + old.len() + evicted.len();
            let cap = replicas
                .saturating_add(surge)
                .saturating_add(evicted.len())
                .saturating_sub(total);
            missing.min(cap)
        };
        self.create_missing(creates, cluster, actions);
    }

    /// Sorts a pod into [`State`]s, or plans its `Forget` (Lost, or its node is unknown) and
    /// returns `None`; `Terminating` pods are ignored.
    fn classify(
        &self,
        pod: &'a ObservedPod,
        position: usize,
        actions: &mut Vec<Action>,
    ) -> Option<Counted<'a>> {
        let node = match pod.node.as_deref() {
            None => None,
            Some(name) => match self.node_index.get(name) {
                Some(&i) => Some(i),
                None => {
                    actions.push(Action::Forget {
                        pod: pod.id.clone(),
                    });
                    return None;
                }
            },
        };
        let state = match (pod.phase, node) {
            (PodPhase::Terminating, _) => return None,
            (PodPhase::Lost, _) => {
                actions.push(Action::Forget {
                    pod: pod.id.clone(),
                });
                return None;
            }
            (_, None) => State::Unplaced,
            (PodPhase::Failed | PodPhase::Succeeded, Some(_)) => State::Crashed,
            (
                PodPhase::Pending | PodPhase::Starting | PodPhase::Running | PodPhase::Unknown,
                Some(_),
            ) => State::Active,
        };
        Some(Counted {
            pod,
            position,
            state,
            node,
        })
    }

    fn backoff_elapsed(&self, pod: &ObservedPod) -> bool {
        pod.backoff_until_ms <= self.now_ms
    }

    /// Restarts crashed pods in place once their back-off has elapsed and their node is Ready
    /// (a NotReady node's pods are marked Lost by the controller and replaced instead).
    fn restart_crashed(
        &self,
        kept: &[Counted<'_>],
        cluster: &[NodeState],
        actions: &mut Vec<Action>,
    ) {
        let restarts = |phase: PodPhase| match self.workload.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => phase == PodPhase::Failed,
            RestartPolicy::Never => false,
        };
        for c in kept.iter().filter(|c| {
            c.state == State::Crashed && restarts(c.pod.phase) && self.backoff_elapsed(c.pod)
        }) {
            let node = &cluster[c.node.expect("crashed pods have a node")];
            if node.ready {
                actions.push(Action::Restart {
                    pod: c.pod.id.clone(),
                    node: node.name.clone(),
                });
            }
        }
    }

    /// Places unplaced pods (whose back-off, if any, has elapsed) that now fit somewhere.
    /// `cluster` holds this workload's pod counts ([`count_workload_pods`]).
    fn place_unplaced(
        &self,
        kept: &[Counted<'_>],
        cluster: &mut [NodeState],
        actions: &mut Vec<Action>,
    ) {
        let request = self.workload.request;
        for c in kept
            .iter()
            .filter(|c| c.state == State::Unplaced && self.backoff_elapsed(c.pod))
        {
            if let Ok(i) = scheduler::place(cluster, request, self.workload.placement) {
                cluster[i].assign(request);
                actions.push(Action::Place {
                    pod: c.pod.id.clone(),
                    node: cluster[i].name.clone(),
                });
            }
        }
    }

    /// Creates `missing` new pods, placed by the scheduler (`cluster` as for `place_unplaced`).
    fn create_missing(&self, missing: usize, cluster: &mut [NodeState], actions: &mut Vec<Action>) {
        let name = &self.workload.name;
        for result in scheduler::place_many(
            cluster,
            self.workload.request,
            self.workload.placement,
            missing,
        ) {
            actions.push(match result {
                Ok(i) => Action::Create {
                    workload: name.clone(),
                    node: cluster[i].name.clone(),
                },
                Err(e) => Action::CreateUnschedulable {
                    workload: name.clone(),
                    reason: e.reason,
                },
            });
        }
    }
}

/// Sets every node's `workload_pods` to the number of `pods` placed on it.
fn count_workload_pods(cluster: &mut [NodeState], pods: &[Counted<'_>]) {
    for node in cluster.iter_mut() {
        node.workload_pods = 0;
    }
    for i in pods.iter().filter_map(|c| c.node) {
        cluster[i].workload_pods += 1;
    }
}

/// Stops the pods of `pods` that serve nothing (unplaced, crashed) and returns the active
/// ones, which go only as others become ready.
fn retire_idle<'a>(
    pods: Vec<Counted<'a>>,
    per_node: &mut [u32],
    reason: StopReason,
    actions: &mut Vec<Action>,
) -> Vec<Counted<'a>> {
    let (active, idle): (Vec<_>, Vec<_>) = pods.into_iter().partition(|c| c.state == State::Active);
    for c in idle {
        if let Some(n) = c.node {
            per_node[n] -= 1;
        }
        actions.push(stop(c.pod, reason));
    }
    active
}

/// Stops `count` of `pods` in scale-down order (see [`Counted::stop_rank`]), one at a time so
/// that the per-node counts follow; returns the pods kept, in their original order.
fn pick_stops<'a>(
    mut pods: Vec<Counted<'a>>,
    count: usize,
    per_node: &mut [u32],
    reason: StopReason,
    actions: &mut Vec<Action>,
) -> Vec<Counted<'a>> {
    if count >= pods.len() {
        // Everything goes: no order to work out (and no quadratic scan when scaling to 0).
        for c in &pods {
            if let Some(n) = c.node {
                per_node[n] -= 1;
            }
            actions.push(stop(c.pod, reason));
        }
        return Vec::new();
    }
    for _ in 0..count {
        let Some((i, _)) = pods
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.stop_rank(per_node))
        else {
            break;
        };
        let victim = pods.remove(i);
        if let Some(n) = victim.node {
            per_node[n] -= 1;
        }
        actions.push(stop(victim.pod, reason));
    }
    pods
}

fn stop(pod: &ObservedPod, reason: StopReason) -> Action {
    Action::Stop {
        pod: pod.id.clone(),
        node: pod.node.clone(),
        reason,
    }
}

/// The reconciler's view of the store's pods, oldest first (by creation time, then id), so that
/// [`plan`]'s "newest first" scale-down tie-break holds.
pub fn observed_from_records(pods: &[PodRecord]) -> Vec<ObservedPod> {
    let mut sorted: Vec<&PodRecord> = pods.iter().collect();
    sorted.sort_by(|a, b| {
        a.created_at_ms
            .cmp(&b.created_at_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    sorted
        .into_iter()
        .map(|p| ObservedPod {
            id: p.id.clone(),
            workload: p.workload.clone(),
            node: p.node.clone(),
            phase: p.phase,
            ready: p.ready,
            spec_hash: p.spec_hash,
            restart_count: p.restart_count,
            backoff_until_ms: p.backoff_until_ms,
            evicted: false,
        })
        .collect()
}

/// Marks as evicted (see [`ObservedPod::evicted`]) the pods on draining nodes, and the crashed
/// pods on cordoned nodes (a cordoned node starts nothing, not even a restart: the pod is
/// replaced elsewhere).
pub fn mark_evicted(observed: &mut [ObservedPod], nodes: &[NodeRecord]) {
    let draining: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.draining)
        .map(|n| n.name.as_str())
        .collect();
    let cordoned: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.unschedulable)
        .map(|n| n.name.as_str())
        .collect();
    if draining.is_empty() && cordoned.is_empty() {
        return;
    }
    for pod in observed.iter_mut() {
        let Some(node) = pod.node.as_deref() else {
            continue;
        };
        let crashed = matches!(pod.phase, PodPhase::Failed | PodPhase::Succeeded);
        pod.evicted = draining.contains(node) || (crashed && cordoned.contains(node));
    }
}

/// Whether a pod in `phase` on a node holds that node's resources: everything but `Lost` (its
/// node stopped answering; the pod is replaced elsewhere and stopped if the node returns).
/// Failed pods keep their room because they are restarted in place.
pub fn holds_resources(phase: PodPhase) -> bool {
    phase != PodPhase::Lost
}

/// The scheduler's view of the registered nodes: capacity from the node records, allocation
/// as the sum of the requests of the placed pods that hold resources ([`holds_resources`]).
/// `request_of(workload)` gives one pod's requests (`None`, e.g. for a deleted workload, counts
/// as nothing). `workload_pods` is left at 0: [`plan`] counts it per workload.
/// A node is placeable (`ready`) when it is Ready *and* schedulable: a node with a condition
/// such as RuntimeUnresponsive (see [`crate::node_condition`]) keeps its pods but gets no new
/// ones, and no restart in place either (its runtime would not answer).
pub fn node_states(
    nodes: &[NodeRecord],
    pods: &[PodRecord],
    request_of: impl Fn(&str) -> Option<Resources>,
) -> Vec<NodeState> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut allocated = vec![Resources::default(); nodes.len()];
    for pod in pods.iter().filter(|p| holds_resources(p.phase)) {
        let Some(&i) = pod.node.as_deref().and_then(|name| index.get(name)) else {
            continue;
        };
        if let Some(request) = request_of(&pod.workload) {
            allocated[i] = allocated[i].plus(request);
        }
    }
    nodes
        .iter()
        .zip(allocated)
        .map(|(n, allocated)| NodeState {
            name: n.name.clone(),
            ready: n.status == NodeStatus::Ready
                && n.conditions.schedulable()
                && !n.unschedulable
                && !n.draining,
            capacity: Resources {
                cpu_millis: n.cpu_millis,
                memory_bytes: n.memory_bytes,
            },
            allocated,
            workload_pods: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HASH: u64 = 7;
    const OLD_HASH: u64 = 3;
    /// Back-offs in generated worlds end before this time.
    const MAX_BACKOFF_MS: i64 = 60_000;

    fn node(name: &str, cpu: u64) -> NodeState {
        NodeState {
            name: name.to_string(),
            ready: true,
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: 1 << 30,
            },
            allocated: Resources::default(),
            workload_pods: 0,
        }
    }

    fn workload(name: &str, replicas: u32) -> DesiredWorkload {
        DesiredWorkload {
            name: name.to_string(),
            replicas,
            placement: Placement::Spread,
            request: Resources {
                cpu_millis: 100,
                memory_bytes: 1 << 20,
            },
            spec_hash: HASH,
            // The behaviour before strategies: any surge, no unavailability.
            max_surge: u32::MAX,
            max_unavailable: 0,
            paused: false,
            restart_policy: RestartPolicy::Always,
        }
    }

    fn pod(id: &str, workload: &str, node: Option<&str>, phase: PodPhase) -> ObservedPod {
        ObservedPod {
            id: id.to_string(),
            workload: workload.to_string(),
            node: node.map(str::to_string),
            phase,
            ready: phase == PodPhase::Running,
            spec_hash: HASH,
            restart_count: 0,
            backoff_until_ms: 0,
            evicted: false,
        }
    }

    fn stopped(actions: &[Action]) -> Vec<(&str, StopReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { pod, reason, .. } => Some((pod.as_str(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn creates_missing_pods_spread_over_nodes() {
        let nodes = [node("a", 1000), node("b", 1000)];
        let observed = [pod("w-1", "w", Some("a"), PodPhase::Running)];
        let actions = plan(&[workload("w", 3)], &observed, &nodes, 0);
        let b = || Action::Create {
            workload: "w".into(),
            node: "b".into(),
        };
        let a = Action::Create {
            workload: "w".into(),
            node: "a".into(),
        };
        assert_eq!(actions, vec![b(), a]);
    }

    #[test]
    fn unschedulable_pods_are_created_pending_with_the_reason() {
        let nodes = [node("a", 150)];
        let actions = plan(&[workload("w", 2)], &[], &nodes, 0);
        assert_eq!(
            actions[0],
            Action::Create {
                workload: "w".into(),
                node: "a".into()
            }
        );
        assert_eq!(
            actions[1],
            Action::CreateUnschedulable {
                workload: "w".into(),
                reason: "0/1 nodes are available: 1 node has insufficient cpu.".into()
            }
        );
    }

    #[test]
    fn pending_pod_is_placed_before_creating_more() {
        let nodes = [node("a", 1000)];
        let observed = [pod("w-1", "w", None, PodPhase::Pending)];
        let actions = plan(&[workload("w", 2)], &observed, &nodes, 0);
        assert_eq!(
            actions,
            vec![
                Action::Place {
                    pod: "w-1".into(),
                    node: "a".into()
                },
                Action::Create {
                    workload: "w".into(),
                    node: "a".into()
                },
            ]
        );
    }

    #[test]
    fn scale_down_stops_unplaced_then_not_ready_then_most_loaded_newest() {
        let nodes = [node("a", 1000), node("b", 1000)];
        let mut starting = pod("w-3", "w", Some("b"), PodPhase::Starting);
        starting.ready = false;
        let observed = [
            pod("w-1", "w", Some("a"), PodPhase::Running),
            pod("w-2", "w", Some("a"), PodPhase::Running),
            starting,
            pod("w-4", "w", Some("b"), PodPhase::Running),
            pod("w-5", "w", None, PodPhase::Pending),
            pod("w-6", "w", Some("a"), PodPhase::Running),
        ];
        let down = |n| {
            stopped(&plan(&[workload("w", n)], &observed, &nodes, 0))
                .into_iter()
                .map(|(p, _)| p.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(down(5), vec!["w-5"]);
        assert_eq!(down(4), vec!["w-5", "w-3"]);
        // a holds w-1, w-2, w-6; b holds w-4: the newest on a goes first.
        assert_eq!(down(3), vec!["w-5", "w-3", "w-6"]);
        // a and b now both hold... a: 2, b: 1 → a again (w-2 is newer than w-1).
        assert_eq!(down(2), vec!["w-5", "w-3", "w-6", "w-2"]);
        // a: 1, b: 1 → the newest: w-4.
        assert_eq!(down(1), vec!["w-5", "w-3", "w-6", "w-2", "w-4"]);
        assert!(stopped(&plan(&[workload("w", 1)], &observed, &nodes, 0))
            .iter()
            .all(|(_, r)| *r == StopReason::ScaledDown));
    }

    #[test]
    fn failed_pod_is_restarted_in_place_after_its_backoff() {
        let nodes = [node("a", 1000)];
        let mut failed = pod("w-1", "w", Some("a"), PodPhase::Failed);
        failed.backoff_until_ms = 10_000;
        assert_eq!(
            plan(&[workload("w", 1)], &[failed.clone()], &nodes, 9_999),
            vec![],
            "counts while backing off"
        );
        assert_eq!(
            plan(&[workload("w", 1)], &[failed], &nodes, 10_000),
            vec![Action::Restart {
                pod: "w-1".into(),
                node: "a".into()
            }]
        );
    }

    #[test]
    fn lost_pods_and_pods_on_unknown_nodes_are_forgotten_and_replaced() {
        let nodes = [node("a", 1000)];
        let observed = [
            pod("w-1", "w", Some("gone"), PodPhase::Running),
            pod("w-2", "w", Some("a"), PodPhase::Lost),
        ];
        let actions = plan(&[workload("w", 2)], &observed, &nodes, 0);
        assert_eq!(actions[0], Action::Forget { pod: "w-1".into() });
        assert_eq!(actions[1], Action::Forget { pod: "w-2".into() });
        assert_eq!(actions[2..].len(), 2);
        assert!(actions[2..]
            .iter()
            .all(|a| matches!(a, Action::Create { .. })));
    }

    #[test]
    fn pods_of_deleted_workloads_are_stopped() {
        let nodes = [node("a", 1000)];
        let observed = [
            pod("x-1", "x", Some("a"), PodPhase::Running),
            pod("x-2", "x", Some("a"), PodPhase::Terminating),
            pod("x-3", "x", Some("a"), PodPhase::Lost),
        ];
        let actions = plan(&[], &observed, &nodes, 0);
        assert_eq!(
            actions,
            vec![
                Action::Stop {
                    pod: "x-1".into(),
                    node: Some("a".into()),
                    reason: StopReason::WorkloadDeleted
                },
                Action::Forget { pod: "x-3".into() },
            ]
        );
    }

    #[test]
    fn rollout_keeps_old_pods_until_new_ones_are_ready() {
        let nodes = [node("a", 1000), node("b", 1000)];
        let mut old: Vec<_> = (1..=2)
            .map(|i| pod(&format!("w-o{i}"), "w", Some("a"), PodPhase::Running))
            .collect();
        old.iter_mut().for_each(|p| p.spec_hash = OLD_HASH);
        let actions = plan(&[workload("w", 2)], &old, &nodes, 0);
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Create { .. }))
                .count(),
            2
        );
        assert!(stopped(&actions).is_empty(), "nothing new is ready yet");

        let mut observed = old.clone();
        observed.push(pod("w-n1", "w", Some("b"), PodPhase::Running));
        let mut starting = pod("w-n2", "w", Some("b"), PodPhase::Starting);
        starting.ready = false;
        observed.push(starting);
        let actions = plan(&[workload("w", 2)], &observed, &nodes, 0);
        assert_eq!(
            stopped(&actions),
            vec![("w-o2", StopReason::Replaced)],
            "one new pod ready: one old pod goes"
        );
        observed[3].phase = PodPhase::Running;
        observed[3].ready = true;
        let actions = plan(&[workload("w", 2)], &observed, &nodes, 0);
        assert_eq!(stopped(&actions).len(), 2);
    }

    #[test]
    fn rollout_stops_old_pods_that_serve_nothing_at_once() {
        let nodes = [node("a", 1000)];
        let mut idle = vec![
            pod("w-1", "w", None, PodPhase::Pending),
            pod("w-2", "w", Some("a"), PodPhase::Failed),
        ];
        idle.iter_mut().for_each(|p| p.spec_hash = OLD_HASH);
        let actions = plan(&[workload("w", 1)], &idle, &nodes, 0);
        assert_eq!(
            stopped(&actions),
            vec![("w-1", StopReason::Replaced), ("w-2", StopReason::Replaced)]
        );
        assert_eq!(
            actions.last(),
            Some(&Action::Create {
                workload: "w".into(),
                node: "a".into()
            })
        );
    }

    #[test]
    fn observed_from_records_lists_oldest_first_and_node_states_sum_requests() {
        let mut a = PodRecord::new("w-b".into(), "w", HASH, 20);
        a.node = Some("n".into());
        let mut b = PodRecord::new("w-a".into(), "w", HASH, 10);
        b.node = Some("n".into());
        let mut lost = PodRecord::new("w-c".into(), "w", HASH, 5);
        lost.node = Some("n".into());
        lost.phase = PodPhase::Lost;
        let records = [a, b, lost];
        let ids: Vec<_> = observed_from_records(&records)
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, vec!["w-c", "w-a", "w-b"]);
        let nodes = [NodeRecord {
            labels: Default::default(),
            unschedulable: false,
            draining: false,
            name: "n".into(),
            agent_address: String::new(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            status: NodeStatus::Ready,
            cpu_usage_percent: 0.0,
            memory_used_bytes: 0,
            last_heartbeat_ms: 0,
            registered_at_ms: 0,
            conditions: Default::default(),
            limits_unenforced: String::new(),
        }];
        let states = node_states(&nodes, &records, |w| {
            (w == "w").then_some(Resources {
                cpu_millis: 100,
                memory_bytes: 5,
            })
        });
        assert_eq!(
            states[0].allocated,
            Resources {
                cpu_millis: 200,
                memory_bytes: 10
            }
        );
        assert!(states[0].ready);
    }

    fn rolling(replicas: u32, surge: u32, unavailable: u32) -> DesiredWorkload {
        DesiredWorkload {
            max_surge: surge,
            max_unavailable: unavailable,
            ..workload("w", replicas)
        }
    }

    fn old_pod(id: &str, node: &str) -> ObservedPod {
        ObservedPod {
            spec_hash: OLD_HASH,
            ..pod(id, "w", Some(node), PodPhase::Running)
        }
    }

    fn creates(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Create { .. }))
            .count()
    }

    #[test]
    fn rollout_bounds_surge_and_unavailability() {
        let nodes = [node("a", 100_000)];
        let observed: Vec<_> = (0..4).map(|i| old_pod(&format!("w-o{i}"), "a")).collect();
        // 4 replicas, maxSurge 1, maxUnavailable 1: one old pod goes at once, and at most 5
        // pods exist: 3 old + 2 new.
        let actions = plan(&[rolling(4, 1, 1)], &observed, &nodes, 0);
        assert_eq!(stopped(&actions).len(), 1);
        assert_eq!(creates(&actions), 2);
        // maxSurge 0, maxUnavailable 1: one old pod goes, one new pod takes its place.
        let actions = plan(&[rolling(4, 0, 1)], &observed, &nodes, 0);
        assert_eq!(stopped(&actions).len(), 1);
        assert_eq!(creates(&actions), 1);
        // maxSurge 2, maxUnavailable 0: nothing stops before new pods are ready.
        let actions = plan(&[rolling(4, 2, 0)], &observed, &nodes, 0);
        assert!(stopped(&actions).is_empty());
        assert_eq!(creates(&actions), 2);
    }

    #[test]
    fn rollout_stops_old_pods_that_are_not_ready_first() {
        let nodes = [node("a", 100_000)];
        let mut broken = old_pod("w-o0", "a");
        broken.ready = false;
        let observed = [broken, old_pod("w-o1", "a")];
        // maxSurge 0, maxUnavailable 0 would deadlock; the unready old pod goes for free.
        let actions = plan(&[rolling(2, 0, 0)], &observed, &nodes, 0);
        assert_eq!(stopped(&actions), vec![("w-o0", StopReason::Replaced)]);
        assert_eq!(creates(&actions), 1);
    }

    #[test]
    fn paused_rollout_takes_no_step() {
        let nodes = [node("a", 100_000)];
        let observed: Vec<_> = (0..2).map(|i| old_pod(&format!("w-o{i}"), "a")).collect();
        let paused = DesiredWorkload {
            paused: true,
            ..rolling(2, 1, 1)
        };
        assert!(plan(std::slice::from_ref(&paused), &observed, &nodes, 0).is_empty());
        // Scaling up still works while paused, without surge.
        let bigger = DesiredWorkload {
            replicas: 3,
            ..paused
        };
        let actions = plan(&[bigger], &observed, &nodes, 0);
        assert!(stopped(&actions).is_empty());
        assert_eq!(creates(&actions), 1);
    }

    #[test]
    fn drain_replaces_pods_before_stopping_them() {
        let mut draining = node("a", 100_000);
        draining.ready = false; // node_states makes a draining node unschedulable
        let nodes = [draining, node("b", 100_000)];
        let on_a = |id: &str| ObservedPod {
            evicted: true,
            ..pod(id, "w", Some("a"), PodPhase::Running)
        };
        // Even with maxUnavailable 1, a drain stops nothing before the new pods are ready.
        let observed = [on_a("w-a0"), on_a("w-a1")];
        let actions = plan(&[rolling(2, 0, 1)], &observed, &nodes, 0);
        assert!(stopped(&actions).is_empty(), "{actions:?}");
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Create { node, .. } if node == "b"))
                .count(),
            2
        );
        // One replacement ready: one evicted pod goes.
        let mut observed = observed.to_vec();
        observed.push(pod("w-b0", "w", Some("b"), PodPhase::Running));
        let mut starting = pod("w-b1", "w", Some("b"), PodPhase::Starting);
        starting.ready = false;
        observed.push(starting);
        let actions = plan(&[rolling(2, 0, 1)], &observed, &nodes, 0);
        assert_eq!(stopped(&actions).len(), 1);
        assert!(matches!(stopped(&actions)[0], (_, StopReason::Evicted)));
        assert_eq!(creates(&actions), 0);
    }

    #[test]
    fn restart_policy_decides_which_exited_pods_restart() {
        let nodes = [node("a", 100_000)];
        let observed = [
            pod("w-f", "w", Some("a"), PodPhase::Failed),
            pod("w-s", "w", Some("a"), PodPhase::Succeeded),
        ];
        let restarted = |policy| {
            let w = DesiredWorkload {
                restart_policy: policy,
                ..workload("w", 2)
            };
            let mut ids: Vec<String> = plan(&[w], &observed, &nodes, 0)
                .into_iter()
                .map(|a| match a {
                    Action::Restart { pod, .. } => pod,
                    other => panic!("only restarts expected, got {other:?}"),
                })
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(restarted(RestartPolicy::Always), ["w-f", "w-s"]);
        assert_eq!(restarted(RestartPolicy::OnFailure), ["w-f"]);
        // Never: both stay as they are, and still count (no replacement is created).
        assert!(restarted(RestartPolicy::Never).is_empty());
    }

    #[test]
    fn mark_evicted_takes_draining_nodes_and_crashed_pods_on_cordoned_ones() {
        let record = |name: &str, unschedulable: bool, draining: bool| NodeRecord {
            name: name.into(),
            agent_address: String::new(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            status: NodeStatus::Ready,
            cpu_usage_percent: 0.0,
            memory_used_bytes: 0,
            last_heartbeat_ms: 0,
            registered_at_ms: 0,
            conditions: Default::default(),
            limits_unenforced: String::new(),
            labels: Default::default(),
            unschedulable,
            draining,
        };
        let nodes = [
            record("d", true, true),
            record("c", true, false),
            record("r", false, false),
        ];
        let mut observed = vec![
            pod("w-1", "w", Some("d"), PodPhase::Running),
            pod("w-2", "w", Some("c"), PodPhase::Running),
            pod("w-3", "w", Some("c"), PodPhase::Failed),
            pod("w-4", "w", Some("r"), PodPhase::Failed),
            pod("w-5", "w", None, PodPhase::Pending),
        ];
        mark_evicted(&mut observed, &nodes);
        let evicted: Vec<&str> = observed
            .iter()
            .filter(|p| p.evicted)
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(evicted, ["w-1", "w-3"]);
        let states = node_states(&nodes, &[], |_| None);
        assert_eq!(
            states.iter().map(|s| s.ready).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    // ------------------------------------------------------------------ simulation

    /// A tiny world that applies actions the way the controller and agents would.
    #[derive(Debug, Clone)]
    struct World {
        nodes: Vec<NodeState>,
        workloads: Vec<DesiredWorkload>,
        pods: Vec<ObservedPod>,
        now_ms: i64,
        next_id: u32,
    }

    impl World {
        fn node_states(&self) -> Vec<NodeState> {
            let request = |w: &str| {
                self.workloads
                    .iter()
                    .find(|d| d.name == w)
                    .map_or(Resources::default(), |d| d.request)
            };
            let mut nodes = self.nodes.clone();
            for n in &mut nodes {
                n.allocated = Resources::default();
            }
            for p in self.pods.iter().filter(|p| holds_resources(p.phase)) {
                if let Some(n) = nodes.iter_mut().find(|n| Some(&n.name) == p.node.as_ref()) {
                    n.allocated = n.allocated.plus(request(&p.workload));
                }
            }
            nodes
        }

        fn plan(&self) -> Vec<Action> {
            plan(
                &self.workloads,
                &self.pods,
                &self.node_states(),
                self.now_ms,
            )
        }

        fn hash_of(&self, workload: &str) -> u64 {
            self.workloads
                .iter()
                .find(|w| w.name == workload)
                .map_or(0, |w| w.spec_hash)
        }

        fn new_pod(&mut self, workload: &str, node: Option<String>, phase: PodPhase) {
            self.next_id += 1;
            let mut p = pod(
                &format!("{workload}-new{}", self.next_id),
                workload,
                None,
                phase,
            );
            p.node = node;
            p.ready = false;
            p.spec_hash = self.hash_of(workload);
            self.pods.push(p);
        }

        fn pod_mut(&mut self, id: &str) -> &mut ObservedPod {
            self.pods
                .iter_mut()
                .find(|p| p.id == id)
                .expect("action names a known pod")
        }

        fn apply(&mut self, actions: &[Action]) {
            // Terminating pods finish stopping; pods of NotReady nodes are marked Lost.
            self.pods.retain(|p| p.phase != PodPhase::Terminating);
            for action in actions {
                match action {
                    Action::Create { workload, node } => {
                        self.new_pod(workload, Some(node.clone()), PodPhase::Starting)
                    }
                    Action::CreateUnschedulable { workload, .. } => {
                        self.new_pod(workload, None, PodPhase::Pending)
                    }
                    Action::Place { pod, node } => {
                        let p = self.pod_mut(pod);
                        p.node = Some(node.clone());
                        p.phase = PodPhase::Starting;
                    }
                    Action::Restart { pod, .. } => {
                        let p = self.pod_mut(pod);
                        p.phase = PodPhase::Starting;
                        p.restart_count += 1;
                    }
                    Action::Stop { pod, .. } | Action::Forget { pod } => {
                        self.pods.retain(|p| &p.id != pod)
                    }
                }
            }
            self.now_ms += 10_000;
            let not_ready: HashSet<String> = self
                .nodes
                .iter()
                .filter(|n| !n.ready)
                .map(|n| n.name.clone())
                .collect();
            for p in &mut self.pods {
                // Readiness: every placed pod that is coming up or running becomes ready.
                let coming_up = matches!(
                    p.phase,
                    PodPhase::Pending | PodPhase::Starting | PodPhase::Running | PodPhase::Unknown
                );
                if coming_up && p.node.is_some() {
                    p.phase = PodPhase::Running;
                    p.ready = true;
                }
                if p.node.as_ref().is_some_and(|n| not_ready.contains(n)) {
                    p.phase = PodPhase::Lost;
                    p.ready = false;
                }
            }
        }
    }

    fn arb_phase() -> impl Strategy<Value = PodPhase> {
        prop::sample::select(vec![
            PodPhase::Pending,
            PodPhase::Starting,
            PodPhase::Running,
            PodPhase::Running,
            PodPhase::Running,
            PodPhase::Failed,
            PodPhase::Succeeded,
            PodPhase::Terminating,
            PodPhase::Lost,
            PodPhase::Unknown,
        ])
    }

    /// A world of 1-4 nodes (some possibly NotReady, with `cpu` millicores each), workloads
    /// `w0`..`w2` (some possibly deleted) and up to 12 pods in arbitrary states.
    fn arb_world(all_ready: bool, cpu: u64) -> impl Strategy<Value = World> {
        let nodes = prop::collection::vec(any::<bool>(), 1..4);
        let workloads =
            prop::collection::vec((any::<bool>(), 0u32..6, any::<bool>(), any::<bool>()), 3);
        let pods = prop::collection::vec(
            (
                0usize..3,
                prop::option::of(0usize..5),
                arb_phase(),
                any::<bool>(),
                any::<bool>(),
                0i64..60_000,
            ),
            0..12,
        );
        (nodes, workloads, pods).prop_map(move |(nodes, workloads, pods)| {
            let nodes: Vec<NodeState> = nodes
                .iter()
                .enumerate()
                .map(|(i, &down)| NodeState {
                    ready: all_ready || !down || i == 0,
                    ..node(&format!("n{i}"), cpu)
                })
                .collect();
            let workloads: Vec<DesiredWorkload> = workloads
                .iter()
                .enumerate()
                .filter(|(_, (deleted, ..))| !deleted)
                .map(|(i, &(_, replicas, binpack, bounded))| {
                    // Half the workloads roll out with a bounded strategy (surge and
                    // unavailability of 0-1 pods, never both 0), half as before.
                    let (max_surge, max_unavailable) = match (bounded, replicas % 3) {
                        (false, _) => (u32::MAX, 0),
                        (true, 0) => (1, 0),
                        (true, 1) => (0, 1),
                        (true, _) => (1, 1),
                    };
                    DesiredWorkload {
                        placement: if binpack {
                            Placement::Binpack
                        } else {
                            Placement::Spread
                        },
                        max_surge,
                        max_unavailable,
                        ..workload(&format!("w{i}"), replicas)
                    }
                })
                .collect();
            let pods = pods
                .iter()
                .enumerate()
                .map(|(i, &(w, n, phase, ready, old, backoff))| {
                    // Node index 4 names a node that is not registered.
                    let node = n.map(|n| format!("n{}", if n >= nodes.len() { 9 } else { n }));
                    let mut p = pod(
                        &format!("w{w}-p{i}"),
                        &format!("w{w}"),
                        node.as_deref(),
                        phase,
                    );
                    p.ready = ready && phase == PodPhase::Running && p.node.is_some();
                    p.spec_hash = if old { OLD_HASH } else { HASH };
                    p.backoff_until_ms = backoff;
                    p
                })
                .collect();
            World {
                nodes,
                workloads,
                pods,
                now_ms: 0,
                next_id: 0,
            }
        })
    }

    /// Pods of `w` that count toward its target (not Terminating, not Lost, current spec).
    fn counted_current<'a>(world: &'a World, w: &DesiredWorkload) -> Vec<&'a ObservedPod> {
        world
            .pods
            .iter()
            .filter(|p| p.workload == w.name && p.spec_hash == w.spec_hash)
            .filter(|p| !matches!(p.phase, PodPhase::Terminating | PodPhase::Lost))
            .filter(|p| {
                p.node
                    .as_ref()
                    .is_none_or(|n| world.nodes.iter().any(|x| &x.name == n))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn applying_plans_converges_and_a_converged_state_plans_nothing(world in arb_world(false, 10_000)) {
            let mut world = world;
            // Each round advances the clock 10 s (a resync); back-offs end by 60 s.
            let mut rounds = 0;
            loop {
                let actions = world.plan();
                if actions.is_empty() && world.now_ms >= MAX_BACKOFF_MS {
                    break;
                }
                rounds += 1;
                prop_assert!(rounds <= 12, "no convergence after 12 rounds: {:?}\n{:?}", world, actions);
                world.apply(&actions);
            }
            // A converged state plans nothing, later too.
            world.apply(&[]);
            prop_assert_eq!(world.plan(), vec![]);
            // Converged with ample room: every workload runs exactly its replicas, all current
            // and ready, and nothing else of it remains.
            for w in &world.workloads {
                let pods: Vec<_> = world.pods.iter().filter(|p| p.workload == w.name).collect();
                prop_assert_eq!(pods.len(), w.replicas as usize, "{:?}", pods);
                prop_assert!(pods.iter().all(|p| p.ready && p.spec_hash == w.spec_hash), "{:?}", pods);
            }
            prop_assert!(world.pods.iter().all(|p| world.workloads.iter().any(|w| w.name == p.workload)));
        }

        #[test]
        fn converges_to_a_stable_plan_even_without_room(world in arb_world(false, 250)) {
            let mut world = world;
            for _ in 0..12 {
                let actions = world.plan();
                if actions.is_empty() && world.now_ms >= MAX_BACKOFF_MS {
                    return Ok(());
                }
                world.apply(&actions);
            }
            prop_assert!(world.plan().is_empty(), "still planning after 12 rounds: {:?}", world);
        }

        #[test]
        fn stops_never_exceed_the_surplus_nor_hit_ready_pods_below_target(world in arb_world(false, 2000), now in 0i64..70_000) {
            let mut world = world;
            world.now_ms = now;
            let actions = world.plan();
            for w in &world.workloads {
                let current = counted_current(&world, w);
                let ready = current.iter().filter(|p| p.ready).count();
                let scaled_down: Vec<&str> = actions.iter().filter_map(|a| match a {
                    Action::Stop { pod, reason: StopReason::ScaledDown, .. }
                        if current.iter().any(|p| &p.id == pod) => Some(pod.as_str()),
                    _ => None,
                }).collect();
                prop_assert_eq!(scaled_down.len(), current.len().saturating_sub(w.replicas as usize));
                if ready < w.replicas as usize {
                    for id in &scaled_down {
                        prop_assert!(!current.iter().any(|p| &p.id == id && p.ready), "stopped ready {} below target", id);
                    }
                }
                // Availability: the ready pods (current and old) left after the stops are at
                // least `replicas - max_unavailable`, or all of them when fewer are ready.
                let ready_pods: Vec<_> = world.pods.iter().filter(|p| p.workload == w.name && p.ready
                    && p.phase == PodPhase::Running
                    && world.nodes.iter().any(|n| Some(&n.name) == p.node.as_ref())).collect();
                let ready_stopped = actions.iter().filter(|a| matches!(a, Action::Stop { pod, .. }
                    if ready_pods.iter().any(|p| &p.id == pod))).count();
                let floor = (w.replicas as usize).saturating_sub(w.max_unavailable as usize);
                prop_assert!(ready_pods.len() - ready_stopped >= floor.min(ready_pods.len()),
                    "{} ready, {} of them stopped, floor {}", ready_pods.len(), ready_stopped, floor);
            }
        }
    }

    #[test]
    fn requeue_is_the_earliest_running_back_off_of_a_placed_crashed_pod() {
        let pod = |id: &str, phase: PodPhase, node: Option<&str>, until: i64| ObservedPod {
            id: id.into(),
            workload: "w".into(),
            node: node.map(Into::into),
            phase,
            ready: false,
            spec_hash: 1,
            restart_count: 0,
            backoff_until_ms: until,
            evicted: false,
        };
        let observed = [
            pod("w-a", PodPhase::Failed, Some("n"), 5_000),
            pod("w-b", PodPhase::Failed, Some("n"), 3_000),
            pod("w-c", PodPhase::Failed, Some("n"), 500),
            pod("w-d", PodPhase::Running, Some("n"), 2_000),
            pod("w-e", PodPhase::Failed, None, 2_000),
        ];
        assert_eq!(requeue_at(&observed, 1_000), Some(3_000));
        assert_eq!(requeue_at(&observed, 6_000), None);
    }
}
