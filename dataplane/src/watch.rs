//! Endpoint watch client: subscribes to the controller's `EndpointWatch.WatchEndpoints` stream
//! for one service and installs every newer snapshot in the service's balancer.
//!
//! When the stream fails or the controller is away, the proxy keeps serving the last snapshot
//! it holds and reconnects with exponential backoff and jitter; the backoff resets once a
//! subscription delivers a snapshot. Snapshots whose version is not newer than the one held
//! are ignored (the controller always resends its current one on subscribe).
//!
//! With TLS (the default) the proxy joins once per process and controller (a join token, or
//! the operator token and the CA; see [`pss_security::member`]), keeps its certificate in its
//! state directory, renews it, and subscribes with it; with `insecure` it sends the token in
//! plaintext, as in the seed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pss_plumbing::addr::dial_uri;
use pss_plumbing::backoff::{Backoff, Retry};
use pss_proto::auth::BearerToken;
use pss_proto::endpoint_watch_client::EndpointWatchClient;
use pss_proto::{EndpointSnapshot, WatchEndpointsRequest};
use pss_security::member::{JoinOptions, Membership};
use pss_security::tls::Dialer;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::balancer::Balancer;
use crate::config::ControllerConfig;
use crate::{Error, Result};

/// Checks what can be checked before the first connect (URL shape, token characters).
pub fn validate(ctl: &ControllerConfig) -> Result<()> {
    Endpoint::from_shared(dial_uri(&ctl.address))
        .map_err(|e| Error::Controller(format!("bad address `{}`: {e}", ctl.address)))?;
    BearerToken::new(&ctl.token).map_err(|s| Error::Controller(s.message().to_owned()))?;
    Ok(())
}

/// State of one service's subscription.
struct Watch {
    /// Proxy-side service name, for logs.
    name: String,
    /// Controller-side service name.
    remote: String,
    balancer: Arc<Balancer>,
    /// Version of the snapshot installed, if any.
    held: Option<u64>,
}

impl Watch {
    /// Installs `snap` if it is newer than what is held.
    async fn apply(&mut self, snap: EndpointSnapshot) {
        if self.held.is_some_and(|h| snap.version <= h) {
            tracing::debug!(service = %self.name, version = snap.version, held = ?self.held, "ignoring snapshot that is not newer");
            return;
        }
        let mut addrs = Vec::with_capacity(snap.endpoints.len());
        for ep in &snap.endpoints {
            match resolve(&ep.address).await {
                Some(a) => addrs.push(a),
                None => {
                    tracing::warn!(service = %self.name, endpoint = %ep.address, pod = %ep.pod, "cannot resolve endpoint; skipping it")
                }
            }
        }
        self.balancer.replace(snap.version, &addrs);
        self.held = Some(snap.version);
        tracing::info!(service = %self.name, version = snap.version, endpoints = addrs.len(), "endpoint snapshot applied");
    }

    /// One subscription: connect, subscribe, apply snapshots until the stream ends or fails.
    /// Returns why it stopped; `delivered` tells whether anything arrived.
    async fn subscribe(&mut self, ctl: &ControllerConfig, delivered: &mut bool) -> String {
        let (dialer, token) = match dialer(ctl).await {
            Ok(d) => d,
            Err(e) => return e,
        };
        let endpoint = match dialer.endpoint(&ctl.address) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(15))
                .keep_alive_timeout(Duration::from_secs(10)),
            Err(e) => return format!("bad controller address: {e}"),
        };
        let channel = match dialer.connect(endpoint).await {
            Ok(c) => c,
            Err(e) => {
                return format!(
                    "connect to {}: {}",
                    ctl.address,
                    pss_security::member::chain(&e)
                )
            }
        };
        let token = match BearerToken::new(&token) {
            Ok(t) => t,
            Err(s) => return s.message().to_owned(),
        };
        let mut client = EndpointWatchClient::with_interceptor(channel, token);
        let request = WatchEndpointsRequest {
            service: self.remote.clone(),
            known_version: self.held.unwrap_or(0),
        };
        let mut stream = match client.watch_endpoints(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => return format!("subscribe: {} ({:?})", s.message(), s.code()),
        };
        tracing::info!(service = %self.name, controller = %ctl.address, "subscribed to endpoint snapshots");
        loop {
            match stream.message().await {
                Ok(Some(snap)) => {
                    *delivered = true;
                    self.apply(snap).await;
                }
                Ok(None) => return "controller ended the stream".into(),
                Err(s) => return format!("stream: {} ({:?})", s.message(), s.code()),
            }
        }
    }
}

/// Memberships of this process, one per controller, name and state directory.
static MEMBERS: std::sync::LazyLock<
    tokio::sync::Mutex<std::collections::HashMap<String, Arc<Membership>>>,
> = std::sync::LazyLock::new(Default::default);

/// How to dial the controller, and the token to send (none with a certificate).
async fn dialer(ctl: &ControllerConfig) -> std::result::Result<(Dialer, String), String> {
    if ctl.insecure {
        return Ok((Dialer::plaintext(), ctl.token.clone()));
    }
    let name = ctl
        .name
        .clone()
        .unwrap_or_else(pss_security::files::host_name);
    let state_dir = ctl
        .state_dir
        .clone()
        .unwrap_or_else(|| pss_security::files::default_state_dir("proxy"));
    let key = format!("{}|{name}|{}", ctl.address, state_dir.display());
    let mut members = MEMBERS.lock().await;
    if let Some(m) = members.get(&key) {
        return Ok((m.dialer().map_err(|e| e.to_string())?, String::new()));
    }
    let identity = pss_security::Identity::new(pss_security::Role::Proxy, &name)
        .map_err(|e| format!("proxy name: {e}"))?;
    let ca_pem = match &ctl.ca {
        Some(p) => Some(pss_security::files::read_text(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let options = JoinOptions {
        controller: ctl.address.clone(),
        identity,
        state_dir: state_dir.join(&name),
        join_token: ctl.join_token.clone(),
        operator_token: Some(ctl.token.clone()).filter(|t| !t.is_empty()),
        ca_pem,
        ttl: Duration::ZERO,
    };
    // One attempt: the watch loop's back-off paces the retries.
    let once = CancellationToken::new();
    once.cancel();
    let m = Membership::obtain(options, &once)
        .await
        .map_err(|e| format!("credential: {e}"))?;
    tokio::spawn(m.clone().keep_renewed(CancellationToken::new()));
    members.insert(key, m.clone());
    Ok((m.dialer().map_err(|e| e.to_string())?, String::new()))
}

async fn resolve(address: &str) -> Option<SocketAddr> {
    if let Ok(a) = address.parse() {
        return Some(a);
    }
    tokio::net::lookup_host(address).await.ok()?.next()
}

/// Keeps `balancer` fed with the snapshots of controller service `remote` until `shutdown`.
pub async fn run(
    ctl: ControllerConfig,
    name: String,
    remote: String,
    balancer: Arc<Balancer>,
    shutdown: CancellationToken,
) {
    let mut watch = Watch {
        name,
        remote,
        balancer,
        held: None,
    };
    let mut backoff = Retry::new(Backoff {
        base: ctl.backoff_initial,
        max: ctl.backoff_max,
        factor: 2.0,
    });
    loop {
        let mut delivered = false;
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch.subscribe(&ctl, &mut delivered) => r,
        };
        if delivered {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::warn!(service = %watch.name, held = ?watch.held, retry_in = ?delay, "endpoint watch interrupted: {reason}; serving the last snapshot");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
