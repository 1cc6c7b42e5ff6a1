//! The tower layer every PSS gRPC server runs behind: it finds out who calls (the identity of
//! the client certificate, else the seed's shared token, else nobody), refuses revoked
//! certificates, asks [`crate::policy`] whether that role may call the method, and passes the
//! [`Caller`] on in the request's extensions for handlers that check more (an agent may only
//! speak for its own node). Refusals: `Unauthenticated` for a bad credential, `PermissionDenied`
//! naming the role and the method.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use pss_proto::auth::TokenCheck;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::identity::{Identity, Role};
use crate::policy::{self, Server};

/// Who made a call, as the guard established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    /// Serial of the certificate it presented (`None`: the shared token).
    pub serial: Option<String>,
}

impl Caller {
    /// The caller of a request the guard let through (`None` for anonymous calls, which only
    /// `Credentials/Join` admits).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Caller> {
        request.extensions().get::<Caller>()
    }
}

/// Tells whether a certificate serial has been revoked.
pub trait Revocations: Send + Sync + 'static {
    fn is_revoked(&self, serial: &str) -> bool;
}

/// No revocations (the agent's server: the controller's certificate is never revoked).
pub struct NoRevocations;

impl Revocations for NoRevocations {
    fn is_revoked(&self, _serial: &str) -> bool {
        false
    }
}

/// The layer.
#[derive(Clone)]
pub struct Guard {
    server: Server,
    /// The seed's shared token, and the role it stands for (operator on the controller; on an
    /// insecure agent, the controller, which is the only one sending it there).
    token: Option<(TokenCheck, Role)>,
    revocations: Arc<dyn Revocations>,
}

impl Guard {
    pub fn new(server: Server, revocations: Arc<dyn Revocations>) -> Guard {
        Guard {
            server,
            token: None,
            revocations,
        }
    }

    /// Also admits the shared `token` as `role`.
    pub fn with_token(mut self, token: &str, role: Role) -> Guard {
        self.token = Some((TokenCheck::new(token), role));
        self
    }

    /// Who calls, or why the credential is refused.
    fn caller<B>(&self, req: &http::Request<B>) -> Result<Option<Caller>, Status> {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        if let Some(leaf) = certs.as_ref().and_then(|c| c.first()) {
            let peer = crate::peer::identity_of(leaf)
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            if self.revocations.is_revoked(&peer.serial) {
                return Err(Status::unauthenticated(format!(
                    "the certificate of {} (serial {}) is revoked",
                    peer.identity, peer.serial
                )));
            }
            return Ok(Some(Caller {
                identity: peer.identity,
                serial: Some(peer.serial),
            }));
        }
        let header = req.headers().get(pss_proto::auth::AUTHORIZATION);
        match (header, &self.token) {
            (None, _) => Ok(None),
            (Some(_), None) => Err(Status::unauthenticated(
                "this server takes no token: authenticate with a certificate",
            )),
            (Some(h), Some((check, role))) => {
                if check.admits(Some(h.as_bytes())) {
                    Ok(Some(Caller {
                        identity: Identity {
                            role: *role,
                            name: "token".into(),
                        },
                        serial: None,
                    }))
                } else {
                    Err(Status::unauthenticated("invalid token"))
                }
            }
        }
    }

    /// The caller if the call may go on, else the refusal.
    pub fn admit<B>(&self, req: &http::Request<B>) -> Result<Option<Caller>, Status> {
        let caller = self.caller(req)?;
        let role = caller.as_ref().map(|c| c.identity.role);
        let path = req.uri().path();
        if policy::allows(self.server, role, path) {
            Ok(caller)
        } else if role.is_none() {
            Err(Status::unauthenticated(policy::refusal(role, path)))
        } else {
            Err(Status::permission_denied(policy::refusal(role, path)))
        }
    }
}

impl<S> tower_layer::Layer<S> for Guard {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            guard: self.clone(),
            inner,
        }
    }
}

/// A service behind the [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    guard: Guard,
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Guarded<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.guard.admit(&req) {
            Ok(caller) => {
                if let Some(c) = caller {
                    req.extensions_mut().insert(c);
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                tracing::debug!(path = %req.uri().path(), "refused: {}", status.message());
                Box::pin(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}
