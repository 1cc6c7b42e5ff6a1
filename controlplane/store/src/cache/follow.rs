//! [`CachedStore`] following etcd (issue 15): memory is fed by one ordered source, etcd's watch.
//!
//! With SQLite the cache is the only writer, so it changes memory itself after each commit.
//! With etcd, other controllers write too, so memory changes only from the watch of the whole
//! prefix, in revision order, whoever wrote; a write of this controller returns once the
//! watch has brought memory up to the revision it committed at (read-your-writes), so callers
//! see exactly what they see with SQLite.
//!
//! - Start: everything under the prefix at one revision ([`EtcdStore::snapshot`]), then a
//!   watch from the next revision: nothing is missed between the two.
//! - A broken watch is resumed from the last applied revision (with backoff); a compacted one
//!   (the controller was cut off longer than etcd keeps history) reloads everything and
//!   restarts the change feed, so watch clients list again.
//! - While etcd is unreachable, memory keeps the last state: reads go on, writes fail.
//! - Pod records carry the `mod_revision` memory last saw, and batched pod writes are guarded
//!   by it: a pod another controller changed meanwhile is not overwritten.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::{CachedStore, ObjectKey, State};
use crate::etcd::{blocking, decode, merge_heartbeat, EtcdStore, Heartbeat, Seen};
use crate::{Change, Result, StateStore};
use pss_core::model::{EventRecord, NodeRecord, PodRecord};
use pss_etcd::pb;

/// Longest a write waits for the watch to show it before returning anyway (it is committed;
/// memory catches up when the watch does).
const CATCH_UP: Duration = Duration::from_secs(5);
/// How often held-back events are written out when nothing else writes.
const EVENT_FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The etcd side of a following cache.
pub(crate) struct Follow {
    pub etcd: Arc<EtcdStore>,
    /// The etcd revision memory reflects.
    applied: Mutex<i64>,
    caught_up: Condvar,
}

impl Follow {
    /// Waits until memory reflects every write this process committed (at most [`CATCH_UP`]).
    pub fn wait_applied(&self) {
        let target = self.etcd.written_revision();
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if *applied >= target {
            return;
        }
        let (applied, timeout) = blocking(|| {
            self.caught_up
                .wait_timeout_while(applied, CATCH_UP, |a| *a < target)
                .unwrap_or_else(|p| p.into_inner())
        });
        if timeout.timed_out() {
            tracing::warn!(
                applied = *applied,
                target,
                "etcd watch is behind this controller's own write"
            );
        }
    }

    /// The etcd revision memory reflects.
    pub fn applied(&self) -> i64 {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_applied(&self, revision: i64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if revision > *applied {
            *applied = revision;
            self.caught_up.notify_all();
        }
    }
}

impl CachedStore {
    /// A cache of everything `etcd` holds, kept current by its watch.
    pub fn follow(etcd: Arc<EtcdStore>) -> Result<Arc<CachedStore>> {
        let (kvs, revision) = etcd.snapshot()?;
        let mut state = State::default();
        let retention = etcd.event_retention();
        for kv in &kvs {
            apply_kv(&mut state, &etcd, kv, retention, false);
        }
        state.revision = 0;
        state.feed.clear();
        let follow = Follow {
            etcd: etcd.clone(),
            applied: Mutex::new(revision),
            caught_up: Condvar::new(),
        };
        let cache = Arc::new(CachedStore::with_state(
            etcd.clone() as Arc<dyn StateStore>,
            state,
            retention,
            Some(follow),
        ));
        let weak = Arc::downgrade(&cache);
        etcd.handle()
            .spawn(watch_loop(weak.clone(), etcd.clone(), revision));
        etcd.handle().spawn(flush_loop(weak));
        Ok(cache)
    }

