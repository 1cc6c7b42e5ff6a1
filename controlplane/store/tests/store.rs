//! Integration tests of the SQLite state store on real files: durability across reopen,
//! all-or-nothing writes, event retention, concurrent use, schema-version refusal, and a
//! model-based property test of the desired-state operations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use proptest::prelude::*;
use pss_core::model::{
    AutoScalePolicy, AutoscalerStatus, Container, ContainerState, EnvVar, EventRecord, NodeRecord,
    NodeStatus, Object, Placement, PodPhase, PodRecord, PodSpec, PortAddress, PortSpec, Protocol,
    ReadinessProbe, Resources, Service, Workload,
};
use pss_store::Error;
use pss_store::{ApplyAction, SqliteStore, StateStore};
use rusqlite::Connection;
use tempfile::TempDir;

// ----- fixtures

/// A temp directory and the path of a database file inside it.
fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pss.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).expect("open store")
}

fn workload(name: &str, replicas: u32) -> Workload {
    Workload {
        labels: Default::default(),
        rollout: Default::default(),
        name: name.into(),
        replicas,
        placement: Placement::Binpack,
        pod_spec: PodSpec {
            restart_policy: Default::default(),
            restarted_at_ms: 0,
            containers: vec![Container {
                liveness_probe: None,
                limits: None,
                name: "web".into(),
                image: "localhost/pss-demo:latest".into(),
                command: vec!["/bin/httpd".into()],
                args: vec!["-f".into(), "-p".into(), "80".into()],
                env: vec![EnvVar {
                    name: "MODE".into(),
                    value: "demo".into(),
                }],
                resources: Resources {
                    cpu_millis: 250,
                    memory_bytes: 128 << 20,
                },
            }],
            ports: vec![PortSpec {
                container_port: 80,
                protocol: Protocol::Tcp,
            }],
            readiness_probe: Some(ReadinessProbe {
                port: Some(80),
                interval_ms: 1000,
                timeout_ms: 500,
            }),
        },
    }
}

fn service(name: &str) -> Service {
    Service {
        labels: Default::default(),
        name: name.into(),
        workload: "web".into(),
        port: 8080,
        target_port: 80,
    }
}

fn policy(name: &str) -> AutoScalePolicy {
    AutoScalePolicy {
        name: name.into(),
        workload: "web".into(),
        min_replicas: 2,
        max_replicas: 10,
        cpu_percent: Some(60),
        memory_percent: Some(80),
    }
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        labels: Default::default(),
        unschedulable: false,
        draining: false,
        name: name.into(),
        agent_address: "127.0.0.1:50052".into(),
        cpu_millis: 8000,
        memory_bytes: 16 << 30,
        status: NodeStatus::Ready,
        cpu_usage_percent: 12.25,
        memory_used_bytes: 3 << 30,
        last_heartbeat_ms: 1_700_000_000_500,
        registered_at_ms: 1_700_000_000_000,
        conditions: Default::default(),
        limits_unenforced: String::new(),
    }
}

/// A pod with every field set to something other than its default.
fn full_pod(id: &str, node: &str) -> PodRecord {
    PodRecord {
        id: id.into(),
        workload: "web".into(),
        node: Some(node.into()),
        phase: PodPhase::Running,
        ready: true,
        addresses: vec![PortAddress {
            container_port: 80,
            address: "127.0.0.1:41234".into(),
        }],
        restart_count: 3,
        reason: "Restarted".into(),
        message: "exit code 1".into(),
        spec_hash: u64::MAX,
        created_at_ms: 1_700_000_001_000,
        started_at_ms: 1_700_000_002_000,
        updated_at_ms: 1_700_000_003_000,
        backoff_until_ms: 1_700_000_004_000,
        failure_streak: 2,
        cpu_percent: 55.5,
        memory_bytes: u64::MAX - 1,
        containers: vec![ContainerState {
            name: "web".into(),
            id: "0123456789ab".into(),
            state: "running".into(),
            exit_code: -1,
            oom_killed: true,
        }],
    }
}

fn status() -> AutoscalerStatus {
    AutoscalerStatus {
        current_cpu_percent: Some(72.5),
        current_memory_percent: Some(40.0),
        current_replicas: 3,
        desired_replicas: 4,
        last_scale_at_ms: 1_700_000_005_000,
    }
}

