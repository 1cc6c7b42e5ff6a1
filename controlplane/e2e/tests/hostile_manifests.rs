//! The hostile corpus (`controlplane/core/tests/data/hostile/`) through the controller's gRPC
//! API, without Podman: every file is refused by pssctl before dialing and, sent raw to the
//! server, refused there too with `InvalidArgument`, quickly, with a short message (a message
//! echoing megabytes of input used to reach the client as `Stream removed`), and the store is
//! left unchanged.

mod support;

use std::time::{Duration, Instant};

use pss_proto::v1::ApplyRequest;
use pssctl::CliError;
use support::{repo_path, RunningController};

/// Longest error the server may send back.
const MAX_ERROR_LEN: usize = 1024;

/// Generous bound on the time the server takes to refuse any manifest.
const PATIENCE: Duration = Duration::from_secs(5);

/// Sends `manifest` straight to the server, which must refuse it quickly and briefly.
async fn refused_raw(c: &RunningController, name: &str, manifest: String) {
    let mut op = support::operator(c.addr).await;
    let start = Instant::now();
    let status = op
        .apply(ApplyRequest {
            objects: Vec::new(),
            manifest,
            source: name.to_string(),
        })
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{name}: {status:?}"
    );
    assert!(
        status.message().len() <= MAX_ERROR_LEN,
        "{name}: {} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains(name),
        "{name}: {}",
        status.message()
    );
    assert!(took < PATIENCE, "{name}: took {took:?}");
}

async fn snapshot(c: &RunningController) -> String {
    let mut s = String::new();
    for kind in ["workloads", "services", "autoscalers"] {
        s += &c.ctl(&["get", kind, "-o", "json"]).await.unwrap();
    }
    s
}

#[tokio::test]
async fn the_hostile_corpus_is_refused_by_pssctl_and_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    c.ctl(&[
        "apply",
        "-f",
        &repo_path("examples/my-app.yaml").display().to_string(),
    ])
    .await
    .unwrap();
    let before = snapshot(&c).await;

    let corpus = repo_path("controlplane/core/tests/data/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 60, "corpus has {} files", files.len());
    for f in &files {
        let path = f.display().to_string();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let err = c.ctl(&["apply", "-f", &path]).await.unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)), "{path}: {err}");
        assert!(err.to_string().contains(&name), "{path}: {err}");
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        refused_raw(&c, &name, text).await;
    }
    assert_eq!(snapshot(&c).await, before, "the store is unchanged");
    c.stop().await;
}

#[tokio::test]
async fn large_hostile_manifests_are_refused_quickly_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let workload = |containers: &str| {
        format!("kind: Workload\nmetadata: {{name: my-app}}\nspec:\n  podSpec:\n    containers:\n{containers}")
    };
    let cases = [
        ("100k-brackets.yaml", "[".repeat(100_000)),
        ("100k-braces.yaml", "{".repeat(100_000)),
        (
            "1-MB-image.yaml",
            workload(&format!(
                "      - {{name: web, image: {}}}\n",
                "a".repeat(1_000_000)
            )),
        ),
        (
            "10000-containers.yaml",
            workload(
                &(0..10_000)
                    .map(|i| format!("      - {{name: c{i}, image: i}}\n"))
                    .collect::<String>(),
            ),
        ),
        (
            "over-1-MiB.yaml",
            format!("# {}\n", "x".repeat(1 << 20)),
        ),
        (
            "replicas-one-billion.yaml",
            "kind: Workload\nmetadata: {name: my-app}\nspec:\n  replicas: 1000000000\n  podSpec:\n    containers: [{name: web, image: i}]\n".to_string(),
        ),
    ];
    for (name, manifest) in cases {
        refused_raw(&c, name, manifest).await;
    }
    // The source name is echoed in every error: a huge one is cut short too.
    let status = support::operator(c.addr)
        .await
        .apply(ApplyRequest {
            objects: Vec::new(),
            manifest: "[".repeat(100),
            source: "s".repeat(1 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().len() <= MAX_ERROR_LEN,
        "{} bytes",
        status.message().len()
    );
    assert_eq!(
        c.ctl(&["get", "workloads"]).await.unwrap(),
        "No workloads found.\n"
    );
    c.stop().await;
}

/// `Scale` and `Autoscale` above the replica limit, sent raw. 5,000 is above the default limit
/// (1,000) yet small enough not to hurt the test machine if it were accepted.
#[tokio::test]
async fn scale_and_autoscale_above_the_replica_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    c.ctl(&[
        "apply",
        "-f",
        &repo_path("examples/my-app.yaml").display().to_string(),
    ])
    .await
    .unwrap();
    let mut op = support::operator(c.addr).await;
    let status = op
        .scale(pss_proto::v1::ScaleRequest {
            workload: "my-app".into(),
            replicas: 5_000,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("5000 is above the limit of 1000 (pss-controller --max-replicas)"),
        "{}",
        status.message()
    );
    let status = op
        .autoscale(pss_proto::v1::AutoscaleRequest {
            workload: "my-app".into(),
            min_replicas: 1,
            max_replicas: 5_000,
            cpu_percent: 50,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("above the limit of 1000"),
        "{}",
        status.message()
    );
    let v: serde_json::Value =
        serde_json::from_str(&c.ctl(&["get", "workloads", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!(v["items"][0]["replicas"], 3);
    c.stop().await;
}
