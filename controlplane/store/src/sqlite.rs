//! SQLite implementation of the state store.
//!
//! One [`rusqlite::Connection`] behind a mutex: SQLite serialises writers anyway, and the mutex
//! makes the store `Send + Sync` for the controller's tasks. The file is opened in WAL mode with
//! `synchronous=NORMAL` and foreign keys on; the schema is migrated on open (see `schema.rs`).
//!
//! Every write runs in an immediate transaction (taken through [`SqliteStore::write`]), so a
//! method either happens entirely or not at all, and a controller restarted on the same file
//! finds exactly what was committed.
//!
//! Submodules: `schema` (pragmas, migrations), `codec` (column encodings, query helpers),
//! `desired` (workloads, services, autoscalers), `observed` (nodes, pods), `events` (events and
//! snapshot versions).

mod codec;
mod credentials;
mod desired;
mod events;
mod observed;
mod schema;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{
    ApplyAction, Change, ChangeHook, StateStore, StoredAutoscaler, StoredService, StoredWorkload,
};
use crate::Result;
use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, EventRecord, NodeRecord, NodeStatus, Object, PodRecord,
    PodSpec, RevisionRecord, RolloutStatus,
};
use pss_core::node_condition::NodeConditions;
use pss_plumbing::clock::now_ms;

/// SQLite-backed [`super::StateStore`].
pub struct SqliteStore {
    /// The one connection; every method takes it for the duration of one call.
    conn: Mutex<Connection>,
    /// How many events [`StateStore::add_event`] keeps (the newest).
    event_retention: usize,
    /// Called after every committed write ([`StateStore::set_change_hook`]).
    hook: Mutex<Option<ChangeHook>>,
}

impl SqliteStore {
    /// Events kept unless [`SqliteStore::with_event_retention`] says otherwise.
    pub const DEFAULT_EVENT_RETENTION: usize = 1000;

    /// The schema version this build writes (SQLite's `user_version`).
    pub const SCHEMA_VERSION: u32 = schema::LATEST_VERSION;

    /// Opens (creating it if needed) the database file at `path` and migrates its schema.
    /// Fails if the file was written by a newer build with a schema this one does not know.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_connection(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    /// Keeps only the newest `events` events (applied from the next
    /// [`StateStore::add_event`] on).
    pub fn with_event_retention(mut self, events: usize) -> Self {
        self.event_retention = events;
        self
    }

    /// How many events are kept.
    pub fn event_retention(&self) -> usize {
        self.event_retention
    }

    fn from_connection(mut conn: Connection) -> Result<Self> {
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            event_retention: Self::DEFAULT_EVENT_RETENTION,
            hook: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot have left a half-done change behind: the open
        // transaction, if any, rolled back when it was dropped. So the connection is still good.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the connection, outside any explicit transaction (reads).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let value = f(&self.lock());
        crate::metrics::TRANSACTION_SECONDS.observe(&["read"], started.elapsed());
        value
    }

    /// Runs `f` in one immediate transaction, committed only if `f` succeeds.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let mut conn = self.lock();
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        drop(conn);
        crate::metrics::TRANSACTION_SECONDS.observe(&["write"], started.elapsed());
        if result.is_ok() {
            let hook = self
                .hook
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            if let Some(hook) = hook {
                hook();
            }
        }
        result
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately does not take the connection lock: formatting must never block or
        // deadlock inside a store call.
        f.debug_struct("SqliteStore")
            .field("event_retention", &self.event_retention)
            .finish_non_exhaustive()
    }
}

impl StateStore for SqliteStore {
    fn credentials(&self) -> Option<&dyn crate::CredentialStore> {
        Some(self)
    }

    fn apply(&self, objects: &[Object]) -> Result<Vec<ApplyAction>> {
        let now = now_ms();
        self.write(|tx| {
            objects
                .iter()
                .map(|object| desired::put_object(tx, object, now))
                .collect()
        })
    }

    fn get_workload(&self, name: &str) -> Result<Option<StoredWorkload>> {
        self.read(|conn| desired::get_workload(conn, name))
    }

    fn list_workloads(&self) -> Result<Vec<StoredWorkload>> {
        self.read(desired::list_workloads)
    }

    fn set_replicas(&self, name: &str, replicas: u32) -> Result<u32> {
        self.write(|tx| desired::set_replicas(tx, name, replicas, now_ms()))
    }

    fn delete_workload(&self, name: &str) -> Result<bool> {
        self.write(|tx| desired::delete_workload(tx, name))
    }

    fn list_revisions(&self, workload: &str) -> Result<Vec<RevisionRecord>> {
        self.read(|c| desired::list_revisions(c, workload))
    }

