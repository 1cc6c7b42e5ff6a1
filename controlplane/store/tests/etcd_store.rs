//! `EtcdStore` and a following `CachedStore` against a real etcd (Debian's `etcd-server`,
//! started here on free loopback ports): the same behaviour as SQLite, no lost update between
//! two stores, fencing, and a cache that follows another writer.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pss_core::model::{EventRecord, EventType, NodeStatus, Object, PodPhase, PodRecord};
use pss_etcd::Timeouts;
use pss_store::etcd::Fence;
use pss_store::{ApplyAction, CachedStore, Change, EtcdStore, StateStore};

/// One etcd member on loopback, killed on drop.
struct Etcd {
    child: Child,
    client: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd() -> Etcd {
    start_etcd_with(&["--max-txn-ops", "1024"])
}

/// An etcd member with `extra` flags (none: etcd's own defaults, as a user's etcd has them).
fn start_etcd_with(extra: &[&str]) -> Etcd {
    assert!(
        Command::new("etcd").arg("--version").output().is_ok(),
        "etcd is not installed: scripts/test.sh installs Debian's etcd-server"
    );
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args([
            "--name",
            "m0",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("m0=http://127.0.0.1:{peer}"),
            "--unsafe-no-fsync",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        client: format!("127.0.0.1:{client}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&etcd.client).is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    etcd
}

fn connect(etcd: &Etcd, prefix: &str) -> Arc<EtcdStore> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match EtcdStore::connect(
            &format!("etcd://{}", etcd.client),
            prefix,
            Timeouts::default(),
        ) {
            Ok(s) => return Arc::new(s),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for etcd: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("etcd: {e}"),
        }
    }
}

use pss_store::fixtures::workload;

fn pod(id: &str, workload: &str, node: &str) -> PodRecord {
    let mut p = PodRecord::new(id.into(), workload, 42, 1_000);
    p.node = Some(node.into());
    p.phase = PodPhase::Running;
    p
}

use pss_store::fixtures::node;

#[test]
fn desired_state_behaves_as_on_sqlite() {
    let etcd = start_etcd();
    let store = connect(&etcd, "/t1/");
    let w = workload("web", 2);
    assert_eq!(
        store.apply(&[Object::Workload(w.clone())]).unwrap(),
        vec![ApplyAction::Created]
    );
    assert_eq!(
        store.apply(&[Object::Workload(w.clone())]).unwrap(),
        vec![ApplyAction::Unchanged]
    );
    let stored = store.get_workload("web").unwrap().unwrap();
    assert_eq!((stored.generation, stored.revision), (1, 1));
    assert_eq!(store.set_replicas("web", 5).unwrap(), 2);
    assert_eq!(store.set_replicas("web", 5).unwrap(), 5);
    let stored = store.get_workload("web").unwrap().unwrap();
    assert_eq!((stored.workload.replicas, stored.generation), (5, 2));
    // A new spec is a new revision; the old one stays in the history.
    let mut w2 = w.clone();
    w2.pod_spec.containers[0].image = "localhost/other:1".into();
    store.apply(&[Object::Workload(w2)]).unwrap();
    let revisions = store.list_revisions("web").unwrap();
    assert_eq!(
        revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(matches!(
        store.set_replicas("nope", 1),
        Err(pss_store::Error::NotFound { .. })
    ));
    assert!(store.delete_workload("web").unwrap());
    assert!(!store.delete_workload("web").unwrap());
    assert!(store.list_revisions("web").unwrap().is_empty());
    // Events are numbered from one shared counter and trimmed to the retention bound.
    for i in 0..3 {
        store
            .add_event(&EventRecord {
                id: 0,
                time_ms: 0,
                event_type: EventType::Normal,
                reason: "Test".into(),
                object: format!("workload/{i}"),
                message: String::new(),
            })
            .unwrap();
    }
    let ids: Vec<u64> = store
        .list_events(10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(store.next_snapshot_version("svc").unwrap(), 1);
    assert_eq!(store.next_snapshot_version("svc").unwrap(), 2);
}

#[test]
fn concurrent_scales_from_two_stores_lose_no_update() {
    let etcd = start_etcd();
    let a = connect(&etcd, "/t2/");
    let b = connect(&etcd, "/t2/");
    a.apply(&[Object::Workload(workload("web", 0))]).unwrap();
    // Each store bumps the generation 50 times through read-modify-write at the same time.
    let bump = |s: Arc<EtcdStore>, base: u32| {
        std::thread::spawn(move || {
            for i in 0..50 {
                s.set_replicas("web", base + i).unwrap();
            }
        })
    };
    let (ta, tb) = (bump(a.clone(), 1000), bump(b.clone(), 2000));
    ta.join().unwrap();
    tb.join().unwrap();
    let stored = a.get_workload("web").unwrap().unwrap();
    assert_eq!(stored.generation, 101, "every change counted once");
}

#[test]
fn a_fenced_store_is_refused_once_the_leader_key_changed() {
    let etcd = start_etcd();
    let store = connect(&etcd, "/t3/");
    let key = store.key("leader");
    // Somebody holds the leader key; this store believes it won it at another revision.
    let holder = connect(&etcd, "/t3/");
    holder.upsert_node(&node("n1")).unwrap();
    let client = store.etcd().clone();
    let k = key.clone();
    let created = store
        .run(async move {
            client
                .txn(pss_etcd::pb::TxnRequest {
                    success: vec![pss_etcd::pb::RequestOp {
                        request: Some(pss_etcd::pb::request_op::Request::RequestPut(
                            pss_etcd::pb::PutRequest {
                                key: k,
                                value: b"me".to_vec(),
                                ..Default::default()
                            },
                        )),
                    }],
                    ..Default::default()
                })
                .await
                .map(|r| r.header.unwrap().revision)
        })
        .unwrap();
    store.set_fence(Some(Fence {
        key: key.clone(),
        create_revision: created,
    }));
    store.set_node_status("n1", NodeStatus::NotReady).unwrap();
    store.set_fence(Some(Fence {
        key,
        create_revision: created - 1,
    }));
    let err = store.set_node_status("n1", NodeStatus::Ready).unwrap_err();
    assert!(matches!(err, pss_store::Error::NotLeader), "{err}");
    let err = store
        .write_batch(&[Change::PutPod(pod("web-aaaaa", "web", "n1"))])
        .unwrap_err();
    assert!(matches!(err, pss_store::Error::NotLeader), "{err}");
    assert_eq!(
        holder.get_node("n1").unwrap().unwrap().status,
        NodeStatus::NotReady
    );
    assert!(holder.get_pod("web-aaaaa").unwrap().is_none());
}

#[test]
fn a_following_cache_sees_the_other_writer_and_guards_pod_writes() {
    let etcd = start_etcd();
    let a = connect(&etcd, "/t4/");
    let b = connect(&etcd, "/t4/");
    a.apply(&[Object::Workload(workload("web", 1))]).unwrap();
    let cache_a = CachedStore::follow(a.clone()).unwrap();
    let cache_b = CachedStore::follow(b.clone()).unwrap();
    assert!(cache_b.get_workload("web").unwrap().is_some());
    // A write through one cache is visible in it at once, and in the other soon after.
    cache_a.upsert_node(&node("n1")).unwrap();
    cache_a.put_pod(&pod("web-aaaaa", "web", "n1")).unwrap();
    assert!(cache_a.get_pod("web-aaaaa").unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache_b.get_pod("web-aaaaa").unwrap().is_none() {
        assert!(Instant::now() < deadline, "b never saw a's pod");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cache_b.pods_on_node("n1").len(), 1);
    cache_b.set_replicas("web", 3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache_a
        .get_workload("web")
        .unwrap()
        .unwrap()
        .workload
        .replicas
        != 3
    {
        assert!(Instant::now() < deadline, "a never saw b's scale");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A pod write based on what memory saw is refused when etcd holds a newer record.
    let stale_guard = cache_a.pod_revision("web-aaaaa").unwrap();
    let mut newer = pod("web-aaaaa", "web", "n1");
    newer.restart_count = 7;
    b.put_pod(&newer).unwrap();
    let mut stale = pod("web-aaaaa", "web", "n1");
    stale.restart_count = 1;
    let mut seen = pss_store::etcd::Seen::default();
    seen.pods.insert("web-aaaaa".to_string(), stale_guard);
    let err = a
        .write_batch_guarded(&[Change::PutPod(stale)], &seen)
        .unwrap_err();
    assert!(matches!(err, pss_store::Error::Conflict(_)), "{err}");
    assert_eq!(a.get_pod("web-aaaaa").unwrap().unwrap().restart_count, 7);
    // Heartbeats reach every cache without a feed entry of their own.
    let before = cache_b.revision();
    cache_a
        .write_batch(&[Change::Heartbeat {
            node: "n1".into(),
            cpu_usage_percent: 42.0,
            memory_used_bytes: 7,
            now_ms: 99,
        }])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache_b.get_node("n1").unwrap().unwrap().last_heartbeat_ms != 99 {
        assert!(Instant::now() < deadline, "b never saw the heartbeat");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cache_b.revision(), before);
}

#[test]
fn an_unreachable_etcd_is_a_clear_bounded_error() {
    let port = free_port();
    let started = Instant::now();
    let err = EtcdStore::connect(
        &format!("etcd://127.0.0.1:{port}"),
        "/pss/",
        Timeouts {
            connect: Duration::from_millis(300),
            request: Duration::from_millis(500),
        },
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.to_string().contains("unavailable"), "{err}");
    for bad in ["etcd://", "etcd://h:1,,h:2", "etcd://nohost"] {
        let err = EtcdStore::connect(bad, "/pss/", Timeouts::default()).unwrap_err();
        assert!(err.to_string().contains("etcd address"), "{bad}: {err}");
    }
    let err = EtcdStore::connect("etcd://127.0.0.1:1", "pss", Timeouts::default()).unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}

fn event(i: usize) -> EventRecord {
    EventRecord {
        id: 0,
        time_ms: 0,
        event_type: EventType::Normal,
        reason: "Test".into(),
        object: format!("pod/p{i}"),
        message: "m".repeat(100),
    }
}

#[test]
fn etcd_defaults_big_batches_are_split_and_oversized_changes_refused_by_name() {
    // etcd as installed: --max-txn-ops 128, --max-request-bytes 1.5 MiB.
    let etcd = start_etcd_with(&[]);
    let store = connect(&etcd, "/t5/");
    store.upsert_node(&node("n1")).unwrap();
    // A reconcile pass's batch: 500 pods and 500 events, far above 128 operations.
    let mut changes: Vec<Change> = (0..500)
        .map(|i| Change::PutPod(pod(&format!("web-{i:05}"), "web", "n1")))
        .collect();
    changes.extend((0..500).map(|i| Change::Event(event(i))));
    store.write_batch(&changes).unwrap();
    assert_eq!(store.list_pods(None).unwrap().len(), 500);
    let ids: Vec<u64> = store
        .list_events(1000)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, (1..=500).collect::<Vec<_>>());
    // One apply needing more operations than etcd allows in a transaction is refused whole,
    // naming the etcd flag; nothing of it is written.
    let objects: Vec<Object> = (0..100)
        .map(|i| Object::Workload(workload(&format!("w{i:03}"), 1)))
        .collect();
    let err = store.apply(&objects).unwrap_err();
    assert!(matches!(err, pss_store::Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("--max-txn-ops"), "{err}");
    assert!(store.list_workloads().unwrap().is_empty());
    // A value above etcd's request size: refused, naming --max-request-bytes.
    let mut big = workload("big", 1);
    big.pod_spec.containers[0].args = vec!["x".repeat(16 * 1024); 100];
    let err = store.apply(&[Object::Workload(big)]).unwrap_err();
    assert!(err.to_string().contains("--max-request-bytes"), "{err}");
    assert!(store.get_workload("big").unwrap().is_none());
}

#[test]
fn two_stores_numbering_events_at_once_lose_none() {
    let etcd = start_etcd();
    let a = connect(&etcd, "/t6/");
    let b = connect(&etcd, "/t6/");
    let write = |s: Arc<EtcdStore>| {
        std::thread::spawn(move || {
            for i in 0..40 {
                s.write_batch(&[Change::Event(event(i)), Change::Event(event(i))])
                    .unwrap();
            }
        })
    };
    let (ta, tb) = (write(a.clone()), write(b.clone()));
    ta.join().unwrap();
    tb.join().unwrap();
    let ids: Vec<u64> = a.list_events(1000).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=160).collect::<Vec<_>>(),
        "every event kept, numbered once"
    );
}

#[test]
fn revision_history_is_kept_per_key_and_trimmed() {
    let etcd = start_etcd();
    let store = connect(&etcd, "/t7/");
    let mut w = workload("web", 1);
    w.rollout.revision_history_limit = 2;
    for i in 0..6 {
        w.pod_spec.containers[0].image = format!("localhost/app:{i}");
        store.apply(&[Object::Workload(w.clone())]).unwrap();
    }
    let revisions: Vec<u64> = store
        .list_revisions("web")
        .unwrap()
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(revisions, [4, 5, 6]);
    // Going back to a spec seen before (revision 5's) moves it to the top under a new number.
    w.pod_spec.containers[0].image = "localhost/app:4".into();
    store.apply(&[Object::Workload(w.clone())]).unwrap();
    let history = store.list_revisions("web").unwrap();
    assert_eq!(
        history.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [4, 6, 7]
    );
    assert_eq!(history[2].pod_spec.containers[0].image, "localhost/app:4");
    assert_eq!(store.get_workload("web").unwrap().unwrap().revision, 7);
    assert!(store.delete_workload("web").unwrap());
    assert!(store.list_revisions("web").unwrap().is_empty());
}

#[test]
fn a_value_that_does_not_decode_is_skipped_not_fatal() {
    let etcd = start_etcd();
    let store = connect(&etcd, "/t8/");
    store
        .apply(&[Object::Workload(workload("good", 1))])
        .unwrap();
    // Someone writes garbage under the prefix (by hand, another version).
    let put = |key: &str, value: &str| {
        let client = store.etcd().clone();
        let (key, value) = (store.key(key), value.as_bytes().to_vec());
        store
            .run(async move {
                client
                    .txn(pss_etcd::pb::TxnRequest {
                        success: vec![pss_etcd::pb::RequestOp {
                            request: Some(pss_etcd::pb::request_op::Request::RequestPut(
                                pss_etcd::pb::PutRequest {
                                    key,
                                    value,
                                    ..Default::default()
                                },
                            )),
                        }],
                        ..Default::default()
                    })
                    .await
            })
            .unwrap();
    };
    put("w/bad", "{not json");
    // A cache still starts, without it; lists skip it.
    let cache = CachedStore::follow(store.clone()).unwrap();
    let names: Vec<String> = cache
        .list_workloads()
        .unwrap()
        .into_iter()
        .map(|w| w.workload.name)
        .collect();
    assert_eq!(names, ["good"]);
    assert_eq!(store.list_workloads().unwrap().len(), 1);
    // Arriving through the watch, it is skipped too, and later changes still arrive.
    put("p/bad", "\u{0}\u{1}");
    store
        .apply(&[Object::Workload(workload("later", 1))])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.get_workload("later").unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the watch stopped at the bad value"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(cache.get_pod("bad").unwrap().is_none());
    // Reading the bad key itself names it.
    let err = store.get_workload("bad").unwrap_err().to_string();
    assert!(err.contains("/t8/w/bad"), "{err}");
}
