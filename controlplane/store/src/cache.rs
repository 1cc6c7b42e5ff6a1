//! [`CachedStore`]: the controller's state in memory, indexed, written through to a backing
//! store (SQLite).
//!
//! Reads never reach the backing store: pods by id, by workload and (through
//! [`CachedStore::pods_on_node`]) by node, nodes, workloads, services, autoscalers and the newest
//! events are answered from maps. Writes go to the backing store first and change memory only
//! once it has committed, under one writer lock, so memory is always exactly what is durable
//! (a failed write changes nothing and is reported) and changes reach memory in commit order.
//! That keeps the durability contract: an acknowledged apply or scale is in SQLite, and a
//! restarted controller rebuilds this cache from it ([`CachedStore::load`]).
//!
//! Events are the exception: they are best effort (the controller never waits on them), so
//! [`StateStore::add_event`] numbers the event, shows it at once and holds it back until the
//! next [`StateStore::write_batch`] or [`StateStore::flush`] carries it to the backing store in
//! the same transaction (at most [`EVENT_FLUSH`] are held back).
//!
//! Every committed change bumps a revision and is appended to a bounded change feed
//! ([`CachedStore::changes_since`]): "a list at a revision, then ordered changes, resumable from a
//! revision" — a feed entry names the object that changed; its current value is read from the
//! cache (level-triggered, like an informer). A reader further behind than [`FEED_CAPACITY`]
//! gets [`FeedExpired`] and lists again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{
    ApplyAction, Change, ChangeHook, Result, StateStore, StoredAutoscaler, StoredService,
    StoredWorkload,
};
use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, EventRecord, NodeRecord, NodeStatus, Object, PodRecord,
    PodSpec, RevisionRecord, RolloutStatus,
};
use pss_core::node_condition::NodeConditions;
use pss_plumbing::clock::now_ms;

/// Changes the feed keeps; a reader further behind lists again.
pub const FEED_CAPACITY: usize = 65_536;
/// Events held back at most before they are written out on their own.
pub const EVENT_FLUSH: usize = 512;

/// What a feed entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    Workload(String),
    Service(String),
    Autoscaler(String),
    Node(String),
    Pod(String),
}

/// One committed change: `key` changed (or was deleted) at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub revision: u64,
    pub key: ObjectKey,
    pub deleted: bool,
}

/// The feed no longer holds the changes after the asked revision: list again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("changes after revision {asked} are gone (the feed starts at {oldest}); list again")]
pub struct FeedExpired {
    pub asked: u64,
    pub oldest: u64,
}

/// The indexed state.
#[derive(Default)]
struct State {
    /// Bumped on every committed change.
    revision: u64,
    workloads: BTreeMap<String, StoredWorkload>,
    services: BTreeMap<String, StoredService>,
    autoscalers: BTreeMap<String, StoredAutoscaler>,
    nodes: BTreeMap<String, NodeRecord>,
    /// Pods by id (ordered: pages are ranges).
    pods: BTreeMap<String, PodRecord>,
    /// Pod ids by workload (ordered: `list_pods` is by workload then id).
    by_workload: BTreeMap<String, BTreeSet<String>>,
    /// Pod ids by node.
    by_node: HashMap<String, HashSet<String>>,
    /// The newest events (at most the backing store's retention), oldest first.
    events: VecDeque<EventRecord>,
    next_event_id: u64,
    /// The newest changes, oldest first (at most [`FEED_CAPACITY`]).
    feed: VecDeque<FeedEntry>,
    /// Following etcd: each pod's `mod_revision` as last seen (guards batched pod writes).
    pod_revs: HashMap<String, i64>,
}

impl State {
    fn record(&mut self, key: ObjectKey, deleted: bool) {
        self.revision += 1;
        if self.feed.len() == FEED_CAPACITY {
            self.feed.pop_front();
        }
        self.feed.push_back(FeedEntry {
            revision: self.revision,
            key,
            deleted,
        });
    }

