//! A cancelled `WatchEndpoints` stream frees what it holds at once: opening and cancelling
//! 40,000 streams without any snapshot change leaves the controller's memory where it was.

mod support;

use pss_proto::auth::BearerToken;
use pss_proto::v1::endpoint_watch_client::EndpointWatchClient;
use pss_proto::v1::WatchEndpointsRequest;
use support::process::ControllerProcess;
use support::{repo_path, TOKEN};

const STREAMS: usize = 40_000;
const CONNECTIONS: usize = 8;

async fn open_and_cancel(addr: std::net::SocketAddr, count: usize) {
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = support::channel(addr).await;
        let mut client =
            EndpointWatchClient::with_interceptor(channel, BearerToken::new(TOKEN).unwrap());
        tasks.push(tokio::spawn(async move {
            for _ in 0..count / CONNECTIONS {
                let mut stream = client
                    .watch_endpoints(WatchEndpointsRequest {
                        service: "my-service".into(),
                        known_version: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                // The current snapshot arrives; then the client goes away (stream dropped).
                assert!(stream.message().await.unwrap().is_some());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_watch_streams_free_their_memory() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(&dir.path().join("pss.db"), &[]).await;
    let svc = repo_path("examples/my-service.yaml");
    c.ctl(&["apply", "-f", svc.to_str().unwrap()])
        .await
        .unwrap();
    // Warm up: allocator arenas, HTTP/2 connections, the service's channel.
    open_and_cancel(c.addr, 2_000).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = c.rss_kib();
    open_and_cancel(c.addr, STREAMS).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = c.rss_kib();
    eprintln!("controller RSS: {before} KiB before, {after} KiB after {STREAMS} streams");
    assert!(
        after * 10 <= before * 11,
        "RSS grew from {before} KiB to {after} KiB after {STREAMS} cancelled streams"
    );
}

/// The same, counted exactly: in a controller running in this process, every cancelled
/// stream's work is gone once the client has gone (no task waits for the next snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_watch_stream_leaves_no_task_behind() {
    let dir = tempfile::tempdir().unwrap();
    let c = support::RunningController::start(&dir.path().join("pss.db")).await;
    let svc = repo_path("examples/my-service.yaml");
    c.ctl(&["apply", "-f", svc.to_str().unwrap()])
        .await
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    open_and_cancel(c.addr, 64).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = metrics.num_alive_tasks();
    open_and_cancel(c.addr, 2_000).await;
    // Give the server a moment to see the resets.
    let mut after = metrics.num_alive_tasks();
    for _ in 0..50 {
        if after <= before + 16 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = metrics.num_alive_tasks();
    }
    assert!(
        after <= before + 16,
        "{} tasks alive after 2,000 cancelled streams ({before} before)",
        after
    );
}
