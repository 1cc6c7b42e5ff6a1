//! [`EtcdStore`]: the state kept in etcd (issue 15), for several controllers sharing one
//! cluster state.
//!
//! ## Layout
//! Every key is under a prefix (default `/pss/`), one key per object, JSON values:
//! `w/<workload>`, `r/<workload>` (its revision history, one array), `s/<service>`,
//! `a/<autoscaler>`, `n/<node>` (registration, status, conditions, cordon), `hb/<node>` (the
//! node's last heartbeat: metrics and time, written by whichever controller the agent reached,
//! so heartbeats never contend with an operator's cordon), `p/<pod>`, `e/<id:020>` (events),
//! `seq/event`, `v/<service>` (endpoint snapshot versions), `ct/<id>` and `cc/<serial>`
//! (join tokens and certificates), and `leader` (the election, see the controller).
//!
//! ## Writes
//! Every write is one etcd transaction guarded by revisions: a read-modify-write
//! ([`EtcdStore::transact`]) reads the keys it needs, computes the new values, and commits only
//! if none of the keys read changed since (`mod_revision` compares), retrying on a conflict; so
//! two controllers never lose each other's update. Pod records in a batch are guarded by the
//! revision the caller last saw (the cache passes it), not re-read.
//!
//! While this controller leads, every transaction also compares the leader key's
//! `create_revision` with the one it won ([`EtcdStore::set_fence`]): a controller that lost its
//! lease (paused past its TTL, cut off) has every write refused with [`Error::NotLeader`],
//! whatever it believes.
//!
//! ## Sync over async
//! [`crate::StateStore`] is synchronous (SQLite answers in microseconds); here each call runs
//! on this store's own small runtime and the caller waits for it, bounded by the request
//! timeout: a hung etcd costs a caller at most that, and then a clear [`Error::Unavailable`].
//! A caller on a runtime worker waits inside `block_in_place`, so the runtime's other tasks
//! (reads from memory) move on; and once a call went unanswered, the next ones fail at once
//! but for one probe ([`EtcdStore::run`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use pss_etcd::pb::{self, compare, request_op, response_op};
use pss_etcd::{Etcd, Timeouts};
use serde::{de::DeserializeOwned, Serialize};

use crate::credentials::{CertificateRecord, CredentialStore, JoinTokenRecord};
use crate::{
    ApplyAction, Change, Error, Result, StateStore, StoredAutoscaler, StoredService, StoredWorkload,
};
use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, EventRecord, NodeRecord, NodeStatus, Object, PodRecord,
    PodSpec, RevisionRecord, RolloutStatus, Workload,
};
use pss_core::node_condition::NodeConditions;
use pss_plumbing::clock::now_ms;

/// Key prefix unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/pss/";
/// Attempts of a read-modify-write that keeps meeting concurrent changes.
const MAX_ATTEMPTS: usize = 16;
/// Operations (and, separately, compares) per etcd transaction for batched writes: pod
/// records, heartbeats and events together. etcd's `--max-txn-ops` defaults to 128; this leaves
/// room for the event counter, the retention trim and the leader fence. A larger batch is
/// split, each part still all-or-nothing.
pub const MAX_BATCH_OPS: usize = 100;
/// Bytes per etcd transaction for batched writes (etcd's `--max-request-bytes` defaults to
/// 1.5 MiB).
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Keys per page when listing.
const PAGE: i64 = 2_000;

