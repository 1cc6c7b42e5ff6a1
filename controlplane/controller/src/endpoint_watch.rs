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
        let rx = self
            .shared
            .services
            .subscribe(&req.service)
            .ok_or_else(|| Status::not_found(format!("service \"{}\" not found", req.service)))?;
        let shutdown = self.shared.shutdown.clone();
        tracing::info!(service = %req.service, known_version = req.known_version, "proxy subscribed");
        Ok(Response::new(snapshots(rx, shutdown)))
    }
}

/// What a subscription still has to do.
enum Next {
    /// Send the current snapshot (the first one, or after a change).
    Send,
    /// Wait for the next change.
    Wait,
    /// Over.
    Done,
}

/// The stream of a subscription: the current snapshot, then each newer one. It owns its watch
/// receiver and nothing else — no task behind it — so when tonic drops it (the proxy went
/// away, or cancelled), everything it holds is freed at once.
fn snapshots(
    rx: tokio::sync::watch::Receiver<Arc<pb::EndpointSnapshot>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> SnapshotStream {
    Box::pin(futures::stream::unfold(
        (rx, shutdown, Next::Send),
        |(mut rx, shutdown, next)| async move {
            let mut next = next;
            loop {
                match next {
                    Next::Done => return None,
                    Next::Send => {
                        let snapshot = rx.borrow_and_update().clone();
                        return Some((Ok((*snapshot).clone()), (rx, shutdown, Next::Wait)));
                    }
                    Next::Wait => {
                        tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            changed = rx.changed() => {
                                if changed.is_err() {
                                    // The service was deleted (its channel dropped) after its
                                    // final empty snapshot: tell the proxy.
                                    let end = Err(Status::not_found("service deleted"));
                                    return Some((end, (rx, shutdown, Next::Done)));
                                }
                                next = Next::Send;
                            }
                        }
                    }
                }
            }
        },
    ))
}