    fn set_pod_spec(&self, name: &str, pod_spec: &PodSpec, cause: &str) -> Result<StoredWorkload> {
        self.write(|tx| desired::set_pod_spec(tx, name, pod_spec, cause, now_ms()))
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<StoredWorkload> {
        self.write(|tx| desired::set_paused(tx, name, paused, now_ms()))
    }

    fn set_rollout_status(&self, name: &str, status: &RolloutStatus) -> Result<()> {
        self.write(|tx| desired::set_rollout_status(tx, name, status))
    }

    fn get_service(&self, name: &str) -> Result<Option<StoredService>> {
        self.read(|conn| desired::get_service(conn, name))
    }

    fn list_services(&self) -> Result<Vec<StoredService>> {
        self.read(desired::list_services)
    }

    fn delete_service(&self, name: &str) -> Result<bool> {
        self.write(|tx| desired::delete_service(tx, name))
    }

    fn upsert_autoscaler(&self, policy: &AutoScalePolicy) -> Result<ApplyAction> {
        self.write(|tx| desired::put_autoscaler(tx, policy, now_ms()))
    }

    fn get_autoscaler(&self, name: &str) -> Result<Option<StoredAutoscaler>> {
        self.read(|conn| desired::get_autoscaler(conn, name))
    }

    fn list_autoscalers(&self) -> Result<Vec<StoredAutoscaler>> {
        self.read(desired::list_autoscalers)
    }

    fn set_autoscaler_status(&self, name: &str, status: &AutoscalerStatus) -> Result<()> {
        self.write(|tx| desired::set_autoscaler_status(tx, name, status))
    }

    fn delete_autoscaler(&self, name: &str) -> Result<bool> {
        self.write(|tx| desired::delete_autoscaler(tx, name))
    }

    fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        self.write(|tx| observed::upsert_node(tx, node))
    }

    fn get_node(&self, name: &str) -> Result<Option<NodeRecord>> {
        self.read(|conn| observed::get_node(conn, name))
    }

    fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.read(observed::list_nodes)
    }

    fn record_heartbeat(
        &self,
        name: &str,
        cpu_usage_percent: f64,
        memory_used_bytes: u64,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            observed::record_heartbeat(tx, name, cpu_usage_percent, memory_used_bytes, now_ms)
        })
    }

    fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<()> {
        self.write(|tx| observed::set_node_status(tx, name, status))
    }

    fn set_node_conditions(&self, name: &str, conditions: &NodeConditions) -> Result<()> {
        self.write(|tx| observed::set_node_conditions(tx, name, conditions))
    }

    fn set_node_scheduling(
        &self,
        name: &str,
        unschedulable: bool,
        draining: bool,
    ) -> Result<NodeRecord> {
        self.write(|tx| observed::set_node_scheduling(tx, name, unschedulable, draining))
    }

    fn put_pod(&self, pod: &PodRecord) -> Result<()> {
        self.write(|tx| observed::put_pod(tx, pod))
    }

    fn put_pods(&self, pods: &[PodRecord]) -> Result<()> {
        self.write(|tx| pods.iter().try_for_each(|pod| observed::put_pod(tx, pod)))
    }

    fn get_pod(&self, id: &str) -> Result<Option<PodRecord>> {
        self.read(|conn| observed::get_pod(conn, id))
    }

    fn list_pods(&self, workload: Option<&str>) -> Result<Vec<PodRecord>> {
        self.read(|conn| observed::list_pods(conn, workload))
    }

    fn list_pods_page(
        &self,
        workload: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PodRecord>> {
        self.read(|conn| observed::list_pods_page(conn, workload, after, limit))
    }

    fn delete_pod(&self, id: &str) -> Result<bool> {
        self.write(|tx| observed::delete_pod(tx, id))
    }

    fn add_event(&self, event: &EventRecord) -> Result<u64> {
        self.write(|tx| events::add_event(tx, event, self.event_retention, now_ms()))
    }

    fn list_events(&self, limit: usize) -> Result<Vec<EventRecord>> {
        self.read(|conn| events::list_events(conn, limit))
    }

    fn next_event_id(&self) -> Result<u64> {
        self.read(events::next_event_id)
    }

    fn event_retention(&self) -> usize {
        self.event_retention
    }

    fn write_batch(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.write(|tx| {
            let mut events = false;
            for change in changes {
                match change {
                    Change::PutPod(pod) => observed::put_pod(tx, pod)?,
                    Change::DeletePod(id) => {
                        observed::delete_pod(tx, id)?;
                    }
                    Change::Event(event) => {
                        events::insert_event(tx, event, now)?;
                        events = true;
                    }
                    Change::Heartbeat {
                        node,
                        cpu_usage_percent,
                        memory_used_bytes,
                        now_ms,
                    } => match observed::record_heartbeat(
                        tx,
                        node,
                        *cpu_usage_percent,
                        *memory_used_bytes,
                        *now_ms,
                    ) {
                        Ok(()) | Err(crate::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    },
                }
            }
            if events {
                events::trim_events(tx, self.event_retention)?;
            }
            Ok(())
        })
    }

    fn next_snapshot_version(&self, service: &str) -> Result<u64> {
        self.write(|tx| events::next_snapshot_version(tx, service))
    }

    fn set_change_hook(&self, hook: ChangeHook) {
        *self
            .hook
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hook);
    }
}

#[cfg(test)]
mod tests;
