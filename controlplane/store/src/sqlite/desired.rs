//! Desired state: workloads, services and autoscaling policies.
//!
//! Every function takes a connection (or a transaction, which derefs to one); the caller decides
//! the transaction boundary. "Put" functions compare the stored object with the new one and
//! touch the row only on a real change, which is what makes `apply` report `Unchanged` and keeps
//! a workload's generation still when nothing changed.

use rusqlite::{params, Connection, Row};

use super::codec::{
    execute, get_enum, get_json, get_json_or_default, get_u64, not_found, query_all, query_opt,
    to_json, u64_to_sql,
};
use crate::Result;
use crate::{ApplyAction, StoredAutoscaler, StoredService, StoredWorkload};
use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, Object, PodSpec, RevisionRecord, RolloutStatus, Service,
    Workload,
};

/// Creates or updates one object of an `apply`.
pub(super) fn put_object(conn: &Connection, object: &Object, now_ms: i64) -> Result<ApplyAction> {
    match object {
        Object::Workload(workload) => put_workload(conn, workload, now_ms),
        Object::Service(service) => put_service(conn, service, now_ms),
        Object::AutoScalePolicy(policy) => put_autoscaler(conn, policy, now_ms),
    }
}

// ----- workloads

const SELECT_WORKLOAD: &str =
    "SELECT name, spec, replicas, placement, generation, created_at, labels, rollout,
            rollout_status,
            (SELECT MAX(revision) FROM workload_revisions r WHERE r.workload = w.name) AS revision
     FROM workloads w";

fn decode_workload(row: &Row<'_>) -> Result<StoredWorkload> {
    let revision: Option<i64> = row.get("revision")?;
    Ok(StoredWorkload {
        workload: Workload {
            name: row.get("name")?,
            replicas: row.get("replicas")?,
            placement: get_enum(row, "placement")?,
            pod_spec: get_json(row, "spec")?,
            labels: get_json(row, "labels")?,
            rollout: get_json_or_default(row, "rollout")?,
        },
        created_at_ms: row.get("created_at")?,
        generation: get_u64(row, "generation")?,
        revision: revision.map_or(0, |r| r as u64),
        rollout_status: get_json_or_default(row, "rollout_status")?,
    })
}

/// Inserts a new workload at generation 1, or updates a changed one and bumps its generation.
pub(super) fn put_workload(
    conn: &Connection,
    workload: &Workload,
    now_ms: i64,
) -> Result<ApplyAction> {
    let Some(stored) = get_workload(conn, &workload.name)? else {
        insert_workload(conn, workload, now_ms)?;
        record_revision(conn, workload, "apply", now_ms)?;
        return Ok(ApplyAction::Created);
    };
    // A paused rollout stays paused across applies (pause, change, resume): only
    // `rollout resume` ends the pause; a manifest may pause but not resume.
    let mut workload = workload.clone();
    workload.rollout.paused |= stored.workload.rollout.paused;
    let workload = &workload;
    if stored.workload == *workload {
        return Ok(ApplyAction::Unchanged);
    }
    update_workload(conn, workload, stored.generation.wrapping_add(1), now_ms)?;
    if stored.workload.pod_spec != workload.pod_spec
        || stored.workload.rollout.revision_history_limit != workload.rollout.revision_history_limit
    {
        record_revision(conn, workload, "apply", now_ms)?;
    }
    Ok(ApplyAction::Configured)
}

/// Makes `workload.pod_spec` the newest revision (a spec seen before moves to the top under a
/// new number, as Kubernetes does) and keeps `revisionHistoryLimit` old ones besides it.
fn record_revision(
    conn: &Connection,
    workload: &Workload,
    cause: &str,
    now_ms: i64,
) -> Result<u64> {
    let revisions = list_revisions(conn, &workload.name)?;
    let newest = revisions.last().map_or(0, |r| r.revision);
    if revisions
        .last()
        .is_some_and(|r| r.pod_spec == workload.pod_spec)
    {
        trim_revisions(conn, workload)?;
        return Ok(newest);
    }
    if let Some(same) = revisions.iter().find(|r| r.pod_spec == workload.pod_spec) {
        execute(
            conn,
            "DELETE FROM workload_revisions WHERE workload = ?1 AND revision = ?2",
            params![workload.name, u64_to_sql(same.revision)],
        )?;
    }
    let revision = newest + 1;
    execute(
        conn,
        "INSERT INTO workload_revisions (workload, revision, spec, cause, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            workload.name,
            u64_to_sql(revision),
            to_json(&workload.pod_spec)?,
            cause,
            now_ms
        ],
    )?;
    trim_revisions(conn, workload)?;
    Ok(revision)
}

/// Drops the revisions beyond the newest `revisionHistoryLimit + 1`.
fn trim_revisions(conn: &Connection, workload: &Workload) -> Result<()> {
    execute(
        conn,
        "DELETE FROM workload_revisions WHERE workload = ?1 AND revision NOT IN
            (SELECT revision FROM workload_revisions WHERE workload = ?1
             ORDER BY revision DESC LIMIT ?2)",
        params![
            workload.name,
            i64::from(workload.rollout.revision_history_limit) + 1
        ],
    )?;
    Ok(())
}

