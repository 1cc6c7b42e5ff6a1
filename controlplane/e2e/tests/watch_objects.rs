//! Issue 12's watch API against a real controller: `Operator/Watch` lists at a revision, then
//! streams every change in order, resumes from a revision, filters by labels; a scale reaches
//! a watcher promptly; `pssctl get -w` prints the list then a line per change.

mod support;

use std::time::{Duration, Instant};

use pss_proto::v1 as pb;
use pss_proto::v1::watch_event::{Object, Type};
use support::fake_agent::FakeAgent;
use support::{eventually, RunningController, SharedBuf, TOKEN};
use tokio_util::sync::CancellationToken;

const APP: &str = "kind: Workload\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  replicas: 1\n  podSpec:\n    containers: [{name: web, image: web:1}]\n---\nkind: Workload\nmetadata:\n  name: other\n  labels: {app: other}\nspec:\n  replicas: 1\n  podSpec:\n    containers: [{name: o, image: o:1}]\n";

async fn apply(c: &RunningController, yaml: &str) {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    c.ctl(&["apply", "-f", f.path().to_str().unwrap()])
        .await
        .unwrap();
}

fn replicas_of(e: &pb::WatchEvent) -> Option<(String, u32)> {
    match &e.object {
        Some(Object::Workload(w)) => Some((w.name.clone(), w.replicas)),
        _ => None,
    }
}

/// Reads events until `f` accepts one (panics after `timeout`).
async fn next_matching(
    stream: &mut tonic::Streaming<pb::WatchEvent>,
    timeout: Duration,
    mut f: impl FnMut(&pb::WatchEvent) -> bool,
) -> pb::WatchEvent {
    tokio::time::timeout(timeout, async {
        loop {
            let e = stream.message().await.unwrap().expect("stream open");
            if f(&e) {
                return e;
            }
        }
    })
    .await
    .expect("the event arrives in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_lists_then_streams_changes_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let stop = CancellationToken::new();
    let _agent = FakeAgent::start("node-w", c.addr, stop.clone()).await;
    apply(&c, APP).await;
    let mut raw = support::operator(c.addr).await;

    // The list: both workloads, then SYNCED at one revision; a selector narrows it.
    let mut all = raw
        .watch(pb::WatchRequest {
            kind: "workloads".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut listed = Vec::new();
    let synced = loop {
        let e = all.message().await.unwrap().unwrap();
        if e.r#type == Type::Synced as i32 {
            break e;
        }
        assert_eq!(e.r#type, Type::Added as i32);
        listed.push(replicas_of(&e).unwrap().0);
    };
    listed.sort();
    assert_eq!(listed, ["other", "web"]);
    let mut only_web = raw
        .watch(pb::WatchRequest {
            kind: "workloads".into(),
            label_selector: "app=web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = only_web.message().await.unwrap().unwrap();
    assert_eq!(replicas_of(&first).unwrap().0, "web");
    assert_eq!(
        only_web.message().await.unwrap().unwrap().r#type,
        Type::Synced as i32
    );

    // Scales reach the watcher promptly (median of five under 100 ms).
    let mut latencies = Vec::new();
    for replicas in 2..=6u32 {
        let started = Instant::now();
        c.ctl(&["scale", "workload/web", "--replicas", &replicas.to_string()])
            .await
            .unwrap();
        next_matching(&mut only_web, Duration::from_secs(5), |e| {
            replicas_of(e) == Some(("web".into(), replicas))
        })
        .await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    eprintln!("scale -> watch event: {latencies:?}");
    assert!(
        latencies[2] <= Duration::from_millis(100),
        "median {:?}",
        latencies[2]
    );
    // The unfiltered watch saw the same scales, in order, with increasing revisions.
    let mut revisions = Vec::new();
    let mut web_replicas = Vec::new();
    let last = next_matching(&mut all, Duration::from_secs(5), |e| {
        revisions.push(e.revision);
        if let Some(("web", n)) = replicas_of(e).as_ref().map(|(w, n)| (w.as_str(), *n)) {
            // Before the first scale, web may change at 1 replica (its pod starting after the
            // list): a legitimate MODIFIED, not one of the scales.
            if (n > 1 || !web_replicas.is_empty()) && web_replicas.last() != Some(&n) {
                web_replicas.push(n);
            }
        }
        replicas_of(e) == Some(("web".into(), 6))
    })
    .await;
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert!(revisions[0] > synced.revision);
    // (Updates at 1 replica may come first: its pod turning ready after the list.)
    web_replicas.retain(|&n| n != 1);
    assert_eq!(web_replicas, [2, 3, 4, 5, 6]);

    // Resume from the SYNCED revision: the same changes again, then SYNCED.
    let mut resumed = raw
        .watch(pb::WatchRequest {
            kind: "workloads".into(),
            resume_from: synced.revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let replayed = next_matching(&mut resumed, Duration::from_secs(5), |e| {
        replicas_of(e) == Some(("web".into(), 6))
    })
    .await;
    assert_eq!(replayed.revision, last.revision);

    // Deleting shows as DELETED; a revision never issued and an unknown kind are refused.
    c.ctl(&["delete", "workload/other"]).await.unwrap();
    let deleted = next_matching(&mut all, Duration::from_secs(5), |e| {
        e.r#type == Type::Deleted as i32 && replicas_of(e).is_some()
    })
    .await;
    assert_eq!(replicas_of(&deleted).unwrap().0, "other");
    let e = raw
        .watch(pb::WatchRequest {
            kind: "workloads".into(),
            resume_from: u64::MAX,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e = raw
        .watch(pb::WatchRequest {
            kind: "secrets".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pssctl_get_watch_prints_the_list_then_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let stop = CancellationToken::new();
    let _agent = FakeAgent::start("node-w", c.addr, stop.clone()).await;
    apply(&c, APP).await;
    eventually(Duration::from_secs(20), "2 pods", || async {
        let out = c.ctl(&["get", "pods", "-o", "name"]).await.ok()?;
        (out.lines().count() == 2).then_some(())
    })
    .await;
    let printed = SharedBuf::default();
    let task = {
        let (addr, out) = (c.addr.to_string(), printed.clone());
        let ca = support::ca_file(c.addr).unwrap().display().to_string();
        tokio::spawn(async move {
            let argv = [
                "pssctl",
                "--controller",
                addr.as_str(),
                "--token",
                TOKEN,
                "--ca",
                ca.as_str(),
                "get",
                "workloads",
                "-w",
            ];
            let cli = <pssctl::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let mut out = out;
            pssctl::execute(cli, &mut out).await
        })
    };
    eventually(Duration::from_secs(10), "the list", || async {
        let t = printed.text();
        (t.contains("NAME") && t.contains("web") && t.contains("other")).then_some(())
    })
    .await;
    c.ctl(&["scale", "workload/web", "--replicas", "3"])
        .await
        .unwrap();
    let text = eventually(Duration::from_secs(10), "a MODIFIED line", || async {
        let t = printed.text();
        t.lines()
            .any(|l| l.starts_with("MODIFIED") && l.contains("web") && l.contains(" 3 "))
            .then_some(t)
    })
    .await;
    assert!(text.lines().next().unwrap().starts_with("NAME"), "{text}");
    let e = c.ctl(&["get", "events", "-w"]).await.unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    task.abort();
    stop.cancel();
}
