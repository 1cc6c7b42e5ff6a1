//! [`BatchWriter`]: group commit for the controller's hot writes.
//!
//! Callers (a pod start finishing, a status push, a heartbeat's pod reports) hand their changes
//! to one writer task through a bounded channel and wait for the answer. The task takes
//! whatever is waiting (up to [`BatchWriter::MAX_BATCH`] changes), writes it all in one
//! [`StateStore::write_batch`] transaction on a blocking thread, and answers every caller with
//! the outcome: a caller is told Ok only once its changes are committed, and a failed
//! transaction fails every caller in it (nothing of it is acknowledged or shown). While one
//! transaction runs the next batch gathers, so the cost per change falls as load rises.
//! The task also writes out held-back events every [`BatchWriter::FLUSH_EVERY`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{Change, Error, Result, StateStore};

/// One caller's changes and where its answer goes.
struct Request {
    changes: Vec<Change>,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<Request>,
}

impl BatchWriter {
    /// Changes written in one transaction at most (a request is never split).
    pub const MAX_BATCH: usize = 4096;
    /// Requests waiting at most; more callers wait for room (back-pressure).
    pub const QUEUE: usize = 4096;
    /// How often held-back events are written out when nothing else is.
    pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

    /// Starts the writer task on the current tokio runtime; it ends when every handle is
    /// dropped (after writing what is queued and flushing).
    pub fn spawn(store: Arc<dyn StateStore>) -> Self {
        let (tx, rx) = mpsc::channel(Self::QUEUE);
        tokio::spawn(run(store, rx, Self::MAX_BATCH));
        BatchWriter { tx }
    }

    /// Queues `changes` without waiting for them to be written (for what needs no
    /// acknowledgement, like a heartbeat's time and metrics); they reach memory once
    /// committed. When the queue is full, waits for room like [`BatchWriter::commit`] and
    /// for the outcome (back-pressure, never an unbounded queue).
    pub async fn submit(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let (done, _ignored) = oneshot::channel();
        match self.tx.try_send(Request { changes, done }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(r)) => self.commit(r.changes).await,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(Error::Batch("the writer has stopped".into()))
            }
        }
    }

    /// Writes `changes` in one transaction with whatever else is waiting; returns once they
    /// are committed (Ok) or the transaction failed (Err, nothing of it written or shown).
    pub async fn commit(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request { changes, done })
            .await
            .map_err(|_| Error::Batch("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Batch("the writer has stopped".into()))?
            .map_err(Error::Batch)
    }
}

async fn run(store: Arc<dyn StateStore>, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
    let mut flush = tokio::time::interval(BatchWriter::FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = flush.tick() => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "writing events failed"),
                    Err(e) => tracing::warn!(error = %e, "writing events panicked"),
                    Ok(Ok(())) => {}
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut size = first.changes.len();
        let mut batch = vec![first];
        while size < max_batch {
            match rx.try_recv() {
                Ok(r) => {
                    size += r.changes.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let (changes, waiters): (Vec<Vec<Change>>, Vec<_>) =
            batch.into_iter().map(|r| (r.changes, r.done)).unzip();
        let store = store.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let all: Vec<Change> = changes.into_iter().flatten().collect();
            store.write_batch(&all)
        })
        .await;
        let answer = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, changes = size, "batched write failed");
                Err(e.to_string())
            }
            Err(e) => Err(format!("batched write panicked: {e}")),
        };
        for done in waiters {
            // A caller that gave up waiting does not matter.
            let _ = done.send(answer.clone());
        }
    }
    if let Err(e) = tokio::task::spawn_blocking(move || store.flush()).await {
        tracing::warn!(error = %e, "final event flush panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CachedStore, SqliteStore};
    use pss_core::model::PodRecord;

    use crate::fixtures::node;

    fn pod(id: &str, node: Option<&str>) -> PodRecord {
        let mut p = PodRecord::new(id.into(), "web", 7, 1);
        p.node = node.map(str::to_string);
        p
    }

    #[tokio::test]
    async fn concurrent_commits_are_all_written_and_acknowledged() {
        let backing: Arc<dyn StateStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let cache = Arc::new(CachedStore::load(backing.clone()).unwrap());
        cache.upsert_node(&node("n1")).unwrap();
        let writer = BatchWriter::spawn(cache.clone());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move {
                    w.commit(vec![Change::PutPod(pod(
                        &format!("web-{i:05}"),
                        Some("n1"),
                    ))])
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(cache.list_pods(None).unwrap().len(), 200);
        assert_eq!(backing.list_pods(None).unwrap().len(), 200, "durable");
    }

    #[tokio::test]
    async fn submitted_changes_are_written_without_waiting() {
        let backing: Arc<dyn StateStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let cache = Arc::new(CachedStore::load(backing.clone()).unwrap());
        cache.upsert_node(&node("n1")).unwrap();
        let writer = BatchWriter::spawn(cache.clone());
        writer
            .submit(vec![Change::Heartbeat {
                node: "n1".into(),
                cpu_usage_percent: 42.0,
                memory_used_bytes: 7,
                now_ms: 99,
            }])
            .await
            .unwrap();
        // A commit after it is written after it (one queue, in order).
        writer
            .commit(vec![Change::PutPod(pod("web-after", Some("n1")))])
            .await
            .unwrap();
        assert_eq!(
            backing.get_node("n1").unwrap().unwrap().last_heartbeat_ms,
            99
        );
        assert_eq!(
            cache.get_node("n1").unwrap().unwrap().cpu_usage_percent,
            42.0
        );
    }

    #[tokio::test]
    async fn a_failed_transaction_is_not_acknowledged_and_not_shown() {
        let backing: Arc<dyn StateStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let cache = Arc::new(CachedStore::load(backing.clone()).unwrap());
        cache.upsert_node(&node("n1")).unwrap();
        let writer = BatchWriter::spawn(cache.clone());
        // A pod on an unregistered node violates the foreign key: the whole batch fails,
        // including the good pod written with it.
        let err = writer
            .commit(vec![
                Change::PutPod(pod("web-good1", Some("n1"))),
                Change::PutPod(pod("web-bad01", Some("nowhere"))),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Batch(_)), "{err}");
        assert!(cache.get_pod("web-good1").unwrap().is_none(), "not shown");
        assert!(
            backing.get_pod("web-good1").unwrap().is_none(),
            "not written"
        );
        // The writer carries on.
        writer
            .commit(vec![Change::PutPod(pod("web-good2", Some("n1")))])
            .await
            .unwrap();
        assert!(cache.get_pod("web-good2").unwrap().is_some());
    }
}
