//! Observed state: nodes (agents) and pods.
//!
//! A pod's `node` is a foreign key to `nodes`, so a pod can only be placed on a registered node;
//! its `workload` is not, because pods outlive a deleted workload until they are stopped.

use rusqlite::{params, Connection, Row};

use super::codec::{
    execute, get_enum, get_f64, get_json, get_u64, not_found, query_all, query_opt, to_json,
    u64_to_sql,
};
use crate::Result;
use pss_core::model::{NodeRecord, NodeStatus, PodRecord};
use pss_core::node_condition::{NodeConditions, RuntimeUnresponsive};

// ----- nodes

const SELECT_NODE: &str = "SELECT name, agent_address, cpu_millis, memory_bytes, status, cpu_usage,
                                  memory_used, last_heartbeat, registered_at,
                                  runtime_unresponsive_since, runtime_reason, limits_unenforced,
                                  labels, unschedulable, draining
                           FROM nodes";

fn decode_node(row: &Row<'_>) -> Result<NodeRecord> {
    let since: Option<i64> = row.get("runtime_unresponsive_since")?;
    let conditions = NodeConditions {
        runtime_unresponsive: since.map(|since_ms| RuntimeUnresponsive {
            since_ms,
            reason: row.get("runtime_reason").unwrap_or_default(),
        }),
    };
    Ok(NodeRecord {
        conditions,
        name: row.get("name")?,
        agent_address: row.get("agent_address")?,
        cpu_millis: get_u64(row, "cpu_millis")?,
        memory_bytes: get_u64(row, "memory_bytes")?,
        status: get_enum(row, "status")?,
        cpu_usage_percent: get_f64(row, "cpu_usage")?,
        memory_used_bytes: get_u64(row, "memory_used")?,
        last_heartbeat_ms: row.get("last_heartbeat")?,
        registered_at_ms: row.get("registered_at")?,
        limits_unenforced: row.get("limits_unenforced")?,
        labels: get_json(row, "labels")?,
        unschedulable: row.get("unschedulable")?,
        draining: row.get("draining")?,
    })
}

/// Inserts a node or updates every field of an existing one but `registered_at` and its
/// cordon and drain (an operator's decision, which a re-registering agent must not undo).
pub(super) fn upsert_node(conn: &Connection, node: &NodeRecord) -> Result<()> {
    let runtime = node.conditions.runtime_unresponsive.as_ref();
    execute(
        conn,
        "INSERT INTO nodes (name, agent_address, cpu_millis, memory_bytes, status, cpu_usage,
                            memory_used, last_heartbeat, registered_at,
                            runtime_unresponsive_since, runtime_reason, limits_unenforced,
                            labels)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (name) DO UPDATE SET
             agent_address = excluded.agent_address, cpu_millis = excluded.cpu_millis,
             memory_bytes = excluded.memory_bytes, status = excluded.status,
             cpu_usage = excluded.cpu_usage, memory_used = excluded.memory_used,
             last_heartbeat = excluded.last_heartbeat,
             runtime_unresponsive_since = excluded.runtime_unresponsive_since,
             runtime_reason = excluded.runtime_reason,
             limits_unenforced = excluded.limits_unenforced,
             labels = excluded.labels",
        params![
            node.name,
            node.agent_address,
            u64_to_sql(node.cpu_millis),
            u64_to_sql(node.memory_bytes),
            node.status.as_str(),
            node.cpu_usage_percent,
            u64_to_sql(node.memory_used_bytes),
            node.last_heartbeat_ms,
            node.registered_at_ms,
            runtime.map(|c| c.since_ms),
            runtime.map_or("", |c| c.reason.as_str()),
            node.limits_unenforced,
            to_json(&node.labels)?
        ],
    )?;
    Ok(())
}

pub(super) fn get_node(conn: &Connection, name: &str) -> Result<Option<NodeRecord>> {
    query_opt(
        conn,
        &format!("{SELECT_NODE} WHERE name = ?1"),
        [name],
        decode_node,
    )
}

pub(super) fn list_nodes(conn: &Connection) -> Result<Vec<NodeRecord>> {
    query_all(
        conn,
        &format!("{SELECT_NODE} ORDER BY name"),
        [],
        decode_node,
    )
}

/// Records a heartbeat's metrics and time and marks the node Ready; `NotFound` if unregistered.
pub(super) fn record_heartbeat(
    conn: &Connection,
    name: &str,
    cpu_usage_percent: f64,
    memory_used_bytes: u64,
    now_ms: i64,
) -> Result<()> {
    let found = execute(
        conn,
        "UPDATE nodes SET cpu_usage = ?2, memory_used = ?3, last_heartbeat = ?4, status = ?5
         WHERE name = ?1",
        params![
            name,
            cpu_usage_percent,
            u64_to_sql(memory_used_bytes),
            now_ms,
            NodeStatus::Ready.as_str()
        ],
    )?;
    found.then_some(()).ok_or_else(|| not_found("node", name))
}

