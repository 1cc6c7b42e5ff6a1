//! Unit tests of [`SqliteStore`] semantics on an in-memory database. Durability across reopen,
//! concurrency and the model-based property test live in `controlplane/store/tests/store.rs`.

use super::SqliteStore;
use crate::Error;
use crate::{ApplyAction, StateStore};
use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, EventRecord, NodeRecord, NodeStatus, Object, Placement,
    PodPhase, PodRecord, Service,
};

fn store() -> SqliteStore {
    SqliteStore::open_in_memory().expect("in-memory store")
}

use crate::fixtures::workload;

fn service(name: &str, port: u16) -> Service {
    Service {
        labels: Default::default(),
        name: name.into(),
        workload: "web".into(),
        port,
        target_port: 80,
    }
}

fn policy(name: &str, max: u32) -> AutoScalePolicy {
    AutoScalePolicy {
        name: name.into(),
        workload: "web".into(),
        min_replicas: 1,
        max_replicas: max,
        cpu_percent: Some(70),
        memory_percent: None,
    }
}

fn node(name: &str, registered_at_ms: i64) -> NodeRecord {
    NodeRecord {
        labels: Default::default(),
        unschedulable: false,
        draining: false,
        name: name.into(),
        agent_address: "127.0.0.1:50052".into(),
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        status: NodeStatus::NotReady,
        cpu_usage_percent: 0.0,
        memory_used_bytes: 0,
        last_heartbeat_ms: 0,
        registered_at_ms,
        conditions: Default::default(),
        limits_unenforced: String::new(),
    }
}

fn pod(id: &str, workload: &str) -> PodRecord {
    PodRecord::new(id.into(), workload, 42, 1_000)
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SqliteStore>();
}

#[test]
fn apply_reports_created_then_unchanged_then_configured() {
    let store = store();
    let objects = vec![
        Object::Workload(workload("web", 2)),
        Object::Service(service("web", 8080)),
        Object::AutoScalePolicy(policy("web", 5)),
    ];
    assert_eq!(
        store.apply(&objects).unwrap(),
        vec![ApplyAction::Created; 3]
    );
    assert_eq!(
        store.apply(&objects).unwrap(),
        vec![ApplyAction::Unchanged; 3]
    );
    let changed = vec![
        Object::Workload(workload("web", 3)),
        Object::Service(service("web", 8081)),
        Object::AutoScalePolicy(policy("web", 6)),
    ];
    assert_eq!(
        store.apply(&changed).unwrap(),
        vec![ApplyAction::Configured; 3]
    );
    assert_eq!(
        store.get_service("web").unwrap().unwrap().service.port,
        8081
    );
    assert_eq!(
        store
            .get_autoscaler("web")
            .unwrap()
            .unwrap()
            .policy
            .max_replicas,
        6
    );
}

#[test]
fn workload_generation_moves_only_on_real_change() {
    let store = store();
    store
        .apply(&[Object::Workload(workload("web", 2))])
        .unwrap();
    let first = store.get_workload("web").unwrap().unwrap();
    assert_eq!(first.generation, 1);

    store
        .apply(&[Object::Workload(workload("web", 2))])
        .unwrap();
    assert_eq!(store.get_workload("web").unwrap().unwrap().generation, 1);

    let mut binpack = workload("web", 2);
    binpack.placement = Placement::Binpack;
    store.apply(&[Object::Workload(binpack.clone())]).unwrap();
    let second = store.get_workload("web").unwrap().unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.workload, binpack);
    assert_eq!(
        second.created_at_ms, first.created_at_ms,
        "created_at survives updates"
    );

    let mut new_image = binpack;
    new_image.pod_spec.containers[0].image = "localhost/other:1".into();
    store.apply(&[Object::Workload(new_image)]).unwrap();
    assert_eq!(store.get_workload("web").unwrap().unwrap().generation, 3);
}

#[test]
fn set_replicas_returns_previous_count_and_bumps_generation() {
    let store = store();
    store
        .apply(&[Object::Workload(workload("web", 2))])
        .unwrap();
    assert_eq!(store.set_replicas("web", 5).unwrap(), 2);
    let stored = store.get_workload("web").unwrap().unwrap();
    assert_eq!((stored.workload.replicas, stored.generation), (5, 2));

    assert_eq!(store.set_replicas("web", 5).unwrap(), 5);
    assert_eq!(
        store.get_workload("web").unwrap().unwrap().generation,
        2,
        "no change, no bump"
    );
}

#[test]
fn set_replicas_of_a_missing_workload_is_not_found() {
    let err = store().set_replicas("ghost", 1).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: "workload", name } if name == "ghost"),
        "{err:?}"
    );
}