fn event_messages(store: &SqliteStore) -> Vec<String> {
    store
        .list_events(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

// ----- durability

#[test]
fn open_creates_the_file_in_wal_mode() {
    let (_dir, path) = temp_db();
    let _store = open(&path);
    assert!(path.exists());
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SqliteStore::SCHEMA_VERSION);
}

#[test]
fn reopening_the_same_file_keeps_every_kind_of_object() {
    let (_dir, path) = temp_db();
    let pods = vec![
        full_pod("web-aaaaa", "n1"),
        PodRecord::new("api-bbbbb".into(), "api", 7, 9),
    ];
    let events = {
        let store = open(&path);
        store
            .apply(&[
                Object::Workload(workload("web", 3)),
                Object::Service(service("web")),
                Object::AutoScalePolicy(policy("web")),
            ])
            .unwrap();
        store.set_replicas("web", 4).unwrap();
        store.set_autoscaler_status("web", &status()).unwrap();
        store.upsert_node(&node("n1")).unwrap();
        store.put_pods(&pods).unwrap();
        store
            .add_event(&EventRecord::normal(
                "Scaled",
                "workload/web".into(),
                "3 → 4".into(),
            ))
            .unwrap();
        store
            .add_event(&EventRecord::warning(
                "Failed",
                "pod/web-aaaaa".into(),
                "exit 1".into(),
            ))
            .unwrap();
        assert_eq!(store.next_snapshot_version("web").unwrap(), 1);
        assert_eq!(store.next_snapshot_version("web").unwrap(), 2);
        store.list_events(10).unwrap()
    };

    let store = open(&path);
    let stored = store
        .get_workload("web")
        .unwrap()
        .expect("workload survives");
    assert_eq!(stored.workload, workload("web", 4));
    assert_eq!(stored.generation, 2);
    assert_eq!(store.list_services().unwrap()[0].service, service("web"));
    let autoscaler = store
        .get_autoscaler("web")
        .unwrap()
        .expect("autoscaler survives");
    assert_eq!(
        (autoscaler.policy, autoscaler.status),
        (policy("web"), status())
    );
    assert_eq!(store.list_nodes().unwrap(), vec![node("n1")]);
    let mut expected_pods = pods;
    expected_pods.sort_by(|a, b| (&a.workload, &a.id).cmp(&(&b.workload, &b.id)));
    assert_eq!(store.list_pods(None).unwrap(), expected_pods);
    assert_eq!(
        store.get_pod("web-aaaaa").unwrap().unwrap().spec_hash,
        u64::MAX
    );
    assert_eq!(store.list_events(10).unwrap(), events);
    assert_eq!(
        store.next_snapshot_version("web").unwrap(),
        3,
        "versions keep increasing"
    );
}

#[test]
fn event_ids_and_retention_continue_across_reopen() {
    let (_dir, path) = temp_db();
    let last_id = {
        let store = open(&path).with_event_retention(5);
        let mut last = 0;
        for i in 0..8 {
            last = store
                .add_event(&EventRecord::normal(
                    "Tick",
                    "node/n1".into(),
                    i.to_string(),
                ))
                .unwrap();
        }
        assert_eq!(event_messages(&store), ["3", "4", "5", "6", "7"]);
        last
    };
    let store = open(&path).with_event_retention(5);
    let id = store
        .add_event(&EventRecord::normal("Tick", "node/n1".into(), "8".into()))
        .unwrap();
    assert!(id > last_id, "ids are never reused");
    assert_eq!(event_messages(&store), ["4", "5", "6", "7", "8"]);
}

#[test]
fn default_event_retention_is_bounded() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(
        store.event_retention(),
        SqliteStore::DEFAULT_EVENT_RETENTION
    );
    for i in 0..SqliteStore::DEFAULT_EVENT_RETENTION + 10 {
        store
            .add_event(&EventRecord::normal(
                "Tick",
                "node/n1".into(),
                i.to_string(),
            ))
            .unwrap();
    }
    let events = store.list_events(usize::MAX).unwrap();
    assert_eq!(events.len(), SqliteStore::DEFAULT_EVENT_RETENTION);
    assert_eq!(events[0].message, "10");
}

