//! A pss-proxy running in the test's process, following one service of a controller: what the
//! whole-cluster tests send their traffic through.

use std::net::SocketAddr;
use std::time::Duration;

use pss_dataplane::{ControllerConfig as WatchConfig, Proxy, ProxyConfig, ServiceConfig};
use tokio_util::sync::CancellationToken;

use super::TOKEN;

/// Starts a proxy (one worker, 500 ms health checks and reconnects) for `service` of the
/// controller at `controller`; returns its listen address, its handle and what stops it.
pub async fn start_proxy(
    controller: SocketAddr,
    service: &str,
) -> (SocketAddr, pss_dataplane::ProxyHandle, CancellationToken) {
    let mut svc =
        ServiceConfig::with_controller_service(service, "127.0.0.1:0".parse().unwrap(), service);
    svc.health.interval = Duration::from_millis(500);
    let mut pc = ProxyConfig::new(vec![svc]);
    pc.workers = 1;
    let mut watch = WatchConfig::new(controller.to_string(), TOKEN);
    watch.backoff_max = Duration::from_millis(500);
    match super::ca_file(controller) {
        // Joins with the operator token and the CA; a state directory of its own.
        Some(ca) => {
            watch.ca = Some(ca);
            let dir = std::env::temp_dir().join(format!("pss-e2e-proxy-{}", rand::random::<u64>()));
            watch.state_dir = Some(dir);
            watch.name = Some("e2e-proxy".into());
        }
        None => watch.insecure = true,
    }
    pc.controller = Some(watch);
    let proxy = Proxy::bind(pc).unwrap();
    let addr = proxy.local_addr(service).unwrap();
    let handle = proxy.handle();
    let stop = CancellationToken::new();
    tokio::spawn(proxy.serve(stop.clone()));
    (addr, handle, stop)
}
