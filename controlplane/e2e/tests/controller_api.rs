//! The controller's gRPC API end to end, without Podman: pssctl's own code applies the examples
//! to a controller on loopback backed by a real SQLite file, lists them, survives a restart, and
//! refuses bad tokens and bad manifests without changing anything.

mod support;

use pssctl::CliError;
use support::{repo_path, RunningController};

fn example(name: &str) -> String {
    repo_path(&format!("examples/{name}")).display().to_string()
}

#[tokio::test]
async fn applies_examples_lists_them_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pss.db");
    let c = RunningController::start(&db).await;

    let out = c
        .ctl(&["apply", "-f", &example("my-app.yaml")])
        .await
        .unwrap();
    assert_eq!(out.trim(), "workload/my-app created");
    let out = c
        .ctl(&["apply", "-f", &example("my-service.yaml")])
        .await
        .unwrap();
    assert_eq!(out.trim(), "service/my-service created");
    let out = c
        .ctl(&["apply", "-f", &example("my-autoscaler.yaml")])
        .await
        .unwrap();
    assert_eq!(out.trim(), "autoscalepolicy/my-autoscaler created");
    // Applying the same file again changes nothing.
    let out = c
        .ctl(&["apply", "-f", &example("my-app.yaml")])
        .await
        .unwrap();
    assert_eq!(out.trim(), "workload/my-app unchanged");

    let workloads = c.ctl(&["get", "workloads"]).await.unwrap();
    let lines: Vec<&str> = workloads.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{workloads}");
    assert!(
        lines[1].starts_with("my-app ") && lines[1].contains(" spread "),
        "{workloads}"
    );
    let services = c.ctl(&["get", "services"]).await.unwrap();
    assert!(
        services.contains("my-service") && services.contains("my-app"),
        "{services}"
    );
    let hpas = c.ctl(&["get", "autoscalers", "-o", "json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&hpas).unwrap();
    assert_eq!(v["items"][0]["name"], "my-autoscaler");
    assert_eq!(v["items"][0]["minReplicas"], 2);
    assert_eq!(v["items"][0]["maxReplicas"], 10);

    // No node is registered: the three pods stay Pending with the reason in events.
    let pods = support::eventually(
        std::time::Duration::from_secs(10),
        "3 pending pods",
        || async {
            let out = c.ctl(&["get", "pods", "-o", "json"]).await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            (v["items"].as_array().unwrap().len() == 3).then_some(v)
        },
    )
    .await;
    for p in pods["items"].as_array().unwrap() {
        assert_eq!(p["phase"], "Pending");
        assert_eq!(p["reason"], "Unschedulable");
        let name = p["name"].as_str().unwrap();
        let suffix = name
            .strip_prefix("my-app-")
            .expect("pods are named <workload>-<suffix>");
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit()),
            "{name}"
        );
    }
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("FailedScheduling"), "{events}");

    // `pssctl autoscale` changes the workload's one policy, whatever its name; a second policy
    // for the same workload is refused.
    let out = c
        .ctl(&[
            "autoscale",
            "workload/my-app",
            "--cpu",
            "60",
            "--mem",
            "0",
            "--min",
            "3",
            "--max",
            "8",
        ])
        .await
        .unwrap();
    assert!(
        out.starts_with("autoscaler/my-autoscaler configured"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&c.ctl(&["get", "autoscalers", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["minReplicas"], 3);
    assert_eq!(v["items"][0]["targetCpuPercent"], 60);
    let second = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        second.path(),
        "kind: AutoScalePolicy\nmetadata: {name: other}\nspec: {workload: my-app, minReplicas: 1, maxReplicas: 2, cpu: 50}\n",
    )
    .unwrap();
    let err = c
        .ctl(&["apply", "-f", second.path().to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("already has the autoscaler my-autoscaler"),
        "{err}"
    );

    let scaled = c
        .ctl(&["scale", "workload/my-app", "--replicas", "5"])
        .await
        .unwrap();
    let mut lines = scaled.lines();
    assert_eq!(
        lines.next(),
        Some("workload/my-app scaled from 3 to 5 replicas")
    );
    // The examples include an autoscaler for my-app: scale says who owns the count.
    assert!(
        lines
            .next()
            .is_some_and(|l| l.contains("autoscaler/my-autoscaler owns")),
        "{scaled}"
    );
    let pods_before = c.ctl(&["get", "pods", "-o", "json"]).await.unwrap();
    c.stop().await;

    // Same file, new controller: everything is still there.
    let c = RunningController::start(&db).await;
    let v: serde_json::Value =
        serde_json::from_str(&c.ctl(&["get", "workloads", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!(v["items"][0]["name"], "my-app");
    assert_eq!(v["items"][0]["replicas"], 5);
    let services = c.ctl(&["get", "services", "-o", "yaml"]).await.unwrap();
    assert!(services.contains("name: my-service"), "{services}");
    let hpas = c.ctl(&["get", "autoscalers"]).await.unwrap();
    assert!(hpas.contains("my-autoscaler"), "{hpas}");
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("Scaled"), "{events}");
    let before: serde_json::Value = serde_json::from_str(&pods_before).unwrap();
    let after: serde_json::Value =
        serde_json::from_str(&c.ctl(&["get", "pods", "-o", "json"]).await.unwrap()).unwrap();
    for p in before["items"].as_array().unwrap() {
        assert!(
            after["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == p["name"]),
            "pod {} kept",
            p["name"]
        );
    }

    c.ctl(&["delete", "service/my-service"]).await.unwrap();
    let err = c.ctl(&["delete", "service/my-service"]).await.unwrap_err();
    assert!(matches!(err, CliError::NotFound(_)), "{err}");
    assert_eq!(err.to_string(), "service \"my-service\" not found");
    c.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    // pssctl itself refuses to send no token or a weak one, saying how to make one.
    for token in ["", "short"] {
        let err = c.ctl_with_token(token, &["get", "pods"]).await.unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "token {token:?}: {err}");
        assert!(err.to_string().contains("/dev/urandom"), "{err}");
    }
    for token in ["wrong-token-0123456789"] {
        let err = c.ctl_with_token(token, &["get", "pods"]).await.unwrap_err();
        assert!(
            matches!(err, CliError::Unauthenticated(_)),
            "token {token:?}: {err}"
        );
        assert!(err.to_string().contains("refused the credential"), "{err}");
        let err = c
            .ctl_with_token(token, &["apply", "-f", &example("my-app.yaml")])
            .await
            .unwrap_err();
        assert!(matches!(err, CliError::Unauthenticated(_)));
    }
    // Nothing was applied by the refused calls.
    assert_eq!(
        c.ctl(&["get", "workloads"]).await.unwrap(),
        "No workloads found.\n"
    );

    // Every service refuses: the node registry and the endpoint watch too.
    use pss_proto::auth::BearerToken;
    use pss_proto::v1::{
        endpoint_watch_client::EndpointWatchClient, node_registry_client::NodeRegistryClient,
    };
    let channel = support::channel(c.addr).await;
    let mut reg =
        NodeRegistryClient::with_interceptor(channel.clone(), BearerToken::new("nope").unwrap());
    let err = reg
        .register(pss_proto::v1::RegisterNodeRequest {
            name: "n".into(),
            agent_address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut watch = EndpointWatchClient::with_interceptor(channel, BearerToken::new("").unwrap());
    let err = watch
        .watch_endpoints(pss_proto::v1::WatchEndpointsRequest {
            service: "s".into(),
            known_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.stop().await;
}

#[tokio::test]
async fn an_unreachable_controller_is_one_clear_error() {
    // A port nobody listens on: bind, learn it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let err = support::ctl_raw(&[
        "pssctl",
        "--controller",
        &addr,
        "--token",
        support::TOKEN,
        "--insecure",
        "get",
        "pods",
    ])
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot reach the controller at {addr}")),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[tokio::test]
async fn invalid_manifests_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    c.ctl(&["apply", "-f", &example("my-app.yaml")])
        .await
        .unwrap();
    let snapshot = || async {
        let mut s = String::new();
        for kind in ["workloads", "services", "autoscalers"] {
            s += &c.ctl(&["get", kind, "-o", "json"]).await.unwrap();
        }
        s
    };
    let before = snapshot().await;

    let corpus = repo_path("controlplane/core/tests/data/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus has {} files", files.len());
    for f in &files {
        let path = f.display().to_string();
        // Through pssctl: refused locally with the file named.
        let err = c.ctl(&["apply", "-f", &path]).await.unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)), "{path}: {err}");
        assert!(
            err.to_string()
                .contains(f.file_name().unwrap().to_str().unwrap()),
            "{path}: error names the file: {err}"
        );
        // Straight to the server, bypassing pssctl's local check: refused as well.
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        let mut op = support::operator(c.addr).await;
        let status = op
            .apply(pss_proto::v1::ApplyRequest {
                objects: Vec::new(),
                manifest: text,
                source: path.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{path}: {status:?}"
        );
    }
    assert_eq!(snapshot().await, before, "the store is unchanged");
    c.stop().await;
}

#[test]
fn the_controller_binary_refuses_weak_tokens_and_reads_token_files() {
    let bin = support::workspace_bin("pss-controller");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["--listen", "127.0.0.1:1", "--db"])
            .arg(dir.path().join("pss.db"))
            .args(args)
            .env_remove("PSS_TOKEN")
            .env_remove("PSS_TOKEN_FILE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for (args, env, expect) in [
        (
            vec!["--insecure"],
            vec![],
            "--insecure needs the shared token",
        ),
        (vec![], vec![("PSS_TOKEN", "x")], "at least 16 are required"),
        (
            vec![],
            vec![("PSS_TOKEN", "                    ")],
            "only printable ASCII",
        ),
        (
            vec!["--token-file", "/nonexistent/token"],
            vec![],
            "/nonexistent/token",
        ),
    ] {
        let out = run(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(stderr.contains(expect), "{args:?} {env:?}: {stderr}");
    }
    // A good token file passes the token check: the start then fails on the port instead
    // (port 1 needs privileges or is refused), proving the token was accepted.
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let out = run(
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--listen",
            "256.0.0.1:1",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("token"), "token accepted: {stderr}");
}

/// Issue 9: a 3 MB `source` was copied into events (then `get events` failed for everyone).
#[tokio::test]
async fn a_huge_source_name_is_cut_short_in_events_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let mut op = support::operator(c.addr).await;
    let huge = "s".repeat(3 << 20);
    let manifest = std::fs::read_to_string(example("my-app.yaml")).unwrap();
    op.apply(pss_proto::v1::ApplyRequest {
        objects: Vec::new(),
        manifest: manifest.clone(),
        source: huge.clone(),
    })
    .await
    .unwrap();
    let err = op
        .apply(pss_proto::v1::ApplyRequest {
            objects: Vec::new(),
            manifest: manifest.replace("kind: Workload", "kind: Nope"),
            source: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().len() < 2048,
        "error stays small: {} bytes",
        err.message().len()
    );
    let events = c.ctl(&["get", "events", "-o", "json"]).await.unwrap();
    assert!(
        events.len() < 16 * 1024,
        "events stay small: {} bytes",
        events.len()
    );
    assert!(
        events.contains("bytes)"),
        "the cut says how long the source was"
    );
    c.stop().await;
}

/// What a kubectl user reaches for first: `get KIND NAME`, `get KIND/NAME`, `get all`,
/// `-o name`, `apply -f DIR/`, `delete -f FILE`, `version`.
#[tokio::test]
async fn get_by_name_all_and_name_output_apply_a_directory_and_delete_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let examples = repo_path("examples");
    let applied = c
        .ctl(&["apply", "-f", examples.to_str().unwrap()])
        .await
        .unwrap();
    for obj in [
        "workload/my-app created",
        "service/my-service created",
        "autoscalepolicy/my-autoscaler created",
    ] {
        assert!(applied.contains(obj), "{applied}");
    }
    let one = c.ctl(&["get", "workloads", "my-app"]).await.unwrap();
    assert_eq!(one.lines().count(), 2, "header and one row: {one}");
    assert_eq!(c.ctl(&["get", "workload/my-app"]).await.unwrap(), one);
    let json = c
        .ctl(&["get", "svc/my-service", "-o", "json"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "my-service", "one object, not a list: {json}");
    let err = c.ctl(&["get", "workload", "nope"]).await.unwrap_err();
    assert_eq!(err.to_string(), "workload \"nope\" not found");
    assert!(matches!(
        c.ctl(&["get", "gizmos"]).await.unwrap_err(),
        CliError::Usage(_)
    ));
    let names = c.ctl(&["get", "workloads", "-o", "name"]).await.unwrap();
    assert_eq!(names, "workload/my-app\n");
    let all = c.ctl(&["get", "all"]).await.unwrap();
    for part in ["my-app", "my-service", "my-autoscaler"] {
        assert!(all.contains(part), "{all}");
    }
    let version = c.ctl(&["version"]).await.unwrap();
    assert_eq!(version.lines().count(), 2, "{version}");
    assert!(
        version.starts_with("pssctl ") && version.contains("pss-controller "),
        "{version}"
    );
    let deleted = c
        .ctl(&["delete", "-f", example("my-autoscaler.yaml").as_str()])
        .await
        .unwrap();
    assert_eq!(deleted, "autoscaler/my-autoscaler deleted\n");
    assert_eq!(
        c.ctl(&["get", "autoscalers"]).await.unwrap(),
        "No autoscalers found.\n"
    );
    c.stop().await;
}

/// Issue 9: an AutoScalePolicy manifest for a missing workload was accepted while
/// `pssctl autoscale` refused the same thing. Both refuse it now; in one file with its
/// workload it is fine.
#[tokio::test]
async fn an_autoscaler_needs_its_workload_in_the_store_or_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    let err = c
        .ctl(&["apply", "-f", &example("my-autoscaler.yaml")])
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("workload my-app not found"),
        "{err}"
    );
    assert_eq!(
        c.ctl(&["get", "autoscalers"]).await.unwrap(),
        "No autoscalers found.\n"
    );
    let both = dir.path().join("both.yaml");
    std::fs::write(
        &both,
        std::fs::read_to_string(example("my-app.yaml")).unwrap()
            + "---\n"
            + &std::fs::read_to_string(example("my-autoscaler.yaml")).unwrap(),
    )
    .unwrap();
    c.ctl(&["apply", "-f", both.to_str().unwrap()])
        .await
        .unwrap();
    assert!(c
        .ctl(&["get", "autoscalers"])
        .await
        .unwrap()
        .contains("my-autoscaler"));
    c.stop().await;
}

/// `top nodes` / `top pods` show the last reported usage; `scale` on an autoscaled workload
/// says who owns its replica count.
#[tokio::test]
async fn top_shows_usage_and_scale_names_the_owning_autoscaler() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    assert_eq!(c.ctl(&["top", "nodes"]).await.unwrap(), "No nodes found.\n");
    let stop = tokio_util::sync::CancellationToken::new();
    let _agent = support::fake_agent::FakeAgent::start("node-t", c.addr, stop.clone()).await;
    c.ctl(&["apply", "-f", &example("my-app.yaml")])
        .await
        .unwrap();
    let top = support::eventually(
        std::time::Duration::from_secs(20),
        "three pods running on the fake node",
        || async {
            let out = c.ctl(&["top", "pods"]).await.ok()?;
            (out.lines().count() == 4).then_some(out)
        },
    )
    .await;
    assert!(
        top.starts_with("NAME") && top.contains("node-t") && top.contains("CPU%"),
        "{top}"
    );
    let nodes = c.ctl(&["top", "nodes"]).await.unwrap();
    assert!(
        nodes.contains("node-t") && nodes.contains("MEMORY%"),
        "{nodes}"
    );

    let plain = c
        .ctl(&["scale", "workload/my-app", "--replicas", "2"])
        .await
        .unwrap();
    assert!(!plain.contains("autoscaler"), "{plain}");
    c.ctl(&["apply", "-f", &example("my-autoscaler.yaml")])
        .await
        .unwrap();
    let owned = c
        .ctl(&["scale", "workload/my-app", "--replicas", "4"])
        .await
        .unwrap();
    assert!(
        owned
            .contains("autoscaler/my-autoscaler owns this workload's replica count within [2, 10]"),
        "{owned}"
    );
    stop.cancel();
    c.stop().await;
}

/// `describe KIND/NAME`: the object in full and its own events (not another kind's of the same
/// name).
#[tokio::test]
async fn describe_shows_the_object_and_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    c.ctl(&["apply", "-f", &example("my-app.yaml")])
        .await
        .unwrap();
    c.ctl(&["scale", "workload/my-app", "--replicas", "2"])
        .await
        .unwrap();
    let out = c.ctl(&["describe", "workload/my-app"]).await.unwrap();
    assert!(
        out.contains("name: my-app") && out.contains("replicas: 2"),
        "{out}"
    );
    let events = out.split("Events:").nth(1).expect("an Events section");
    assert!(
        events.contains("Created") && events.contains("Scaled"),
        "{out}"
    );
    assert_eq!(
        c.ctl(&["describe", "workload", "my-app"]).await.unwrap(),
        out
    );
    let err = c.ctl(&["describe", "service/nope"]).await.unwrap_err();
    assert_eq!(err.to_string(), "service \"nope\" not found");
    assert!(matches!(
        c.ctl(&["describe", "workloads"]).await.unwrap_err(),
        CliError::Usage(_)
    ));
    c.stop().await;
}

/// Paging input off the happy path: a page size above the cap is capped, a token that is no
/// event id is refused naming it, and a huge token is just a position.
#[tokio::test]
async fn page_sizes_are_capped_and_bad_page_tokens_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = RunningController::start(&dir.path().join("pss.db")).await;
    c.ctl(&["apply", "-f", &example("my-app.yaml")])
        .await
        .unwrap();
    let mut op = support::operator(c.addr).await;
    let events = op
        .list_events(pss_proto::v1::ListRequest {
            page_size: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!events.events.is_empty() && events.events.len() <= 1_000);
    let err = op
        .list_events(pss_proto::v1::ListRequest {
            page_token: "x".repeat(1 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("is not an event id") && err.message().len() < 256,
        "{}",
        err.message()
    );
    let pods = op
        .list_pods(pss_proto::v1::ListRequest {
            page_token: "\u{0}".repeat(1 << 20),
            page_size: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pods.pods.len() <= 1_000);
    c.stop().await;
}
