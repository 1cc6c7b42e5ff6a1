//! Connection settings and schema migrations.
//!
//! The schema version lives in SQLite's `PRAGMA user_version`. [`MIGRATIONS`] is an ordered list:
//! entry `i` takes the schema from version `i` to `i + 1`, each applied in its own transaction
//! together with the version bump, so a crash mid-migration leaves the previous version intact.
//! A database written by a newer build (a version beyond the list) is refused rather than
//! misread.

use std::time::Duration;

use rusqlite::{ffi, Connection};

use crate::Result;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The ordered schema migrations; never edit a released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE workloads (
        name        TEXT PRIMARY KEY NOT NULL,
        spec        TEXT NOT NULL,             -- PodSpec as JSON
        replicas    INTEGER NOT NULL,
        placement   TEXT NOT NULL,             -- spread | binpack
        generation  INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,          -- unix ms
        updated_at  INTEGER NOT NULL
    );

    CREATE TABLE services (
        name        TEXT PRIMARY KEY NOT NULL,
        workload    TEXT NOT NULL,
        port        INTEGER NOT NULL,
        target_port INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );

    CREATE TABLE autoscalers (
        name           TEXT PRIMARY KEY NOT NULL,
        workload       TEXT NOT NULL,
        min_replicas   INTEGER NOT NULL,
        max_replicas   INTEGER NOT NULL,
        cpu_percent    INTEGER,                -- NULL = no CPU target
        memory_percent INTEGER,                -- NULL = no memory target
        status         TEXT NOT NULL,          -- AutoscalerStatus as JSON
        created_at     INTEGER NOT NULL
    );

    CREATE TABLE nodes (
        name           TEXT PRIMARY KEY NOT NULL,
        agent_address  TEXT NOT NULL,
        cpu_millis     INTEGER NOT NULL,
        memory_bytes   INTEGER NOT NULL,
        status         TEXT NOT NULL,          -- Ready | NotReady
        cpu_usage      REAL,
        memory_used    INTEGER NOT NULL,
        last_heartbeat INTEGER NOT NULL,
        registered_at  INTEGER NOT NULL
    );

    -- `workload` is deliberately not a foreign key: pods outlive a deleted workload until the
    -- reconciler has stopped them.
    CREATE TABLE pods (
        id             TEXT PRIMARY KEY NOT NULL,
        workload       TEXT NOT NULL,
        node           TEXT REFERENCES nodes(name) ON DELETE SET NULL,
        phase          TEXT NOT NULL,
        ready          INTEGER NOT NULL,
        addresses      TEXT NOT NULL,          -- [PortAddress] as JSON
        restart_count  INTEGER NOT NULL,
        reason         TEXT NOT NULL,
        message        TEXT NOT NULL,
        spec_hash      INTEGER NOT NULL,       -- u64 stored bit-for-bit as i64
        created_at     INTEGER NOT NULL,
        started_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL,
        backoff_until  INTEGER NOT NULL,
        failure_streak INTEGER NOT NULL,
        cpu_percent    REAL,
        memory_bytes   INTEGER NOT NULL,
        containers     TEXT NOT NULL           -- [ContainerState] as JSON
    );
    CREATE INDEX pods_by_workload ON pods(workload, id);
    CREATE INDEX pods_by_node ON pods(node);

    -- AUTOINCREMENT: ids are never reused, even after retention trimmed every row.
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        time    INTEGER NOT NULL,
        type    TEXT NOT NULL,                 -- Normal | Warning
        reason  TEXT NOT NULL,
        object  TEXT NOT NULL,
        message TEXT NOT NULL
    );

    CREATE TABLE snapshot_versions (
        service TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL
    );
    "#,
    // 2: node conditions (a node whose agent heartbeats but whose runtime does not answer).
    r#"
    ALTER TABLE nodes ADD COLUMN runtime_unresponsive_since INTEGER;  -- unix ms; NULL = answers
    ALTER TABLE nodes ADD COLUMN runtime_reason TEXT NOT NULL DEFAULT '';
    "#,
    // 3: what a (rootless) node's Podman cannot enforce (issue 13).
    r#"
    ALTER TABLE nodes ADD COLUMN limits_unenforced TEXT NOT NULL DEFAULT '';
    "#,
    // 4: labels, rollouts (settings, status, revision history), cordon and drain (issue 12).
    r#"
    ALTER TABLE workloads ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';          -- JSON map
    ALTER TABLE workloads ADD COLUMN rollout TEXT NOT NULL DEFAULT '';           -- RolloutSpec JSON; '' = defaults
    ALTER TABLE workloads ADD COLUMN rollout_status TEXT NOT NULL DEFAULT '';    -- RolloutStatus JSON; '' = none yet
    ALTER TABLE services ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE nodes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE nodes ADD COLUMN unschedulable INTEGER NOT NULL DEFAULT 0;       -- cordoned
    ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE workload_revisions (
        workload   TEXT NOT NULL,
        revision   INTEGER NOT NULL,
        spec       TEXT NOT NULL,              -- PodSpec as JSON
        cause      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workload, revision)
    );
    INSERT INTO workload_revisions (workload, revision, spec, cause, created_at)
        SELECT name, 1, spec, 'apply', updated_at FROM workloads;
    "#,
    // 5: credentials (issue 11): join tokens (only a digest of each secret) and the
    // certificates the CA issued, so a node's can be revoked.
    r#"
    CREATE TABLE join_tokens (
        id            TEXT PRIMARY KEY NOT NULL,   -- 16 hex digits
        role          TEXT NOT NULL,
        secret_sha256 BLOB NOT NULL,
        created_ms    INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL,            -- 0: never
        revoked       INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE certificates (
        serial       TEXT PRIMARY KEY NOT NULL,    -- lowercase hex
        role         TEXT NOT NULL,
        name         TEXT NOT NULL,
        issued_ms    INTEGER NOT NULL,
        not_after_ms INTEGER NOT NULL,
        revoked      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX certificates_by_identity ON certificates (role, name);
    "#,
];

/// The schema version this build writes and understands.
pub(super) const LATEST_VERSION: u32 = MIGRATIONS.len() as u32;

/// Sets the per-connection pragmas: WAL journal, `synchronous=NORMAL` (durable at checkpoints,
/// never corrupt), foreign keys enforced, and a busy timeout.
pub(super) fn configure(conn: &Connection) -> Result<()> {
    // An in-memory database answers "memory": WAL only applies to files.
    let _mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(())
}

/// Brings the schema up to [`LATEST_VERSION`], one transaction per migration.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let current = user_version(conn)?;
    if current > LATEST_VERSION {
        return Err(too_new(current).into());
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema version recorded in the database file.
pub(super) fn user_version(conn: &Connection) -> Result<u32> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// The error for a database written by a newer build.
fn too_new(found: u32) -> rusqlite::Error {
    let message = format!(
        "database schema version {found} is newer than this build supports \
         (version {LATEST_VERSION}); use a newer PSS build or another database file"
    );
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CANTOPEN), Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_brings_a_fresh_database_to_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
    }

    #[test]
    fn a_version_1_database_gains_the_node_condition_columns_with_its_rows_kept() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.commit().unwrap();
        conn.execute(
            "INSERT INTO nodes VALUES ('n', '127.0.0.1:1', 1000, 1, 'Ready', 0.0, 0, 5, 1)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
        let (since, reason): (Option<i64>, String) = conn
            .query_row(
                "SELECT runtime_unresponsive_since, runtime_reason FROM nodes WHERE name = 'n'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((since, reason.as_str()), (None, ""));
    }

    #[test]
    fn migrate_refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", LATEST_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer than this build supports"), "{err}");
    }
}
