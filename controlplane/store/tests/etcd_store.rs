//! `EtcdStore` and a following `CachedStore` against a real etcd (Debian's `etcd-server`,
//! started here on free loopback ports): the same behaviour as SQLite, no lost update between
//! two stores, fencing, and a cache that follows another writer.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pss_core::model::{
    Container, EventRecord, EventType, NodeRecord, NodeStatus, Object, Placement, PodPhase,
    PodRecord, PodSpec, Resources, Workload,
};
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
            "--max-txn-ops",
            "1024",
            "--unsafe-no-fsync",
        ])
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

fn workload(name: &str, replicas: u32) -> Workload {
    Workload {
        labels: Default::default(),
        rollout: Default::default(),
        name: name.to_string(),
        replicas,
        placement: Placement::Spread,
        pod_spec: PodSpec {
            restart_policy: Default::default(),
            restarted_at_ms: 0,
            containers: vec![Container {
                liveness_probe: None,
                limits: None,
                name: "web".into(),
                image: "localhost/pss-demo:latest".into(),
                command: vec![],
                args: vec![],
                env: vec![],
                resources: Resources {
                    cpu_millis: 100,
                    memory_bytes: 64 << 20,
                },
            }],
            ports: vec![],
            readiness_probe: None,
        },
    }
}

fn pod(id: &str, workload: &str, node: &str) -> PodRecord {
    let mut p = PodRecord::new(id.into(), workload, 42, 1_000);
    p.node = Some(node.into());
    p.phase = PodPhase::Running;
    p
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        agent_address: "127.0.0.1:1".into(),
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
        status: NodeStatus::Ready,
        cpu_usage_percent: 0.0,
        memory_used_bytes: 0,
        last_heartbeat_ms: 1,
        registered_at_ms: 1,
        conditions: Default::default(),
        limits_unenforced: String::new(),
        labels: Default::default(),
        unschedulable: false,
        draining: false,
    }
}

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
    let mut expected = std::collections::HashMap::new();
    expected.insert("web-aaaaa".to_string(), stale_guard);
    let err = a
        .write_batch_guarded(&[Change::PutPod(stale)], &expected)
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
