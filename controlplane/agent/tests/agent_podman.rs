//! pss-agent on real Podman (issue 3): the agent runs in-process on 127.0.0.1:0 against a
//! recording `NodeRegistry` that stands in for the controller, and drives Podman through the
//! socket `scripts/podman-setup.sh` prepares (the tests run it when the socket does not answer).
//!
//! Every test uses its own node name (so its own `pss.node` label) and removes the pods it
//! made when it ends, pass or fail. Waits are generous polls: no timing assertions.

#[path = "common/podman.rs"]
mod podman_support;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podman_support::{podman_socket, PodCleanup};
use pss_agent::podman::Podman;
use pss_agent::{run, AgentConfig};
use pss_core::model::pod_id;
use pss_proto::auth::BearerToken;
use pss_proto::auth::TokenCheck;
use pss_proto::v1::agent_client::AgentClient;
use pss_proto::v1::node_registry_server::{NodeRegistry, NodeRegistryServer};
use pss_proto::v1::{
    Container, HeartbeatRequest, HeartbeatResponse, LogChunk, PodLogsRequest, PodPhase, PodReport,
    PodSpec, PodStatusAck, PodStatusUpdate, PortSpec, RegisterNodeRequest, RegisterNodeResponse,
    Resources, RunPodRequest, StopPodRequest,
};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const TOKEN: &str = "agent-test-token";
const DEMO_IMAGE: &str = "localhost/pss-demo:latest";
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------- the stand-in controller

/// What the agent told the registry.
#[derive(Default)]
struct Recorded {
    registrations: Vec<RegisterNodeRequest>,
    heartbeats: Vec<HeartbeatRequest>,
    updates: Vec<PodStatusUpdate>,
}

#[derive(Clone, Default)]
struct RecordingRegistry {
    recorded: Arc<Mutex<Recorded>>,
    /// Pods the next registrations answer as unwanted.
    stop_on_register: Arc<Mutex<Vec<String>>>,
    /// How many heartbeats to answer with `known = false`.
    unknown_heartbeats: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl NodeRegistry for RecordingRegistry {
    async fn register(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        self.recorded
            .lock()
            .unwrap()
            .registrations
            .push(request.into_inner());
        let stop_pods = self.stop_on_register.lock().unwrap().clone();
        Ok(Response::new(RegisterNodeResponse { stop_pods }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.recorded
            .lock()
            .unwrap()
            .heartbeats
            .push(request.into_inner());
        let unknown = self
            .unknown_heartbeats
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Ok(Response::new(HeartbeatResponse {
            stop_pods: Vec::new(),
            known: !unknown,
        }))
    }

    async fn report_pod_status(
        &self,
        request: Request<PodStatusUpdate>,
    ) -> Result<Response<PodStatusAck>, Status> {
        self.recorded
            .lock()
            .unwrap()
            .updates
            .push(request.into_inner());
        Ok(Response::new(PodStatusAck {
            stop_pods: Vec::new(),
        }))
    }
}

impl RecordingRegistry {
    /// Serves the registry on `listener` until `shutdown`.
    fn serve(&self, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
        let service = NodeRegistryServer::with_interceptor(self.clone(), TokenCheck::new(TOKEN));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                )
                .await
        });
    }

    fn registrations(&self) -> usize {
        self.recorded.lock().unwrap().registrations.len()
    }

    fn heartbeats(&self) -> usize {
        self.recorded.lock().unwrap().heartbeats.len()
    }
}

// ---------------------------------------------------------------------- harness

type Client = AgentClient<InterceptedService<Channel, BearerToken>>;

/// A registry, one in-process agent for a unique node, and a cleanup guard for its pods.
struct Harness {
    node: String,
    registry: RecordingRegistry,
    registry_addr: SocketAddr,
    /// Cancelled to take the registry away (replaced when it comes back).
    registry_shutdown: CancellationToken,
    agent: Option<RunningAgent>,
    podman: Podman,
    _cleanup: PodCleanup,
}

