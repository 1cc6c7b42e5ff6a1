//! A stand-in agent for tests that exercise the controller ↔ proxy path without Podman: it
//! registers a node, and each RunPod starts a real TCP "pod" on 127.0.0.1:0 that answers every
//! connection with its own pod id, then reports it Running and ready. A pod whose first image
//! starts with [`FAILING_IMAGE_PREFIX`] fails instead, as a missing image would. The Podman path
//! is covered by the real agent's tests (`agent_podman.rs`, `cluster_podman.rs`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pss_proto::auth::BearerToken;
use pss_proto::v1 as pb;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::TOKEN;

/// Pods whose first container's image starts with this fail at once (`ImageNotFound`).
pub const FAILING_IMAGE_PREFIX: &str = "fail.local/";

#[derive(Clone, Default)]
pub struct FakeAgent {
    /// pod id → (address, stop signal)
    pods: Arc<Mutex<HashMap<String, (SocketAddr, CancellationToken)>>>,
    /// Pods that failed to start (their image "does not exist").
    failed: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl FakeAgent {
    /// Starts the agent's gRPC server, registers `node` with the controller at `controller`,
    /// and heartbeats every 500 ms until `shutdown`.
    pub async fn start(
        node: &str,
        controller: SocketAddr,
        shutdown: CancellationToken,
    ) -> FakeAgent {
        Self::start_with_labels(node, &[], controller, shutdown).await
    }

    /// [`FakeAgent::start`] for a node with `labels`.
    pub async fn start_with_labels(
        node: &str,
        labels: &[(&str, &str)],
        controller: SocketAddr,
        shutdown: CancellationToken,
    ) -> FakeAgent {
        Self::start_advertising(node, labels, controller, shutdown, |a| a).await
    }

    /// Like [`FakeAgent::start_with_labels`], registering `advertise(listen address)` as the
    /// agent's address (e.g. a recording relay in front of it).
    pub async fn start_advertising(
        node: &str,
        labels: &[(&str, &str)],
        controller: SocketAddr,
        shutdown: CancellationToken,
        advertise: impl FnOnce(SocketAddr) -> SocketAddr,
    ) -> FakeAgent {
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let agent = FakeAgent::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = advertise(listener.local_addr().unwrap());
        // With a TLS controller: join as agent/<node> with the operator token, serve mutual
        // TLS to the controller only, and call in with the node's certificate.
        let member = match super::ca_pem(controller) {
            Some(ca) => {
                let options = pss_security::member::JoinOptions {
                    controller: controller.to_string(),
                    identity: pss_security::Identity::new(pss_security::Role::Agent, node).unwrap(),
                    state_dir: std::env::temp_dir()
                        .join(format!("pss-e2e-fake-{node}-{}", rand::random::<u64>())),
                    join_token: None,
                    operator_token: Some(TOKEN.into()),
                    ca_pem: Some(ca),
                    ttl: Duration::ZERO,
                };
                Some(
                    pss_security::member::Membership::obtain(options, &shutdown)
                        .await
                        .expect("the fake agent joins"),
                )
            }
            None => None,
        };
        let guard = pss_security::guard::Guard::new(
            pss_security::policy::Server::Agent,
            std::sync::Arc::new(pss_security::guard::NoRevocations),
        );
        let svc = pb::agent_server::AgentServer::new(agent.clone());
        let stop = shutdown.clone();
        let tls = member.as_ref().map(|m| {
            pss_security::tls::server_config(
                m.cert.clone(),
                &m.ca_pem,
                pss_security::tls::ClientAuth::Required,
            )
            .unwrap()
        });
        tokio::spawn(async move {
            match tls {
                Some(tls) => tonic::transport::Server::builder()
                    .layer(guard)
                    .add_service(svc)
                    .serve_with_incoming_shutdown(
                        pss_security::tls::incoming(listener, tls),
                        stop.cancelled_owned(),
                    )
                    .await
                    .unwrap(),
                None => tonic::transport::Server::builder()
                    .layer(guard.with_token(TOKEN, pss_security::Role::Controller))
                    .add_service(svc)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop.cancelled_owned(),
                    )
                    .await
                    .unwrap(),
            }
        });
        let (dialer, token) = match &member {
            Some(m) => (m.dialer().unwrap(), ""),
            None => (pss_security::tls::Dialer::plaintext(), TOKEN),
        };
        let node = node.to_string();
        let me = agent.clone();
        tokio::spawn(async move {
            loop {
                let mut registered = false;
                let endpoint = dialer.endpoint(&controller.to_string()).unwrap();
                let channel = match dialer.connect(endpoint).await {
                    Ok(c) => c,
                    Err(_) => {
                        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => continue }
                    }
                };
                let mut reg = pb::node_registry_client::NodeRegistryClient::with_interceptor(
                    channel,
                    BearerToken::new(token).unwrap(),
                );
                loop {
                    if !registered {
                        let req = pb::RegisterNodeRequest {
                            name: node.clone(),
                            cpu_millis: 8000,
                            memory_bytes: 8 << 30,
                            agent_address: addr.to_string(),
                            pods: me.reports(),
                            labels: labels.clone(),
                            ..Default::default()
                        };
                        if reg.register(req).await.is_err() {
                            break;
                        }
                    }
                    let hb = pb::HeartbeatRequest {
                        node: node.clone(),
                        metrics: Some(pb::NodeMetrics::default()),
                        pods: me.reports(),
                    };
                    match reg.heartbeat(hb).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            registered = r.known;
                            for id in r.stop_pods {
                                me.stop(&id);
                            }
                        }
                        Err(_) => break,
                    }
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(500)) => {} }
                }
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
            }
        });
        agent
    }

    fn report(id: &str, addr: SocketAddr) -> pb::PodReport {
        pb::PodReport {
            id: id.to_string(),
            workload: id
                .rsplit_once('-')
                .map(|(w, _)| w.to_string())
                .unwrap_or_default(),
            phase: pb::PodPhase::Running as i32,
            ready: true,
            addresses: vec![pb::PortAddress {
                container_port: 80,
                address: addr.to_string(),
            }],
            memory_bytes: 1 << 20,
            ..Default::default()
        }
    }

    fn failed_report(id: &str) -> pb::PodReport {
        pb::PodReport {
            phase: pb::PodPhase::Failed as i32,
            ready: false,
            addresses: Vec::new(),
            reason: "ImageNotFound".into(),
            message: "image not known (fake agent)".into(),
            ..Self::report(id, "127.0.0.1:1".parse().unwrap())
        }
    }

    fn reports(&self) -> Vec<pb::PodReport> {
        let mut out: Vec<_> = self
            .pods
            .lock()
            .unwrap()
            .iter()
            .map(|(id, (addr, _))| Self::report(id, *addr))
            .collect();
        out.extend(
            self.failed
                .lock()
                .unwrap()
                .iter()
                .map(|id| Self::failed_report(id)),
        );
        out
    }

    fn stop(&self, id: &str) -> bool {
        if self.failed.lock().unwrap().remove(id) {
            return true;
        }
        match self.pods.lock().unwrap().remove(id) {
            Some((_, stop)) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Number of pods running.
    pub fn pod_count(&self) -> usize {
        self.pods.lock().unwrap().len()
    }

    /// Ids of the pods running, sorted.
    pub fn pod_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.pods.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for FakeAgent {
    async fn run_pod(
        &self,
        request: Request<pb::RunPodRequest>,
    ) -> Result<Response<pb::RunPodResponse>, Status> {
        let req = request.into_inner();
        let image = req
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.image.clone())
            .unwrap_or_default();
        if image.starts_with(FAILING_IMAGE_PREFIX) {
            self.failed.lock().unwrap().insert(req.id.clone());
            return Ok(Response::new(pb::RunPodResponse {
                pod: Some(Self::failed_report(&req.id)),
            }));
        }
        if let Some((addr, _)) = self.pods.lock().unwrap().get(&req.id) {
            return Ok(Response::new(pb::RunPodResponse {
                pod: Some(Self::report(&req.id, *addr)),
            }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let id = req.id.clone();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    conn = listener.accept() => {
                        if let Ok((mut s, _)) = conn {
                            let id = id.clone();
                            tokio::spawn(async move { let _ = s.write_all(format!("{id}\n").as_bytes()).await; });
                        }
                    }
                }
            }
        });
        self.pods
            .lock()
            .unwrap()
            .insert(req.id.clone(), (addr, stop));
        Ok(Response::new(pb::RunPodResponse {
            pod: Some(Self::report(&req.id, addr)),
        }))
    }

    async fn stop_pod(
        &self,
        request: Request<pb::StopPodRequest>,
    ) -> Result<Response<pb::StopPodResponse>, Status> {
        let existed = self.stop(&request.into_inner().id);
        Ok(Response::new(pb::StopPodResponse { existed }))
    }

    type PodLogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

    async fn pod_logs(
        &self,
        _request: Request<pb::PodLogsRequest>,
    ) -> Result<Response<Self::PodLogsStream>, Status> {
        Err(Status::unimplemented("the fake agent keeps no logs"))
    }
}