    /// Applies one watch batch to memory (in revision order), then tells the hook.
    fn apply_watch(&self, batch: &pss_etcd::WatchBatch) -> Result<()> {
        let follow = self.follow.as_ref().expect("following cache");
        let mut changed = false;
        let mut top = batch.revision;
        {
            let mut state = self.write();
            for event in &batch.events {
                let Some(kv) = &event.kv else { continue };
                top = top.max(kv.mod_revision);
                let deleted = event.r#type == pb::EventType::Delete as i32;
                changed |= apply_kv(&mut state, &follow.etcd, kv, self.retention, deleted);
            }
        }
        follow.set_applied(top);
        if changed {
            self.changed();
        }
        Ok(())
    }

    /// Replaces memory with a fresh snapshot (after a compacted watch); the change feed starts
    /// over, so its readers list again.
    fn reload(&self) -> Result<i64> {
        let follow = self.follow.as_ref().expect("following cache");
        let (kvs, revision) = follow.etcd.snapshot()?;
        let mut fresh = State::default();
        for kv in &kvs {
            apply_kv(&mut fresh, &follow.etcd, kv, self.retention, false);
        }
        {
            let mut state = self.write();
            // The feed can no longer describe the difference: it jumps past every reader.
            fresh.revision = state.revision + super::FEED_CAPACITY as u64 + 1;
            fresh.feed.clear();
            *state = fresh;
        }
        follow.set_applied(revision);
        self.changed();
        Ok(revision)
    }

    /// What a batch is guarded by: the revision memory last saw of each pod it writes (0:
    /// absent, so a new pod must not exist yet), and the status of each node it heartbeats.
    pub(crate) fn seen(&self, changes: &[Change]) -> Seen {
        let state = self.read();
        let mut seen = Seen::default();
        for change in changes {
            match change {
                Change::PutPod(PodRecord { id, .. }) | Change::DeletePod(id) => {
                    seen.pods
                        .insert(id.clone(), state.pod_revs.get(id).copied().unwrap_or(0));
                }
                Change::Heartbeat { node, .. } => {
                    if let Some(n) = state.nodes.get(node) {
                        seen.nodes.insert(node.clone(), n.status);
                    }
                }
                Change::Event(_) => {}
            }
        }
        seen
    }

    /// The `mod_revision` of pod `id` as memory last saw it (`None`: unknown or not following).
    pub fn pod_revision(&self, id: &str) -> Option<i64> {
        self.read().pod_revs.get(id).copied()
    }