struct RunningAgent {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<pss_agent::Result<()>>,
}

impl Harness {
    async fn start(test: &str) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("pss_agent=debug"))
            .with_test_writer()
            .try_init();
        let socket = podman_socket();
        let node = pod_id(&format!("agent-{test}"), rand::random());
        let cleanup = PodCleanup::new(format!("pss.node={node}"));
        let registry = RecordingRegistry::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry_addr = listener.local_addr().unwrap();
        let registry_shutdown = CancellationToken::new();
        registry.serve(listener, registry_shutdown.clone());
        let mut h = Harness {
            node,
            registry,
            registry_addr,
            registry_shutdown,
            agent: None,
            podman: Podman::new(socket),
            _cleanup: cleanup,
        };
        h.start_agent().await;
        h
    }

    /// The controller goes away.
    fn stop_registry(&mut self) {
        self.registry_shutdown.cancel();
    }

    /// The controller comes back on the same address.
    async fn restart_registry(&mut self) {
        let listener = eventually("the registry's port is free again", || async {
            tokio::net::TcpListener::bind(self.registry_addr).await.ok()
        })
        .await;
        self.registry_shutdown = CancellationToken::new();
        self.registry
            .serve(listener, self.registry_shutdown.clone());
    }

    async fn start_agent(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = AgentConfig::new(self.registry_addr.to_string(), TOKEN, self.node.clone());
        config.socket = Some(podman_socket());
        config.metrics_interval = Duration::from_millis(500);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, config, shutdown.clone()));
        self.agent = Some(RunningAgent {
            addr,
            shutdown,
            task,
        });
    }

    async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown.cancel();
            agent.task.await.unwrap().expect("agent ran cleanly");
        }
    }

    async fn client_with(&self, token: &str) -> Client {
        let addr = self.agent.as_ref().expect("agent running").addr;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        AgentClient::with_interceptor(channel, BearerToken::new(token).unwrap())
    }

    async fn client(&self) -> Client {
        self.client_with(TOKEN).await
    }

    /// A pod's logs so far (`container` empty = all), as chunks and as text; `None` if the
    /// call failed.
    async fn logs(&self, pod: &str, container: &str) -> Option<(Vec<LogChunk>, String)> {
        let request = PodLogsRequest {
            pod: pod.to_string(),
            follow: false,
            container: container.to_string(),
            tail: 0,
        };
        let mut stream = self
            .client()
            .await
            .pod_logs(request)
            .await
            .ok()?
            .into_inner();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.message().await.ok()? {
            chunks.push(chunk);
        }
        let text = chunks
            .iter()
            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
            .collect();
        Some((chunks, text))
    }

    /// A fresh pod ID of `workload`.
    fn pod_id(&self, workload: &str) -> String {
        pod_id(workload, rand::random())
    }

    async fn run_pod(&self, id: &str, workload: &str, spec: PodSpec) -> PodReport {
        let request = RunPodRequest {
            id: id.into(),
            workload: workload.into(),
            spec: Some(spec),
            spec_hash: 42,
        };
        eventually("RunPod answers", || async {
            self.client()
                .await
                .run_pod(request.clone())
                .await
                .ok()
                .and_then(|r| r.into_inner().pod)
        })
        .await
    }

    fn updates_for(&self, pod: &str) -> Vec<PodReport> {
        let recorded = self.registry.recorded.lock().unwrap();
        recorded
            .updates
            .iter()
            .filter_map(|u| u.pod.clone())
            .filter(|p| p.id == pod)
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(agent) = &self.agent {
            agent.shutdown.cancel();
        }
        self.registry_shutdown.cancel();
    }
}

/// Polls `f` every 200 ms until it yields `Some`, for up to [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn web_spec() -> PodSpec {
    PodSpec {
        restarted_at_ms: 0,
        restart_policy: String::new(),
        containers: vec![Container {
            name: "web".into(),
            image: DEMO_IMAGE.into(),
            command: ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }],
        ports: vec![PortSpec {
            container_port: 80,
            protocol: "tcp".into(),
        }],
        readiness_probe: None,
    }
}