/// Sets a node's conditions; `NotFound` if unregistered.
pub(super) fn set_node_conditions(
    conn: &Connection,
    name: &str,
    conditions: &NodeConditions,
) -> Result<()> {
    let runtime = conditions.runtime_unresponsive.as_ref();
    let found = execute(
        conn,
        "UPDATE nodes SET runtime_unresponsive_since = ?2, runtime_reason = ?3 WHERE name = ?1",
        params![
            name,
            runtime.map(|c| c.since_ms),
            runtime.map_or("", |c| c.reason.as_str())
        ],
    )?;
    found.then_some(()).ok_or_else(|| not_found("node", name))
}

/// Cordons/drains a node or clears both; returns it as stored. `NotFound` if unregistered.
pub(super) fn set_node_scheduling(
    conn: &Connection,
    name: &str,
    unschedulable: bool,
    draining: bool,
) -> Result<NodeRecord> {
    let found = execute(
        conn,
        "UPDATE nodes SET unschedulable = ?2, draining = ?3 WHERE name = ?1",
        params![name, unschedulable, draining],
    )?;
    if !found {
        return Err(not_found("node", name));
    }
    get_node(conn, name)?.ok_or_else(|| not_found("node", name))
}

/// Sets a node's status; `NotFound` if unregistered.
pub(super) fn set_node_status(conn: &Connection, name: &str, status: NodeStatus) -> Result<()> {
    let found = execute(
        conn,
        "UPDATE nodes SET status = ?2 WHERE name = ?1",
        params![name, status.as_str()],
    )?;
    found.then_some(()).ok_or_else(|| not_found("node", name))
}

// ----- pods

const SELECT_POD: &str = "SELECT id, workload, node, phase, ready, addresses, restart_count,
                                 reason, message, spec_hash, created_at, started_at, updated_at,
                                 backoff_until, failure_streak, cpu_percent, memory_bytes,
                                 containers
                          FROM pods";

fn decode_pod(row: &Row<'_>) -> Result<PodRecord> {
    Ok(PodRecord {
        id: row.get("id")?,
        workload: row.get("workload")?,
        node: row.get("node")?,
        phase: get_enum(row, "phase")?,
        ready: row.get("ready")?,
        addresses: get_json(row, "addresses")?,
        restart_count: row.get("restart_count")?,
        reason: row.get("reason")?,
        message: row.get("message")?,
        spec_hash: get_u64(row, "spec_hash")?,
        created_at_ms: row.get("created_at")?,
        started_at_ms: row.get("started_at")?,
        updated_at_ms: row.get("updated_at")?,
        backoff_until_ms: row.get("backoff_until")?,
        failure_streak: row.get("failure_streak")?,
        cpu_percent: get_f64(row, "cpu_percent")?,
        memory_bytes: get_u64(row, "memory_bytes")?,
        containers: get_json(row, "containers")?,
    })
}

/// Inserts or replaces a pod record.
pub(super) fn put_pod(conn: &Connection, pod: &PodRecord) -> Result<()> {
    execute(
        conn,
        "INSERT OR REPLACE INTO pods (id, workload, node, phase, ready, addresses, restart_count,
                                      reason, message, spec_hash, created_at, started_at,
                                      updated_at, backoff_until, failure_streak, cpu_percent,
                                      memory_bytes, containers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            pod.id,
            pod.workload,
            pod.node,
            pod.phase.as_str(),
            pod.ready,
            to_json(&pod.addresses)?,
            pod.restart_count,
            pod.reason,
            pod.message,
            u64_to_sql(pod.spec_hash),
            pod.created_at_ms,
            pod.started_at_ms,
            pod.updated_at_ms,
            pod.backoff_until_ms,
            pod.failure_streak,
            pod.cpu_percent,
            u64_to_sql(pod.memory_bytes),
            to_json(&pod.containers)?
        ],
    )?;
    Ok(())
}

pub(super) fn get_pod(conn: &Connection, id: &str) -> Result<Option<PodRecord>> {
    query_opt(
        conn,
        &format!("{SELECT_POD} WHERE id = ?1"),
        [id],
        decode_pod,
    )
}

/// All pods ordered by workload then id, or only `workload`'s.
pub(super) fn list_pods(conn: &Connection, workload: Option<&str>) -> Result<Vec<PodRecord>> {
    match workload {
        Some(workload) => query_all(
            conn,
            &format!("{SELECT_POD} WHERE workload = ?1 ORDER BY id"),
            [workload],
            decode_pod,
        ),
        None => query_all(
            conn,
            &format!("{SELECT_POD} ORDER BY workload, id"),
            [],
            decode_pod,
        ),
    }
}

/// At most `limit` pods with an id after `after` (all when `None`), by id; of `workload` only
/// when given. Keyset paging on the primary key: each page costs its own rows only.
pub(super) fn list_pods_page(
    conn: &Connection,
    workload: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<PodRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query_all(
        conn,
        &format!(
            "{SELECT_POD} WHERE (?1 IS NULL OR workload = ?1) AND (?2 IS NULL OR id > ?2) \
             ORDER BY id LIMIT ?3"
        ),
        rusqlite::params![workload, after, limit],
        decode_pod,
    )
}

pub(super) fn delete_pod(conn: &Connection, id: &str) -> Result<bool> {
    execute(conn, "DELETE FROM pods WHERE id = ?1", [id])
}
