//! Issue 11, end to end: TLS on every connection (a recording relay sees nothing in clear),
//! clients that cannot verify the controller are refused, roles are enforced per method, a
//! deleted node's certificate is revoked, expired certificates are refused and a running agent
//! renews its own without dropping its pods, and a process squatting on a registered address
//! gets a TLS ClientHello and nothing else.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1 as pb;
use pss_security::member::{JoinOptions, Membership};
use pss_security::{Identity, Role};
use support::fake_agent::FakeAgent;
use support::relay::Relay;
use support::{ca_file, ctl_raw, eventually, fast_config, repo_path, RunningController, TOKEN};
use tokio_util::sync::CancellationToken;

async fn start(
    tune: impl FnOnce(&mut pss_controller::ControllerConfig),
) -> (tempfile::TempDir, RunningController) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config();
    tune(&mut config);
    let c = RunningController::start_with(&dir.path().join("pss.db"), config).await;
    (dir, c)
}

/// Joins as `role`/`name` with `token` (a join token), or with the operator token and the CA.
async fn join(
    c: &RunningController,
    role: Role,
    name: &str,
    token: Option<&str>,
) -> Result<Arc<Membership>, pss_security::Error> {
    let options = JoinOptions {
        controller: c.addr.to_string(),
        identity: Identity::new(role, name).unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("pss-e2e-sec-{name}-{}", rand::random::<u64>())),
        join_token: token.map(str::to_string),
        operator_token: token.is_none().then(|| TOKEN.to_string()),
        ca_pem: token.is_none().then(|| support::ca_pem(c.addr).unwrap()),
        ttl: Duration::ZERO,
    };
    let once = CancellationToken::new();
    once.cancel();
    Membership::obtain(options, &once).await
}

/// A channel to the controller authenticated by `m`'s certificate.
async fn channel_as(
    c: &RunningController,
    m: &Membership,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let dialer = m.dialer().unwrap();
    dialer
        .connect(dialer.endpoint(&c.addr.to_string()).unwrap())
        .await
}

async fn create_token(c: &RunningController, role: &str) -> String {
    c.ctl(&["token", "create", "--role", role])
        .await
        .unwrap()
        .trim()
        .to_string()
}

