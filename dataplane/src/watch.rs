//! Endpoint watch client: subscribes to the controller's `EndpointWatch.WatchEndpoints` stream
//! for one service and installs every newer snapshot in the service's balancer.
//!
//! When the stream fails or the controller is away, the proxy keeps serving the last snapshot
//! it holds and reconnects with exponential backoff and jitter; the backoff resets once a
//! subscription delivers a snapshot. With several controllers (`addresses`), each reconnect
//! goes to the next one, round robin (logged as a switch).
//!
//! Versions: within one stream, a snapshot whose version is not newer than the one held is
//! ignored. The first snapshot of a new stream (the controller always sends its current one
//! on subscribe) replaces what is held whatever its version: it may come from another
//! controller, or from one restarted on a fresh database, whose versions need not follow the
//! previous one's (an older version is logged).
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
use pss_plumbing::controllers::Rotation;
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
    for address in ctl.controllers()? {
        Endpoint::from_shared(dial_uri(&address))
            .map_err(|e| Error::Controller(format!("bad address `{address}`: {e}")))?;
    }
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
    /// The controllers, and the one subscribed to.
    controllers: Rotation,
}

impl Watch {
    /// Installs `snap` if it is newer than what is held, or whatever its version when it is
    /// the first of a new stream (`first`); returns whether it was installed.
    async fn apply(&mut self, snap: EndpointSnapshot, first: bool) -> bool {
        if let Some(held) = self.held.filter(|h| snap.version <= *h) {
            if !first {
                tracing::debug!(service = %self.name, version = snap.version, held, "ignoring snapshot that is not newer");
                return false;
            }
            if snap.version < held {
                tracing::info!(service = %self.name, version = snap.version, held, controller = %self.controllers.current().1, "new stream starts below the version held; taking its snapshot");
            }
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
        true
    }

    /// One subscription: connect, subscribe, apply snapshots until the stream ends or fails.
    /// Returns why it stopped; `delivered` tells whether anything arrived.
    async fn subscribe(&mut self, ctl: &ControllerConfig, delivered: &mut bool) -> String {
        let address = self.controllers.current().1.to_string();
        let (dialer, token) = match dialer(ctl, self.controllers.addresses()).await {
            Ok(d) => d,
            Err(e) => return e,
        };
        let endpoint = match dialer.endpoint(&address) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(15))
                .keep_alive_timeout(Duration::from_secs(10)),
            Err(e) => return format!("bad controller address: {e}"),
        };
        let channel = match dialer.connect(endpoint).await {
            Ok(c) => c,
            Err(e) => return format!("connect to {address}: {}", pss_security::member::chain(&e)),
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
        tracing::info!(service = %self.name, controller = %address, "subscribed to endpoint snapshots");
        let mut first = true;
        loop {
            match stream.message().await {
                Ok(Some(snap)) => {
                    *delivered = true;
                    self.apply(snap, first).await;
                    first = false;
                }
                Ok(None) => return "controller ended the stream".into(),
                Err(s) => return format!("stream: {} ({:?})", s.message(), s.code()),
            }
        }
    }
}

/// Memberships of this process, one per controller list, name and state directory.
static MEMBERS: std::sync::LazyLock<
    tokio::sync::Mutex<std::collections::HashMap<String, Arc<Membership>>>,
> = std::sync::LazyLock::new(Default::default);

/// How to dial the controller, and the token to send (none with a certificate).
async fn dialer(
    ctl: &ControllerConfig,
    controllers: &[String],
) -> std::result::Result<(Dialer, String), String> {
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
    let list = controllers.join(",");
    let key = format!("{list}|{name}|{}", state_dir.display());
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
    // Joining and renewing try every controller in turn.
    let options = JoinOptions {
        controller: list,
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
    // Checked by `validate` before the proxy starts.
    let controllers = ctl
        .controllers()
        .unwrap_or_else(|_| vec![ctl.display_addresses()]);
    let mut watch = Watch {
        name,
        remote,
        balancer,
        held: None,
        controllers: Rotation::new(controllers),
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
        let (index, _) = watch.controllers.current();
        watch.controllers.failed(index, &reason);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
