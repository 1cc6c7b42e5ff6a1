//! Desired state: workloads, services and autoscaling policies.
//!
//! Every function takes a connection (or a transaction, which derefs to one); the caller decides
//! the transaction boundary. "Put" functions compare the stored object with the new one and
//! touch the row only on a real change, which is what makes `apply` report `Unchanged` and keeps
//! a workload's generation still when nothing changed.

use rusqlite::{params, Connection, Row};

use super::codec::{
    execute, get_enum, get_json, get_u64, not_found, query_all, query_opt, to_json, u64_to_sql,
};
use crate::Result;
use crate::{ApplyAction, StoredAutoscaler, StoredService, StoredWorkload};
use pss_core::model::{AutoScalePolicy, AutoscalerStatus, Object, Service, Workload};

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
    "SELECT name, spec, replicas, placement, generation, created_at FROM workloads";

fn decode_workload(row: &Row<'_>) -> Result<StoredWorkload> {
    Ok(StoredWorkload {
        workload: Workload {
            name: row.get("name")?,
            replicas: row.get("replicas")?,
            placement: get_enum(row, "placement")?,
            pod_spec: get_json(row, "spec")?,
        },
        created_at_ms: row.get("created_at")?,
        generation: get_u64(row, "generation")?,
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
        return Ok(ApplyAction::Created);
    };
    if stored.workload == *workload {
        return Ok(ApplyAction::Unchanged);
    }
    update_workload(conn, workload, stored.generation.wrapping_add(1), now_ms)?;
    Ok(ApplyAction::Configured)
}

fn insert_workload(conn: &Connection, workload: &Workload, now_ms: i64) -> Result<()> {
    execute(
        conn,
        "INSERT INTO workloads (name, spec, replicas, placement, generation, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
        params![
            workload.name,
            to_json(&workload.pod_spec)?,
            workload.replicas,
            workload.placement.as_str(),
            now_ms
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
                              updated_at = ?6
         WHERE name = ?1",
        params![
            workload.name,
            to_json(&workload.pod_spec)?,
            workload.replicas,
            workload.placement.as_str(),
            u64_to_sql(generation),
            now_ms
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
    execute(conn, "DELETE FROM workloads WHERE name = ?1", [name])
}

// ----- services

const SELECT_SERVICE: &str = "SELECT name, workload, port, target_port, created_at FROM services";

fn decode_service(row: &Row<'_>) -> Result<StoredService> {
    Ok(StoredService {
        service: Service {
            name: row.get("name")?,
            workload: row.get("workload")?,
            port: row.get("port")?,
            target_port: row.get("target_port")?,
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
        "INSERT INTO services (name, workload, port, target_port, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET
             workload = excluded.workload, port = excluded.port,
             target_port = excluded.target_port",
        params![
            service.name,
            service.workload,
            service.port,
            service.target_port,
            now_ms
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