fn registration(name: &str, address: &str) -> pb::RegisterNodeRequest {
    pb::RegisterNodeRequest {
        name: name.into(),
        agent_address: address.into(),
        cpu_millis: 4000,
        memory_bytes: 4 << 30,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_between_pssctl_controller_and_agent_see_no_token_manifest_or_pod_name() {
    let (_dir, c) = start(|_| {}).await;
    let stop = CancellationToken::new();
    let agent_relay = Arc::new(std::sync::Mutex::new(None));
    let slot = agent_relay.clone();
    let _agent = FakeAgent::start_advertising("relayed", &[], c.addr, stop.clone(), move |a| {
        let r = Relay::start(Some(a));
        let addr = r.addr;
        *slot.lock().unwrap() = Some(r);
        addr
    })
    .await;
    let agent_relay = agent_relay.lock().unwrap().clone().unwrap();
    let ctl_relay = Relay::start(Some(c.addr));
    let (relay_addr, ca) = (
        ctl_relay.addr.to_string(),
        ca_file(c.addr).unwrap().display().to_string(),
    );
    let ctl = |args: &[&str]| {
        let mut argv = vec![
            "pssctl",
            "--controller",
            &relay_addr,
            "--token",
            TOKEN,
            "--ca",
            &ca,
        ];
        argv.extend_from_slice(args);
        let argv: Vec<String> = argv.into_iter().map(str::to_string).collect();
        async move {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            ctl_raw(&argv).await
        }
    };
    let example = repo_path("examples/my-app.yaml").display().to_string();
    ctl(&["apply", "-f", &example]).await.unwrap();
    let pods = eventually(Duration::from_secs(30), "3 pods running", || async {
        let out = ctl(&["get", "pods", "-o", "json"]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let running: Vec<String> = v["items"]
            .as_array()?
            .iter()
            .filter(|p| p["phase"] == "Running")
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        (running.len() == 3).then_some(running)
    })
    .await;
    for relay in [&ctl_relay, &agent_relay] {
        assert!(relay.bytes().len() > 1000, "traffic went through the relay");
        assert!(!relay.saw(TOKEN), "the token crossed in clear");
        assert!(!relay.saw("my-app"), "the workload name crossed in clear");
        assert!(
            !relay.saw("localhost/pss-demo"),
            "the manifest crossed in clear"
        );
        assert!(!relay.saw("GREETING"), "the manifest crossed in clear");
        for p in &pods {
            assert!(!relay.saw(p), "pod name {p} crossed in clear");
        }
    }
    stop.cancel();
    c.stop().await;
}

#[tokio::test]
async fn plaintext_clients_and_clients_of_another_ca_are_refused() {
    let (dir, c) = start(|_| {}).await;
    let addr = c.addr.to_string();
    let plain = ctl_raw(&[
        "pssctl",
        "--controller",
        &addr,
        "--token",
        TOKEN,
        "--insecure",
        "get",
        "pods",
    ])
    .await;
    assert!(
        plain.is_err(),
        "a plaintext client got an answer: {plain:?}"
    );
    let other = pss_security::ca::Ca::generate().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let err = ctl_raw(&[
        "pssctl",
        "--controller",
        &addr,
        "--token",
        TOKEN,
        "--ca",
        other_ca.to_str().unwrap(),
        "get",
        "pods",
    ])
    .await
    .unwrap_err();
    assert!(matches!(err, pssctl::CliError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // A join token pinning another CA: the joiner refuses the controller before sending it.
    let token = create_token(&c, "agent").await;
    let mut parts: Vec<String> = token.split('-').map(str::to_string).collect();
    parts[2] = hex::encode(other.digest());
    let wrong_pin = parts.join("-");
    let e = join(&c, Role::Agent, "pinned", Some(&wrong_pin))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("pins") || e.to_string().contains("certificate"),
        "{e}"
    );
    // The real token works.
    join(&c, Role::Agent, "pinned", Some(&token)).await.unwrap();
    c.stop().await;
}

#[tokio::test]
async fn roles_are_enforced_on_every_call() {
    let (_dir, c) = start(|_| {}).await;
    // An agent with a proxy token: refused.
    let proxy_token = create_token(&c, "proxy").await;
    let e = join(&c, Role::Agent, "sneaky", Some(&proxy_token))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("proxy join token cannot join as agent"),
        "{e}"
    );

    // A proxy: watches and reads, never writes, never registers.
    let proxy = join(&c, Role::Proxy, "edge", Some(&proxy_token))
        .await
        .unwrap();
    let channel = channel_as(&c, &proxy).await.unwrap();
    let mut op = pb::operator_client::OperatorClient::new(channel.clone());
    op.list_pods(pb::ListRequest::default()).await.unwrap();
    let manifest = std::fs::read_to_string(repo_path("examples/my-app.yaml")).unwrap();
    let denied = |s: tonic::Status, method: &str| {
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{method}: {s:?}");
        assert!(
            s.message().contains("role proxy") && s.message().contains(method),
            "{}",
            s.message()
        );
    };
    denied(
        op.apply(pb::ApplyRequest {
            manifest,
            source: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
        "Operator/Apply",
    );
    denied(
        op.scale(pb::ScaleRequest {
            workload: "w".into(),
            replicas: 3,
        })
        .await
        .unwrap_err(),
        "Operator/Scale",
    );
    denied(
        op.delete(pb::DeleteRequest {
            kind: "workload".into(),
            name: "w".into(),
        })
        .await
        .unwrap_err(),
        "Operator/Delete",
    );
    let mut reg = pb::node_registry_client::NodeRegistryClient::new(channel.clone());
    denied(
        reg.register(registration("edge", "127.0.0.1:1"))
            .await
            .unwrap_err(),
        "NodeRegistry/Register",
    );
    let mut creds = pb::credentials_client::CredentialsClient::new(channel);
    denied(
        creds
            .create_join_token(pb::CreateJoinTokenRequest {
                role: "operator".into(),
                ttl_seconds: 0,
            })
            .await
            .unwrap_err(),
        "Credentials/CreateJoinToken",
    );
    assert_eq!(
        c.ctl(&["get", "workloads"]).await.unwrap(),
        "No workloads found.\n"
    );

    // An agent speaks for its own node only; nothing changes when it tries another.
    let agent_token = create_token(&c, "agent").await;
    let a = join(&c, Role::Agent, "node-a", Some(&agent_token))
        .await
        .unwrap();
    let b = join(&c, Role::Agent, "node-b", Some(&agent_token))
        .await
        .unwrap();
    let mut reg_a =
        pb::node_registry_client::NodeRegistryClient::new(channel_as(&c, &a).await.unwrap());
    let mut reg_b =
        pb::node_registry_client::NodeRegistryClient::new(channel_as(&c, &b).await.unwrap());
    reg_a
        .register(registration("node-a", "127.0.0.1:1"))
        .await
        .unwrap();
    reg_b
        .register(registration("node-b", "127.0.0.1:2"))
        .await
        .unwrap();
    let before = c.ctl(&["get", "nodes", "-o", "json"]).await.unwrap();
    let refused = reg_a
        .heartbeat(pb::HeartbeatRequest {
            node: "node-b".into(),
            pods: vec![pb::PodReport {
                id: "stolen-1".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("node-b"),
        "{}",
        refused.message()
    );
    let refused = reg_a
        .report_pod_status(pb::PodStatusUpdate {
            node: "node-b".into(),
            pod: Some(pb::PodReport {
                id: "stolen-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused = reg_a
        .register(registration("node-b", "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let after = c.ctl(&["get", "nodes", "-o", "json"]).await.unwrap();
    let strip = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].clone(), n["address"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after), "nothing changed");
    // Agents do not read the operator API.
    let mut op_a = pb::operator_client::OperatorClient::new(channel_as(&c, &a).await.unwrap());
    let e = op_a
        .list_pods(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // Tokens are listed without secrets, and a revoked one buys nothing.
    let list = c.ctl(&["token", "list"]).await.unwrap();
    let id = agent_token.split('-').nth(3).unwrap();
    assert!(
        list.contains(id) && !list.contains(agent_token.split('-').nth(4).unwrap()),
        "{list}"
    );
    c.ctl(&["token", "revoke", id]).await.unwrap();
    let e = join(&c, Role::Agent, "late", Some(&agent_token))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    c.stop().await;
}

#[tokio::test]
async fn a_deleted_node_is_revoked_and_cannot_call_again() {
    let (_dir, c) = start(|_| {}).await;
    let token = create_token(&c, "agent").await;
    let m = join(&c, Role::Agent, "node-r", Some(&token)).await.unwrap();
    let mut reg =
        pb::node_registry_client::NodeRegistryClient::new(channel_as(&c, &m).await.unwrap());
    reg.register(registration("node-r", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(
        c.ctl(&["delete", "node/node-r"]).await.unwrap(),
        "node/node-r deleted\n"
    );
    let mut reg =
        pb::node_registry_client::NodeRegistryClient::new(channel_as(&c, &m).await.unwrap());
    let e = reg
        .register(registration("node-r", "127.0.0.1:1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("revoked"), "{}", e.message());
    let events = c.ctl(&["get", "events"]).await.unwrap();
    assert!(events.contains("NodeRevoked"), "{events}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_are_refused_and_a_running_agent_renews_without_dropping_pods() {
    let (_dir, c) = start(|cfg| cfg.cert_ttl = Duration::from_secs(6)).await;
    let token = create_token(&c, "agent").await;
    // A certificate left to expire: its handshake is refused.
    let stale = join(&c, Role::Agent, "stale", Some(&token)).await.unwrap();
    pb::node_registry_client::NodeRegistryClient::new(channel_as(&c, &stale).await.unwrap())
        .register(registration("stale", "127.0.0.1:1"))
        .await
        .unwrap();

    // A running agent (simulated runtime) with a 6 s certificate.
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = pss_agent::AgentConfig::new(c.addr.to_string(), "", "renewing");
    config.tls = pss_agent::AgentTls::Tls {
        state_dir: state.path().to_path_buf(),
        join_token: Some(token.clone()),
        ca_pem: None,
        cert_ttl: Duration::ZERO,
    };
    config.runtime = pss_agent::RuntimeKind::Sim;
    config.metrics_interval = Duration::from_millis(500);
    let runtime = Arc::new(pss_agent::Runtime::sim(
        "renewing".to_string(),
        "127.0.0.1".to_string(),
    ));
    let stop = CancellationToken::new();
    let agent = tokio::spawn(pss_agent::run_with_runtime(
        listener,
        config,
        runtime,
        stop.clone(),
    ));
    let manifest = state.path().join("w.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: pss/v1\nkind: Workload\nmetadata: {name: steady}\nspec:\n  replicas: 2\n  podSpec:\n    containers:\n      - {name: c, image: x}\n",
    )
    .unwrap();
    c.ctl(&["apply", "-f", manifest.to_str().unwrap()])
        .await
        .unwrap();
    let running = || async {
        let out = c.ctl(&["get", "pods", "-o", "json"]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let mut ids: Vec<String> = v["items"]
            .as_array()?
            .iter()
            .filter(|p| p["phase"] == "Running")
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        (ids.len() == 2).then_some(ids)
    };
    let pods = eventually(Duration::from_secs(30), "2 pods running", running).await;
    let cert_file = state.path().join("renewing/cert.pem");
    let serial = |pem: String| {
        pss_security::peer::identity_of(&pss_security::pem::first_cert_der(&pem).unwrap())
            .unwrap()
            .serial
    };
    let first = serial(std::fs::read_to_string(&cert_file).unwrap());

    tokio::time::sleep(Duration::from_secs(8)).await;
    // (TLS 1.3: the client may think the handshake done; the server refuses it, and the call.)
    let refused = match channel_as(&c, &stale).await {
        Err(_) => true,
        Ok(ch) => pb::node_registry_client::NodeRegistryClient::new(ch)
            .register(registration("stale", "127.0.0.1:1"))
            .await
            .is_err(),
    };
    assert!(refused, "an expired certificate was accepted");

    let now = serial(std::fs::read_to_string(&cert_file).unwrap());
    assert_ne!(first, now, "the agent renewed its certificate");
    assert_eq!(
        running().await,
        Some(pods.clone()),
        "the same pods still run"
    );
    let nodes = c.ctl(&["get", "nodes"]).await.unwrap();
    let line = nodes.lines().find(|l| l.starts_with("renewing")).unwrap();
    assert_eq!(line.split_whitespace().nth(1), Some("Ready"), "{nodes}");
    // The controller still reaches the agent (logs go through it).
    let logs = c.ctl(&["logs", &pods[0]]).await.unwrap();
    assert!(!logs.is_empty());
    stop.cancel();
    let _ = agent.await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatter_on_a_registered_address_gets_a_client_hello_and_nothing_else() {
    let (_dir, c) = start(|_| {}).await;
    let token = create_token(&c, "agent").await;
    let m = join(&c, Role::Agent, "node-s", Some(&token)).await.unwrap();
    let squatter = Relay::start(None);
    let mut reg =
        pb::node_registry_client::NodeRegistryClient::new(channel_as(&c, &m).await.unwrap());
    reg.register(registration("node-s", &squatter.addr.to_string()))
        .await
        .unwrap();
    let manifest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        manifest.path(),
        "apiVersion: pss/v1\nkind: Workload\nmetadata: {name: squat-app}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - {name: c, image: secret-image}\n",
    )
    .unwrap();
    c.ctl(&["apply", "-f", manifest.path().to_str().unwrap()])
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the controller dialled the squatter",
        || async { (!squatter.bytes().is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes = squatter.bytes();
    assert_eq!(bytes[0], 0x16, "a TLS handshake record, nothing else");
    for secret in [TOKEN, "squat-app", "secret-image", "RunPod"] {
        assert!(!squatter.saw(secret), "{secret} was sent to the squatter");
    }
    let pods = c.ctl(&["get", "pods"]).await.unwrap();
    assert!(!pods.contains("Running"), "{pods}");
    c.stop().await;
}
