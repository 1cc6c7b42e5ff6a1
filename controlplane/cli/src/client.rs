//! The controller client pssctl uses, with errors turned into one clear line each.

use std::io::Write;
use std::time::Duration;

use pss_proto::auth::BearerToken;
use pss_proto::v1 as pb;
use pss_proto::v1::credentials_client::CredentialsClient;
use pss_proto::v1::operator_client::OperatorClient;
use pss_security::tls::{client_config, Dialer, Expect, LiveCert};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::connection::Connection;

/// Why a pssctl command failed; the message is what the user sees after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the controller at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("the controller refused the credential ({0}); check --token/PSS_TOKEN or --config")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Usage(String),
    #[error("controller error: {0}")]
    Server(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    fn from_status(addr: &str, s: Status) -> Self {
        let msg = s.message().to_string();
        match s.code() {
            Code::Unauthenticated => CliError::Unauthenticated(msg),
            Code::PermissionDenied => CliError::Denied(msg),
            Code::NotFound => CliError::NotFound(msg),
            Code::InvalidArgument | Code::FailedPrecondition => CliError::Invalid(msg),
            Code::Unavailable => CliError::Unreachable {
                addr: addr.to_string(),
                detail: msg,
            },
            _ => CliError::Server(msg),
        }
    }
}

/// A connected Operator client (and the Credentials service on the same channel).
///
/// With several controllers, the first that accepts the connection is used. A read whose call
/// fails with `Unavailable` (that controller went away) is tried once more on the next one
/// that connects; a write is never sent twice: a controller that answered, even with an error,
/// has the last word, and one that went away mid-call may have applied it.
pub struct Client {
    /// The address in use, as the user gave it, for error messages.
    addr: String,
    inner: OperatorClient<InterceptedService<Channel, BearerToken>>,
    credentials: CredentialsClient<InterceptedService<Channel, BearerToken>>,
    /// The label selector list calls send (`get -l`); empty: everything.
    selector: String,
    /// Every controller address, in order, and the index of the one in use.
    addresses: Vec<String>,
    index: usize,
    /// How to dial (TLS or not) and the token calls carry: what moving to the next
    /// controller needs.
    dialer: Dialer,
    token: BearerToken,
}

/// A read call on `$self.$svc`: on `Unavailable`, once more on the next controller that
/// connects (see [`Client`]).
macro_rules! read {
    ($self:ident . $svc:ident . $method:ident ( $req:expr )) => {{
        let req = $req;
        let first = $self.$svc.$method(req.clone()).await;
        match first {
            Err(s) if s.code() == Code::Unavailable => {
                if $self.move_on().await {
                    $self.$svc.$method(req).await
                } else {
                    Err(s)
                }
            }
            r => r,
        }
    }};
}

/// One address's connection (3 s connect timeout).
async fn dial(dialer: &Dialer, addr: &str) -> Result<Channel, CliError> {
    let endpoint = dialer
        .endpoint(addr)
        .map_err(|e| CliError::Usage(format!("invalid controller address: {e}")))?
        .connect_timeout(Duration::from_secs(3));
    dialer
        .connect(endpoint)
        .await
        .map_err(|e| CliError::Unreachable {
            addr: addr.to_string(),
            detail: source_chain(&e),
        })
}

impl Client {
    /// Dials the controllers in order until one accepts the connection (3 s connect timeout
    /// each), with TLS unless the connection says plaintext.
    pub async fn connect(conn: &Connection) -> Result<Self, CliError> {
        let usage = |e: pss_security::Error| CliError::Usage(e.to_string());
        let dialer = match &conn.tls {
            None => Dialer::plaintext(),
            Some(tls) => {
                let cert = match &tls.cert {
                    Some((c, k)) => Some(LiveCert::from_pem(c, k).map_err(usage)?),
                    None => None,
                };
                let expect = Expect::Controller {
                    ca_pem: tls.ca_pem.clone(),
                    server_name: tls.server_name.clone(),
                };
                Dialer::tls(client_config(expect, cert).map_err(usage)?)
            }
        };
        let token = BearerToken::new(conn.token.as_deref().unwrap_or(""))
            .map_err(|s| CliError::Usage(s.message().to_string()))?;
        if conn.addresses.is_empty() {
            return Err(CliError::Usage("no controller address".into()));
        }
        let mut failures = Vec::new();
        for (index, addr) in conn.addresses.iter().enumerate() {
            match dial(&dialer, addr).await {
                Ok(channel) => {
                    return Ok(Client {
                        addr: addr.clone(),
                        inner: OperatorClient::with_interceptor(channel.clone(), token.clone()),
                        credentials: CredentialsClient::with_interceptor(channel, token.clone()),
                        selector: String::new(),
                        addresses: conn.addresses.clone(),
                        index,
                        dialer,
                        token,
                    })
                }
                Err(CliError::Unreachable { addr, detail }) => failures.push((addr, detail)),
                Err(e) => return Err(e),
            }
        }
        Err(unreachable_all(failures))
    }