/// A workload's revisions, oldest first (the last is the current one).
pub(super) fn list_revisions(conn: &Connection, workload: &str) -> Result<Vec<RevisionRecord>> {
    query_all(
        conn,
        "SELECT revision, spec, cause, created_at FROM workload_revisions
         WHERE workload = ?1 ORDER BY revision",
        [workload],
        |row| {
            Ok(RevisionRecord {
                revision: get_u64(row, "revision")?,
                pod_spec: get_json(row, "spec")?,
                cause: row.get("cause")?,
                created_at_ms: row.get("created_at")?,
            })
        },
    )
}

/// Replaces a workload's pod spec (rollout undo, restart, auto-revert), recording the
/// revision with `cause`; `NotFound` if there is no such workload.
pub(super) fn set_pod_spec(
    conn: &Connection,
    name: &str,
    pod_spec: &PodSpec,
    cause: &str,
    now_ms: i64,
) -> Result<StoredWorkload> {
    let stored = get_workload(conn, name)?.ok_or_else(|| not_found("workload", name))?;
    if stored.workload.pod_spec != *pod_spec {
        let workload = Workload {
            pod_spec: pod_spec.clone(),
            ..stored.workload
        };
        update_workload(conn, &workload, stored.generation.wrapping_add(1), now_ms)?;
        record_revision(conn, &workload, cause, now_ms)?;
    }
    get_workload(conn, name)?.ok_or_else(|| not_found("workload", name))
}

/// Pauses or resumes a workload's rollout.
pub(super) fn set_paused(
    conn: &Connection,
    name: &str,
    paused: bool,
    now_ms: i64,
) -> Result<StoredWorkload> {
    let stored = get_workload(conn, name)?.ok_or_else(|| not_found("workload", name))?;
    if stored.workload.rollout.paused != paused {
        let mut workload = stored.workload;
        workload.rollout.paused = paused;
        update_workload(conn, &workload, stored.generation.wrapping_add(1), now_ms)?;
    }
    get_workload(conn, name)?.ok_or_else(|| not_found("workload", name))
}

/// Stores what the controller concluded about a workload's rollout (no generation bump: it
/// is status, not spec).
pub(super) fn set_rollout_status(
    conn: &Connection,
    name: &str,
    status: &RolloutStatus,
) -> Result<()> {
    execute(
        conn,
        "UPDATE workloads SET rollout_status = ?2 WHERE name = ?1",
        params![name, to_json(status)?],
    )?;
    Ok(())
}

fn insert_workload(conn: &Connection, workload: &Workload, now_ms: i64) -> Result<()> {
    execute(
        conn,
        "INSERT INTO workloads (name, spec, replicas, placement, generation, created_at, updated_at,
                                labels, rollout)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6, ?7)",
        params![
            workload.name,
            to_json(&workload.pod_spec)?,
            workload.replicas,
            workload.placement.as_str(),
            now_ms,
            to_json(&workload.labels)?,
            to_json(&workload.rollout)?
        ],
    )?;
    Ok(())
}

fn update_workload(
    conn: &Connection,
    workload: &Workload,
    generation: u64,
    now_ms: i64,
) -> Result<()> {
    execute(
        conn,
        "UPDATE workloads SET spec = ?2, replicas = ?3, placement = ?4, generation = ?5,
                              updated_at = ?6, labels = ?7, rollout = ?8
         WHERE name = ?1",
        params![
            workload.name,
            to_json(&workload.pod_spec)?,
            workload.replicas,
            workload.placement.as_str(),
            u64_to_sql(generation),
            now_ms,
            to_json(&workload.labels)?,
            to_json(&workload.rollout)?
        ],
    )?;
    Ok(())
}

pub(super) fn get_workload(conn: &Connection, name: &str) -> Result<Option<StoredWorkload>> {
    query_opt(
        conn,
        &format!("{SELECT_WORKLOAD} WHERE name = ?1"),
        [name],
        decode_workload,
    )
}

pub(super) fn list_workloads(conn: &Connection) -> Result<Vec<StoredWorkload>> {
    query_all(
        conn,
        &format!("{SELECT_WORKLOAD} ORDER BY name"),
        [],
        decode_workload,
    )
}

/// Sets the replica count (bumping the generation when it changes); returns the previous count.
pub(super) fn set_replicas(
    conn: &Connection,
    name: &str,
    replicas: u32,
    now_ms: i64,
) -> Result<u32> {
    let stored = get_workload(conn, name)?.ok_or_else(|| not_found("workload", name))?;
    let previous = stored.workload.replicas;
    if previous != replicas {
        let workload = Workload {
            replicas,
            ..stored.workload
        };
        update_workload(conn, &workload, stored.generation.wrapping_add(1), now_ms)?;
    }
    Ok(previous)
}

pub(super) fn delete_workload(conn: &Connection, name: &str) -> Result<bool> {
    execute(
        conn,
        "DELETE FROM workload_revisions WHERE workload = ?1",
        [name],
    )?;
    execute(conn, "DELETE FROM workloads WHERE name = ?1", [name])
}