#[test]
fn deletes_report_whether_a_row_existed() {
    let store = store();
    store
        .apply(&[
            Object::Workload(workload("web", 1)),
            Object::Service(service("web", 80)),
            Object::AutoScalePolicy(policy("web", 3)),
        ])
        .unwrap();
    assert!(store.delete_workload("web").unwrap());
    assert!(!store.delete_workload("web").unwrap());
    assert!(store.delete_service("web").unwrap());
    assert!(!store.delete_service("web").unwrap());
    assert!(store.delete_autoscaler("web").unwrap());
    assert!(!store.delete_autoscaler("web").unwrap());
    assert!(store.list_workloads().unwrap().is_empty());
    assert!(store.list_services().unwrap().is_empty());
    assert!(store.list_autoscalers().unwrap().is_empty());
}

#[test]
fn upsert_autoscaler_keeps_the_status_of_an_existing_policy() {
    let store = store();
    assert_eq!(
        store.upsert_autoscaler(&policy("web", 5)).unwrap(),
        ApplyAction::Created
    );
    assert_eq!(
        store.get_autoscaler("web").unwrap().unwrap().status,
        AutoscalerStatus::default()
    );
    let status = AutoscalerStatus {
        current_cpu_percent: Some(93.5),
        current_memory_percent: None,
        current_replicas: 2,
        desired_replicas: 3,
        last_scale_at_ms: 1_700_000_000_000,
    };
    store.set_autoscaler_status("web", &status).unwrap();
    assert_eq!(
        store.upsert_autoscaler(&policy("web", 8)).unwrap(),
        ApplyAction::Configured
    );
    assert_eq!(
        store.upsert_autoscaler(&policy("web", 8)).unwrap(),
        ApplyAction::Unchanged
    );
    let stored = store.get_autoscaler("web").unwrap().unwrap();
    assert_eq!(stored.policy, policy("web", 8));
    assert_eq!(stored.status, status);
}

#[test]
fn set_autoscaler_status_of_a_missing_policy_is_not_found() {
    let err = store()
        .set_autoscaler_status("ghost", &AutoscalerStatus::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: "autoscaler",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn upsert_node_keeps_the_first_registration_time() {
    let store = store();
    store.upsert_node(&node("n1", 100)).unwrap();
    let mut again = node("n1", 999);
    again.agent_address = "10.0.0.2:50052".into();
    again.status = NodeStatus::Ready;
    store.upsert_node(&again).unwrap();
    let stored = store.get_node("n1").unwrap().unwrap();
    assert_eq!(stored.registered_at_ms, 100);
    assert_eq!(stored.agent_address, "10.0.0.2:50052");
    assert_eq!(stored.status, NodeStatus::Ready);
}

#[test]
fn record_heartbeat_sets_metrics_time_and_ready() {
    let store = store();
    store.upsert_node(&node("n1", 100)).unwrap();
    store.record_heartbeat("n1", 37.5, 1 << 30, 5_000).unwrap();
    let stored = store.get_node("n1").unwrap().unwrap();
    assert_eq!(stored.status, NodeStatus::Ready);
    assert_eq!(stored.cpu_usage_percent, 37.5);
    assert_eq!(stored.memory_used_bytes, 1 << 30);
    assert_eq!(stored.last_heartbeat_ms, 5_000);

    store.set_node_status("n1", NodeStatus::NotReady).unwrap();
    assert_eq!(
        store.get_node("n1").unwrap().unwrap().status,
        NodeStatus::NotReady
    );
}

#[test]
fn heartbeat_and_status_of_an_unknown_node_are_not_found() {
    let store = store();
    let err = store.record_heartbeat("ghost", 1.0, 1, 1).unwrap_err();
    assert!(
        matches!(err, Error::NotFound { kind: "node", .. }),
        "{err:?}"
    );
    let err = store
        .set_node_status("ghost", NodeStatus::Ready)
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { kind: "node", .. }),
        "{err:?}"
    );
}

#[test]
fn list_pods_orders_by_workload_then_id_and_filters() {
    let store = store();
    store
        .put_pods(&[
            pod("web-b", "web"),
            pod("api-z", "api"),
            pod("web-a", "web"),
            pod("api-c", "api"),
        ])
        .unwrap();
    let ids = |pods: Vec<PodRecord>| pods.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_pods(None).unwrap()),
        ["api-c", "api-z", "web-a", "web-b"]
    );
    assert_eq!(
        ids(store.list_pods(Some("web")).unwrap()),
        ["web-a", "web-b"]
    );
    assert!(store.list_pods(Some("none")).unwrap().is_empty());
}

#[test]
fn put_pod_replaces_and_delete_pod_reports_existence() {
    let store = store();
    store.upsert_node(&node("n1", 1)).unwrap();
    let mut record = pod("web-a", "web");
    store.put_pod(&record).unwrap();
    record.node = Some("n1".into());
    record.phase = PodPhase::Running;
    record.ready = true;
    store.put_pod(&record).unwrap();
    assert_eq!(store.get_pod("web-a").unwrap(), Some(record));
    assert!(store.delete_pod("web-a").unwrap());
    assert!(!store.delete_pod("web-a").unwrap());
    assert_eq!(store.get_pod("web-a").unwrap(), None);
}

