//! The agent's gRPC service (`pss.v1.Agent`), which the controller dials back: RunPod,
//! StopPod and PodLogs, on top of [`Runtime`]. The caller wraps it with the shared-token check
//! (see [`crate::serve`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pss_proto::v1::agent_server::Agent;
use pss_proto::v1::{
    LogChunk, PodLogsRequest, RunPodRequest, RunPodResponse, StopPodRequest, StopPodResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::logs::FrameDecoder;
use crate::podman::Podman;
use crate::runtime::{Backend, Runtime, LABEL_CONTAINER};
use crate::sim::SimPods;

/// Grace period of a StopPod that sets none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// `pss.v1.Agent` over a node's runtime.
#[derive(Clone)]
pub struct AgentService {
    runtime: Arc<Runtime>,
}

impl AgentService {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn run_pod(
        &self,
        request: Request<RunPodRequest>,
    ) -> Result<Response<RunPodResponse>, Status> {
        let request = request.into_inner();
        let pod = self.runtime.run_pod(&request).await?;
        Ok(Response::new(RunPodResponse { pod: Some(pod) }))
    }

    async fn stop_pod(
        &self,
        request: Request<StopPodRequest>,
    ) -> Result<Response<StopPodResponse>, Status> {
        let request = request.into_inner();
        if request.id.is_empty() {
            return Err(Status::invalid_argument("StopPod needs a pod ID"));
        }
        let grace = match request.grace_period_ms {
            0 => DEFAULT_STOP_GRACE,
            ms => Duration::from_millis(ms),
        };
        let existed = self.runtime.stop_pod(&request.id, grace).await?;
        Ok(Response::new(StopPodResponse { existed }))
    }

    type PodLogsStream = LogStream;

    async fn pod_logs(
        &self,
        request: Request<PodLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let request = request.into_inner();
        let podman = match self.runtime.backend() {
            Backend::Podman(podman) => podman.clone(),
            Backend::Sim(sim) => return sim_logs(sim, &request),
        };
        let pod = self
            .runtime
            .inspect_own(&request.pod)
            .await?
            .ok_or_else(|| {
                Status::not_found(format!("pod {:?} not found on this node", request.pod))
            })?;
        let mut targets = Vec::new();
        for c in pod.app_containers() {
            let info = podman
                .inspect_container(&c.id)
                .await
                .map_err(crate::Error::from)?;
            let name = info
                .as_ref()
                .and_then(|i| i.label(LABEL_CONTAINER))
                .map(str::to_string)
                .unwrap_or_else(|| {
                    c.name
                        .strip_prefix(&format!("{}-", request.pod))
                        .unwrap_or(&c.name)
                        .to_string()
                });
            if request.container.is_empty() || request.container == name {
                targets.push((name, c.id.clone()));
            }
        }
        if targets.is_empty() {
            return Err(Status::not_found(format!(
                "pod {:?} has no container {:?}",
                request.pod, request.container
            )));
        }
        let (tx, rx) = mpsc::channel(64);
        if request.follow || targets.len() == 1 {
            // Concurrently: chunks are interleaved as they come, each tagged with its container.
            for (name, id) in targets {
                let podman = podman.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    forward_logs(podman, name, id, request.follow, request.tail, tx).await
                });
            }
        } else {
            // One container after the other, so the output reads container by container.
            tokio::spawn(async move {
                for (name, id) in targets {
                    if !forward_logs(podman.clone(), name, id, false, request.tail, tx.clone())
                        .await
                    {
                        return;
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A simulated pod's logs: one fixed line per (selected) container.
fn sim_logs(sim: &SimPods, request: &PodLogsRequest) -> Result<Response<LogStream>, Status> {
    let containers = sim.containers(&request.pod).ok_or_else(|| {
        Status::not_found(format!("pod {:?} not found on this node", request.pod))
    })?;
    let chunks: Vec<Result<LogChunk, Status>> = containers
        .into_iter()
        .filter(|name| request.container.is_empty() || request.container == *name)
        .map(|container| {
            Ok(LogChunk {
                container,
                stream: 1,
                data: crate::sim::LOG_LINE.as_bytes().to_vec(),
            })
        })
        .collect();
    if chunks.is_empty() {
        return Err(Status::not_found(format!(
            "pod {:?} has no container {:?}",
            request.pod, request.container
        )));
    }
    Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
}

/// Streams one container's logs into `tx` as `LogChunk`s; false when the receiver is gone.
async fn forward_logs(
    podman: Podman,
    container: String,
    id: String,
    follow: bool,
    tail: u32,
    tx: mpsc::Sender<Result<LogChunk, Status>>,
) -> bool {
    let mut stream = match podman.logs(&id, follow, tail).await {
        Ok(stream) => stream,
        Err(e) => {
            return tx
                .send(Err(Status::internal(format!("logs of {container}: {e}"))))
                .await
                .is_ok()
        }
    };
    let mut decoder = FrameDecoder::new();
    loop {
        let chunk = tokio::select! {
            _ = tx.closed() => return false,
            chunk = stream.next_chunk() => chunk,
        };
        match chunk {
            Some(Ok(bytes)) => {
                decoder.push(&bytes);
                while let Some(frame) = decoder.next_frame() {
                    let chunk = LogChunk {
                        container: container.clone(),
                        stream: u32::from(frame.stream),
                        data: frame.data.to_vec(),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return false;
                    }
                }
            }
            Some(Err(e)) => {
                return tx
                    .send(Err(Status::internal(format!("logs of {container}: {e}"))))
                    .await
                    .is_ok()
            }
            None => return true,
        }
    }
}