/// Who leads: the leader key and the `create_revision` this controller won it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// The state in etcd.
pub struct EtcdStore {
    /// Runs the etcd calls; `Option` so that drop can let it go without blocking.
    rt: Option<tokio::runtime::Runtime>,
    etcd: Etcd,
    prefix: String,
    timeouts: Timeouts,
    retention: usize,
    /// Set while this controller leads: every write is conditioned on it.
    fence: RwLock<Option<Fence>>,
    /// The highest revision any write of this process committed at.
    written: AtomicI64,
    /// A call went unanswered: calls fail fast but for one probe (see [`EtcdStore::run`]).
    suspect: std::sync::atomic::AtomicBool,
    /// A probe call is under way while suspect.
    probe: std::sync::atomic::AtomicBool,
    /// Serialises the event counter within this process (other processes are kept out by
    /// the counter's revision guard).
    events: Mutex<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("etcd", &self.etcd)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A key read by a transaction: its value and `mod_revision` (0: absent).
#[derive(Debug, Clone)]
struct Read {
    value: Option<Vec<u8>>,
    mod_revision: i64,
}

/// One read-modify-write: what was read (the guard) and what to write.
#[derive(Default)]
pub(crate) struct Tx {
    reads: HashMap<Vec<u8>, Read>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Range deletes (`key`, `range_end`), unguarded (event retention).
    range_deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Tx {
    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        self.writes.push((key, Some(serde_json::to_vec(value)?)));
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }
}

impl EtcdStore {
    /// Connects to the members in `spec` (`etcd://host:port[,host:port...]`) and checks that
    /// the cluster answers (within the request timeout).
    pub fn connect(spec: &str, prefix: &str, timeouts: Timeouts) -> Result<EtcdStore> {
        let endpoints =
            pss_etcd::parse_endpoints(spec).map_err(|e| Error::Config(e.to_string()))?;
        check_prefix(prefix)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("etcd runtime: {e}")))?;
        let etcd = {
            let _enter = rt.enter();
            Etcd::connect(&endpoints, timeouts).map_err(|e| Error::Config(e.to_string()))?
        };
        let store = EtcdStore {
            rt: Some(rt),
            etcd,
            prefix: prefix.to_string(),
            timeouts,
            retention: crate::SqliteStore::DEFAULT_EVENT_RETENTION,
            fence: RwLock::new(None),
            written: AtomicI64::new(0),
            suspect: Default::default(),
            probe: Default::default(),
            events: Mutex::new(()),
        };
        store.revision_now()?;
        Ok(store)
    }

    /// The etcd client (the controller's election uses the same connection).
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The runtime etcd calls run on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime").handle().clone()
    }

    /// The full key of `rest` under this store's prefix.
    pub fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Conditions every later write on `fence` (this controller leads), or clears it.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    fn fence(&self) -> Option<Fence> {
        self.fence.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The highest revision a write of this process committed at (0: none yet).
    pub fn written_revision(&self) -> i64 {
        self.written.load(Ordering::Acquire)
    }

    /// Runs `fut` on the store's runtime and waits for it, at most the request timeout (plus a
    /// second for the connection to be tried).
    ///
    /// Once a call has gone unanswered, etcd is *suspect*: further calls fail at once, except
    /// one probe at a time, until a call is answered again. So a hung etcd (paused, cut off
    /// without a reset) holds at most the callers already waiting, not every caller in turn:
    /// the controller's runtime threads stay free for reads from memory.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = pss_etcd::Result<T>> + Send + 'static,
    ) -> Result<T> {
        let wait = self.timeouts.request + self.timeouts.connect;
        let probing = self.suspect.load(Ordering::Acquire);
        if probing
            && self
                .probe
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Err(Error::Unavailable(format!(
                "etcd ({}) did not answer within {wait:?} lately; retried once it answers",
                self.etcd.endpoints().join(",")
            )));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        let answer = blocking(|| rx.recv_timeout(wait));
        if probing {
            self.probe.store(false, Ordering::Release);
        }
        match answer {
            Ok(result) => {
                // Answered (even with an error of etcd's own): not hung.
                if !matches!(&result, Err(pss_etcd::Error::Unavailable(_))) {
                    self.suspect.store(false, Ordering::Release);
                }
                result.map_err(unavailable)
            }
            Err(_) => {
                self.suspect.store(true, Ordering::Release);
                Err(Error::Unavailable(format!(
                    "etcd ({}) did not answer within {wait:?}",
                    self.etcd.endpoints().join(",")
                )))
            }
        }
    }

    /// The cluster's current revision (a linearizable read: also a health check).
    pub fn revision_now(&self) -> Result<i64> {
        let etcd = self.etcd.clone();
        let key = self.key("seq/event");
        self.run(async move { Ok(etcd.get(&key).await?.1) })
    }

    fn get_raw(&self, key: &[u8]) -> Result<Read> {
        let etcd = self.etcd.clone();
        let key = key.to_vec();
        let (kv, _) = self.run(async move { etcd.get(&key).await })?;
        Ok(match kv {
            Some(kv) => Read {
                value: Some(kv.value),
                mod_revision: kv.mod_revision,
            },
            None => Read {
                value: None,
                mod_revision: 0,
            },
        })
    }

    fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.get_raw(key)?
            .value
            .map(|v| decode(key, &v))
            .transpose()
    }

    fn list_json<T: DeserializeOwned>(&self, rest: &str) -> Result<Vec<T>> {
        let etcd = self.etcd.clone();
        let prefix = self.key(rest);
        let (kvs, _) = self.run(async move { etcd.range_prefix(&prefix, 0, PAGE).await })?;
        Ok(kvs
            .iter()
            .filter_map(|kv| decode_or_skip(&kv.key, &kv.value))
            .collect())
    }

    /// Reads `key` within `tx` (remembered: the commit is guarded by its revision).
    fn tx_get<T: DeserializeOwned>(&self, tx: &mut Tx, key: Vec<u8>) -> Result<Option<T>> {
        let read = match tx.reads.get(&key) {
            Some(read) => read.clone(),
            None => {
                let read = self.get_raw(&key)?;
                tx.reads.insert(key.clone(), read.clone());
                read
            }
        };
        read.value.map(|v| decode(&key, &v)).transpose()
    }

    /// Read-modify-write: runs `f` (which reads through `tx_get` and writes into the [`Tx`])
    /// and commits its writes if nothing it read has changed; retries otherwise.
    pub(crate) fn transact<T>(&self, mut f: impl FnMut(&Self, &mut Tx) -> Result<T>) -> Result<T> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::default();
            let value = f(self, &mut tx)?;
            if tx.writes.is_empty() && tx.range_deletes.is_empty() {
                return Ok(value);
            }
            let compares = tx
                .reads
                .iter()
                .map(|(key, read)| cmp_mod(key, read.mod_revision))
                .collect();
            let mut ops: Vec<pb::RequestOp> = tx
                .writes
                .into_iter()
                .map(|(key, value)| match value {
                    Some(value) => put_op(key, value),
                    None => delete_op(key),
                })
                .collect();
            ops.extend(
                tx.range_deletes
                    .into_iter()
                    .map(|(key, end)| range_delete_op(key, end)),
            );
            if self.commit(compares, ops)? {
                return Ok(value);
            }
            // Someone changed what we read: read again, after a short, growing pause.
            std::thread::sleep(Duration::from_millis(1 << attempt.min(6)));
        }
        Err(Error::Conflict(format!(
            "gave up after {MAX_ATTEMPTS} attempts: the objects kept changing under this write"
        )))
    }

    /// Commits `ops` if `compares` hold (and the fence, if any); `Ok(false)` when a compare
    /// failed, [`Error::NotLeader`] when it was the fence.
    fn commit(&self, mut compares: Vec<pb::Compare>, ops: Vec<pb::RequestOp>) -> Result<bool> {
        let fence = self.fence();
        let mut failure = Vec::new();
        if let Some(f) = &fence {
            compares.push(pb::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: f.key.clone(),
                target_union: Some(compare::TargetUnion::CreateRevision(f.create_revision)),
                ..Default::default()
            });
            failure.push(range_op(f.key.clone()));
        }
        let etcd = self.etcd.clone();
        let resp = self.run(async move {
            etcd.txn(pb::TxnRequest {
                compare: compares,
                success: ops,
                failure,
            })
            .await
        })?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.succeeded {
            self.written.fetch_max(revision, Ordering::AcqRel);
            return Ok(true);
        }
        if let Some(f) = &fence {
            let holder = resp.responses.iter().find_map(|r| match &r.response {
                Some(response_op::Response::ResponseRange(range)) => {
                    Some(range.kvs.first().map_or(0, |kv| kv.create_revision))
                }
                _ => None,
            });
            if holder != Some(f.create_revision) {
                return Err(Error::NotLeader);
            }
        }
        Ok(false)
    }

    /// Everything under the prefix at one revision, for a cache to start from; and that
    /// revision (a watch from the next one misses nothing).
    pub fn snapshot(&self) -> Result<(Vec<pb::KeyValue>, i64)> {
        let etcd = self.etcd.clone();
        let prefix = self.key("");
        self.run(async move { etcd.range_prefix(&prefix, 0, PAGE).await })
    }

    fn event_key(&self, id: u64) -> Vec<u8> {
        self.key(&format!("e/{id:020}"))
    }

    /// Writes events (numbered from the shared counter, ids given are replaced) and trims to
    /// the retention bound, with `ops` guarded by `compares`, in one transaction. Another
    /// controller numbering events at the same time only makes this renumber and retry;
    /// `Ok(false)` means one of `compares` failed.
    fn commit_with_events(
        &self,
        compares: &[pb::Compare],
        ops: &[pb::RequestOp],
        events: &[EventRecord],
    ) -> Result<bool> {
        if events.is_empty() {
            return self.commit(compares.to_vec(), ops.to_vec());
        }
        let _one = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let seq_key = self.key("seq/event");
        let mut seq = self.get_raw(&seq_key)?;
        for attempt in 0..MAX_ATTEMPTS {
            let next: u64 = match &seq.value {
                Some(v) => decode(&seq_key, v)?,
                None => 1,
            };
            let mut all = ops.to_vec();
            let mut id = next;
            for e in events {
                let mut e = e.clone();
                e.id = id;
                if e.time_ms == 0 {
                    e.time_ms = now_ms();
                }
                all.push(put_op(self.event_key(id), serde_json::to_vec(&e)?));
                id += 1;
            }
            all.push(put_op(seq_key.clone(), serde_json::to_vec(&id)?));
            if id > self.retention as u64 + 1 {
                let keep_from = id - self.retention as u64;
                all.push(range_delete_op(
                    self.event_key(0),
                    self.event_key(keep_from),
                ));
            }
            let mut guard = compares.to_vec();
            guard.push(cmp_mod(&seq_key, seq.mod_revision));
            if self.commit(guard, all)? {
                return Ok(true);
            }
            let now = self.get_raw(&seq_key)?;
            if now.mod_revision == seq.mod_revision {
                // The counter held: a compare of the caller's failed.
                return Ok(false);
            }
            seq = now;
            std::thread::sleep(Duration::from_millis(1 << attempt.min(4)));
        }
        Err(Error::Conflict(format!(
            "gave up numbering events after {MAX_ATTEMPTS} attempts"
        )))
    }

    fn workload_key(&self, name: &str) -> Vec<u8> {
        self.key(&format!("w/{name}"))
    }

    /// The prefix of a workload's revisions: `r/<workload>/<revision:020>`, one key each.
    fn revisions_prefix(&self, name: &str) -> Vec<u8> {
        self.key(&format!("r/{name}/"))
    }

    fn revision_key(&self, name: &str, revision: u64) -> Vec<u8> {
        self.key(&format!("r/{name}/{revision:020}"))
    }

    /// A workload's revisions, oldest first, with their keys. Not guarded: every write of a
    /// revision also writes the workload's key, whose revision guards the transaction.
    fn revisions(&self, name: &str) -> Result<Vec<(Vec<u8>, RevisionRecord)>> {
        let etcd = self.etcd.clone();
        let prefix = self.revisions_prefix(name);
        let (kvs, _) = self.run(async move { etcd.range_prefix(&prefix, 0, PAGE).await })?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| decode_or_skip(&kv.key, &kv.value).map(|r| (kv.key, r)))
            .collect())
    }

    /// Creates or updates a workload as [`StateStore::apply`] does (generation, revisions,
    /// a pause that survives applies).
    fn put_workload(&self, tx: &mut Tx, workload: &Workload, now: i64) -> Result<ApplyAction> {
        let key = self.workload_key(&workload.name);
        let stored: Option<StoredWorkload> = self.tx_get(tx, key.clone())?;
        let Some(stored) = stored else {
            let revision = self.record_revision(tx, workload, "apply", now)?;
            tx.put(
                key,
                &StoredWorkload {
                    workload: workload.clone(),
                    created_at_ms: now,
                    generation: 1,
                    revision,
                    rollout_status: RolloutStatus::default(),
                },
            )?;
            return Ok(ApplyAction::Created);
        };
        let mut workload = workload.clone();
        workload.rollout.paused |= stored.workload.rollout.paused;
        if stored.workload == workload {
            return Ok(ApplyAction::Unchanged);
        }
        let mut revision = stored.revision;
        if stored.workload.pod_spec != workload.pod_spec
            || stored.workload.rollout.revision_history_limit
                != workload.rollout.revision_history_limit
        {
            revision = self.record_revision(tx, &workload, "apply", now)?;
        }
        tx.put(
            key,
            &StoredWorkload {
                workload,
                generation: stored.generation.wrapping_add(1),
                revision,
                ..stored
            },
        )?;
        Ok(ApplyAction::Configured)
    }

    /// Makes `workload.pod_spec` the newest revision (a spec seen before moves to the top under
    /// a new number) and keeps `revisionHistoryLimit` old ones; returns its number. Call only
    /// in a transaction that also writes the workload (its guard covers the revisions).
    fn record_revision(
        &self,
        tx: &mut Tx,
        workload: &Workload,
        cause: &str,
        now: i64,
    ) -> Result<u64> {
        let mut revisions = self.revisions(&workload.name)?;
        let newest = revisions.last().map_or(0, |(_, r)| r.revision);
        let revision = if revisions
            .last()
            .is_some_and(|(_, r)| r.pod_spec == workload.pod_spec)
        {
            newest
        } else {
            revisions.retain(|(key, r)| {
                let same = r.pod_spec == workload.pod_spec;
                if same {
                    tx.delete(key.clone());
                }
                !same
            });
            let record = RevisionRecord {
                revision: newest + 1,
                pod_spec: workload.pod_spec.clone(),
                cause: cause.to_string(),
                created_at_ms: now,
            };
            tx.put(self.revision_key(&workload.name, newest + 1), &record)?;
            revisions.push((Vec::new(), record));
            newest + 1
        };
        let keep = workload.rollout.revision_history_limit as usize + 1;
        let excess = revisions.len().saturating_sub(keep);
        for (key, _) in revisions.drain(..excess) {
            tx.delete(key);
        }
        Ok(revision)
    }

    /// Read-modify-write of one stored workload; `NotFound` if absent.
    fn update_workload(
        &self,
        name: &str,
        f: impl Fn(&Self, &mut Tx, StoredWorkload) -> Result<Option<StoredWorkload>>,
    ) -> Result<StoredWorkload> {
        self.transact(|s, tx| {
            let key = s.workload_key(name);
            let stored: StoredWorkload = s
                .tx_get(tx, key.clone())?
                .ok_or_else(|| not_found("workload", name))?;
            match f(s, tx, stored.clone())? {
                Some(new) if new != stored => {
                    tx.put(key, &new)?;
                    Ok(new)
                }
                _ => Ok(stored),
            }
        })
    }

    fn update_node(&self, name: &str, f: impl Fn(&mut NodeRecord)) -> Result<NodeRecord> {
        self.transact(|s, tx| {
            let key = s.key(&format!("n/{name}"));
            let mut node: NodeRecord = s
                .tx_get(tx, key.clone())?
                .ok_or_else(|| not_found("node", name))?;
            let before = node.clone();
            f(&mut node);
            if node != before {
                tx.put(key, &node)?;
            }
            Ok(node)
        })
    }

    /// Deletes `key`, and everything under the `also` prefix with it; false if it was absent.
    fn delete_key(&self, key: Vec<u8>, also: Option<Vec<u8>>) -> Result<bool> {
        self.transact(|s, tx| {
            let existed = s.tx_get::<serde_json::Value>(tx, key.clone())?.is_some();
            if existed {
                tx.delete(key.clone());
                if let Some(prefix) = &also {
                    tx.range_deletes
                        .push((prefix.clone(), pss_etcd::prefix_end(prefix)));
                }
            }
            Ok(existed)
        })
    }

    /// Writes pod records, deletions, heartbeats and events. A pod whose revision `seen` holds
    /// is written only if etcd still holds that revision of it (0: absent), else the batch
    /// fails with [`Error::Conflict`]; a heartbeat's node status comes from `seen` when there
    /// (else from etcd). Split into transactions of at most [`MAX_BATCH_OPS`] operations.
    pub fn write_batch_guarded(&self, changes: &[Change], seen: &Seen) -> Result<()> {
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut events = Vec::new();
        let mut bytes = 0usize;
        for change in changes {
            match change {
                Change::PutPod(pod) => {
                    let key = self.key(&format!("p/{}", pod.id));
                    if let Some(rev) = seen.pods.get(&pod.id) {
                        compares.push(cmp_mod(&key, *rev));
                    }
                    let value = serde_json::to_vec(pod)?;
                    bytes += value.len() + key.len();
                    ops.push(put_op(key, value));
                }
                Change::DeletePod(id) => {
                    let key = self.key(&format!("p/{id}"));
                    if let Some(rev) = seen.pods.get(id) {
                        compares.push(cmp_mod(&key, *rev));
                    }
                    ops.push(delete_op(key));
                }
                Change::Event(e) => {
                    bytes += e.message.len() + e.object.len() + e.reason.len();
                    events.push(e.clone());
                }
                Change::Heartbeat {
                    node,
                    cpu_usage_percent,
                    memory_used_bytes,
                    now_ms,
                } => {
                    let status = match seen.nodes.get(node) {
                        Some(status) => *status,
                        None => {
                            match self.get_json::<NodeRecord>(&self.key(&format!("n/{node}")))? {
                                Some(n) => n.status,
                                // An unknown node's heartbeat changes nothing.
                                None => continue,
                            }
                        }
                    };
                    if status != NodeStatus::Ready {
                        self.update_node(node, |n| n.status = NodeStatus::Ready)?;
                    }
                    let hb = Heartbeat {
                        cpu_usage_percent: *cpu_usage_percent,
                        memory_used_bytes: *memory_used_bytes,
                        time_ms: *now_ms,
                    };
                    ops.push(put_op(
                        self.key(&format!("hb/{node}")),
                        serde_json::to_vec(&hb)?,
                    ));
                }
            }
            if compares.len() >= MAX_BATCH_OPS
                || ops.len() + events.len() >= MAX_BATCH_OPS
                || bytes >= MAX_BATCH_BYTES
            {
                self.commit_part(&mut compares, &mut ops, &mut events)?;
                bytes = 0;
            }
        }
        self.commit_part(&mut compares, &mut ops, &mut events)
    }

    fn commit_part(
        &self,
        compares: &mut Vec<pb::Compare>,
        ops: &mut Vec<pb::RequestOp>,
        events: &mut Vec<EventRecord>,
    ) -> Result<()> {
        if ops.is_empty() && events.is_empty() {
            return Ok(());
        }
        let events_now: Vec<EventRecord> = std::mem::take(events);
        let ok = self.commit_with_events(compares, ops, &events_now)?;
        compares.clear();
        ops.clear();
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict(
                "a pod record changed under this write (another controller wrote it)".into(),
            ))
        }
    }
}