fn shell_spec(script: &str) -> PodSpec {
    PodSpec {
        restarted_at_ms: 0,
        restart_policy: String::new(),
        containers: vec![Container {
            name: "main".into(),
            image: DEMO_IMAGE.into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }],
        ports: Vec::new(),
        readiness_probe: None,
    }
}

/// HTTP/1.0 GET of `/` on `addr`.
async fn http_get(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pss\r\n\r\n").await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await??;
    Ok(body)
}

fn container_ids(report: &PodReport) -> Vec<String> {
    report.containers.iter().map(|c| c.id.clone()).collect()
}

// ---------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pod_creates_a_labelled_pod_that_serves_its_name_and_is_idempotent() {
    let h = Harness::start("run").await;
    let id = h.pod_id("web-run");
    let mut spec = web_spec();
    spec.containers[0].resources = Some(Resources {
        cpu_millis: 500,
        memory_bytes: 64 << 20,
    });
    let report = h.run_pod(&id, "web-run", spec.clone()).await;
    assert_eq!(report.phase, PodPhase::Running as i32, "{report:?}");
    assert_eq!(report.workload, "web-run");
    assert_eq!(report.spec_hash, 42);
    assert_eq!(report.containers.len(), 1);
    assert_eq!(report.containers[0].name, "web");
    let address = &report
        .addresses
        .first()
        .expect("an address for port 80")
        .address;
    assert_eq!(report.addresses[0].container_port, 80);
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    // A real Podman pod named by the ID, labelled, with the container joined to it.
    let pod = h
        .podman
        .inspect_pod(&id)
        .await
        .unwrap()
        .expect("the Podman pod exists");
    assert_eq!(pod.label("pss.pod"), Some(id.as_str()));
    assert_eq!(pod.label("pss.workload"), Some("web-run"));
    assert_eq!(pod.label("pss.node"), Some(h.node.as_str()));
    assert_eq!(pod.label("pss.spec-hash"), Some("42"));
    let names: Vec<_> = pod.app_containers().map(|c| c.name.clone()).collect();
    assert_eq!(names, [format!("{id}-web")]);

    // The resources are limits.
    let stats = h
        .podman
        .container_stats(&container_ids(&report))
        .await
        .unwrap();
    assert_eq!(stats[0].mem_limit, 64 << 20);

    // The page names the pod.
    let body = eventually("the pod answers HTTP", || async {
        http_get(address).await.ok()
    })
    .await;
    assert!(body.contains(&format!("hello from {id}")), "{body}");

    // RunPod again: the same pod, not a new one.
    let again = h.run_pod(&id, "web-run", spec).await;
    assert_eq!(container_ids(&again), container_ids(&report));
    assert_eq!(again.addresses, report.addresses);

    // Readiness flips to true and is pushed; heartbeats carry the pod with its usage.
    eventually("a ready status update", || async {
        h.updates_for(&id).iter().any(|p| p.ready).then_some(())
    })
    .await;
    let hb = eventually("a heartbeat with the pod ready and its memory", || async {
        let recorded = h.registry.recorded.lock().unwrap();
        recorded.heartbeats.iter().rev().find_map(|hb| {
            let pod = hb
                .pods
                .iter()
                .find(|p| p.id == id && p.ready && p.memory_bytes > 0)?;
            Some((hb.clone(), pod.clone()))
        })
    })
    .await;
    let (heartbeat, pod_report) = hb;
    assert_eq!(heartbeat.node, h.node);
    assert!(heartbeat.metrics.unwrap().memory_total_bytes > 0);
    assert!(pod_report.cpu_percent >= 0.0);
    assert!(pod_report.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_pushed_as_failed() {
    let h = Harness::start("kill").await;
    let id = h.pod_id("web-kill");
    let report = h.run_pod(&id, "web-kill", web_spec()).await;
    let container = report.containers[0].id.clone();
    h.podman.kill_container(&container, "KILL").await.unwrap();
    let failed = eventually("a Failed status update", || async {
        h.updates_for(&id)
            .into_iter()
            .find(|p| p.phase == PodPhase::Failed as i32)
    })
    .await;
    assert!(!failed.ready);
    assert_eq!(failed.reason, "Error");
    assert_eq!(failed.containers[0].exit_code, 137, "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_pod_removes_the_pod_and_is_idempotent() {
    let h = Harness::start("stop").await;
    let id = h.pod_id("web-stop");
    h.run_pod(&id, "web-stop", web_spec()).await;
    let mut client = h.client().await;
    let stopped = client
        .stop_pod(StopPodRequest {
            id: id.clone(),
            grace_period_ms: 1000,
        })
        .await
        .unwrap();
    assert!(stopped.into_inner().existed);
    assert!(
        h.podman.inspect_pod(&id).await.unwrap().is_none(),
        "the pod is gone from Podman"
    );
    assert!(h
        .podman
        .list_pods(&format!("pss.pod={id}"))
        .await
        .unwrap()
        .is_empty());
    let again = client
        .stop_pod(StopPodRequest {
            id: id.clone(),
            grace_period_ms: 1000,
        })
        .await
        .unwrap();
    assert!(!again.into_inner().existed);
    // An expected stop is not reported as a failure.
    assert!(h
        .updates_for(&id)
        .iter()
        .all(|p| p.phase != PodPhase::Failed as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_with_image_not_found_and_creates_nothing() {
    let h = Harness::start("noimage").await;
    let id = h.pod_id("ghost");
    let mut spec = web_spec();
    spec.containers[0].image = "localhost/pss-no-such-image:latest".into();
    let report = h.run_pod(&id, "ghost", spec).await;
    assert_eq!(report.phase, PodPhase::Failed as i32);
    assert_eq!(report.reason, "ImageNotFound");
    assert!(
        report.message.contains("pss-no-such-image"),
        "{}",
        report.message
    );
    assert!(
        h.podman.inspect_pod(&id).await.unwrap().is_none(),
        "nothing half-created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_return_what_the_container_printed() {
    let h = Harness::start("logs").await;
    let id = h.pod_id("talker");
    h.run_pod(
        &id,
        "talker",
        shell_spec("echo hello-out; echo hello-err >&2; exec sleep 3600"),
    )
    .await;
    let chunks = eventually("both lines in the logs", || async {
        let (chunks, text) = h.logs(&id, "").await?;
        (text.contains("hello-out") && text.contains("hello-err")).then_some(chunks)
    })
    .await;
    let by_stream: HashMap<u32, String> = chunks.iter().fold(HashMap::new(), |mut m, c| {
        m.entry(c.stream)
            .or_default()
            .push_str(&String::from_utf8_lossy(&c.data));
        m
    });
    assert!(by_stream[&1].contains("hello-out"), "{by_stream:?}");
    assert!(by_stream[&2].contains("hello-err"), "{by_stream:?}");
    assert!(chunks.iter().all(|c| c.container == "main"));

    let missing = h
        .client()
        .await
        .pod_logs(PodLogsRequest {
            pod: "no-such-pod".into(),
            follow: false,
            container: String::new(),
            tail: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_running_pods() {
    let mut h = Harness::start("adopt").await;
    let id = h.pod_id("web-adopt");
    let report = h.run_pod(&id, "web-adopt", web_spec()).await;
    eventually("first registration", || async {
        (!h.registry.recorded.lock().unwrap().registrations.is_empty()).then_some(())
    })
    .await;
    eventually("the pod is ready", || async {
        h.updates_for(&id).iter().any(|p| p.ready).then_some(())
    })
    .await;
    h.stop_agent().await;
    h.start_agent().await;
    let adopted = eventually("a second registration listing the pod", || async {
        let recorded = h.registry.recorded.lock().unwrap();
        recorded
            .registrations
            .get(1)
            .and_then(|r| r.pods.iter().find(|p| p.id == id).cloned())
    })
    .await;
    assert_eq!(
        container_ids(&adopted),
        container_ids(&report),
        "same containers, nothing recreated"
    );
    assert_eq!(adopted.phase, PodPhase::Running as i32);
    assert!(
        adopted.ready,
        "an adopted pod that serves is registered ready"
    );
    assert_eq!(adopted.workload, "web-adopt");
    assert_eq!(adopted.addresses, report.addresses);
    let registration = h.registry.recorded.lock().unwrap().registrations[1].clone();
    assert_eq!(registration.name, h.node);
    assert_eq!(
        registration.agent_address,
        h.agent.as_ref().unwrap().addr.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_token_are_unauthenticated() {
    let h = Harness::start("auth").await;
    let request = StopPodRequest {
        id: "whatever".into(),
        grace_period_ms: 0,
    };
    let wrong = eventually("the agent answers", || async {
        match h
            .client_with("wrong-token")
            .await
            .stop_pod(request.clone())
            .await
        {
            Err(s) if s.code() == tonic::Code::Unavailable => None,
            other => Some(other),
        }
    })
    .await;
    assert_eq!(wrong.unwrap_err().code(), tonic::Code::Unauthenticated);
    let missing = h.client_with("").await.stop_pod(request).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_the_controller_does_not_want_are_stopped_at_registration() {
    let mut h = Harness::start("unwanted").await;
    let id = h.pod_id("web-unwanted");
    h.run_pod(&id, "web-unwanted", web_spec()).await;
    h.stop_agent().await;
    h.registry.stop_on_register.lock().unwrap().push(id.clone());
    h.start_agent().await;
    eventually("the unwanted pod is removed", || async {
        h.podman
            .inspect_pod(&id)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_controller_does_not_know_registers_again() {
    let h = Harness::start("unknown").await;
    eventually("registered", || async {
        (h.registry.registrations() == 1).then_some(())
    })
    .await;
    h.registry.unknown_heartbeats.store(1, Ordering::SeqCst);
    eventually("registered again after known=false", || async {
        (h.registry.registrations() >= 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_running_while_the_controller_is_away_and_reporting_resumes() {
    let mut h = Harness::start("away").await;
    let id = h.pod_id("web-away");
    let report = h.run_pod(&id, "web-away", web_spec()).await;
    eventually("a heartbeat", || async {
        (h.registry.heartbeats() > 0).then_some(())
    })
    .await;

    h.stop_registry();
    // Several heartbeat intervals (500 ms) without a controller.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = h
        .podman
        .inspect_pod(&id)
        .await
        .unwrap()
        .expect("the pod is still there");
    assert_eq!(still.state, "Running");
    let before = h.registry.heartbeats();

    h.restart_registry().await;
    eventually("heartbeats resume", || async {
        (h.registry.heartbeats() > before).then_some(())
    })
    .await;
    let last = h
        .registry
        .recorded
        .lock()
        .unwrap()
        .heartbeats
        .last()
        .cloned()
        .unwrap();
    let pod = last
        .pods
        .iter()
        .find(|p| p.id == id)
        .expect("the pod is reported");
    assert_eq!(container_ids(pod), container_ids(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_retries_until_the_controller_answers() {
    let mut h = Harness::start("late").await;
    eventually("registered", || async {
        (h.registry.registrations() == 1).then_some(())
    })
    .await;
    h.stop_agent().await;
    h.stop_registry();
    h.start_agent().await;
    // The agent starts with no controller; it keeps trying with back-off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.registry.registrations(), 1);
    h.restart_registry().await;
    eventually("registered once the controller is back", || async {
        (h.registry.registrations() == 2).then_some(())
    })
    .await;
}

/// The agent refuses to start when Podman does not answer, naming the path it tried.
#[tokio::test]
async fn no_podman_socket_is_a_clear_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = AgentConfig::new("127.0.0.1:1", TOKEN, "nowhere");
    config.socket = Some("/nonexistent/podman.sock".into());
    let err = run(listener, config, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/podman.sock"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_pod_share_its_network_and_their_logs_are_tagged() {
    let h = Harness::start("pair").await;
    let id = h.pod_id("pair");
    let mut spec = web_spec();
    spec.containers.push(Container {
        name: "sidecar".into(),
        image: DEMO_IMAGE.into(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "until wget -qO- http://127.0.0.1:80/; do sleep 0.2; done; exec sleep 3600".into(),
        ],
        ..Default::default()
    });
    let report = h.run_pod(&id, "pair", spec).await;
    let names: Vec<_> = report.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"web") && names.contains(&"sidecar"),
        "{names:?}"
    );

    // The sidecar reached the web container on localhost: one network namespace.
    let chunks = eventually("the sidecar's fetch in the logs", || async {
        let (chunks, text) = h.logs(&id, "sidecar").await?;
        text.contains(&format!("hello from {id}")).then_some(chunks)
    })
    .await;
    assert!(chunks.iter().all(|c| c.container == "sidecar"));

    let unknown = h
        .client()
        .await
        .pod_logs(PodLogsRequest {
            pod: id.clone(),
            follow: false,
            container: "nope".into(),
            tail: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_port_does_not_accept_is_running_but_not_ready() {
    let h = Harness::start("deaf").await;
    let id = h.pod_id("deaf");
    let mut spec = shell_spec("exec sleep 3600");
    spec.ports = vec![PortSpec {
        container_port: 8080,
        protocol: "tcp".into(),
    }];
    let report = h.run_pod(&id, "deaf", spec).await;
    assert_eq!(report.phase, PodPhase::Running as i32);
    // Several probe rounds (2 s each) and heartbeats pass.
    let seen = eventually("heartbeats with the pod running for 3 s", || async {
        let recorded = h.registry.recorded.lock().unwrap();
        let running: Vec<PodReport> = recorded
            .heartbeats
            .iter()
            .filter_map(|hb| hb.pods.iter().find(|p| p.id == id).cloned())
            .filter(|p| p.phase == PodPhase::Running as i32)
            .collect();
        let first = running.first()?.started_at_ms;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        (now_ms - first > 3000 && running.len() >= 3).then_some(running)
    })
    .await;
    assert!(seen.iter().all(|p| !p.ready), "never ready in a heartbeat");
    assert!(
        h.updates_for(&id).iter().all(|p| !p.ready),
        "never reported ready"
    );
}

/// `pss-agent` refuses to start without a token, and names the socket it tried when Podman
/// does not answer.
#[test]
fn the_binary_needs_a_token_and_a_podman_socket() {
    let agent = env!("CARGO_BIN_EXE_pss-agent");
    let out = std::process::Command::new(agent)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("PSS_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    let out = std::process::Command::new(agent)
        .args(["--listen", "127.0.0.1:0", "--token", "weak"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a 4-byte token is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    let out = std::process::Command::new(agent)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--socket",
            "/nonexistent/p.sock",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/p.sock") && stderr.contains("no such file"),
        "{stderr}"
    );
}

/// Malformed, oversized and too many `--label`s, and a bad `--admin`, stop the binary before it
/// does anything, naming the flag.
#[test]
fn bad_labels_and_admin_addresses_are_refused_by_the_binary() {
    let agent = env!("CARGO_BIN_EXE_pss-agent");
    let run = |extra: &[String]| {
        let out = std::process::Command::new(agent)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--token",
                TOKEN,
                "--runtime",
                "sim",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--label".into(), "no-equals-sign".into()]);
    assert!(
        err.contains("--label") && err.contains("KEY=VALUE"),
        "{err}"
    );
    let err = run(&["--label=-bad=v".into()]);
    assert!(err.contains("label key"), "{err}");
    let err = run(&["--label".into(), format!("k={}", "v".repeat(100_000))]);
    // The value is cut short in the message, not echoed whole.
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains("above the limit of 63") && first.len() < 400,
        "{first}"
    );
    let many: Vec<String> = (0..65)
        .flat_map(|i| ["--label".to_string(), format!("k{i}=v")])
        .collect();
    let err = run(&many);
    assert!(err.contains("65 labels, above the limit of 64"), "{err}");
    let err = run(&["--admin".into(), "not an address".into()]);
    assert!(err.contains("--admin"), "{err}");
}

/// Two agents may share one Podman: an agent never touches a pod labelled for another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_s_pods_are_left_alone() {
    let h = Harness::start("mine").await;
    let other = pod_id("agent-other", rand::random());
    let _other_cleanup = PodCleanup::new(format!("pss.node={other}"));
    let id = h.pod_id("foreign");
    let labels = HashMap::from([
        ("pss.pod".to_string(), id.clone()),
        ("pss.node".to_string(), other.clone()),
    ]);
    h.podman
        .create_pod(&pss_agent::podman::PodCreate {
            name: id.clone(),
            labels,
            portmappings: Vec::new(),
        })
        .await
        .unwrap();

    let mut client = h.client().await;
    let stop = StopPodRequest {
        id: id.clone(),
        grace_period_ms: 0,
    };
    let stopped = eventually("StopPod answers", || async {
        client.clone().stop_pod(stop.clone()).await.ok()
    })
    .await;
    assert!(!stopped.into_inner().existed);
    assert!(
        h.podman.inspect_pod(&id).await.unwrap().is_some(),
        "left alone"
    );

    let run = RunPodRequest {
        id: id.clone(),
        workload: "foreign".into(),
        spec: Some(web_spec()),
        spec_hash: 1,
    };
    let err = client.run_pod(run).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        h.podman.inspect_pod(&id).await.unwrap().is_some(),
        "still left alone"
    );

    let logs = PodLogsRequest {
        pod: id.clone(),
        follow: false,
        container: String::new(),
        tail: 0,
    };
    assert_eq!(
        client.pod_logs(logs).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

/// busybox httpd as PID 1 installs no SIGTERM handler, so without an init in the container a
/// stop waits out the whole grace period before SIGKILL. With Podman's init (catatonit) it
/// ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid1_program_that_ignores_sigterm_stops_well_within_the_grace_period() {
    let h = Harness::start("prompt-stop").await;
    let id = h.pod_id("web-prompt");
    h.run_pod(&id, "web-prompt", web_spec()).await;
    let started = std::time::Instant::now();
    let stopped = h
        .client()
        .await
        .stop_pod(StopPodRequest {
            id: id.clone(),
            grace_period_ms: 10_000,
        })
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(stopped.into_inner().existed);
    eprintln!("StopPod of busybox httpd with a 10s grace took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM ends the pod, not the SIGKILL after the grace period: {took:?}"
    );
}

/// Ports are published on the advertise address (127.0.0.1 here), not on 0.0.0.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_are_published_on_the_advertise_address_only() {
    let h = Harness::start("publish").await;
    let id = h.pod_id("web-publish");
    h.run_pod(&id, "web-publish", web_spec()).await;
    let pod = h.podman.inspect_pod(&id).await.unwrap().expect("the pod");
    let bindings = pod
        .infra_config
        .as_ref()
        .and_then(|c| c.port_bindings.as_ref())
        .and_then(|b| b.get("80/tcp"))
        .cloned()
        .unwrap_or_default();
    assert!(!bindings.is_empty(), "{pod:?}");
    assert!(
        bindings.iter().all(|b| b.host_ip == "127.0.0.1"),
        "published on 127.0.0.1 only: {bindings:?}"
    );
}
