//! An agent given several controllers (`--controller A,B`, issue 15) against stand-in
//! `NodeRegistry` servers on loopback, over the simulated runtime (no Podman): a dead first
//! address costs registration and heartbeats about nothing; a controller that goes away
//! passes the heartbeats on to the next one, where the agent registers again because that one
//! does not know the node; a hung controller (connections accepted, never answered) holds the
//! heartbeats up for one call timeout; a malformed list is refused before anything starts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pss_agent::{run_with_runtime, AgentConfig, Error, Runtime, RuntimeKind};
use pss_proto::v1::node_registry_server::{NodeRegistry, NodeRegistryServer};
use pss_proto::v1::{
    HeartbeatRequest, HeartbeatResponse, PodStatusAck, PodStatusUpdate, RegisterNodeRequest,
    RegisterNodeResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const TOKEN: &str = "agent-failover-test-token";
const PATIENCE: Duration = Duration::from_secs(20);

/// What one stand-in controller saw.
#[derive(Default)]
struct Seen {
    registrations: AtomicUsize,
    heartbeats: AtomicUsize,
    /// Nodes registered here: a heartbeat from another is answered `known = false`.
    nodes: Mutex<HashSet<String>>,
}

struct Registry(Arc<Seen>);

#[tonic::async_trait]
impl NodeRegistry for Registry {
    async fn register(
        &self,
        req: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        self.0.registrations.fetch_add(1, Ordering::SeqCst);
        self.0.nodes.lock().unwrap().insert(req.into_inner().name);
        Ok(Response::new(RegisterNodeResponse::default()))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.0.heartbeats.fetch_add(1, Ordering::SeqCst);
        let known = self.0.nodes.lock().unwrap().contains(&req.get_ref().node);
        Ok(Response::new(HeartbeatResponse {
            stop_pods: Vec::new(),
            known,
        }))
    }

    async fn report_pod_status(
        &self,
        _req: Request<PodStatusUpdate>,
    ) -> Result<Response<PodStatusAck>, Status> {
        Ok(Response::new(PodStatusAck::default()))
    }
}

/// A stand-in controller on a free loopback port, until `stop` is cancelled.
struct Controller {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    async fn start() -> Controller {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            async move {
                tonic::transport::Server::builder()
                    .add_service(NodeRegistryServer::new(Registry(seen)))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop.cancelled(),
                    )
                    .await
                    .unwrap();
            }
        });
        Controller {
            addr,
            seen,
            stop,
            task,
        }
    }

    /// Gone: open connections told to go away, the port closed.
    async fn kill(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    fn registrations(&self) -> usize {
        self.seen.registrations.load(Ordering::SeqCst)
    }

    fn heartbeats(&self) -> usize {
        self.seen.heartbeats.load(Ordering::SeqCst)
    }
}

/// A loopback address nothing listens on (bound, then closed).
fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts a simulated agent for `node` reporting to `controllers` (heartbeats every 200 ms).
async fn start_agent(
    node: &str,
    controllers: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<pss_agent::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = AgentConfig::new(controllers, TOKEN, node);
    config.runtime = RuntimeKind::Sim;
    config.metrics_interval = Duration::from_millis(200);
    let runtime = Arc::new(Runtime::sim(node, "127.0.0.1"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_with_runtime(listener, config, runtime, stop.clone()));
    (stop, task)
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_controller_costs_registration_and_heartbeats_next_to_nothing() {
    let live = Controller::start().await;
    let list = format!("{},{}", dead_address(), live.addr);
    let started = Instant::now();
    let (stop, task) = start_agent("fo-dead-first", &list).await;
    eventually("registered with the live controller", || {
        live.registrations() == 1
    })
    .await;
    // A refused connection is no wait at all; the back-off's first delay is at most 100 ms.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "registration took {:?}",
        started.elapsed()
    );
    eventually("heartbeats reach the live controller", || {
        live.heartbeats() >= 5
    })
    .await;
    assert_eq!(live.registrations(), 1, "registered once, then heartbeats");
    stop.cancel();
    task.await.unwrap().unwrap();
    live.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_move_to_the_next_controller_and_the_agent_registers_there() {
    let a = Controller::start().await;
    let b = Controller::start().await;
    let (stop, task) = start_agent("fo-move", &format!("{},{}", a.addr, b.addr)).await;
    eventually("registered with the first controller", || {
        a.registrations() == 1 && a.heartbeats() >= 2
    })
    .await;
    assert_eq!(
        (b.registrations(), b.heartbeats()),
        (0, 0),
        "the second controller is not used while the first answers"
    );

    a.kill().await;
    let moved = Instant::now();
    // The next heartbeat finds b, which does not know the node: the agent registers there.
    eventually("registered with the second controller", || {
        b.registrations() == 1
    })
    .await;
    eventually("heartbeats reach the second controller", || {
        b.heartbeats() >= 4
    })
    .await;
    assert!(
        moved.elapsed() < Duration::from_secs(5),
        "moving took {:?}",
        moved.elapsed()
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    b.kill().await;
}

#[tokio::test]
async fn malformed_controller_lists_are_refused_naming_the_flag() {
    for (list, says) in [
        ("127.0.0.1:1,,127.0.0.1:2", "empty"),
        ("127.0.0.1:1,127.0.0.1:1", "twice"),
        ("127.0.0.1", "no port"),
        (
            &(1..=17)
                .map(|i| format!("127.0.0.1:{i}"))
                .collect::<Vec<_>>()
                .join(","),
            "17 addresses",
        ),
    ] {
        let (_stop, task) = start_agent("fo-bad", list).await;
        let e = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("refused at once")
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("--controller") && text.contains(says),
            "{list}: {text}"
        );
    }
}

/// A controller that accepts connections and never answers (a hung process): its listener
/// and every connection it accepted stay open until the task is aborted.
async fn hung_controller() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_controller_holds_the_heartbeat_lease_up_for_one_call_timeout_at_most() {
    let a = Controller::start().await;
    let (hung, hung_task) = hung_controller().await;
    let c = Controller::start().await;
    let (stop, task) = start_agent("fo-hung", &format!("{},{hung},{}", a.addr, c.addr)).await;
    eventually("registered with the first controller", || {
        a.registrations() == 1
    })
    .await;
    a.kill().await;
    let moved = Instant::now();
    eventually("heartbeats reach the third controller", || {
        c.registrations() == 1 && c.heartbeats() >= 2
    })
    .await;
    // The dead one costs nothing, the hung one one call timeout (5 s), not the whole
    // heartbeat's patience.
    let took = moved.elapsed();
    assert!(
        took < pss_agent::reporter::CALL_TIMEOUT + Duration::from_secs(3),
        "moving past a hung controller took {took:?}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    c.kill().await;
    hung_task.abort();
}