/// What a following cache last saw, so that a batch is guarded without reading etcd first.
#[derive(Debug, Default)]
pub struct Seen {
    /// Pods' `mod_revision`s (0: absent, so a new pod must not exist yet).
    pub pods: HashMap<String, i64>,
    /// Nodes' statuses (a heartbeat of a node not here is checked against etcd).
    pub nodes: HashMap<String, NodeStatus>,
}

/// Checks an etcd key prefix: starts and ends with `/`, printable ASCII, at most 128 bytes.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok = prefix.len() >= 2
        && prefix.len() <= 128
        && prefix.starts_with('/')
        && prefix.ends_with('/')
        && prefix.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        return Ok(());
    }
    let shown: String = prefix.chars().take(40).collect();
    Err(Error::Config(format!(
        "etcd key prefix {shown:?}{} must start and end with '/', be printable ASCII and at \
         most 128 bytes",
        if prefix.chars().count() > 40 {
            "..."
        } else {
            ""
        }
    )))
}

/// A node's last heartbeat as kept in `hb/<node>`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub cpu_usage_percent: f64,
    pub memory_used_bytes: u64,
    pub time_ms: i64,
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| {
        Error::Corrupt(format!(
            "etcd key {}: {e}",
            String::from_utf8_lossy(&key[..key.len().min(200)])
        ))
    })
}

