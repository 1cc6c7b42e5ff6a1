//! Desired and observed state: the [`StateStore`] trait and its SQLite implementation
//! ([`SqliteStore`], in `sqlite.rs`).
//!
//! Every method that changes more than one row does it in one transaction, so a crash or a
//! rejected input never leaves half a change behind. Methods are synchronous: SQLite in WAL mode
//! answers in microseconds, and the controller calls them from its async tasks directly.

mod batch;
mod cache;
pub mod credentials;
mod error;
pub mod etcd;
#[doc(hidden)]
pub mod fixtures;
pub mod metrics;
mod sqlite;

pub use batch::BatchWriter;
pub use cache::{CachedStore, FeedEntry, FeedExpired, ObjectKey};
pub use credentials::{CertificateRecord, CredentialStore, JoinTokenRecord};

pub use error::{Error, Result};
pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, EventRecord, NodeRecord, NodeStatus, Object, PodRecord,
    PodSpec, RevisionRecord, RolloutStatus, Service, Workload,
};
use pss_core::node_condition::NodeConditions;

/// A workload as stored, with bookkeeping.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredWorkload {
    pub workload: Workload,
    pub created_at_ms: i64,
    /// Bumped on every change of the workload's spec or replicas.
    pub generation: u64,
    /// The revision of the current pod spec (see [`StateStore::list_revisions`]).
    pub revision: u64,
    /// What the controller last concluded about its rollout.
    pub rollout_status: RolloutStatus,
}

/// A service as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredService {
    pub service: Service,
    pub created_at_ms: i64,
}

/// An autoscaling policy as stored, with what the autoscaler last saw.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredAutoscaler {
    pub policy: AutoScalePolicy,
    pub created_at_ms: i64,
    pub status: AutoscalerStatus,
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// One change of observed state, for [`StateStore::write_batch`]: the hot writes (pod records
/// and events) that the controller groups into one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Inserts or replaces a pod record.
    PutPod(PodRecord),
    /// Removes a pod record (no error when it is already gone).
    DeletePod(String),
    /// Appends an event (its id is kept when not 0, else assigned); retention is applied once
    /// per batch.
    Event(EventRecord),
    /// Records a heartbeat (metrics, time, status Ready) like [`StateStore::record_heartbeat`],
    /// except that an unknown node is not an error (it changes nothing).
    Heartbeat {
        node: String,
        cpu_usage_percent: f64,
        memory_used_bytes: u64,
        now_ms: i64,
    },
}

