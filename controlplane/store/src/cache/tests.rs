//! [`CachedStore`]: memory answers like the backing store, holds only what was committed, and
//! a cache loaded again from the same file sees the same state.

use std::sync::Arc;

use super::{CachedStore, FeedExpired, ObjectKey, FEED_CAPACITY};
use crate::{Change, SqliteStore, StateStore};
use pss_core::model::{parse_manifests, EventRecord, NodeStatus, Object, PodPhase, PodRecord};

fn objects(replicas: u32) -> Vec<Object> {
    parse_manifests(
        &format!(
            "kind: Workload\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  podSpec:\n    containers:\n      - name: web\n        image: localhost/pss-demo:latest\n---\nkind: Service\nmetadata: {{name: web-svc}}\nspec:\n  workload: web\n  port: 8080\n  targetPort: 80\n"
        ),
        "test.yaml",
    )
    .unwrap()
}

use crate::fixtures::node;

fn pod(id: &str, workload: &str, node: Option<&str>) -> PodRecord {
    let mut p = PodRecord::new(id.into(), workload, 7, 1);
    p.node = node.map(str::to_string);
    p
}

fn pair() -> (Arc<dyn StateStore>, CachedStore) {
    let backing: Arc<dyn StateStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let cache = CachedStore::load(backing.clone()).unwrap();
    (backing, cache)
}

#[test]
fn reads_from_memory_match_the_backing_store() {
    let (backing, cache) = pair();
    cache.apply(&objects(3)).unwrap();
    cache.upsert_node(&node("n1")).unwrap();
    cache.upsert_node(&node("n2")).unwrap();
    for (i, w) in ["web", "api", "web", "db"].iter().enumerate() {
        let n = if i % 2 == 0 { "n1" } else { "n2" };
        cache
            .put_pod(&pod(&format!("{w}-{i:05}"), w, Some(n)))
            .unwrap();
    }
    cache.put_pod(&pod("web-unplc", "web", None)).unwrap();
    // A pod moving node and workload is re-indexed.
    cache.put_pod(&pod("api-00001", "api", Some("n1"))).unwrap();
    assert!(cache.delete_pod("db-00003").unwrap());
    assert!(!cache.delete_pod("db-00003").unwrap());
    cache.set_replicas("web", 5).unwrap();
    cache.record_heartbeat("n2", 12.5, 99, 50).unwrap();
    cache.set_node_status("n1", NodeStatus::NotReady).unwrap();

    assert_eq!(
        cache.list_pods(None).unwrap(),
        backing.list_pods(None).unwrap()
    );
    for w in ["web", "api", "db", "none"] {
        assert_eq!(
            cache.list_pods(Some(w)).unwrap(),
            backing.list_pods(Some(w)).unwrap()
        );
    }
    for (w, after, limit) in [
        (None, None, 2),
        (None, Some("api-00001"), 10),
        (Some("web"), Some("web-00000"), 1),
        (Some("web"), None, 0),
    ] {
        assert_eq!(
            cache.list_pods_page(w, after, limit).unwrap(),
            backing.list_pods_page(w, after, limit).unwrap(),
            "{w:?} {after:?} {limit}"
        );
    }
    assert_eq!(cache.list_nodes().unwrap(), backing.list_nodes().unwrap());
    assert_eq!(
        cache.list_workloads().unwrap(),
        backing.list_workloads().unwrap()
    );
    assert_eq!(
        cache.list_services().unwrap(),
        backing.list_services().unwrap()
    );
    assert_eq!(
        cache
            .pods_on_node("n1")
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["api-00001", "web-00000", "web-00002"]
    );
    assert!(cache.pods_on_node("n2").is_empty());
}

#[test]
fn a_reloaded_cache_sees_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pss.db");
    {
        let backing: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).unwrap());
        let cache = CachedStore::load(backing).unwrap();
        cache.apply(&objects(2)).unwrap();
        cache.upsert_node(&node("n1")).unwrap();
        let mut p = pod("web-aaaaa", "web", Some("n1"));
        p.phase = PodPhase::Running;
        cache.put_pods(&[p, pod("web-bbbbb", "web", None)]).unwrap();
        cache
            .add_event(&EventRecord::normal(
                "Test",
                "pod/x".into(),
                "held back".into(),
            ))
            .unwrap();
        // Events are held back until a batch or a flush carries them.
        cache.flush().unwrap();
    }
    let backing: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).unwrap());
    let cache = CachedStore::load(backing).unwrap();
    assert_eq!(cache.list_pods(None).unwrap().len(), 2);
    assert_eq!(
        cache.get_pod("web-aaaaa").unwrap().unwrap().phase,
        PodPhase::Running
    );
    assert_eq!(
        cache
            .get_workload("web")
            .unwrap()
            .unwrap()
            .workload
            .replicas,
        2
    );
    let events = cache.list_events(10).unwrap();
    assert_eq!(events.len(), 1);
    let next = cache
        .add_event(&EventRecord::normal("Test", "pod/y".into(), "next".into()))
        .unwrap();
    assert!(next > events[0].id, "event ids are never reused");
}

