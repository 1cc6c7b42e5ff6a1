//! Node liveness: a Ready node whose last heartbeat is older than `--node-timeout` becomes
//! NotReady and its pods are marked Lost (out of the endpoints at once); the reconciler then
//! replaces them on Ready nodes. When the node's agent comes back it re-registers, and the
//! controller tells it to stop the pods it no longer wants.

use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::Shared;
use pss_core::model::{EventRecord, NodeStatus, PodPhase};
use pss_plumbing::clock::now_ms;

/// Checks liveness a few times per timeout until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let period =
        (shared.config.node_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = check(&shared, now_ms()) {
            tracing::warn!(error = %e, "node liveness check failed");
        }
    }
}

/// Marks silent nodes NotReady and their pods Lost. Returns the nodes that went NotReady.
pub(crate) fn check(shared: &Shared, now: i64) -> Result<Vec<String>> {
    let timeout = shared.config.node_timeout.as_millis() as i64;
    let mut lost_nodes = Vec::new();
    for node in shared.store.list_nodes()? {
        if node.status != NodeStatus::Ready || now - node.last_heartbeat_ms <= timeout {
            continue;
        }
        shared
            .store
            .set_node_status(&node.name, NodeStatus::NotReady)?;
        let silent = Duration::from_millis((now - node.last_heartbeat_ms) as u64);
        shared.event(EventRecord::warning(
            "NodeNotReady",
            format!("node/{}", node.name),
            format!(
                "node {} sent no heartbeat for {}; its pods are lost",
                node.name,
                humantime::format_duration(Duration::from_secs(silent.as_secs()))
            ),
        ));
        let mut lost = Vec::new();
        for mut pod in shared.store.list_pods(None)? {
            if pod.node.as_deref() != Some(node.name.as_str()) {
                continue;
            }
            match pod.phase {
                // Its stop can no longer be confirmed; the agent stops it when it returns.
                PodPhase::Terminating => {
                    shared.store.delete_pod(&pod.id)?;
                }
                PodPhase::Lost => {}
                _ => {
                    pod.phase = PodPhase::Lost;
                    pod.ready = false;
                    pod.reason = "NodeLost".into();
                    pod.message = format!("node {} stopped sending heartbeats", node.name);
                    pod.updated_at_ms = now;
                    lost.push(pod);
                }
            }
        }
        shared.store.put_pods(&lost)?;
        for pod in &lost {
            shared.event(EventRecord::warning(
                "PodLost",
                format!("pod/{}", pod.id),
                format!("pod {} lost with node {}", pod.id, node.name),
            ));
        }
        lost_nodes.push(node.name);
    }
    if !lost_nodes.is_empty() {
        shared.refresh_endpoints();
        shared.kick();
    }
    Ok(lost_nodes)
}
