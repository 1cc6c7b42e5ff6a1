//! The `EndpointWatch` service: a proxy subscribes to one service and receives its current
//! endpoint snapshot at once, then every newer one, until it disconnects or the controller stops.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use pss_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Shared;

pub(crate) struct EndpointApi {
    shared: Arc<Shared>,
}

impl EndpointApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        EndpointApi { shared }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::EndpointSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::endpoint_watch_server::EndpointWatch for EndpointApi {
    type WatchEndpointsStream = SnapshotStream;

    async fn watch_endpoints(
        &self,
        request: Request<pb::WatchEndpointsRequest>,
    ) -> Result<Response<Self::WatchEndpointsStream>, Status> {
        let req = request.into_inner();
        let mut rx = self
            .shared
            .services
            .subscribe(&req.service)
            .ok_or_else(|| Status::not_found(format!("service \"{}\" not found", req.service)))?;
        let shutdown = self.shared.shutdown.clone();
        tracing::info!(service = %req.service, known_version = req.known_version, "proxy subscribed");
        let stream = async_stream(move |tx| async move {
            loop {
                let snapshot = rx.borrow_and_update().clone();
                if tx.send(Ok((*snapshot).clone())).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() {
                        // The service was deleted (its channel dropped) after its final
                        // empty snapshot: tell the proxy.
                        let _ = tx.send(Err(Status::not_found("service deleted"))).await;
                        return;
                    },
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task through a small channel (the task ends when the client goes away).
fn async_stream<F, Fut>(f: F) -> SnapshotStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::EndpointSnapshot, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