/// Runs `f`, which waits (on etcd, on the watch): on a multi-thread runtime's worker inside
/// `block_in_place`, so the runtime moves its other tasks (reads from memory) to another
/// thread meanwhile; elsewhere as is.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Decodes a listed value, or logs and skips one that does not decode (written by another
/// version, or by hand): one bad key must not stop a controller from starting or listing.
pub(crate) fn decode_or_skip<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    match decode(key, value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "skipping a value that does not decode");
            None
        }
    }
}

fn unavailable(e: pss_etcd::Error) -> Error {
    match e {
        pss_etcd::Error::Refused(why) => Error::Refused(why),
        e => Error::Unavailable(e.to_string()),
    }
}

fn not_found(kind: &'static str, name: &str) -> Error {
    Error::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn cmp_mod(key: &[u8], mod_revision: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
        ..Default::default()
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

fn delete_op(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

fn range_delete_op(key: Vec<u8>, range_end: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key,
                range_end,
                ..Default::default()
            },
        )),
    }
}

fn range_op(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

impl StateStore for EtcdStore {
    fn credentials(&self) -> Option<&dyn CredentialStore> {
        Some(self)
    }

    fn apply(&self, objects: &[Object]) -> Result<Vec<ApplyAction>> {
        let now = now_ms();
        self.transact(|s, tx| {
            let mut actions = Vec::with_capacity(objects.len());
            for object in objects {
                actions.push(match object {
                    Object::Workload(w) => s.put_workload(tx, w, now)?,
                    Object::Service(svc) => {
                        let key = s.key(&format!("s/{}", svc.name));
                        match s.tx_get::<StoredService>(tx, key.clone())? {
                            Some(stored) if stored.service == *svc => ApplyAction::Unchanged,
                            stored => {
                                let action = if stored.is_some() {
                                    ApplyAction::Configured
                                } else {
                                    ApplyAction::Created
                                };
                                tx.put(
                                    key,
                                    &StoredService {
                                        service: svc.clone(),
                                        created_at_ms: stored.map_or(now, |s| s.created_at_ms),
                                    },
                                )?;
                                action
                            }
                        }
                    }
                    Object::AutoScalePolicy(policy) => s.put_autoscaler(tx, policy, now)?,
                });
            }
            Ok(actions)
        })
    }

    fn get_workload(&self, name: &str) -> Result<Option<StoredWorkload>> {
        self.get_json(&self.workload_key(name))
    }

    fn list_workloads(&self) -> Result<Vec<StoredWorkload>> {
        self.list_json("w/")
    }

    fn set_replicas(&self, name: &str, replicas: u32) -> Result<u32> {
        // The count the committed attempt replaced (each attempt overwrites it).
        let previous = std::cell::Cell::new(0);
        self.update_workload(name, |_, _, mut w| {
            previous.set(w.workload.replicas);
            if w.workload.replicas == replicas {
                return Ok(None);
            }
            w.workload.replicas = replicas;
            w.generation = w.generation.wrapping_add(1);
            Ok(Some(w))
        })?;
        Ok(previous.get())
    }

    fn delete_workload(&self, name: &str) -> Result<bool> {
        self.delete_key(self.workload_key(name), Some(self.revisions_prefix(name)))
    }

    fn list_revisions(&self, workload: &str) -> Result<Vec<RevisionRecord>> {
        Ok(self
            .revisions(workload)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    fn set_pod_spec(&self, name: &str, pod_spec: &PodSpec, cause: &str) -> Result<StoredWorkload> {
        let now = now_ms();
        self.update_workload(name, |s, tx, mut w| {
            if w.workload.pod_spec == *pod_spec {
                return Ok(None);
            }
            w.workload.pod_spec = pod_spec.clone();
            w.generation = w.generation.wrapping_add(1);
            w.revision = s.record_revision(tx, &w.workload, cause, now)?;
            Ok(Some(w))
        })
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<StoredWorkload> {
        self.update_workload(name, |_, _, mut w| {
            if w.workload.rollout.paused == paused {
                return Ok(None);
            }
            w.workload.rollout.paused = paused;
            w.generation = w.generation.wrapping_add(1);
            Ok(Some(w))
        })
    }

    fn set_rollout_status(&self, name: &str, status: &RolloutStatus) -> Result<()> {
        match self.update_workload(name, |_, _, mut w| {
            w.rollout_status = status.clone();
            Ok(Some(w))
        }) {
            // As in SQLite: the status of a workload deleted meanwhile is dropped.
            Err(Error::NotFound { .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn get_service(&self, name: &str) -> Result<Option<StoredService>> {
        self.get_json(&self.key(&format!("s/{name}")))
    }

    fn list_services(&self) -> Result<Vec<StoredService>> {
        self.list_json("s/")
    }

    fn delete_service(&self, name: &str) -> Result<bool> {
        self.delete_key(self.key(&format!("s/{name}")), None)
    }

    fn upsert_autoscaler(&self, policy: &AutoScalePolicy) -> Result<ApplyAction> {
        let now = now_ms();
        self.transact(|s, tx| s.put_autoscaler(tx, policy, now))
    }

    fn get_autoscaler(&self, name: &str) -> Result<Option<StoredAutoscaler>> {
        self.get_json(&self.key(&format!("a/{name}")))
    }

    fn list_autoscalers(&self) -> Result<Vec<StoredAutoscaler>> {
        self.list_json("a/")
    }

    fn set_autoscaler_status(&self, name: &str, status: &AutoscalerStatus) -> Result<()> {
        self.transact(|s, tx| {
            let key = s.key(&format!("a/{name}"));
            let mut stored: StoredAutoscaler = s
                .tx_get(tx, key.clone())?
                .ok_or_else(|| not_found("autoscaler", name))?;
            if stored.status != *status {
                stored.status = status.clone();
                tx.put(key, &stored)?;
            }
            Ok(())
        })
    }

    fn delete_autoscaler(&self, name: &str) -> Result<bool> {
        self.delete_key(self.key(&format!("a/{name}")), None)
    }

    fn upsert_node(&self, node: &NodeRecord) -> Result<()> {
        self.transact(|s, tx| {
            let key = s.key(&format!("n/{}", node.name));
            let mut new = node.clone();
            if let Some(old) = s.tx_get::<NodeRecord>(tx, key.clone())? {
                new.registered_at_ms = old.registered_at_ms;
                new.unschedulable = old.unschedulable;
                new.draining = old.draining;
            }
            tx.put(key, &new)?;
            tx.put(
                s.key(&format!("hb/{}", node.name)),
                &Heartbeat {
                    cpu_usage_percent: node.cpu_usage_percent,
                    memory_used_bytes: node.memory_used_bytes,
                    time_ms: node.last_heartbeat_ms,
                },
            )?;
            Ok(())
        })
    }

    fn get_node(&self, name: &str) -> Result<Option<NodeRecord>> {
        let node: Option<NodeRecord> = self.get_json(&self.key(&format!("n/{name}")))?;
        let Some(mut node) = node else {
            return Ok(None);
        };
        if let Some(hb) = self.get_json::<Heartbeat>(&self.key(&format!("hb/{name}")))? {
            merge_heartbeat(&mut node, &hb);
        }
        Ok(Some(node))
    }

    fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let mut nodes: Vec<NodeRecord> = self.list_json("n/")?;
        let etcd = self.etcd.clone();
        let prefix = self.key("hb/");
        let (kvs, _) = self.run(async move { etcd.range_prefix(&prefix, 0, PAGE).await })?;
        let hb_prefix = self.key("hb/").len();
        let mut beats = HashMap::new();
        for kv in &kvs {
            let name = String::from_utf8_lossy(&kv.key[hb_prefix..]).into_owned();
            beats.insert(name, decode::<Heartbeat>(&kv.key, &kv.value)?);
        }
        for n in &mut nodes {
            if let Some(hb) = beats.get(&n.name) {
                merge_heartbeat(n, hb);
            }
        }
        Ok(nodes)
    }

    fn record_heartbeat(
        &self,
        name: &str,
        cpu_usage_percent: f64,
        memory_used_bytes: u64,
        now_ms: i64,
    ) -> Result<()> {
        if self
            .get_json::<NodeRecord>(&self.key(&format!("n/{name}")))?
            .is_none()
        {
            return Err(not_found("node", name));
        }
        self.write_batch(&[Change::Heartbeat {
            node: name.to_string(),
            cpu_usage_percent,
            memory_used_bytes,
            now_ms,
        }])
    }

    fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<()> {
        self.update_node(name, |n| n.status = status).map(|_| ())
    }

    fn set_node_conditions(&self, name: &str, conditions: &NodeConditions) -> Result<()> {
        self.update_node(name, |n| n.conditions = conditions.clone())
            .map(|_| ())
    }

    fn set_node_scheduling(
        &self,
        name: &str,
        unschedulable: bool,
        draining: bool,
    ) -> Result<NodeRecord> {
        self.update_node(name, |n| {
            n.unschedulable = unschedulable;
            n.draining = draining;
        })?;
        self.get_node(name)?.ok_or_else(|| not_found("node", name))
    }

    fn put_pod(&self, pod: &PodRecord) -> Result<()> {
        self.write_batch(&[Change::PutPod(pod.clone())])
    }

    fn put_pods(&self, pods: &[PodRecord]) -> Result<()> {
        let changes: Vec<Change> = pods.iter().cloned().map(Change::PutPod).collect();
        self.write_batch(&changes)
    }

    fn get_pod(&self, id: &str) -> Result<Option<PodRecord>> {
        self.get_json(&self.key(&format!("p/{id}")))
    }

    fn list_pods(&self, workload: Option<&str>) -> Result<Vec<PodRecord>> {
        let mut pods: Vec<PodRecord> = self.list_json("p/")?;
        if let Some(w) = workload {
            pods.retain(|p| p.workload == w);
        }
        pods.sort_by(|a, b| (&a.workload, &a.id).cmp(&(&b.workload, &b.id)));
        Ok(pods)
    }

    fn list_pods_page(
        &self,
        workload: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PodRecord>> {
        let mut pods: Vec<PodRecord> = self.list_json("p/")?;
        pods.retain(|p| workload.is_none_or(|w| p.workload == w));
        pods.retain(|p| after.is_none_or(|a| p.id.as_str() > a));
        pods.sort_by(|a, b| a.id.cmp(&b.id));
        pods.truncate(limit);
        Ok(pods)
    }

    fn delete_pod(&self, id: &str) -> Result<bool> {
        self.delete_key(self.key(&format!("p/{id}")), None)
    }

    fn add_event(&self, event: &EventRecord) -> Result<u64> {
        let next = self.next_event_id()?;
        self.write_batch(&[Change::Event(event.clone())])?;
        Ok(next)
    }

    fn list_events(&self, limit: usize) -> Result<Vec<EventRecord>> {
        let mut events: Vec<EventRecord> = self.list_json("e/")?;
        let skip = events.len().saturating_sub(limit);
        Ok(events.split_off(skip))
    }

    fn next_event_id(&self) -> Result<u64> {
        Ok(self.get_json::<u64>(&self.key("seq/event"))?.unwrap_or(1))
    }

    fn event_retention(&self) -> usize {
        self.retention
    }

    fn write_batch(&self, changes: &[Change]) -> Result<()> {
        self.write_batch_guarded(changes, &Seen::default())
    }

    fn next_snapshot_version(&self, service: &str) -> Result<u64> {
        self.transact(|s, tx| {
            let key = s.key(&format!("v/{service}"));
            let version = s.tx_get::<u64>(tx, key.clone())?.unwrap_or(0) + 1;
            tx.put(key, &version)?;
            Ok(version)
        })
    }
}

impl EtcdStore {
    fn put_autoscaler(
        &self,
        tx: &mut Tx,
        policy: &AutoScalePolicy,
        now: i64,
    ) -> Result<ApplyAction> {
        let key = self.key(&format!("a/{}", policy.name));
        match self.tx_get::<StoredAutoscaler>(tx, key.clone())? {
            Some(stored) if stored.policy == *policy => Ok(ApplyAction::Unchanged),
            Some(stored) => {
                tx.put(
                    key,
                    &StoredAutoscaler {
                        policy: policy.clone(),
                        ..stored
                    },
                )?;
                Ok(ApplyAction::Configured)
            }
            None => {
                tx.put(
                    key,
                    &StoredAutoscaler {
                        policy: policy.clone(),
                        created_at_ms: now,
                        status: AutoscalerStatus::default(),
                    },
                )?;
                Ok(ApplyAction::Created)
            }
        }
    }
}

/// Puts a heartbeat's metrics and time into a node record (when newer than what it holds).
pub fn merge_heartbeat(node: &mut NodeRecord, hb: &Heartbeat) {
    if hb.time_ms >= node.last_heartbeat_ms {
        node.cpu_usage_percent = hb.cpu_usage_percent;
        node.memory_used_bytes = hb.memory_used_bytes;
        node.last_heartbeat_ms = hb.time_ms;
    }
}

impl CredentialStore for EtcdStore {
    fn add_join_token(&self, token: &JoinTokenRecord) -> Result<()> {
        self.transact(|s, tx| tx.put(s.key(&format!("ct/{}", token.id)), &TokenJson::from(token)))
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        let mut tokens: Vec<JoinTokenRecord> = self
            .list_json::<TokenJson>("ct/")?
            .into_iter()
            .map(Into::into)
            .collect();
        tokens.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
        Ok(tokens)
    }

    fn get_join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>> {
        Ok(self
            .get_json::<TokenJson>(&self.key(&format!("ct/{id}")))?
            .map(Into::into))
    }

    fn revoke_join_token(&self, id: &str) -> Result<bool> {
        self.transact(|s, tx| {
            let key = s.key(&format!("ct/{id}"));
            let Some(mut t) = s.tx_get::<TokenJson>(tx, key.clone())? else {
                return Ok(false);
            };
            t.revoked = true;
            tx.put(key, &t)?;
            Ok(true)
        })
    }

    fn add_certificate(&self, cert: &CertificateRecord) -> Result<()> {
        self.transact(|s, tx| tx.put(s.key(&format!("cc/{}", cert.serial)), &CertJson::from(cert)))
    }

    fn revoke_certificates_of(&self, role: &str, name: &str) -> Result<Vec<String>> {
        self.transact(|s, tx| {
            let certs: Vec<CertJson> = s.list_json("cc/")?;
            let mut serials = Vec::new();
            for mut c in certs {
                if c.role == role && c.name == name && !c.revoked {
                    c.revoked = true;
                    serials.push(c.serial.clone());
                    tx.put(s.key(&format!("cc/{}", c.serial)), &c)?;
                }
            }
            Ok(serials)
        })
    }

    fn revoked_serials(&self, now_ms: i64) -> Result<Vec<String>> {
        Ok(self
            .list_json::<CertJson>("cc/")?
            .into_iter()
            .filter(|c| c.revoked && c.not_after_ms > now_ms)
            .map(|c| c.serial)
            .collect())
    }
}

/// A join token as kept in etcd (the secret only as its SHA-256).
#[derive(serde::Serialize, serde::Deserialize)]
struct TokenJson {
    id: String,
    role: String,
    secret_sha256: Vec<u8>,
    created_ms: i64,
    expires_ms: i64,
    revoked: bool,
}

impl From<&JoinTokenRecord> for TokenJson {
    fn from(t: &JoinTokenRecord) -> Self {
        TokenJson {
            id: t.id.clone(),
            role: t.role.clone(),
            secret_sha256: t.secret_sha256.clone(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            revoked: t.revoked,
        }
    }
}

impl From<TokenJson> for JoinTokenRecord {
    fn from(t: TokenJson) -> Self {
        JoinTokenRecord {
            id: t.id,
            role: t.role,
            secret_sha256: t.secret_sha256,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            revoked: t.revoked,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CertJson {
    serial: String,
    role: String,
    name: String,
    issued_ms: i64,
    not_after_ms: i64,
    revoked: bool,
}

impl From<&CertificateRecord> for CertJson {
    fn from(c: &CertificateRecord) -> Self {
        CertJson {
            serial: c.serial.clone(),
            role: c.role.clone(),
            name: c.name.clone(),
            issued_ms: c.issued_ms,
            not_after_ms: c.not_after_ms,
            revoked: c.revoked,
        }
    }
}

/// What [`EtcdStore::import`] moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub workloads: usize,
    pub services: usize,
    pub autoscalers: usize,
    pub nodes: usize,
    pub pods: usize,
    pub events: usize,
    pub join_tokens: usize,
    pub revoked_certificates: usize,
}

impl EtcdStore {
    /// Copies everything `from` holds (desired and observed state, revision histories, events,
    /// join tokens, revocations) into this store, which must hold nothing under its prefix.
    /// On any failure the keys written so far are removed again: nothing half-imported stays.
    pub fn import(&self, from: &dyn StateStore) -> Result<ImportSummary> {
        let (existing, _) = self.snapshot()?;
        if !existing.is_empty() {
            return Err(Error::Config(format!(
                "etcd already holds {} keys under {}: refusing to import over a cluster's state \
                 (delete them with `etcdctl del --prefix {}` if they are left over)",
                existing.len(),
                self.prefix,
                self.prefix
            )));
        }
        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut put = |key: Vec<u8>, value: Vec<u8>| puts.push((key, value));
        let mut summary = ImportSummary::default();
        for w in from.list_workloads()? {
            let name = w.workload.name.clone();
            put(self.workload_key(&name), serde_json::to_vec(&w)?);
            for r in from.list_revisions(&name)? {
                put(
                    self.revision_key(&name, r.revision),
                    serde_json::to_vec(&r)?,
                );
            }
            summary.workloads += 1;
        }
        for s in from.list_services()? {
            put(
                self.key(&format!("s/{}", s.service.name)),
                serde_json::to_vec(&s)?,
            );
            summary.services += 1;
        }
        for a in from.list_autoscalers()? {
            put(
                self.key(&format!("a/{}", a.policy.name)),
                serde_json::to_vec(&a)?,
            );
            summary.autoscalers += 1;
        }
        for n in from.list_nodes()? {
            let hb = Heartbeat {
                cpu_usage_percent: n.cpu_usage_percent,
                memory_used_bytes: n.memory_used_bytes,
                time_ms: n.last_heartbeat_ms,
            };
            put(
                self.key(&format!("hb/{}", n.name)),
                serde_json::to_vec(&hb)?,
            );
            put(self.key(&format!("n/{}", n.name)), serde_json::to_vec(&n)?);
            summary.nodes += 1;
        }
        for p in from.list_pods(None)? {
            put(self.key(&format!("p/{}", p.id)), serde_json::to_vec(&p)?);
            summary.pods += 1;
        }
        for e in from.list_events(from.event_retention())? {
            put(self.event_key(e.id), serde_json::to_vec(&e)?);
            summary.events += 1;
        }
        put(
            self.key("seq/event"),
            serde_json::to_vec(&from.next_event_id()?)?,
        );
        if let Some(creds) = from.credentials() {
            for t in creds.join_tokens()? {
                put(
                    self.key(&format!("ct/{}", t.id)),
                    serde_json::to_vec(&TokenJson::from(&t))?,
                );
                summary.join_tokens += 1;
            }
            // Revocations must survive the move; the other certificate records only serve
            // revocation by node name, which a re-registering agent's new certificate renews.
            for serial in creds.revoked_serials(now_ms())? {
                let cert = CertJson {
                    serial: serial.clone(),
                    role: String::new(),
                    name: String::new(),
                    issued_ms: 0,
                    not_after_ms: i64::MAX,
                    revoked: true,
                };
                put(
                    self.key(&format!("cc/{serial}")),
                    serde_json::to_vec(&cert)?,
                );
                summary.revoked_certificates += 1;
            }
        }
        let result = puts.chunks(MAX_BATCH_OPS).try_for_each(|chunk| {
            let ops = chunk
                .iter()
                .map(|(k, v)| put_op(k.clone(), v.clone()))
                .collect();
            // Every key must still be absent: a second import running at once fails here.
            let compares = chunk.iter().map(|(k, _)| cmp_mod(k, 0)).collect();
            match self.commit(compares, ops)? {
                true => Ok(()),
                false => Err(Error::Conflict(
                    "another writer created keys under the prefix during the import".into(),
                )),
            }
        });
        if let Err(e) = result {
            let prefix = self.key("");
            let end = pss_etcd::prefix_end(&prefix);
            let _ = self.commit(vec![], vec![range_delete_op(prefix, end)]);
            return Err(e);
        }
        Ok(summary)
    }
}