/// Issue 13: a rootless node's "limits not enforced" survives a controller restart, and a
/// re-registration that no longer says so clears it.
#[test]
fn a_node_keeps_what_its_podman_cannot_enforce() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    let mut rootless = node("rootless");
    rootless.limits_unenforced =
        "cpu and memory limits not enforced: rootless Podman on cgroup v1".into();
    store.upsert_node(&rootless).unwrap();
    store.upsert_node(&node("root")).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(store.get_node("rootless").unwrap().unwrap(), rootless);
    assert_eq!(
        store.get_node("root").unwrap().unwrap().limits_unenforced,
        ""
    );
    store.upsert_node(&node("rootless")).unwrap();
    assert_eq!(
        store
            .get_node("rootless")
            .unwrap()
            .unwrap()
            .limits_unenforced,
        ""
    );
}

/// A database written before node conditions, limits, labels and rollouts existed (schema 1)
/// gains their columns, empty, on open: migrations 2, 3 and 4 run in order; its workload gets
/// revision 1.
#[test]
fn a_schema_1_database_is_migrated_with_nodes_kept() {
    let (_dir, path) = temp_db();
    drop(open(&path));
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE certificates;
             DROP TABLE join_tokens;
             ALTER TABLE nodes DROP COLUMN draining;
             ALTER TABLE nodes DROP COLUMN unschedulable;
             ALTER TABLE nodes DROP COLUMN labels;
             ALTER TABLE services DROP COLUMN labels;
             ALTER TABLE workloads DROP COLUMN rollout_status;
             ALTER TABLE workloads DROP COLUMN rollout;
             ALTER TABLE workloads DROP COLUMN labels;
             DROP TABLE workload_revisions;
             INSERT INTO workloads (name, spec, replicas, placement, generation, created_at, updated_at)
             VALUES ('web', '{\"containers\":[],\"ports\":[],\"readiness_probe\":null}', 2, 'spread', 1, 1, 1);
             ALTER TABLE nodes DROP COLUMN limits_unenforced;
             ALTER TABLE nodes DROP COLUMN runtime_reason;
             ALTER TABLE nodes DROP COLUMN runtime_unresponsive_since;
             INSERT INTO nodes (name, agent_address, cpu_millis, memory_bytes, status, cpu_usage,
                                memory_used, last_heartbeat, registered_at)
             VALUES ('old', '127.0.0.1:1', 1000, 1024, 'Ready', 0.0, 0, 1, 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = open(&path);
    let old = store.get_node("old").unwrap().unwrap();
    assert_eq!(old.limits_unenforced, "");
    assert_eq!(old.conditions, Default::default());
    assert_eq!(old.cpu_millis, 1000);
    assert!(old.labels.is_empty() && !old.unschedulable && !old.draining);
    let web = store.get_workload("web").unwrap().unwrap();
    assert_eq!(web.revision, 1);
    assert_eq!(web.workload.rollout, Default::default());
    assert!(web.workload.labels.is_empty());
    assert_eq!(store.list_revisions("web").unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let (_dir, path) = temp_db();
    drop(open(&path));
    let newer = SqliteStore::SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();

    let err = SqliteStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(
        message.contains(&format!("schema version {newer} is newer")),
        "{message}"
    );

    let conn = Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, newer, "the newer database is left untouched");
}

// ----- atomicity

/// Makes every insert of a service named `boom` fail, through a second connection.
fn install_failing_trigger(path: &Path) {
    Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER reject_boom BEFORE INSERT ON services WHEN NEW.name = 'boom'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
}

#[test]
fn apply_is_all_or_nothing() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    store
        .apply(&[Object::Workload(workload("api", 1))])
        .unwrap();
    install_failing_trigger(&path);

    let err = store
        .apply(&[
            Object::Workload(workload("web", 2)),
            Object::Workload(workload("api", 5)),
            Object::AutoScalePolicy(policy("web")),
            Object::Service(service("boom")),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");

    assert_eq!(
        store.get_workload("web").unwrap(),
        None,
        "the new workload was rolled back"
    );
    let api = store.get_workload("api").unwrap().unwrap();
    assert_eq!(
        (api.workload.replicas, api.generation),
        (1, 1),
        "the update was rolled back"
    );
    assert!(store.list_autoscalers().unwrap().is_empty());
    assert!(store.list_services().unwrap().is_empty());

    // The connection is usable afterwards: no transaction was left open.
    assert_eq!(
        store
            .apply(&[Object::Workload(workload("web", 2))])
            .unwrap(),
        [ApplyAction::Created]
    );
    drop(store);
    assert!(open(&path).get_workload("web").unwrap().is_some());
}

#[test]
fn put_pods_is_all_or_nothing() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    store.upsert_node(&node("n1")).unwrap();
    let mut before = full_pod("web-aaaaa", "n1");
    store.put_pod(&before).unwrap();

    before.phase = PodPhase::Terminating;
    let on_unknown_node = full_pod("web-bbbbb", "ghost");
    let err = store
        .put_pods(&[
            before,
            PodRecord::new("web-ccccc".into(), "web", 1, 1),
            on_unknown_node,
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");

    let pods = store.list_pods(None).unwrap();
    assert_eq!(
        pods,
        vec![full_pod("web-aaaaa", "n1")],
        "nothing of the failed batch stayed"
    );
}

// ----- concurrency

#[test]
fn concurrent_use_from_several_threads() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    let (_dir, path) = temp_db();
    let store = Arc::new(open(&path));
    store.upsert_node(&node("n1")).unwrap();

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                let name = format!("w{t}");
                store
                    .apply(&[Object::Workload(workload(&name, 1))])
                    .unwrap();
                let mut versions = Vec::new();
                for round in 0..ROUNDS {
                    store.set_replicas(&name, round as u32 + 2).unwrap();
                    store
                        .put_pod(&full_pod(&format!("{name}-{round}"), "n1"))
                        .unwrap();
                    store
                        .add_event(&EventRecord::normal(
                            "Tick",
                            name.clone(),
                            round.to_string(),
                        ))
                        .unwrap();
                    versions.push(store.next_snapshot_version("shared").unwrap());
                    store
                        .record_heartbeat("n1", t as f64, round as u64, 1)
                        .unwrap();
                    store.list_pods(Some(&name)).unwrap();
                }
                versions
            })
        })
        .collect();
    let mut versions: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=(THREADS * ROUNDS) as u64).collect();
    assert_eq!(versions, expected, "every version handed out exactly once");

    for stored in store.list_workloads().unwrap() {
        assert_eq!(stored.workload.replicas, ROUNDS as u32 + 1);
        assert_eq!(stored.generation, ROUNDS as u64 + 1);
    }
    assert_eq!(store.list_pods(None).unwrap().len(), THREADS * ROUNDS);
    assert_eq!(
        store.list_events(usize::MAX).unwrap().len(),
        THREADS * ROUNDS
    );
}

