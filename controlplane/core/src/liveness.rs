//! Node liveness: which nodes have gone silent, and what becomes of their pods. Pure: the
//! controller's loop reads nodes and pods once, calls [`plan`], and writes what it returns.
//!
//! A Ready node whose last heartbeat is older than the timeout becomes NotReady. Its pods are
//! marked `Lost` (out of the endpoints at once; the reconciler replaces them on Ready nodes),
//! except `Terminating` ones, whose stop can no longer be confirmed: they are forgotten, and
//! the agent stops them itself when it comes back and re-registers.

use std::collections::HashMap;

use crate::model::{NodeRecord, NodeStatus, PodPhase, PodRecord};

/// One node that went silent, and what happens to its pods.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoss {
    /// The node, to be set NotReady.
    pub node: String,
    /// How long it has been silent (ms).
    pub silent_ms: i64,
    /// Its pods, now `Lost` (records to write).
    pub lost: Vec<PodRecord>,
    /// IDs of its `Terminating` pods, to forget.
    pub forget: Vec<String>,
}

/// The nodes silent for longer than `timeout_ms` at `now_ms`, with the fate of their pods.
/// Nodes that are not Ready are left alone (they were handled when they went silent).
pub fn plan(
    nodes: &[NodeRecord],
    pods: &[PodRecord],
    timeout_ms: i64,
    now_ms: i64,
) -> Vec<NodeLoss> {
    let mut losses: Vec<NodeLoss> = nodes
        .iter()
        .filter(|n| {
            n.status == NodeStatus::Ready && now_ms.saturating_sub(n.last_heartbeat_ms) > timeout_ms
        })
        .map(|n| NodeLoss {
            node: n.name.clone(),
            silent_ms: now_ms.saturating_sub(n.last_heartbeat_ms),
            lost: Vec::new(),
            forget: Vec::new(),
        })
        .collect();
    if losses.is_empty() {
        return losses;
    }
    let index: HashMap<String, usize> = losses
        .iter()
        .enumerate()
        .map(|(i, l)| (l.node.clone(), i))
        .collect();
    for pod in pods {
        let Some(&i) = pod.node.as_ref().and_then(|n| index.get(n)) else {
            continue;
        };
        let loss = &mut losses[i];
        match pod.phase {
            PodPhase::Terminating => loss.forget.push(pod.id.clone()),
            PodPhase::Lost => {}
            _ => {
                let mut lost = pod.clone();
                lost.phase = PodPhase::Lost;
                lost.ready = false;
                lost.reason = "NodeLost".into();
                lost.message = format!("node {} stopped sending heartbeats", loss.node);
                lost.updated_at_ms = now_ms;
                loss.lost.push(lost);
            }
        }
    }
    losses
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, status: NodeStatus, last: i64) -> NodeRecord {
        NodeRecord {
            labels: Default::default(),
            unschedulable: false,
            draining: false,
            name: name.into(),
            agent_address: format!("{name}:1"),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            status,
            cpu_usage_percent: 0.0,
            memory_used_bytes: 0,
            last_heartbeat_ms: last,
            registered_at_ms: 0,
            conditions: Default::default(),
            limits_unenforced: String::new(),
        }
    }

    fn pod(id: &str, node: &str, phase: PodPhase) -> PodRecord {
        let mut p = PodRecord::new(id.into(), "w", 1, 0);
        p.node = Some(node.into());
        p.phase = phase;
        p.ready = phase == PodPhase::Running;
        p
    }

    #[test]
    fn a_silent_node_loses_its_pods_and_forgets_terminating_ones() {
        let nodes = [
            node("a", NodeStatus::Ready, 0),
            node("b", NodeStatus::Ready, 9_000),
        ];
        let pods = [
            pod("w-1", "a", PodPhase::Running),
            pod("w-2", "a", PodPhase::Terminating),
            pod("w-3", "b", PodPhase::Running),
            pod("w-4", "a", PodPhase::Lost),
        ];
        let out = plan(&nodes, &pods, 6_000, 10_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].node, "a");
        assert_eq!(out[0].silent_ms, 10_000);
        assert_eq!(out[0].forget, vec!["w-2".to_string()]);
        assert_eq!(out[0].lost.len(), 1);
        let lost = &out[0].lost[0];
        assert_eq!(
            (lost.id.as_str(), lost.phase, lost.ready),
            ("w-1", PodPhase::Lost, false)
        );
        assert_eq!(lost.reason, "NodeLost");
    }

    #[test]
    fn not_ready_nodes_and_the_exact_timeout_are_left_alone() {
        let nodes = [
            node("a", NodeStatus::NotReady, 0),
            node("b", NodeStatus::Ready, 4_000),
        ];
        assert!(plan(&nodes, &[], 6_000, 10_000).is_empty());
    }

    proptest! {
        #[test]
        fn only_pods_of_silent_nodes_change(
            beats in proptest::collection::vec(0i64..20_000, 1..6),
            placements in proptest::collection::vec((0usize..6, 0u8..4), 0..30),
        ) {
            let nodes: Vec<NodeRecord> = beats.iter().enumerate()
                .map(|(i, &b)| node(&format!("n{i}"), NodeStatus::Ready, b)).collect();
            let phases = [PodPhase::Running, PodPhase::Starting, PodPhase::Terminating, PodPhase::Failed];
            let pods: Vec<PodRecord> = placements.iter().enumerate()
                .map(|(i, &(n, ph))| pod(&format!("w-{i}"), &format!("n{}", n % beats.len()), phases[ph as usize])).collect();
            let out = plan(&nodes, &pods, 6_000, 20_000);
            for loss in &out {
                let n = nodes.iter().find(|n| n.name == loss.node).unwrap();
                prop_assert!(20_000 - n.last_heartbeat_ms > 6_000);
                for p in &loss.lost { prop_assert_eq!(p.node.as_deref(), Some(loss.node.as_str())); }
            }
            let silent: usize = nodes.iter().filter(|n| 20_000 - n.last_heartbeat_ms > 6_000).count();
            prop_assert_eq!(out.len(), silent);
            let touched: usize = out.iter().map(|l| l.lost.len() + l.forget.len()).sum();
            let expected = pods.iter().filter(|p| out.iter().any(|l| Some(l.node.as_str()) == p.node.as_deref())).count();
            prop_assert_eq!(touched, expected);
        }
    }
}
