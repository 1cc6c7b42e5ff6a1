//! The node liveness loop: every second at most (15 times per `--node-timeout`) it asks the pure
//! [`pss_core::liveness::plan`] which nodes went silent, and writes the answer (node NotReady,
//! pods Lost, events). The reconciler then replaces the lost pods on Ready nodes. When the
//! node's agent comes back it re-registers, and the controller tells it to stop the pods it no
//! longer wants.

use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::Shared;
use pss_core::liveness;
use pss_core::model::{EventRecord, NodeStatus};
use pss_plumbing::clock::now_ms;
use pss_store::Change;

/// Checks liveness a few times per timeout until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let term = shared.term();
    // Often enough that a silent node is noticed within a second of its timeout (so its pods
    // run elsewhere within the timeout plus a few seconds, issue 14); a check reads the nodes
    // from memory and the pods only when a node is late.
    let period =
        (shared.config.node_timeout / 15).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = check(&shared, now_ms()) {
            tracing::warn!(error = %e, "node liveness check failed");
        }
    }
}

/// Marks silent nodes NotReady and their pods Lost (the decision is
/// [`pss_core::liveness::plan`]; this writes it). Returns the nodes that went NotReady.
pub(crate) fn check(shared: &Shared, now: i64) -> Result<Vec<String>> {
    let timeout = i64::try_from(shared.config.node_timeout.as_millis()).unwrap_or(i64::MAX);
    let nodes = shared.store.list_nodes()?;
    // Cheap common case: nobody is late, so the pods are not even read.
    if !nodes
        .iter()
        .any(|n| n.status == NodeStatus::Ready && now.saturating_sub(n.last_heartbeat_ms) > timeout)
    {
        return Ok(Vec::new());
    }
    let pods = shared.store.list_pods(None)?;
    let losses = liveness::plan(&nodes, &pods, timeout, now);
    let mut lost_nodes = Vec::new();
    for loss in losses {
        shared
            .store
            .set_node_status(&loss.node, NodeStatus::NotReady)?;
        let silent = Duration::from_millis(u64::try_from(loss.silent_ms).unwrap_or(0));
        shared.event(EventRecord::warning(
            "NodeNotReady",
            format!("node/{}", loss.node),
            format!(
                "node {} sent no heartbeat for {}; its pods are lost",
                loss.node,
                humantime::format_duration(Duration::from_secs(silent.as_secs()))
            ),
        ));
        // One transaction per lost node.
        let changes: Vec<Change> = loss
            .forget
            .iter()
            .cloned()
            .map(Change::DeletePod)
            .chain(loss.lost.iter().cloned().map(Change::PutPod))
            .collect();
        shared.store.write_batch(&changes)?;
        for pod in &loss.lost {
            shared.event(EventRecord::warning(
                "PodLost",
                format!("pod/{}", pod.id),
                format!("pod {} lost with node {}", pod.id, loss.node),
            ));
        }
        lost_nodes.push(loss.node);
    }
    if !lost_nodes.is_empty() {
        shared.refresh_endpoints();
        shared.kick();
    }
    Ok(lost_nodes)
}