/// The controller's persistent state.
pub trait StateStore: Send + Sync + 'static {
    /// Where join tokens and issued certificates are kept; `None` for a store that keeps no
    /// credentials (the controller then refuses to run its CA).
    fn credentials(&self) -> Option<&dyn CredentialStore> {
        None
    }

    // ----- desired state

    /// Creates or updates every object in one transaction: all or nothing.
    /// Returns one action per object, in order.
    fn apply(&self, objects: &[Object]) -> Result<Vec<ApplyAction>>;
    fn get_workload(&self, name: &str) -> Result<Option<StoredWorkload>>;
    fn list_workloads(&self) -> Result<Vec<StoredWorkload>>;
    /// Sets a workload's replica count; returns the previous count. `NotFound` if absent.
    fn set_replicas(&self, name: &str, replicas: u32) -> Result<u32>;
    /// Removes a workload (its pods stay until the reconciler has stopped them).
    /// Returns false when there was none.
    fn delete_workload(&self, name: &str) -> Result<bool>;
    /// A workload's pod-spec revisions, oldest first; the last is the current one.
    fn list_revisions(&self, workload: &str) -> Result<Vec<RevisionRecord>>;
    /// Replaces a workload's pod spec and records the revision with `cause` (rollout undo,
    /// restart, auto-revert); returns the workload as stored. `NotFound` if absent.
    fn set_pod_spec(&self, name: &str, pod_spec: &PodSpec, cause: &str) -> Result<StoredWorkload>;
    /// Pauses or resumes a workload's rollout. `NotFound` if absent.
    fn set_paused(&self, name: &str, paused: bool) -> Result<StoredWorkload>;
    /// Stores a workload's rollout status (not a spec change: the generation stays).
    fn set_rollout_status(&self, name: &str, status: &RolloutStatus) -> Result<()>;

    fn get_service(&self, name: &str) -> Result<Option<StoredService>>;
    fn list_services(&self) -> Result<Vec<StoredService>>;
    fn delete_service(&self, name: &str) -> Result<bool>;

    /// Creates or replaces the policy named `policy.name` (keeps its status).
    fn upsert_autoscaler(&self, policy: &AutoScalePolicy) -> Result<ApplyAction>;
    fn get_autoscaler(&self, name: &str) -> Result<Option<StoredAutoscaler>>;
    fn list_autoscalers(&self) -> Result<Vec<StoredAutoscaler>>;
    fn set_autoscaler_status(&self, name: &str, status: &AutoscalerStatus) -> Result<()>;
    fn delete_autoscaler(&self, name: &str) -> Result<bool>;

    // ----- nodes

    /// Inserts or updates a node (registration); keeps `registered_at_ms` of an existing one.
    fn upsert_node(&self, node: &NodeRecord) -> Result<()>;
    fn get_node(&self, name: &str) -> Result<Option<NodeRecord>>;
    fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Records a heartbeat: metrics, time, and status Ready.
    fn record_heartbeat(
        &self,
        name: &str,
        cpu_usage_percent: f64,
        memory_used_bytes: u64,
        now_ms: i64,
    ) -> Result<()>;
    fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<()>;
    /// Sets a node's conditions (e.g. RuntimeUnresponsive); `NotFound` if unregistered.
    fn set_node_conditions(&self, name: &str, conditions: &NodeConditions) -> Result<()>;
    /// Cordons (`unschedulable`) and drains a node, or clears both; registration keeps them.
    /// Returns the node as stored; `NotFound` if unregistered.
    fn set_node_scheduling(
        &self,
        name: &str,
        unschedulable: bool,
        draining: bool,
    ) -> Result<NodeRecord>;

    // ----- pods

    /// Inserts or replaces a pod record.
    fn put_pod(&self, pod: &PodRecord) -> Result<()>;
    /// Inserts or replaces several pod records in one transaction.
    fn put_pods(&self, pods: &[PodRecord]) -> Result<()>;
    fn get_pod(&self, id: &str) -> Result<Option<PodRecord>>;
    /// All pods, ordered by workload then id; `workload` filters when given.
    fn list_pods(&self, workload: Option<&str>) -> Result<Vec<PodRecord>>;
    /// At most `limit` pods with an id greater than `after` (from the first when `None`),
    /// ordered by id; `workload` filters when given. Lists that must not be read whole page
    /// through this.
    fn list_pods_page(
        &self,
        workload: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PodRecord>>;
    fn delete_pod(&self, id: &str) -> Result<bool>;

    // ----- events

    /// Appends an event (assigning id and, when 0, time) and trims to the retention bound,
    /// newest kept. Returns the id.
    fn add_event(&self, event: &EventRecord) -> Result<u64>;
    /// The newest `limit` events, oldest first.
    fn list_events(&self, limit: usize) -> Result<Vec<EventRecord>>;
    /// The id the next event gets: greater than any event's so far, kept or trimmed.
    fn next_event_id(&self) -> Result<u64> {
        Ok(self.list_events(1)?.last().map_or(1, |e| e.id + 1))
    }
    /// How many events are kept (the newest).
    fn event_retention(&self) -> usize;

    // ----- batches

    /// Applies every change in one transaction: all or nothing.
    fn write_batch(&self, changes: &[Change]) -> Result<()>;

    /// Writes out anything the store holds back (a cache's buffered events). Nothing to do for
    /// a store that buffers nothing.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    // ----- endpoint snapshot versions

    /// Returns a new snapshot version for `service`, strictly greater than any returned before,
    /// also across restarts.
    fn next_snapshot_version(&self, service: &str) -> Result<u64>;

    /// Calls `hook` after every committed write (the controller's watch hub wakes on it). A
    /// store that cannot tell ignores it; watchers then see changes at the hub's resync.
    fn set_change_hook(&self, _hook: ChangeHook) {}
}

/// Called after a committed write; must be cheap and must not call back into the store.
pub type ChangeHook = std::sync::Arc<dyn Fn() + Send + Sync>;
