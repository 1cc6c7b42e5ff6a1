//! Events (bounded, newest kept) and per-service endpoint snapshot versions.

use rusqlite::{params, Connection, Row};

use super::codec::{execute, get_enum, query_all, u64_from_sql};
use crate::Result;
use pss_core::model::EventRecord;

/// A `usize` count as an SQL integer (saturating).
fn count_to_sql(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn decode_event(row: &Row<'_>) -> Result<EventRecord> {
    Ok(EventRecord {
        id: u64_from_sql(row.get("id")?),
        time_ms: row.get("time")?,
        event_type: get_enum(row, "type")?,
        reason: row.get("reason")?,
        object: row.get("object")?,
        message: row.get("message")?,
    })
}

/// Appends an event (time `now_ms` when the event has none), then keeps only the newest
/// `retention` events. Returns the new id. Call inside a transaction.
pub(super) fn add_event(
    conn: &Connection,
    event: &EventRecord,
    retention: usize,
    now_ms: i64,
) -> Result<u64> {
    let id = insert_event(conn, event, now_ms)?;
    trim_events(conn, retention)?;
    Ok(id)
}

/// Inserts an event without trimming: with its own id when not 0 (a cache that numbers its
/// events), else the next one. Time `now_ms` when the event has none. Returns the id.
pub(super) fn insert_event(conn: &Connection, event: &EventRecord, now_ms: i64) -> Result<u64> {
    let time_ms = if event.time_ms == 0 {
        now_ms
    } else {
        event.time_ms
    };
    let id = (event.id != 0).then(|| i64::try_from(event.id).unwrap_or(i64::MAX));
    execute(
        conn,
        "INSERT INTO events (id, time, type, reason, object, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            time_ms,
            event.event_type.as_str(),
            event.reason,
            event.object,
            event.message
        ],
    )?;
    Ok(u64_from_sql(conn.last_insert_rowid()))
}

/// The id the next event gets (ids are never reused, even after retention trimmed them all).
pub(super) fn next_event_id(conn: &Connection) -> Result<u64> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
        .query_row([], |row| row.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(u64_from_sql(last.unwrap_or(0)) + 1)
}

/// Deletes all but the newest `retention` events.
pub(super) fn trim_events(conn: &Connection, retention: usize) -> Result<()> {
    // The subquery is the id of the newest event beyond the bound (NULL when there is none,
    // and then nothing matches).
    execute(
        conn,
        "DELETE FROM events
         WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [count_to_sql(retention)],
    )?;
    Ok(())
}

/// The newest `limit` events, oldest first.
pub(super) fn list_events(conn: &Connection, limit: usize) -> Result<Vec<EventRecord>> {
    query_all(
        conn,
        "SELECT id, time, type, reason, object, message FROM (
             SELECT * FROM events ORDER BY id DESC LIMIT ?1
         ) ORDER BY id",
        [count_to_sql(limit)],
        decode_event,
    )
}

/// The next snapshot version of `service`: 1 the first time, then one more each call.
pub(super) fn next_snapshot_version(conn: &Connection, service: &str) -> Result<u64> {
    let version: i64 = conn
        .prepare_cached(
            "INSERT INTO snapshot_versions (service, version) VALUES (?1, 1)
         ON CONFLICT (service) DO UPDATE SET version = version + 1
         RETURNING version",
        )?
        .query_row([service], |row| row.get(0))?;
    Ok(u64_from_sql(version))
}