#[test]
fn held_back_events_go_out_with_the_next_batch() {
    let (backing, cache) = pair();
    cache.upsert_node(&node("n1")).unwrap();
    let id = cache
        .add_event(&EventRecord::normal("Test", "pod/x".into(), "m".into()))
        .unwrap();
    assert_eq!(cache.list_events(5).unwrap()[0].id, id, "shown at once");
    assert!(
        backing.list_events(5).unwrap().is_empty(),
        "not yet written"
    );
    cache.put_pod(&pod("web-aaaaa", "web", Some("n1"))).unwrap();
    assert_eq!(backing.list_events(5).unwrap()[0].id, id);
}

#[test]
fn a_failed_write_changes_nothing_in_memory() {
    let (backing, cache) = pair();
    cache.upsert_node(&node("n1")).unwrap();
    cache.put_pod(&pod("web-aaaaa", "web", Some("n1"))).unwrap();
    let rev = cache.revision();
    // Unregistered node: the foreign key fails the whole batch.
    let err = cache.write_batch(&[
        Change::DeletePod("web-aaaaa".into()),
        Change::PutPod(pod("web-bbbbb", "web", Some("nowhere"))),
    ]);
    assert!(err.is_err());
    assert!(cache.get_pod("web-aaaaa").unwrap().is_some());
    assert!(cache.get_pod("web-bbbbb").unwrap().is_none());
    assert_eq!(cache.revision(), rev, "no change recorded");
    assert!(cache.set_replicas("missing", 3).is_err());
    assert!(cache.get_workload("missing").unwrap().is_none());
    assert_eq!(
        cache.list_pods(None).unwrap(),
        backing.list_pods(None).unwrap()
    );
}

#[test]
fn the_feed_is_ordered_resumable_and_bounded() {
    let (_backing, cache) = pair();
    cache.upsert_node(&node("n1")).unwrap();
    let start = cache.revision();
    cache.put_pod(&pod("web-aaaaa", "web", Some("n1"))).unwrap();
    cache.delete_pod("web-aaaaa").unwrap();
    let changes = cache.changes_since(start, 100).unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].key, ObjectKey::Pod("web-aaaaa".into()));
    assert!(!changes[0].deleted && changes[1].deleted);
    assert_eq!(changes[1].revision, start + 2);
    // Resuming from the middle gives the rest; from the end, nothing.
    assert_eq!(cache.changes_since(start + 1, 100).unwrap(), &changes[1..]);
    assert!(cache.changes_since(start + 2, 100).unwrap().is_empty());

    let pods: Vec<PodRecord> = (0..FEED_CAPACITY + 10)
        .map(|i| pod(&format!("web-{i:06}"), "web", None))
        .collect();
    cache.put_pods(&pods).unwrap();
    let err = cache.changes_since(start, 1).unwrap_err();
    assert!(matches!(err, FeedExpired { asked, .. } if asked == start));
    let latest = cache.revision();
    assert_eq!(cache.changes_since(latest - 5, 100).unwrap().len(), 5);
}

#[test]
fn the_change_hook_fires_after_memory_changed_and_not_on_failure() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_backing, cache) = pair();
    let cache = Arc::new(cache);
    let seen = Arc::new(AtomicUsize::new(0));
    let (c, s) = (Arc::downgrade(&cache), seen.clone());
    cache.set_change_hook(Arc::new(move || {
        // Memory already holds the change when the hook runs.
        if let Some(c) = c.upgrade() {
            if c.get_pod("web-aaaaa").unwrap().is_some() {
                s.fetch_add(1, Ordering::SeqCst);
            }
        }
    }));
    cache.upsert_node(&node("n1")).unwrap();
    cache.put_pod(&pod("web-aaaaa", "web", Some("n1"))).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert!(cache
        .put_pod(&pod("web-bbbbb", "web", Some("nowhere")))
        .is_err());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "a failed write is not a change"
    );
}