    /// The etcd revision memory reflects (`None` unless following etcd).
    pub fn etcd_revision(&self) -> Option<i64> {
        self.follow.as_ref().map(Follow::applied)
    }
}

/// Follows the watch until the cache is dropped: resumes a broken watch from the last applied
/// revision, reloads after a compaction.
async fn watch_loop(cache: Weak<CachedStore>, etcd: Arc<EtcdStore>, mut from: i64) {
    let prefix = etcd.key("");
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut rx = match etcd.etcd().watch_prefix(&prefix, from + 1).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch could not start; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                if cache.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        while let Some(batch) = rx.recv().await {
            let Some(cache) = cache.upgrade() else { return };
            match batch {
                Ok(batch) => {
                    backoff = Duration::from_millis(100);
                    if let Err(e) = cache.apply_watch(&batch) {
                        tracing::error!(error = %e, "etcd watch: a value could not be applied");
                    }
                    from = cache.etcd_revision().unwrap_or(from);
                }
                Err(pss_etcd::Error::Compacted { .. }) => {
                    tracing::warn!("etcd watch compacted past this controller: reloading");
                    let handle = tokio::runtime::Handle::current();
                    let reload = handle.spawn_blocking(move || cache.reload()).await;
                    match reload {
                        Ok(Ok(rev)) => from = rev,
                        Ok(Err(e)) => tracing::warn!(error = %e, "reload failed; retrying"),
                        Err(e) => tracing::warn!(error = %e, "reload panicked; retrying"),
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "etcd watch broke; resuming");
                    break;
                }
            }
        }
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Writes held-back events out when no batch carries them.
async fn flush_loop(cache: Weak<CachedStore>) {
    loop {
        tokio::time::sleep(EVENT_FLUSH_EVERY).await;
        let Some(cache) = cache.upgrade() else { return };
        if cache.lock_pending().is_empty() {
            continue;
        }
        let handle = tokio::runtime::Handle::current();
        if let Ok(Err(e)) = handle.spawn_blocking(move || cache.flush()).await {
            tracing::debug!(error = %e, "writing events to etcd failed; kept for the next try");
        }
    }
}

/// Applies one key's value (or deletion) to `state`; returns whether clients can see a change
/// (a heartbeat alone is not one). A value that does not decode (another version's, or one
/// written by hand) is logged and skipped: one bad key must not stop a controller.
fn apply_kv(
    state: &mut State,
    etcd: &EtcdStore,
    kv: &pb::KeyValue,
    retention: usize,
    deleted: bool,
) -> bool {
    match try_apply_kv(state, etcd, kv, retention, deleted) {
        Ok(changed) => changed,
        Err(e) => {
            tracing::error!(error = %e, "skipping a value from etcd that does not decode");
            false
        }
    }
}

fn try_apply_kv(
    state: &mut State,
    etcd: &EtcdStore,
    kv: &pb::KeyValue,
    retention: usize,
    deleted: bool,
) -> Result<bool> {
    let rest = &kv.key[etcd.prefix().len().min(kv.key.len())..];
    let rest = String::from_utf8_lossy(rest);
    let Some((kind, name)) = rest.split_once('/') else {
        return Ok(false);
    };
    let name = name.to_string();
    let value = &kv.value;
    match kind {
        "w" => {
            if deleted {
                state.workloads.remove(&name);
            } else {
                state
                    .workloads
                    .insert(name.clone(), decode(&kv.key, value)?);
            }
            state.record(ObjectKey::Workload(name), deleted);
        }
        "s" => {
            if deleted {
                state.services.remove(&name);
            } else {
                state.services.insert(name.clone(), decode(&kv.key, value)?);
            }
            state.record(ObjectKey::Service(name), deleted);
        }
        "a" => {
            if deleted {
                state.autoscalers.remove(&name);
            } else {
                state
                    .autoscalers
                    .insert(name.clone(), decode(&kv.key, value)?);
            }
            state.record(ObjectKey::Autoscaler(name), deleted);
        }
        "n" => {
            if deleted {
                state.nodes.remove(&name);
            } else {
                let mut node: NodeRecord = decode(&kv.key, value)?;
                if let Some(old) = state.nodes.get(&name) {
                    // The heartbeat key may be newer than the record's own metrics.
                    merge_heartbeat(
                        &mut node,
                        &Heartbeat {
                            cpu_usage_percent: old.cpu_usage_percent,
                            memory_used_bytes: old.memory_used_bytes,
                            time_ms: old.last_heartbeat_ms,
                        },
                    );
                }
                state.nodes.insert(name.clone(), node);
            }
            state.record(ObjectKey::Node(name), deleted);
        }
        "hb" => {
            if !deleted {
                let hb: Heartbeat = decode(&kv.key, value)?;
                if let Some(node) = state.nodes.get_mut(&name) {
                    merge_heartbeat(node, &hb);
                }
            }
            return Ok(false);
        }
        "p" => {
            if deleted {
                state.delete_pod(&name);
                state.pod_revs.remove(&name);
            } else {
                let pod: PodRecord = decode(&kv.key, value)?;
                state.pod_revs.insert(name, kv.mod_revision);
                state.put_pod(pod);
            }
        }
        "e" => {
            if !deleted {
                let event: EventRecord = decode(&kv.key, value)?;
                state.next_event_id = state.next_event_id.max(event.id + 1);
                state.push_event(event, retention);
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}