// ----- services

const SELECT_SERVICE: &str =
    "SELECT name, workload, port, target_port, created_at, labels FROM services";

fn decode_service(row: &Row<'_>) -> Result<StoredService> {
    Ok(StoredService {
        service: Service {
            name: row.get("name")?,
            workload: row.get("workload")?,
            port: row.get("port")?,
            target_port: row.get("target_port")?,
            labels: get_json(row, "labels")?,
        },
        created_at_ms: row.get("created_at")?,
    })
}

/// Inserts a new service or updates a changed one.
pub(super) fn put_service(
    conn: &Connection,
    service: &Service,
    now_ms: i64,
) -> Result<ApplyAction> {
    let action = match get_service(conn, &service.name)? {
        None => ApplyAction::Created,
        Some(stored) if stored.service == *service => return Ok(ApplyAction::Unchanged),
        Some(_) => ApplyAction::Configured,
    };
    execute(
        conn,
        "INSERT INTO services (name, workload, port, target_port, created_at, labels)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET
             workload = excluded.workload, port = excluded.port,
             target_port = excluded.target_port, labels = excluded.labels",
        params![
            service.name,
            service.workload,
            service.port,
            service.target_port,
            now_ms,
            to_json(&service.labels)?
        ],
    )?;
    Ok(action)
}

pub(super) fn get_service(conn: &Connection, name: &str) -> Result<Option<StoredService>> {
    query_opt(
        conn,
        &format!("{SELECT_SERVICE} WHERE name = ?1"),
        [name],
        decode_service,
    )
}

pub(super) fn list_services(conn: &Connection) -> Result<Vec<StoredService>> {
    query_all(
        conn,
        &format!("{SELECT_SERVICE} ORDER BY name"),
        [],
        decode_service,
    )
}

pub(super) fn delete_service(conn: &Connection, name: &str) -> Result<bool> {
    execute(conn, "DELETE FROM services WHERE name = ?1", [name])
}

// ----- autoscalers

const SELECT_AUTOSCALER: &str = "SELECT name, workload, min_replicas, max_replicas, cpu_percent,
                                        memory_percent, status, created_at
                                 FROM autoscalers";

fn decode_autoscaler(row: &Row<'_>) -> Result<StoredAutoscaler> {
    Ok(StoredAutoscaler {
        policy: AutoScalePolicy {
            name: row.get("name")?,
            workload: row.get("workload")?,
            min_replicas: row.get("min_replicas")?,
            max_replicas: row.get("max_replicas")?,
            cpu_percent: row.get("cpu_percent")?,
            memory_percent: row.get("memory_percent")?,
        },
        created_at_ms: row.get("created_at")?,
        status: get_json(row, "status")?,
    })
}

/// Inserts a new policy (with an empty status) or updates a changed one, keeping its status.
pub(super) fn put_autoscaler(
    conn: &Connection,
    policy: &AutoScalePolicy,
    now_ms: i64,
) -> Result<ApplyAction> {
    let action = match get_autoscaler(conn, &policy.name)? {
        None => ApplyAction::Created,
        Some(stored) if stored.policy == *policy => return Ok(ApplyAction::Unchanged),
        Some(_) => ApplyAction::Configured,
    };
    execute(
        conn,
        "INSERT INTO autoscalers (name, workload, min_replicas, max_replicas, cpu_percent,
                                  memory_percent, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (name) DO UPDATE SET
             workload = excluded.workload, min_replicas = excluded.min_replicas,
             max_replicas = excluded.max_replicas, cpu_percent = excluded.cpu_percent,
             memory_percent = excluded.memory_percent",
        params![
            policy.name,
            policy.workload,
            policy.min_replicas,
            policy.max_replicas,
            policy.cpu_percent,
            policy.memory_percent,
            to_json(&AutoscalerStatus::default())?,
            now_ms
        ],
    )?;
    Ok(action)
}

pub(super) fn get_autoscaler(conn: &Connection, name: &str) -> Result<Option<StoredAutoscaler>> {
    query_opt(
        conn,
        &format!("{SELECT_AUTOSCALER} WHERE name = ?1"),
        [name],
        decode_autoscaler,
    )
}

pub(super) fn list_autoscalers(conn: &Connection) -> Result<Vec<StoredAutoscaler>> {
    query_all(
        conn,
        &format!("{SELECT_AUTOSCALER} ORDER BY name"),
        [],
        decode_autoscaler,
    )
}

/// Replaces a policy's status; `NotFound` when there is no such policy.
pub(super) fn set_autoscaler_status(
    conn: &Connection,
    name: &str,
    status: &AutoscalerStatus,
) -> Result<()> {
    let found = execute(
        conn,
        "UPDATE autoscalers SET status = ?2 WHERE name = ?1",
        params![name, to_json(status)?],
    )?;
    found
        .then_some(())
        .ok_or_else(|| not_found("autoscaler", name))
}

pub(super) fn delete_autoscaler(conn: &Connection, name: &str) -> Result<bool> {
    execute(conn, "DELETE FROM autoscalers WHERE name = ?1", [name])
}