    fn put_pod(&mut self, pod: PodRecord) {
        if let Some(old) = self.pods.get(&pod.id) {
            if old.workload != pod.workload {
                unindex(&mut self.by_workload, &old.workload, &pod.id);
            }
            if old.node != pod.node {
                if let Some(node) = &old.node {
                    unindex_node(&mut self.by_node, node, &pod.id);
                }
            }
        }
        self.by_workload
            .entry(pod.workload.clone())
            .or_default()
            .insert(pod.id.clone());
        if let Some(node) = &pod.node {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(pod.id.clone());
        }
        self.record(ObjectKey::Pod(pod.id.clone()), false);
        self.pods.insert(pod.id.clone(), pod);
    }

    fn delete_pod(&mut self, id: &str) -> bool {
        let Some(old) = self.pods.remove(id) else {
            return false;
        };
        unindex(&mut self.by_workload, &old.workload, id);
        if let Some(node) = &old.node {
            unindex_node(&mut self.by_node, node, id);
        }
        self.record(ObjectKey::Pod(id.to_string()), true);
        true
    }

    fn heartbeat(&mut self, name: &str, cpu: f64, memory: u64, now_ms: i64) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.cpu_usage_percent = cpu;
            n.memory_used_bytes = memory;
            n.last_heartbeat_ms = now_ms;
            let was = std::mem::replace(&mut n.status, NodeStatus::Ready);
            // A heartbeat alone (metrics, time) is not a change worth a feed entry; a status
            // flip is.
            if was != NodeStatus::Ready {
                self.record(ObjectKey::Node(name.to_string()), false);
            }
        }
    }

    fn push_event(&mut self, event: EventRecord, retention: usize) {
        self.events.push_back(event);
        while self.events.len() > retention {
            self.events.pop_front();
        }
    }
}

