//! Issue 12 through pssctl against a real controller (SQLite file, gRPC on loopback) with
//! fake agents whose pods are real TCP listeners, and a real proxy in front of them: label
//! selectors, cordon/uncordon/drain, delete pod, rollouts (status, history, undo, restart,
//! pause/resume, progress deadline with auto-revert) and manifests that report every error.
//! The same commands on real Podman are in `operations_podman.rs`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_agent::{FakeAgent, FAILING_IMAGE_PREFIX};
use support::proxy::start_proxy;
use support::traffic::{line_probe, ClientLoop};
use support::{eventually, RunningController};
use tokio_util::sync::CancellationToken;

fn web(replicas: u32, image: &str, extra_spec: &str) -> String {
    format!(
        "kind: Workload\nmetadata:\n  name: web\n  labels: {{app: web, tier: front}}\nspec:\n  replicas: {replicas}\n{extra_spec}  podSpec:\n    containers:\n      - name: web\n        image: {image}\n    ports:\n      - containerPort: 80\n---\nkind: Service\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec: {{workload: web, port: 80}}\n"
    )
}

const DB: &str = "kind: Workload\nmetadata:\n  name: db\n  labels: {app: db}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: db\n        image: db:1\n";

async fn apply(c: &RunningController, yaml: &str) -> Result<String, pssctl::CliError> {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    c.ctl(&["apply", "-f", f.path().to_str().unwrap()]).await
}

async fn json(c: &RunningController, args: &[&str]) -> Value {
    let mut argv = args.to_vec();
    argv.extend(["-o", "json"]);
    serde_json::from_str(&c.ctl(&argv).await.unwrap()).unwrap()
}

