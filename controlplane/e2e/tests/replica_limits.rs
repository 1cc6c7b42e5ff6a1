//! Issue 9, finding 1: one accepted command crash-looped the controller (`scale --replicas
//! 4294967295` made the scheduler allocate ~100 GB, again after every restart). Now the
//! controller refuses such a count with the limit named, and a database that already holds one
//! (written by an older version) starts cleanly: the workload is reported and not run.

mod support;

use pss_proto::v1 as pb;
use pss_store::{SqliteStore, StateStore};
use std::time::Duration;
use support::process::ControllerProcess;
use support::{eventually, repo_path};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_replica_counts_are_refused_and_a_stored_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pss.db");
    let app = repo_path("examples/my-app.yaml");
    let mut c = ControllerProcess::start(&db, &[]).await;
    c.ctl(&["apply", "-f", app.to_str().unwrap()])
        .await
        .unwrap();

    // Through pssctl: the error names the field, the value and the limit.
    let err = c
        .ctl(&["scale", "workload/my-app", "--replicas", "4294967295"])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("4294967295") && msg.contains("1000") && msg.contains("--max-replicas"),
        "{msg}"
    );
    // Through raw gRPC, past pssctl's own checks.
    let mut op = support::operator(c.addr).await;
    let status = op
        .scale(pb::ScaleRequest {
            workload: "my-app".into(),
            replicas: u32::MAX,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A manifest asking for a billion.
    let text = std::fs::read_to_string(&app)
        .unwrap()
        .replace("replicas: 3", "replicas: 1000000000");
    assert!(text.contains("1000000000"), "the example has replicas: 3");
    let status = op
        .apply(pb::ApplyRequest {
            objects: Vec::new(),
            manifest: text,
            source: "big.yaml".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("spec.replicas"),
        "{}",
        status.message()
    );
    assert!(c.alive(), "the controller is alive");
    let workloads = c.ctl(&["get", "workloads", "-o", "json"]).await.unwrap();
    assert!(
        workloads.contains("\"replicas\": 3"),
        "nothing changed: {workloads}"
    );

    // An older version stored u32::MAX: the controller starts on that database and stays up.
    c.kill();
    SqliteStore::open(&db)
        .unwrap()
        .set_replicas("my-app", u32::MAX)
        .unwrap();
    let mut c = ControllerProcess::start(&db, &["--reconcile-interval", "1s"]).await;
    let shown = eventually(
        Duration::from_secs(10),
        "the workload shows its problem",
        || async {
            let out = c.ctl(&["get", "workloads"]).await.ok()?;
            out.contains("PROBLEM").then_some(out)
        },
    )
    .await;
    assert!(
        shown.contains("not run") && shown.contains("--max-replicas"),
        "{shown}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.alive(), "no crash loop on the stored count");
    assert!(
        c.rss_kib() < 200 * 1024,
        "memory is bounded: {} KiB",
        c.rss_kib()
    );
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert_eq!(
        events.matches("InvalidSpec").count(),
        1,
        "reported once: {events}"
    );
    // Fixing it brings it back.
    c.ctl(&["scale", "workload/my-app", "--replicas", "2"])
        .await
        .unwrap();
    let out = c.ctl(&["get", "workloads"]).await.unwrap();
    assert!(!out.contains("PROBLEM"), "{out}");
}