fn unindex(index: &mut BTreeMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

fn unindex_node(index: &mut HashMap<String, HashSet<String>>, key: &str, id: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// A [`StateStore`] answering reads from memory and writing through to `backing`.
pub struct CachedStore {
    backing: Arc<dyn StateStore>,
    state: RwLock<State>,
    /// Held across "write the backing store, then memory", so memory follows commit order.
    writer: Mutex<()>,
    /// Events shown but not yet written to the backing store (at most [`EVENT_FLUSH`]).
    pending_events: Mutex<Vec<EventRecord>>,
    /// The backing store's event retention, kept in memory too.
    retention: usize,
    /// Called after every change reached memory ([`StateStore::set_change_hook`]; the backing
    /// store's own hook would fire before memory changed).
    hook: Mutex<Option<ChangeHook>>,
    /// Following etcd (`follow.rs`): memory changes only from its watch.
    follow: Option<follow::Follow>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore").finish_non_exhaustive()
    }
}

impl CachedStore {
    /// Reads everything `backing` holds into memory.
    pub fn load(backing: Arc<dyn StateStore>) -> Result<Self> {
        let retention = backing.event_retention();
        let mut state = State {
            next_event_id: backing.next_event_id()?,
            events: backing.list_events(retention)?.into(),
            ..State::default()
        };
        for w in backing.list_workloads()? {
            state.workloads.insert(w.workload.name.clone(), w);
        }
        for s in backing.list_services()? {
            state.services.insert(s.service.name.clone(), s);
        }
        for a in backing.list_autoscalers()? {
            state.autoscalers.insert(a.policy.name.clone(), a);
        }
        for n in backing.list_nodes()? {
            state.nodes.insert(n.name.clone(), n);
        }
        for p in backing.list_pods(None)? {
            state.put_pod(p);
        }
        // Loading is not a change: the feed starts empty at revision 0.
        state.revision = 0;
        state.feed.clear();
        Ok(CachedStore::with_state(backing, state, retention, None))
    }

    fn with_state(
        backing: Arc<dyn StateStore>,
        state: State,
        retention: usize,
        follow: Option<follow::Follow>,
    ) -> CachedStore {
        CachedStore {
            backing,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            pending_events: Mutex::new(Vec::new()),
            retention,
            hook: Mutex::new(None),
            follow,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while the lock was held left no half-done change: memory is changed only
        // after the backing store committed, by code that does not panic midway.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> MutexGuard<'_, Vec<EventRecord>> {
        self.pending_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the hook, if any, that memory changed (called with no lock held).
    fn changed(&self) {
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// The revision of the newest committed change (0 right after loading).
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// The changes after `revision`, oldest first, at most `limit`; [`FeedExpired`] when the
    /// feed no longer reaches back that far.
    pub fn changes_since(
        &self,
        revision: u64,
        limit: usize,
    ) -> std::result::Result<Vec<FeedEntry>, FeedExpired> {
        let state = self.read();
        let oldest = state
            .feed
            .front()
            .map_or(state.revision + 1, |e| e.revision);
        if revision + 1 < oldest {
            return Err(FeedExpired {
                asked: revision,
                oldest,
            });
        }
        let skip = state.feed.partition_point(|e| e.revision <= revision);
        Ok(state.feed.iter().skip(skip).take(limit).cloned().collect())
    }

    /// Runs `f` over the pods of `workload` (by id) without copying them.
    pub fn with_pods_of<R>(
        &self,
        workload: &str,
        f: impl FnOnce(&mut dyn Iterator<Item = &PodRecord>) -> R,
    ) -> R {
        let state = self.read();
        let mut pods = state
            .by_workload
            .get(workload)
            .into_iter()
            .flatten()
            .filter_map(|id| state.pods.get(id));
        f(&mut pods)
    }

    /// Whether the stored record of `pod.id` equals `pod` (so writing `pod` changes nothing).
    pub fn pod_unchanged(&self, pod: &PodRecord) -> bool {
        self.read().pods.get(&pod.id) == Some(pod)
    }

    /// The pods placed on `node`, by id.
    pub fn pods_on_node(&self, node: &str) -> Vec<PodRecord> {
        let state = self.read();
        let mut pods: Vec<PodRecord> = state
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| state.pods.get(id).cloned())
            .collect();
        pods.sort_by(|a, b| a.id.cmp(&b.id));
        pods
    }

    /// Writes the held-back events (with `changes`) in one backing transaction; on failure
    /// the events stay held back (the newest [`EVENT_FLUSH`]) and memory is not changed.
    fn commit(&self, changes: &[Change]) -> Result<()> {
        let held: Vec<EventRecord> = std::mem::take(&mut *self.lock_pending());
        if changes.is_empty() && held.is_empty() {
            return Ok(());
        }
        let write = |all: &[Change]| match &self.follow {
            Some(f) => f.etcd.write_batch_guarded(all, &self.seen(all)),
            None => self.backing.write_batch(all),
        };
        let result = if held.is_empty() {
            write(changes)
        } else {
            let mut all = changes.to_vec();
            all.extend(held.iter().cloned().map(Change::Event));
            write(&all)
        };
        if result.is_err() && !held.is_empty() {
            let mut pending = self.lock_pending();
            let mut back = held;
            back.append(&mut pending);
            let excess = back.len().saturating_sub(EVENT_FLUSH);
            back.drain(..excess);
            *pending = back;
        }
        result
    }

    /// Re-reads one desired object from the backing store into memory (after a cold write:
    /// apply, scale, status), so memory holds exactly what was stored (generation, times).
    fn refresh_object(&self, state: &mut State, key: ObjectKey) -> Result<()> {
        match &key {
            ObjectKey::Workload(name) => match self.backing.get_workload(name)? {
                Some(w) => {
                    state.workloads.insert(name.clone(), w);
                }
                None => {
                    state.workloads.remove(name);
                }
            },
            ObjectKey::Service(name) => match self.backing.get_service(name)? {
                Some(s) => {
                    state.services.insert(name.clone(), s);
                }
                None => {
                    state.services.remove(name);
                }
            },
            ObjectKey::Autoscaler(name) => match self.backing.get_autoscaler(name)? {
                Some(a) => {
                    state.autoscalers.insert(name.clone(), a);
                }
                None => {
                    state.autoscalers.remove(name);
                }
            },
            ObjectKey::Node(name) => match self.backing.get_node(name)? {
                Some(n) => {
                    state.nodes.insert(name.clone(), n);
                }
                None => {
                    state.nodes.remove(name);
                }
            },
            ObjectKey::Pod(id) => match self.backing.get_pod(id)? {
                Some(p) => state.put_pod(p),
                None => {
                    state.delete_pod(id);
                }
            },
        }
        if !matches!(key, ObjectKey::Pod(_)) {
            state.record(key, false);
        }
        Ok(())
    }

    /// Runs a cold write on the backing store, then refreshes `keys` from it.
    fn write_through<T>(
        &self,
        keys: impl IntoIterator<Item = ObjectKey>,
        f: impl FnOnce(&dyn StateStore) -> Result<T>,
    ) -> Result<T> {
        if let Some(follow) = &self.follow {
            let value = f(self.backing.as_ref())?;
            follow.wait_applied();
            return Ok(value);
        }
        let value = {
            let _writer = self.lock_writer();
            let value = f(self.backing.as_ref())?;
            let mut state = self.write();
            for key in keys {
                self.refresh_object(&mut state, key)?;
            }
            value
        };
        self.changed();
        Ok(value)
    }

    /// Runs a write on the backing store, then `apply` on memory (under the writer lock).
    fn write_then<T>(
        &self,
        f: impl FnOnce(&dyn StateStore) -> Result<T>,
        apply: impl FnOnce(&mut State, &T),
    ) -> Result<T> {
        if let Some(follow) = &self.follow {
            let value = f(self.backing.as_ref())?;
            follow.wait_applied();
            return Ok(value);
        }
        let value = {
            let _writer = self.lock_writer();
            let value = f(self.backing.as_ref())?;
            apply(&mut self.write(), &value);
            value
        };
        self.changed();
        Ok(value)
    }
}

fn object_key(object: &Object) -> ObjectKey {
    match object {
        Object::Workload(w) => ObjectKey::Workload(w.name.clone()),
        Object::Service(s) => ObjectKey::Service(s.name.clone()),
        Object::AutoScalePolicy(p) => ObjectKey::Autoscaler(p.name.clone()),
    }
}

impl StateStore for CachedStore {
    fn credentials(&self) -> Option<&dyn crate::CredentialStore> {
        // Join tokens and certificates are read rarely (a join, a renewal): straight to SQLite.
        self.backing.credentials()
    }

    fn apply(&self, objects: &[Object]) -> Result<Vec<ApplyAction>> {
        self.write_through(objects.iter().map(object_key), |b| b.apply(objects))
    }

    fn get_workload(&self, name: &str) -> Result<Option<StoredWorkload>> {
        Ok(self.read().workloads.get(name).cloned())
    }

    fn list_workloads(&self) -> Result<Vec<StoredWorkload>> {
        Ok(self.read().workloads.values().cloned().collect())
    }

    fn set_replicas(&self, name: &str, replicas: u32) -> Result<u32> {
        self.write_through([ObjectKey::Workload(name.to_string())], |b| {
            b.set_replicas(name, replicas)
        })
    }

    fn delete_workload(&self, name: &str) -> Result<bool> {
        self.write_through([ObjectKey::Workload(name.to_string())], |b| {
            b.delete_workload(name)
        })
    }

    fn list_revisions(&self, workload: &str) -> Result<Vec<RevisionRecord>> {
        // History is read by pssctl rollout history only: not worth keeping in memory.
        self.backing.list_revisions(workload)
    }

    fn set_pod_spec(&self, name: &str, pod_spec: &PodSpec, cause: &str) -> Result<StoredWorkload> {
        self.write_through([ObjectKey::Workload(name.to_string())], |b| {
            b.set_pod_spec(name, pod_spec, cause)
        })
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<StoredWorkload> {
        self.write_through([ObjectKey::Workload(name.to_string())], |b| {
            b.set_paused(name, paused)
        })
    }

    fn set_rollout_status(&self, name: &str, status: &RolloutStatus) -> Result<()> {
        self.write_through([ObjectKey::Workload(name.to_string())], |b| {
            b.set_rollout_status(name, status)
        })
    }

    fn get_service(&self, name: &str) -> Result<Option<StoredService>> {
        Ok(self.read().services.get(name).cloned())
    }

    fn list_services(&self) -> Result<Vec<StoredService>> {
        Ok(self.read().services.values().cloned().collect())
    }

    fn delete_service(&self, name: &str) -> Result<bool> {
        self.write_through([ObjectKey::Service(name.to_string())], |b| {
            b.delete_service(name)
        })
    }

    fn upsert_autoscaler(&self, policy: &AutoScalePolicy) -> Result<ApplyAction> {
        self.write_through([ObjectKey::Autoscaler(policy.name.clone())], |b| {
            b.upsert_autoscaler(policy)
        })
    }

    fn get_autoscaler(&self, name: &str) -> Result<Option<StoredAutoscaler>> {
        Ok(self.read().autoscalers.get(name).cloned())
    }

    fn list_autoscalers(&self) -> Result<Vec<StoredAutoscaler>> {
        Ok(self.read().autoscalers.values().cloned().collect())
    }

    fn set_autoscaler_status(&self, name: &str, status: &AutoscalerStatus) -> Result<()> {
        self.write_through([ObjectKey::Autoscaler(name.to_string())], |b| {
            b.set_autoscaler_status(name, status)
        })
    }

    fn delete_autoscaler(&self, name: &str) -> Result<bool> {
        self.write_through([ObjectKey::Autoscaler(name.to_string())], |b| {
            b.delete_autoscaler(name)
        })
    }

    fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        self.write_through([ObjectKey::Node(node.name.clone())], |b| {
            b.upsert_node(node)
        })
    }

    fn get_node(&self, name: &str) -> Result<Option<NodeRecord>> {
        Ok(self.read().nodes.get(name).cloned())
    }

    fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        Ok(self.read().nodes.values().cloned().collect())
    }

    fn record_heartbeat(
        &self,
        name: &str,
        cpu_usage_percent: f64,
        memory_used_bytes: u64,
        now_ms: i64,
    ) -> Result<()> {
        self.write_then(
            |b| b.record_heartbeat(name, cpu_usage_percent, memory_used_bytes, now_ms),
            |state, _| state.heartbeat(name, cpu_usage_percent, memory_used_bytes, now_ms),
        )
    }

    fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<()> {
        self.write_then(
            |b| b.set_node_status(name, status),
            |state, _| {
                if let Some(n) = state.nodes.get_mut(name) {
                    n.status = status;
                    state.record(ObjectKey::Node(name.to_string()), false);
                }
            },
        )
    }

    fn set_node_conditions(&self, name: &str, conditions: &NodeConditions) -> Result<()> {
        self.write_then(
            |b| b.set_node_conditions(name, conditions),
            |state, _| {
                if let Some(n) = state.nodes.get_mut(name) {
                    n.conditions = conditions.clone();
                    state.record(ObjectKey::Node(name.to_string()), false);
                }
            },
        )
    }

    fn set_node_scheduling(
        &self,
        name: &str,
        unschedulable: bool,
        draining: bool,
    ) -> Result<NodeRecord> {
        self.write_through([ObjectKey::Node(name.to_string())], |b| {
            b.set_node_scheduling(name, unschedulable, draining)
        })
    }

    fn put_pod(&self, pod: &PodRecord) -> Result<()> {
        self.write_batch(&[Change::PutPod(pod.clone())])
    }

    fn put_pods(&self, pods: &[PodRecord]) -> Result<()> {
        let changes: Vec<Change> = pods.iter().cloned().map(Change::PutPod).collect();
        self.write_batch(&changes)
    }

    fn get_pod(&self, id: &str) -> Result<Option<PodRecord>> {
        Ok(self.read().pods.get(id).cloned())
    }

    fn list_pods(&self, workload: Option<&str>) -> Result<Vec<PodRecord>> {
        let state = self.read();
        let ids: Box<dyn Iterator<Item = &String>> = match workload {
            Some(w) => Box::new(state.by_workload.get(w).into_iter().flatten()),
            None => Box::new(state.by_workload.values().flatten()),
        };
        Ok(ids.filter_map(|id| state.pods.get(id).cloned()).collect())
    }

    fn list_pods_page(
        &self,
        workload: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PodRecord>> {
        let state = self.read();
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_string()));
        let range = (from, Bound::Unbounded);
        Ok(match workload {
            Some(w) => state
                .by_workload
                .get(w)
                .into_iter()
                .flat_map(|ids| ids.range::<String, _>(range.clone()))
                .take(limit)
                .filter_map(|id| state.pods.get(id).cloned())
                .collect(),
            None => state
                .pods
                .range::<String, _>(range)
                .take(limit)
                .map(|(_, p)| p.clone())
                .collect(),
        })
    }

    fn delete_pod(&self, id: &str) -> Result<bool> {
        let existed = self.read().pods.contains_key(id);
        self.write_batch(&[Change::DeletePod(id.to_string())])?;
        Ok(existed)
    }

    fn add_event(&self, event: &EventRecord) -> Result<u64> {
        let mut event = event.clone();
        if event.time_ms == 0 {
            event.time_ms = now_ms();
        }
        if self.follow.is_some() {
            // Shown once etcd has it (the watch brings it, numbered by the shared counter).
            let full = {
                let mut pending = self.lock_pending();
                pending.push(event);
                pending.len() >= EVENT_FLUSH
            };
            if full {
                self.flush()?;
            }
            return Ok(0);
        }
        let full = {
            let mut state = self.write();
            event.id = state.next_event_id;
            state.next_event_id += 1;
            state.push_event(event.clone(), self.retention);
            let mut pending = self.lock_pending();
            pending.push(event.clone());
            pending.len() >= EVENT_FLUSH
        };
        if full {
            self.flush()?;
        }
        Ok(event.id)
    }

    fn list_events(&self, limit: usize) -> Result<Vec<EventRecord>> {
        let state = self.read();
        let skip = state.events.len().saturating_sub(limit);
        Ok(state.events.iter().skip(skip).cloned().collect())
    }

    fn next_event_id(&self) -> Result<u64> {
        Ok(self.read().next_event_id)
    }

    fn event_retention(&self) -> usize {
        self.retention
    }

    fn write_batch(&self, changes: &[Change]) -> Result<()> {
        if let Some(follow) = &self.follow {
            self.commit(changes)?;
            follow.wait_applied();
            return Ok(());
        }
        let _writer = self.lock_writer();
        // Events without an id are numbered here, so memory and the backing store agree.
        let numbered: Vec<Change>;
        let changes = if changes
            .iter()
            .any(|c| matches!(c, Change::Event(e) if e.id == 0))
        {
            let mut next = self.read().next_event_id;
            numbered = changes
                .iter()
                .cloned()
                .map(|c| match c {
                    Change::Event(mut e) if e.id == 0 => {
                        e.id = next;
                        next += 1;
                        Change::Event(e)
                    }
                    c => c,
                })
                .collect();
            &numbered[..]
        } else {
            changes
        };
        self.commit(changes)?;
        let mut state = self.write();
        for change in changes {
            match change {
                Change::PutPod(pod) => state.put_pod(pod.clone()),
                Change::DeletePod(id) => {
                    state.delete_pod(id);
                }
                Change::Event(event) => {
                    // An event given in a batch is shown like one from add_event.
                    let event = event.clone();
                    state.next_event_id = state.next_event_id.max(event.id + 1);
                    state.push_event(event, self.retention);
                }
                Change::Heartbeat {
                    node,
                    cpu_usage_percent,
                    memory_used_bytes,
                    now_ms,
                } => state.heartbeat(node, *cpu_usage_percent, *memory_used_bytes, *now_ms),
            }
        }
        drop(state);
        drop(_writer);
        self.changed();
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let _writer = self.lock_writer();
        self.commit(&[])?;
        if let Some(follow) = &self.follow {
            follow.wait_applied();
        }
        Ok(())
    }

    fn next_snapshot_version(&self, service: &str) -> Result<u64> {
        self.backing.next_snapshot_version(service)
    }

    fn set_change_hook(&self, hook: ChangeHook) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }
}

mod follow;
#[cfg(test)]
mod tests;