#[test]
fn a_pod_cannot_be_placed_on_an_unregistered_node() {
    let store = store();
    let mut record = pod("web-a", "web");
    record.node = Some("ghost".into());
    let err = store.put_pod(&record).unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
}

#[test]
fn pods_outlive_their_deleted_workload() {
    let store = store();
    store
        .apply(&[Object::Workload(workload("web", 1))])
        .unwrap();
    store.put_pod(&pod("web-a", "web")).unwrap();
    store.delete_workload("web").unwrap();
    assert_eq!(store.list_pods(Some("web")).unwrap().len(), 1);
}

#[test]
fn add_event_assigns_increasing_ids_and_fills_a_missing_time() {
    let store = store();
    let first = store
        .add_event(&EventRecord::normal(
            "Scaled",
            "workload/web".into(),
            "2 → 3".into(),
        ))
        .unwrap();
    let mut timed = EventRecord::warning(
        "FailedScheduling",
        "pod/web-a".into(),
        "no node fits".into(),
    );
    timed.time_ms = 1234;
    let second = store.add_event(&timed).unwrap();
    assert!(second > first);

    let events = store.list_events(10).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, first);
    assert!(events[0].time_ms > 0, "time filled in");
    assert_eq!(
        events[1],
        EventRecord {
            id: second,
            ..timed
        }
    );
}

#[test]
fn event_retention_keeps_the_newest() {
    let store = store().with_event_retention(3);
    assert_eq!(store.event_retention(), 3);
    for i in 0..10 {
        store
            .add_event(&EventRecord::normal(
                "Tick",
                "node/n1".into(),
                format!("{i}"),
            ))
            .unwrap();
    }
    let messages: Vec<String> = store
        .list_events(100)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(messages, ["7", "8", "9"]);
}

#[test]
fn list_events_returns_the_newest_limit_oldest_first() {
    let store = store();
    for i in 0..5 {
        store
            .add_event(&EventRecord::normal(
                "Tick",
                "node/n1".into(),
                format!("{i}"),
            ))
            .unwrap();
    }
    let messages: Vec<String> = store
        .list_events(2)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(messages, ["3", "4"]);
    assert!(store.list_events(0).unwrap().is_empty());
}

#[test]
fn snapshot_versions_increase_per_service() {
    let store = store();
    assert_eq!(store.next_snapshot_version("a").unwrap(), 1);
    assert_eq!(store.next_snapshot_version("a").unwrap(), 2);
    assert_eq!(store.next_snapshot_version("b").unwrap(), 1);
    assert_eq!(store.next_snapshot_version("a").unwrap(), 3);
}

#[test]
fn a_corrupt_json_column_is_a_decode_error() {
    let store = store();
    store
        .apply(&[Object::Workload(workload("web", 1))])
        .unwrap();
    store
        .lock()
        .execute("UPDATE workloads SET spec = 'not json'", [])
        .unwrap();
    let err = store.get_workload("web").unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[test]
fn pod_pages_follow_ids_and_filter_by_workload() {
    let store = SqliteStore::open_in_memory().unwrap();
    let pods: Vec<PodRecord> = (0..25)
        .map(|i| PodRecord::new(format!("w{}-{i:03}", i % 2), &format!("w{}", i % 2), 1, 0))
        .collect();
    store.put_pods(&pods).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_pods_page(None, after.as_deref(), 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = Some(page.last().unwrap().id.clone());
        seen.extend(page.into_iter().map(|p| p.id));
    }
    let mut all: Vec<String> = pods.iter().map(|p| p.id.clone()).collect();
    all.sort();
    assert_eq!(seen, all);
    let odd = store.list_pods_page(Some("w1"), None, 100).unwrap();
    assert_eq!(odd.len(), 12);
    assert!(odd.iter().all(|p| p.workload == "w1"));
}

#[test]
fn node_conditions_persist_and_survive_heartbeats_and_reopening() {
    use pss_core::node_condition::{NodeConditions, RuntimeUnresponsive};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pss.db");
    let stalled = NodeConditions {
        runtime_unresponsive: Some(RuntimeUnresponsive {
            since_ms: 4_000,
            reason: "GET /pods/json: no answer within 5s".into(),
        }),
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        store.upsert_node(&node("n1", 100)).unwrap();
        store.set_node_conditions("n1", &stalled).unwrap();
        // A heartbeat does not touch the conditions.
        store.record_heartbeat("n1", 1.0, 1, 5_000).unwrap();
        assert_eq!(store.get_node("n1").unwrap().unwrap().conditions, stalled);
        let err = store.set_node_conditions("ghost", &stalled).unwrap_err();
        assert!(
            matches!(err, Error::NotFound { kind: "node", .. }),
            "{err:?}"
        );
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.list_nodes().unwrap()[0].conditions, stalled);
    store
        .set_node_conditions("n1", &NodeConditions::default())
        .unwrap();
    assert_eq!(
        store.get_node("n1").unwrap().unwrap().conditions,
        NodeConditions::default()
    );
}