    /// The controller in use went away: connects to the next address that accepts (each of
    /// the others tried once, in order); false when none does (or there is no other).
    async fn move_on(&mut self) -> bool {
        let n = self.addresses.len();
        for step in 1..n {
            let index = (self.index + step) % n;
            let addr = self.addresses[index].clone();
            if let Ok(channel) = dial(&self.dialer, &addr).await {
                self.inner = OperatorClient::with_interceptor(channel.clone(), self.token.clone());
                self.credentials = CredentialsClient::with_interceptor(channel, self.token.clone());
                self.addr = addr;
                self.index = index;
                return true;
            }
        }
        false
    }

    pub async fn create_join_token(
        &mut self,
        role: &str,
        ttl: Duration,
    ) -> Result<pb::CreateJoinTokenResponse, CliError> {
        let r = self
            .credentials
            .create_join_token(pb::CreateJoinTokenRequest {
                role: role.to_string(),
                ttl_seconds: ttl.as_secs(),
            })
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn list_join_tokens(&mut self) -> Result<Vec<pb::JoinTokenInfo>, CliError> {
        let r = read!(self
            .credentials
            .list_join_tokens(pb::ListJoinTokensRequest {}));
        r.map(|r| r.into_inner().tokens).map_err(|s| self.err(s))
    }

    pub async fn revoke_join_token(&mut self, id: &str) -> Result<(), CliError> {
        let r = self
            .credentials
            .revoke_join_token(pb::RevokeJoinTokenRequest { id: id.to_string() })
            .await;
        r.map(|_| ()).map_err(|s| self.err(s))
    }

    /// Lists of pods, workloads, services and nodes keep only the objects whose labels match
    /// `selector` (`app=web,tier!=db`), checked here first so a typo fails before dialling.
    pub fn set_selector(&mut self, selector: &str) -> Result<(), CliError> {
        pss_core::model::Selector::parse(selector)
            .map_err(|e| CliError::Usage(format!("-l {selector:?}: {e}")))?;
        self.selector = selector.to_string();
        Ok(())
    }

    fn list_request(&self) -> pb::ListRequest {
        pb::ListRequest {
            label_selector: self.selector.clone(),
            ..Default::default()
        }
    }

    fn err(&self, s: Status) -> CliError {
        CliError::from_status(&self.addr, s)
    }

    pub async fn apply(
        &mut self,
        manifest: String,
        source: String,
    ) -> Result<pb::ApplyResponse, CliError> {
        let r = self
            .inner
            .apply(pb::ApplyRequest {
                manifest,
                source,
                objects: Vec::new(),
            })
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// Every pod (of `workload`, when not empty), fetched page by page and ordered by
    /// workload, then id.
    pub async fn list_pods(&mut self, workload: String) -> Result<Vec<pb::Pod>, CliError> {
        let mut pods = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListRequest {
                filter: workload.clone(),
                page_token,
                // The largest pages the controller gives: half the round trips.
                page_size: pss_core::paging::MAX_PAGE_SIZE as u32,
                ..self.list_request()
            };
            let r = read!(self.inner.list_pods(request))
                .map_err(|s| self.err(s))?
                .into_inner();
            pods.extend(r.pods);
            if r.next_page_token.is_empty() {
                break;
            }
            page_token = r.next_page_token;
        }
        pods.sort_by(|a, b| a.workload.cmp(&b.workload).then_with(|| a.id.cmp(&b.id)));
        Ok(pods)
    }

    pub async fn list_workloads(&mut self) -> Result<Vec<pb::Workload>, CliError> {
        let r = read!(self.inner.list_workloads(self.list_request()));
        r.map(|r| r.into_inner().workloads).map_err(|s| self.err(s))
    }

    pub async fn list_services(&mut self) -> Result<Vec<pb::Service>, CliError> {
        let r = read!(self.inner.list_services(self.list_request()));
        r.map(|r| r.into_inner().services).map_err(|s| self.err(s))
    }

    pub async fn list_nodes(&mut self) -> Result<Vec<pb::Node>, CliError> {
        let r = read!(self.inner.list_nodes(self.list_request()));
        r.map(|r| r.into_inner().nodes).map_err(|s| self.err(s))
    }

    /// The newest `limit` events (0 = the server's default), oldest first, page by page.
    pub async fn list_events(&mut self, limit: u32) -> Result<Vec<pb::Event>, CliError> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListRequest {
                limit,
                page_token,
                ..Default::default()
            };
            let r = read!(self.inner.list_events(request))
                .map_err(|s| self.err(s))?
                .into_inner();
            events.extend(r.events);
            if r.next_page_token.is_empty() {
                break;
            }
            page_token = r.next_page_token;
        }
        Ok(events)
    }

    pub async fn list_autoscalers(
        &mut self,
        workload: String,
    ) -> Result<Vec<pb::AutoScalePolicy>, CliError> {
        let r = read!(self.inner.list_autoscalers(pb::ListRequest {
            filter: workload,
            ..Default::default()
        }));
        r.map(|r| r.into_inner().autoscalers)
            .map_err(|s| self.err(s))
    }

    pub async fn scale(
        &mut self,
        workload: &str,
        replicas: u32,
    ) -> Result<pb::ScaleResponse, CliError> {
        let r = self
            .inner
            .scale(pb::ScaleRequest {
                workload: workload.to_string(),
                replicas,
            })
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn autoscale(
        &mut self,
        req: pb::AutoscaleRequest,
    ) -> Result<pb::AutoscaleResponse, CliError> {
        let r = self.inner.autoscale(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// The controller's version.
    pub async fn version(&mut self) -> Result<String, CliError> {
        let r = read!(self.inner.version(pb::VersionRequest {}));
        r.map(|r| r.into_inner().version).map_err(|s| self.err(s))
    }

    pub async fn delete(&mut self, kind: &str, name: &str) -> Result<(), CliError> {
        let r = self
            .inner
            .delete(pb::DeleteRequest {
                kind: kind.to_string(),
                name: name.to_string(),
            })
            .await;
        r.map(|_| ()).map_err(|s| self.err(s))
    }

    pub async fn set_node_scheduling(
        &mut self,
        node: &str,
        action: &str,
    ) -> Result<pb::NodeSchedulingResponse, CliError> {
        let r = self
            .inner
            .set_node_scheduling(pb::NodeSchedulingRequest {
                node: node.to_string(),
                action: action.to_string(),
            })
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn rollout(
        &mut self,
        workload: &str,
        action: &str,
        to_revision: u64,
    ) -> Result<pb::RolloutResponse, CliError> {
        let r = self
            .inner
            .rollout(pb::RolloutRequest {
                workload: workload.to_string(),
                action: action.to_string(),
                to_revision,
            })
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn rollout_history(&mut self, workload: &str) -> Result<Vec<pb::Revision>, CliError> {
        let r = read!(self.inner.rollout_history(pb::RolloutHistoryRequest {
            workload: workload.to_string(),
        }));
        r.map(|r| r.into_inner().revisions).map_err(|s| self.err(s))
    }

    /// The workload called `name`, as listed (with its rollout status).
    pub async fn workload(&mut self, name: &str) -> Result<pb::Workload, CliError> {
        let r = read!(self.inner.list_workloads(pb::ListRequest::default()))
            .map_err(|s| self.err(s))?;
        r.into_inner()
            .workloads
            .into_iter()
            .find(|w| w.name == name)
            .ok_or_else(|| CliError::NotFound(format!("workload \"{name}\" not found")))
    }

    /// Opens a watch of `kind` (with the selector set by [`Client::set_selector`]).
    pub async fn watch(
        &mut self,
        kind: &str,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, CliError> {
        // A stream whose controller went away before it opened is opened on the next one.
        let r = read!(self.inner.watch(pb::WatchRequest {
            kind: kind.to_string(),
            label_selector: self.selector.clone(),
            resume_from: 0,
        }));
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// The next event of a watch; `None` when the controller ended it.
    pub async fn next_event(
        &self,
        stream: &mut tonic::Streaming<pb::WatchEvent>,
    ) -> Result<Option<pb::WatchEvent>, CliError> {
        stream.message().await.map_err(|s| self.err(s))
    }

    /// Streams a pod's logs into `out` until the stream ends (or forever with `follow`).
    pub async fn logs(
        &mut self,
        req: pb::PodLogsRequest,
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let r = read!(self.inner.pod_logs(req));
        let mut stream = r.map_err(|s| self.err(s))?.into_inner();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    out.write_all(&chunk.data)?;
                    out.flush()?;
                }
                Ok(None) => return Ok(()),
                Err(s) => return Err(self.err(s)),
            }
        }
    }
}

/// None of the controllers accepted the connection: one of them is named as before, several
/// with each one's reason.
fn unreachable_all(mut failures: Vec<(String, String)>) -> CliError {
    if failures.len() == 1 {
        let (addr, detail) = failures.remove(0);
        return CliError::Unreachable { addr, detail };
    }
    let addrs: Vec<&str> = failures.iter().map(|(a, _)| a.as_str()).collect();
    CliError::Unreachable {
        addr: format!("any of {}", addrs.join(", ")),
        detail: failures
            .iter()
            .map(|(a, d)| format!("{a}: {d}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// An error and its sources on one line ("transport error: connection refused").
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}