#[test]
fn two_stores_on_one_file_hand_out_distinct_versions() {
    let (_dir, path) = temp_db();
    let stores = [Arc::new(open(&path)), Arc::new(open(&path))];
    let handles: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = Arc::clone(store);
            thread::spawn(move || {
                (0..100)
                    .map(|_| store.next_snapshot_version("web").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut versions: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 200);
}

// ----- model-based property test

/// What the store should hold, as plain maps (name order = SQLite's binary collation order).
#[derive(Debug, Default)]
struct Model {
    /// Workload and its generation.
    workloads: BTreeMap<String, (Workload, u64)>,
    services: BTreeMap<String, Service>,
    autoscalers: BTreeMap<String, AutoScalePolicy>,
}

impl Model {
    fn apply(&mut self, objects: &[Object]) -> Vec<ApplyAction> {
        objects.iter().map(|object| self.put(object)).collect()
    }

    fn put(&mut self, object: &Object) -> ApplyAction {
        match object {
            Object::Workload(w) => match self.workloads.get_mut(&w.name) {
                None => {
                    self.workloads.insert(w.name.clone(), (w.clone(), 1));
                    ApplyAction::Created
                }
                Some((old, _)) if old == w => ApplyAction::Unchanged,
                Some((old, generation)) => {
                    *old = w.clone();
                    *generation += 1;
                    ApplyAction::Configured
                }
            },
            Object::Service(s) => put_plain(&mut self.services, &s.name, s),
            Object::AutoScalePolicy(p) => put_plain(&mut self.autoscalers, &p.name, p),
        }
    }

    fn set_replicas(&mut self, name: &str, replicas: u32) -> Option<u32> {
        let (workload, generation) = self.workloads.get_mut(name)?;
        let previous = workload.replicas;
        if previous != replicas {
            workload.replicas = replicas;
            *generation += 1;
        }
        Some(previous)
    }
}

fn put_plain<T: Clone + PartialEq>(
    map: &mut BTreeMap<String, T>,
    name: &str,
    value: &T,
) -> ApplyAction {
    match map.insert(name.to_string(), value.clone()) {
        None => ApplyAction::Created,
        Some(old) if old == *value => ApplyAction::Unchanged,
        Some(_) => ApplyAction::Configured,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Apply(Vec<Object>),
    SetReplicas(String, u32),
    DeleteWorkload(String),
    DeleteService(String),
    DeleteAutoscaler(String),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from)
}

fn object() -> impl Strategy<Value = Object> {
    let workload = (
        name(),
        0u32..4,
        any::<bool>(),
        prop_oneof![Just("x"), Just("y")],
    )
        .prop_map(|(name, replicas, binpack, image)| {
            let mut w = workload(&name, replicas);
            w.placement = if binpack {
                Placement::Binpack
            } else {
                Placement::Spread
            };
            w.pod_spec.containers[0].image = image.into();
            Object::Workload(w)
        });
    let service = (name(), 80u16..82).prop_map(|(name, port)| {
        Object::Service(Service {
            port,
            ..service(&name)
        })
    });
    let policy = (name(), 2u32..4, proptest::option::of(1u32..3)).prop_map(|(name, max, cpu)| {
        Object::AutoScalePolicy(AutoScalePolicy {
            max_replicas: max,
            cpu_percent: cpu,
            ..policy(&name)
        })
    });
    prop_oneof![workload, service, policy]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec(object(), 1..4).prop_map(Op::Apply),
        2 => (name(), 0u32..4).prop_map(|(n, r)| Op::SetReplicas(n, r)),
        1 => name().prop_map(Op::DeleteWorkload),
        1 => name().prop_map(Op::DeleteService),
        1 => name().prop_map(Op::DeleteAutoscaler),
    ]
}

/// Runs one operation on both; asserts they answer alike.
fn run(store: &SqliteStore, model: &mut Model, op: &Op) {
    match op {
        Op::Apply(objects) => assert_eq!(store.apply(objects).unwrap(), model.apply(objects)),
        Op::SetReplicas(name, replicas) => {
            let got = match store.set_replicas(name, *replicas) {
                Ok(previous) => Some(previous),
                Err(Error::NotFound {
                    kind: "workload", ..
                }) => None,
                Err(e) => panic!("set_replicas: {e}"),
            };
            assert_eq!(got, model.set_replicas(name, *replicas));
        }
        Op::DeleteWorkload(name) => {
            assert_eq!(
                store.delete_workload(name).unwrap(),
                model.workloads.remove(name).is_some()
            )
        }
        Op::DeleteService(name) => {
            assert_eq!(
                store.delete_service(name).unwrap(),
                model.services.remove(name).is_some()
            )
        }
        Op::DeleteAutoscaler(name) => {
            assert_eq!(
                store.delete_autoscaler(name).unwrap(),
                model.autoscalers.remove(name).is_some()
            )
        }
    }
}

/// Asserts the store lists exactly what the model holds, in the same order.
fn assert_same_listings(store: &SqliteStore, model: &Model) {
    let workloads: Vec<(Workload, u64)> = store
        .list_workloads()
        .unwrap()
        .into_iter()
        .map(|s| (s.workload, s.generation))
        .collect();
    assert_eq!(
        workloads,
        model.workloads.values().cloned().collect::<Vec<_>>()
    );
    let services: Vec<Service> = store
        .list_services()
        .unwrap()
        .into_iter()
        .map(|s| s.service)
        .collect();
    assert_eq!(
        services,
        model.services.values().cloned().collect::<Vec<_>>()
    );
    let autoscalers: Vec<AutoScalePolicy> = store
        .list_autoscalers()
        .unwrap()
        .into_iter()
        .map(|s| s.policy)
        .collect();
    assert_eq!(
        autoscalers,
        model.autoscalers.values().cloned().collect::<Vec<_>>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_matches_an_in_memory_model(ops in proptest::collection::vec(op(), 1..40)) {
        let (_dir, path) = temp_db();
        let store = open(&path);
        let mut model = Model::default();
        for op in &ops {
            run(&store, &mut model, op);
            assert_same_listings(&store, &model);
        }
        drop(store);
        assert_same_listings(&open(&path), &model);
    }
}
