//! The endpoint watch client against a small in-test `EndpointWatch` server that checks the
//! shared token: changes reach the proxy, a stopped controller leaves the proxy forwarding on
//! its last snapshot, and a restarted one is resubscribed; with several controllers the proxy
//! moves to the next one, whose first snapshot replaces what it held whatever its version.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::Stream;
use pss_dataplane::{ControllerConfig, Engine, ServiceConfig};
use pss_proto::endpoint_watch_server::{EndpointWatch, EndpointWatchServer};
use pss_proto::{Endpoint, EndpointSnapshot, WatchEndpointsRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const TOKEN: &str = "s3cret";

/// The controller side: the current snapshot of service `web`, a kill switch for open streams,
/// and counts of accepted and refused subscriptions.
struct Controller {
    current: watch::Sender<EndpointSnapshot>,
    kill: CancellationToken,
    subscribed: AtomicUsize,
    refused: AtomicUsize,
}

/// The gRPC service over a shared [`Controller`].
struct Svc(Arc<Controller>);

#[tonic::async_trait]
impl EndpointWatch for Svc {
    type WatchEndpointsStream =
        Pin<Box<dyn Stream<Item = Result<EndpointSnapshot, Status>> + Send + 'static>>;

    async fn watch_endpoints(
        &self,
        req: Request<WatchEndpointsRequest>,
    ) -> Result<Response<Self::WatchEndpointsStream>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {TOKEN}")) {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unauthenticated("bad token"));
        }
        if req.get_ref().service != "web" {
            return Err(Status::not_found("no such service"));
        }
        self.0.subscribed.fetch_add(1, Ordering::SeqCst);
        let rx = self.0.current.subscribe();
        let kill = self.0.kill.clone();
        // The current snapshot first, then every change, until killed.
        let stream =
            futures::stream::unfold((rx, kill, true), |(mut rx, kill, first)| async move {
                if !first {
                    tokio::select! {
                        _ = kill.cancelled() => return None,
                        r = rx.changed() => r.ok()?,
                    }
                }
                let snap = rx.borrow_and_update().clone();
                Some((Ok(snap), (rx, kill, false)))
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn snapshot(version: u64, addrs: &[SocketAddr]) -> EndpointSnapshot {
    EndpointSnapshot {
        service: "web".into(),
        version,
        endpoints: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint {
                address: a.to_string(),
                pod: format!("web-{i}"),
                node: "n1".into(),
            })
            .collect(),
        port: 80,
        target_port: 80,
    }
}

/// Serves `ctl` on `addr` until the returned task is aborted.
async fn serve(
    addr: SocketAddr,
    ctl: Arc<Controller>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.expect("bind controller");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EndpointWatchServer::new(Svc(ctl)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, task)
}

fn controller(first: EndpointSnapshot) -> Arc<Controller> {
    Arc::new(Controller {
        current: watch::channel(first).0,
        kill: CancellationToken::new(),
        subscribed: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
    })
}

fn proxy_config(ctl_addr: SocketAddr, token: &str) -> pss_dataplane::ProxyConfig {
    let mut svc =
        ServiceConfig::with_controller_service("svc", "127.0.0.1:0".parse().unwrap(), "web");
    svc.engine = Engine::Splice;
    svc.health.interval = Duration::from_millis(200);
    let mut cfg = config(vec![svc]);
    let mut ctl = ControllerConfig::new(ctl_addr.to_string(), token);
    // A stand-in controller without TLS: this test is about the watch, not the transport.
    ctl.insecure = true;
    ctl.backoff_initial = Duration::from_millis(50);
    ctl.backoff_max = Duration::from_millis(400);
    cfg.controller = Some(ctl);
    cfg
}

async fn wait_for_tag(addr: SocketAddr, want: u8) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if fetch_tag(addr).await == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never routed to {}",
            want as char
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_reach_the_proxy_and_it_survives_controller_restarts() {
    let a = Backend::tagged(b'a').await;
    let b = Backend::tagged(b'b').await;
    let ctl = controller(snapshot(1, &[a.addr]));
    let (ctl_addr, server) = serve("127.0.0.1:0".parse().unwrap(), ctl.clone()).await;
    let proxy = start(proxy_config(ctl_addr, TOKEN));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();

    wait_for_tag(addr, b'a').await;
    assert_eq!(handle.stats().snapshot_version, 1);

    // A change reaches the proxy.
    ctl.current.send_replace(snapshot(2, &[b.addr]));
    wait_for_tag(addr, b'b').await;
    eventually("v2 held", || handle.stats().snapshot_version == 2).await;
    for _ in 0..10 {
        assert_eq!(fetch_tag(addr).await, Some(b'b'), "a was removed");
    }

    // Controller gone: streams cut, port closed. The proxy keeps serving v2.
    ctl.kill.cancel();
    server.abort();
    let _ = server.await;
    for _ in 0..30 {
        assert_eq!(
            fetch_tag(addr).await,
            Some(b'b'),
            "forwarding stopped with the controller"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.stats().snapshot_version, 2);

    // Controller back on the same address with news: the proxy resubscribes.
    let ctl2 = controller(snapshot(3, &[a.addr, b.addr]));
    let (_, server2) = serve(ctl_addr, ctl2.clone()).await;
    eventually("resubscribed to v3", || {
        handle.stats().snapshot_version == 3
    })
    .await;
    assert!(ctl2.subscribed.load(Ordering::SeqCst) >= 1);
    wait_for_tag(addr, b'a').await;

    // Versions that are not newer are ignored.
    ctl2.current.send_replace(snapshot(2, &[b.addr]));
    ctl2.current.send_replace(snapshot(4, &[a.addr]));
    eventually("v4 held", || handle.stats().snapshot_version == 4).await;
    assert_eq!(handle.backends(), vec![(a.addr, true)]);

    proxy.stop().await;
    server2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_gets_no_endpoints() {
    let a = Backend::tagged(b'a').await;
    let ctl = controller(snapshot(5, &[a.addr]));
    let (ctl_addr, server) = serve("127.0.0.1:0".parse().unwrap(), ctl.clone()).await;
    let proxy = start(proxy_config(ctl_addr, "wrong"));
    let handle = proxy.handle.service("svc").unwrap();
    // Wait until it has been refused twice (so it retried), then check it holds nothing.
    eventually("refused and retried", || {
        ctl.refused.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(handle.stats().snapshot_version, 0);
    assert_eq!(
        fetch_tag(proxy.addr("svc")).await,
        None,
        "no backend without a snapshot"
    );
    assert_eq!(handle.stats().no_backend_closes, 1);
    proxy.stop().await;
    server.abort();
}

/// [`proxy_config`] following the controllers at `addrs`, in order (`addresses: [..]`).
fn proxy_config_list(addrs: &[SocketAddr]) -> pss_dataplane::ProxyConfig {
    let mut cfg = proxy_config(addrs[0], TOKEN);
    let ctl = cfg.controller.as_mut().unwrap();
    ctl.address.clear();
    ctl.addresses = addrs.iter().map(|a| a.to_string()).collect();
    cfg
}

/// A loopback address nothing listens on (bound, then closed).
fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_controller_s_first_snapshot_replaces_a_newer_one_and_later_ones_are_ordered() {
    let a = Backend::tagged(b'a').await;
    let b = Backend::tagged(b'b').await;
    // Two controllers whose versions do not follow each other: the first is far ahead.
    let first = controller(snapshot(10, &[a.addr]));
    let (first_addr, first_server) = serve("127.0.0.1:0".parse().unwrap(), first.clone()).await;
    let second = controller(snapshot(3, &[b.addr]));
    let (second_addr, second_server) = serve("127.0.0.1:0".parse().unwrap(), second.clone()).await;
    let proxy = start(proxy_config_list(&[first_addr, second_addr]));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();
    wait_for_tag(addr, b'a').await;
    assert_eq!(handle.stats().snapshot_version, 10);
    assert_eq!(
        second.subscribed.load(Ordering::SeqCst),
        0,
        "the second controller is not used while the first serves"
    );

    // The first controller dies: the proxy keeps forwarding, then follows the second one,
    // whose first snapshot (version 3) replaces version 10.
    first.kill.cancel();
    first_server.abort();
    let _ = first_server.await;
    assert_eq!(fetch_tag(addr).await, Some(b'a'), "still serving v10");
    eventually("the second controller's v3 held", || {
        handle.stats().snapshot_version == 3
    })
    .await;
    wait_for_tag(addr, b'b').await;
    assert_eq!(handle.backends(), vec![(b.addr, true)]);

    // Within that stream, older versions are ignored again.
    second.current.send_replace(snapshot(2, &[a.addr]));
    second.current.send_replace(snapshot(4, &[a.addr, b.addr]));
    eventually("v4 held", || handle.stats().snapshot_version == 4).await;
    assert_eq!(handle.backends().len(), 2);
    second.current.send_replace(snapshot(1, &[a.addr]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handle.stats().snapshot_version,
        4,
        "v1 ignored within a stream"
    );
    assert_eq!(handle.backends().len(), 2);

    proxy.stop().await;
    second_server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_controller_is_passed_over() {
    let b = Backend::tagged(b'b').await;
    let live = controller(snapshot(7, &[b.addr]));
    let (live_addr, server) = serve("127.0.0.1:0".parse().unwrap(), live.clone()).await;
    let started = std::time::Instant::now();
    let proxy = start(proxy_config_list(&[dead_address(), live_addr]));
    wait_for_tag(proxy.addr("svc"), b'b').await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        proxy
            .handle
            .service("svc")
            .unwrap()
            .stats()
            .snapshot_version,
        7
    );
    proxy.stop().await;
    server.abort();
}