async fn pods(c: &RunningController) -> Vec<Value> {
    json(c, &["get", "pods"]).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The ready, Running pods of `web`.
async fn ready_web(c: &RunningController) -> Vec<Value> {
    pods(c)
        .await
        .into_iter()
        .filter(|p| p["workload"] == "web" && p["phase"] == "Running" && p["ready"] == true)
        .collect()
}

async fn workload(c: &RunningController) -> Value {
    json(c, &["get", "workload", "web"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_select_workloads_services_nodes_and_pods() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let stop = CancellationToken::new();
    let _a = FakeAgent::start_with_labels("node-a", &[("zone", "a")], c.addr, stop.clone()).await;
    let _b = FakeAgent::start_with_labels("node-b", &[("zone", "b")], c.addr, stop.clone()).await;
    apply(&c, &web(2, "web:1", "")).await.unwrap();
    apply(&c, DB).await.unwrap();
    eventually(Duration::from_secs(20), "3 pods ready", || async {
        (pods(&c).await.iter().filter(|p| p["ready"] == true).count() == 3).then_some(())
    })
    .await;

    let names = |args: &'static [&'static str]| {
        let c = &c;
        async move {
            let mut argv = args.to_vec();
            argv.extend(["-o", "name"]);
            c.ctl(&argv).await.unwrap()
        }
    };
    assert_eq!(
        names(&["get", "workloads", "-l", "app=web"]).await,
        "workload/web\n"
    );
    assert_eq!(
        names(&["get", "workloads", "-l", "app!=web"]).await,
        "workload/db\n"
    );
    assert_eq!(
        names(&["get", "workloads", "-l", "tier"]).await,
        "workload/web\n"
    );
    assert_eq!(
        names(&["get", "services", "-l", "app=web"]).await,
        "service/web\n"
    );
    assert_eq!(names(&["get", "services", "-l", "app=db"]).await, "");
    assert_eq!(
        names(&["get", "nodes", "-l", "zone=b"]).await,
        "node/node-b\n"
    );
    // Pods carry their workload's labels.
    let web_pods = json(&c, &["get", "pods", "-l", "app=web,tier=front"]).await;
    let items = web_pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|p| p["workload"] == "web" && p["labels"]["app"] == "web"));
    let db_pods = names(&["get", "pods", "-l", "app=db"]).await;
    assert_eq!(db_pods.lines().count(), 1, "{db_pods}");
    // describe shows the labels.
    let described = c.ctl(&["describe", "workload/web"]).await.unwrap();
    assert!(described.contains("tier: front"), "{described}");

    // A bad selector is refused before dialling, and by the server for raw clients.
    let e = c.ctl(&["get", "pods", "-l", "app=we b"]).await.unwrap_err();
    assert!(e.to_string().contains("-l"), "{e}");
    let mut raw = support::operator(c.addr).await;
    let status = raw
        .list_workloads(pss_proto::v1::ListRequest {
            label_selector: "=x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("label_selector"),
        "{}",
        status.message()
    );

    // Invalid labels in a manifest name the field and line.
    let bad = "kind: Workload\nmetadata:\n  name: x\n  labels: {\"-bad\": v}\nspec:\n  podSpec:\n    containers: [{name: a, image: a}]\n";
    let e = apply(&c, bad).await.unwrap_err().to_string();
    assert!(
        e.contains("metadata.labels") && e.contains("(line 4)"),
        "{e}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let text = "kind: Workload\nmetadata: {name: a}\nspec:\n  replicas: -1\n  placement: nowhere\n  podSpec:\n    containers:\n      - name: a\n        imag: x\n---\nkind: Service\nmetadata: {name: s}\nspec: {workload: a, port: 70000}\n";
    let e = apply(&c, text).await.unwrap_err().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert!(lines.len() >= 4, "{e}");
    assert!(e.contains("spec.replicas") && e.contains("(line 4)"), "{e}");
    assert!(
        e.contains("spec.placement") && e.contains("(line 5)"),
        "{e}"
    );
    assert!(e.contains("imag"), "{e}");
    assert!(e.contains("document 2") && e.contains("spec.port"), "{e}");
    // The controller (for raw clients) says the same; nothing was applied.
    let mut raw = support::operator(c.addr).await;
    let status = raw
        .apply(pss_proto::v1::ApplyRequest {
            objects: Vec::new(),
            manifest: text.into(),
            source: "raw.yaml".into(),
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("spec.placement"),
        "{}",
        status.message()
    );
    assert_eq!(
        c.ctl(&["get", "workloads", "-o", "name"]).await.unwrap(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_drain_move_pods_without_dropping_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let stop = CancellationToken::new();
    let _a = FakeAgent::start("node-a", c.addr, stop.clone()).await;
    let _b = FakeAgent::start("node-b", c.addr, stop.clone()).await;
    apply(&c, &web(2, "web:1", "")).await.unwrap();
    eventually(Duration::from_secs(20), "2 web pods ready", || async {
        (ready_web(&c).await.len() == 2).then_some(())
    })
    .await;
    let (addr, handle, stop_proxy) = start_proxy(c.addr, "web").await;
    eventually(
        Duration::from_secs(20),
        "proxy holds 2 endpoints",
        || async { (handle.service("web").unwrap().backends().len() == 2).then_some(()) },
    )
    .await;
    let client = ClientLoop::with_probe(addr, line_probe);
    let start = Instant::now();

    // Cordon: new pods avoid node-a; its pods stay.
    assert_eq!(
        c.ctl(&["cordon", "node/node-a"]).await.unwrap(),
        "node/node-a cordoned\n"
    );
    let nodes = c.ctl(&["get", "nodes"]).await.unwrap();
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    c.ctl(&["scale", "workload/web", "--replicas", "4"])
        .await
        .unwrap();
    let placed = eventually(Duration::from_secs(20), "4 web pods ready", || async {
        let ready = ready_web(&c).await;
        (ready.len() == 4).then_some(ready)
    })
    .await;
    assert_eq!(placed.iter().filter(|p| p["node"] == "node-a").count(), 1);

    // Drain: every pod leaves node-a, each replacement ready before the old one stops.
    let out = c
        .ctl(&["drain", "node/node-a", "--timeout", "30s"])
        .await
        .unwrap();
    assert!(out.contains("node/node-a drained"), "{out}");
    let after = ready_web(&c).await;
    assert_eq!(after.len(), 4);
    assert!(after.iter().all(|p| p["node"] == "node-b"), "{after:?}");
    let node = json(&c, &["get", "node", "node-a"]).await;
    assert_eq!(node["cordoned"], true);
    assert_eq!(node["draining"], true);
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("its node is drained"), "{events}");

    // Uncordon: schedulable again, and new pods may go there.
    c.ctl(&["uncordon", "node/node-a"]).await.unwrap();
    let node = json(&c, &["get", "node", "node-a"]).await;
    assert_eq!(node["cordoned"], false);
    assert_eq!(node["draining"], false);
    c.ctl(&["scale", "workload/web", "--replicas", "6"])
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "new pods on node-a", || async {
        let ready = ready_web(&c).await;
        (ready.len() == 6 && ready.iter().any(|p| p["node"] == "node-a")).then_some(())
    })
    .await;

    // delete pod/NAME: the pod goes and a replacement takes its place.
    let victim = ready_web(&c).await[0]["name"].as_str().unwrap().to_string();
    assert_eq!(
        c.ctl(&["delete", &format!("pod/{victim}")]).await.unwrap(),
        format!("pod/{victim} deleted\n")
    );
    eventually(
        Duration::from_secs(20),
        "the deleted pod is replaced",
        || async {
            let ready = ready_web(&c).await;
            (ready.len() == 6 && ready.iter().all(|p| p["name"] != victim.as_str())).then_some(())
        },
    )
    .await;
    let e = c
        .ctl(&["drain", "node/nope"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("node") && e.contains("nope"), "{e}");

    client.stop_expecting_no_failures(start, 50).await;
    stop_proxy.cancel();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_undo_restart_pause_and_auto_revert() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let stop = CancellationToken::new();
    let _a = FakeAgent::start("node-a", c.addr, stop.clone()).await;
    let _b = FakeAgent::start("node-b", c.addr, stop.clone()).await;
    let strategy = "  strategy: {maxSurge: 1, maxUnavailable: 0}\n  progressDeadline: 3s\n  autoRevert: true\n";
    apply(&c, &web(3, "web:1", strategy)).await.unwrap();
    let out = c
        .ctl(&["rollout", "status", "workload/web", "--timeout", "30s"])
        .await
        .unwrap();
    assert!(
        out.contains("successfully rolled out (revision 1)"),
        "{out}"
    );
    let (addr, handle, stop_proxy) = start_proxy(c.addr, "web").await;
    eventually(
        Duration::from_secs(20),
        "proxy holds 3 endpoints",
        || async { (handle.service("web").unwrap().backends().len() == 3).then_some(()) },
    )
    .await;
    let client = ClientLoop::with_probe(addr, line_probe);
    let start = Instant::now();

    // A new image rolls out, one surge pod at a time.
    apply(&c, &web(3, "web:2", strategy)).await.unwrap();
    let out = c
        .ctl(&["rollout", "status", "workload/web", "--timeout", "30s"])
        .await
        .unwrap();
    assert!(out.contains("revision 2"), "{out}");
    assert_eq!(workload(&c).await["images"], "web:2");
    let history = c
        .ctl(&["rollout", "history", "workload/web"])
        .await
        .unwrap();
    assert!(
        history.contains("web:1") && history.contains("web:2"),
        "{history}"
    );

    // Undo brings the previous image back, as a new revision.
    let out = c.ctl(&["rollout", "undo", "workload/web"]).await.unwrap();
    assert!(out.contains("rolled back to revision 1"), "{out}");
    c.ctl(&["rollout", "status", "workload/web", "--timeout", "30s"])
        .await
        .unwrap();
    let w = workload(&c).await;
    assert_eq!(w["images"], "web:1");
    assert_eq!(w["revision"], 3);
    let e = c
        .ctl(&["rollout", "undo", "workload/web", "--to-revision", "9"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no revision 9"), "{e}");

    // Restart replaces every pod with the same spec.
    let before: Vec<String> = ready_web(&c)
        .await
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    c.ctl(&["rollout", "restart", "workload/web"])
        .await
        .unwrap();
    c.ctl(&["rollout", "status", "workload/web", "--timeout", "30s"])
        .await
        .unwrap();
    let after = eventually(
        Duration::from_secs(20),
        "only restarted pods left",
        || async {
            let p = pods(&c).await;
            (p.len() == 3).then_some(p)
        },
    )
    .await;
    assert!(after
        .iter()
        .all(|p| !before.contains(&p["name"].as_str().unwrap().to_string())));

    // Pause: a new spec takes no step; status says so; resume finishes it.
    c.ctl(&["rollout", "pause", "workload/web"]).await.unwrap();
    apply(&c, &web(3, "web:3", strategy)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(workload(&c).await["updatedReplicas"], 0);
    let e = c
        .ctl(&["rollout", "status", "workload/web", "--timeout", "5s"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("paused"), "{e}");
    c.ctl(&["rollout", "resume", "workload/web"]).await.unwrap();
    c.ctl(&["rollout", "status", "workload/web", "--timeout", "30s"])
        .await
        .unwrap();
    assert_eq!(workload(&c).await["images"], "web:3");

    // A rollout that cannot progress fails past its deadline and reverts by itself.
    let broken = format!("{FAILING_IMAGE_PREFIX}web:4");
    apply(&c, &web(3, &broken, strategy)).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the broken rollout is reverted",
        || async {
            let events = c.ctl(&["get", "events"]).await.ok()?;
            (events.contains("RolloutFailed") && events.contains("RolloutReverted")).then_some(())
        },
    )
    .await;
    let out = c
        .ctl(&["rollout", "status", "workload/web", "--timeout", "30s"])
        .await
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(workload(&c).await["images"], "web:3");
    let history = c
        .ctl(&["rollout", "history", "workload/web"])
        .await
        .unwrap();
    assert!(history.contains("auto-revert from revision"), "{history}");
    eventually(
        Duration::from_secs(20),
        "no pod of the broken image left",
        || async {
            let p = pods(&c).await;
            (p.len() == 3 && p.iter().all(|p| p["ready"] == true)).then_some(())
        },
    )
    .await;

    client.stop_expecting_no_failures(start, 50).await;
    stop_proxy.cancel();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_apply_takes_objects_as_messages() {
    use pss_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let mut raw = support::operator(c.addr).await;
    let workload = pb::Workload {
        name: "typed".into(),
        replicas: 2,
        placement: "spread".into(),
        labels: [("app".to_string(), "typed".to_string())].into(),
        pod_spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: "c".into(),
                image: "img:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = pb::Service {
        name: "typed".into(),
        workload: "typed".into(),
        port: 8080,
        ..Default::default()
    };
    let typed = |objects: Vec<pb::typed_object::Object>| pb::ApplyRequest {
        objects: objects
            .into_iter()
            .map(|o| pb::TypedObject { object: Some(o) })
            .collect(),
        source: "typed-client".into(),
        ..Default::default()
    };
    let resp = raw
        .apply(typed(vec![
            pb::typed_object::Object::Workload(workload.clone()),
            pb::typed_object::Object::Service(service.clone()),
        ]))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<String> = resp
        .objects
        .iter()
        .map(|o| format!("{}/{} {}", o.kind, o.name, o.action))
        .collect();
    assert_eq!(actions, ["Workload/typed created", "Service/typed created"]);
    // The same objects as YAML would show: labels, defaults (strategy 25%/25%), target port.
    let w = json(&c, &["get", "workload", "typed"]).await;
    assert_eq!(w["labels"]["app"], "typed");
    assert_eq!(w["rollout"]["maxSurge"], "25%");
    let s = json(&c, &["get", "service", "typed"]).await;
    assert_eq!(s["targetPort"], 8080);
    // Applying them again changes nothing.
    let again = raw
        .apply(typed(vec![pb::typed_object::Object::Workload(
            workload.clone(),
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.objects[0].action, "unchanged");

    // Invalid objects are refused naming the object and the field; nothing is applied.
    let mut bad = workload.clone();
    bad.name = "typed-bad".into();
    bad.pod_spec.as_mut().unwrap().containers[0].image = String::new();
    let e = raw
        .apply(typed(vec![
            pb::typed_object::Object::Service(pb::Service {
                name: "first".into(),
                workload: "typed".into(),
                port: 81,
                ..Default::default()
            }),
            pb::typed_object::Object::Workload(bad),
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("objects[1] (Workload typed-bad)") && e.message().contains("image"),
        "{}",
        e.message()
    );
    assert!(c.ctl(&["get", "service", "first"]).await.is_err());
    let e = raw
        .apply(pb::ApplyRequest {
            manifest: "kind: Service".into(),
            objects: vec![pb::TypedObject {
                object: Some(pb::typed_object::Object::Service(service.clone())),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("not both"), "{}", e.message());
    let e = raw
        .apply(typed(vec![
            pb::typed_object::Object::Service(service.clone()),
            pb::typed_object::Object::Service(service),
        ]))
        .await
        .unwrap_err();
    assert!(e.message().contains("duplicate"), "{}", e.message());
    // More objects than a manifest may hold documents: refused before any is looked at.
    let e = raw
        .apply(typed(vec![
            pb::typed_object::Object::Service(
                pb::Service::default()
            );
            101
        ]))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("101 objects, above the limit of 100"),
        "{}",
        e.message()
    );
    // A 1 MiB label selector, and one of a million terms: refused at once.
    let huge = "a".repeat(1 << 20);
    let e = raw
        .list_pods(pb::ListRequest {
            label_selector: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().len() < 400, "{} bytes", e.message().len());
    let e = raw
        .watch(pb::WatchRequest {
            kind: "pods".into(),
            label_selector: "a=b,".repeat(1 << 18),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("above the limit of 32"),
        "{}",
        e.message()
    );
    // Waits are bounded: a day at most.
    let e = c
        .ctl(&["drain", "node/x", "--timeout", "48h"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 24h"), "{e}");
    let e = c
        .ctl(&["rollout", "status", "workload/typed", "--timeout=-1s"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("examples: 30s, 5m"), "{e}");
    let e = raw
        .apply(pb::ApplyRequest {
            objects: vec![pb::TypedObject { object: None }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("objects[0]: empty"), "{}", e.message());
}
