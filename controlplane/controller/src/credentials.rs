//! The `Credentials` service: joining (a join token, or an operator's credential, buys a
//! certificate for the role and name asked), renewing (a member's valid certificate buys a new
//! one for the same identity), and join tokens (create, list, revoke; operators only, see
//! [`pss_security::policy`]). Every input is bounded and checked first; errors name the field.

use std::sync::Arc;
use std::time::Duration;

use pss_proto::v1 as pb;
use pss_security::guard::Caller;
use pss_security::join_token::{self, JoinToken};
use pss_security::{Identity, Role};
use pss_store::{CertificateRecord, CredentialStore, JoinTokenRecord};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::error::to_status;
use crate::security::{DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL, MIN_CERT_TTL, MIN_TOKEN_TTL};
use crate::Shared;
use pss_core::model::EventRecord;
use pss_plumbing::clock::now_ms;

pub(crate) struct CredentialsApi {
    shared: Arc<Shared>,
}

impl CredentialsApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        CredentialsApi { shared }
    }

    fn store(&self) -> Result<&dyn CredentialStore, Status> {
        self.shared
            .store
            .credentials()
            .ok_or_else(|| Status::failed_precondition("this controller keeps no credentials"))
    }

    /// Issues a certificate for `identity` (CSR's key), records it.
    async fn issue(
        &self,
        identity: Identity,
        csr_pem: String,
        ttl_seconds: u64,
    ) -> Result<pb::JoinResponse, Status> {
        let Some(pki) = &self.shared.security.pki else {
            return Err(Status::failed_precondition(
                "this controller holds no CA key (it runs with --tls-cert/--insecure): issue \
                 certificates with your own PKI",
            ));
        };
        let max = self.shared.security.cert_ttl;
        let ttl = match ttl_seconds {
            0 => max,
            s => Duration::from_secs(s).clamp(MIN_CERT_TTL, max),
        };
        let ca_pem = pki.ca.cert_pem().to_string();
        let shared = self.shared.clone();
        let id = identity.clone();
        let issued = tokio::task::spawn_blocking(move || {
            let pki = shared.security.pki.as_ref().expect("checked above");
            pki.ca.issue_for_csr(&id, &csr_pem, ttl)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)?;
        self.store()?
            .add_certificate(&CertificateRecord {
                serial: issued.serial.clone(),
                role: identity.role.to_string(),
                name: identity.name.clone(),
                issued_ms: now_ms(),
                not_after_ms: issued.not_after_ms,
                revoked: false,
            })
            .map_err(to_status)?;
        tracing::info!(identity = %identity, serial = %issued.serial, "certificate issued");
        Ok(pb::JoinResponse {
            certificate_pem: issued.cert_pem,
            ca_pem,
            not_after_ms: issued.not_after_ms,
        })
    }

    /// Checks a join token against the store: known, not revoked, not expired, the secret's
    /// digest equal (constant time), the role the one asked.
    fn check_token(&self, text: &str, role: Role) -> Result<(), Status> {
        let denied = |why: &str| Status::unauthenticated(format!("join token refused: {why}"));
        let token: JoinToken = text
            .parse()
            .map_err(|e: join_token::TokenError| Status::invalid_argument(e.to_string()))?;
        let Some(record) = self
            .store()?
            .get_join_token(&token.id_hex())
            .map_err(to_status)?
        else {
            return Err(denied("unknown token"));
        };
        if !bool::from(
            record
                .secret_sha256
                .as_slice()
                .ct_eq(&token.secret_digest()),
        ) {
            return Err(denied("wrong secret"));
        }
        if record.revoked {
            return Err(denied("revoked"));
        }
        if record.expires_ms != 0 && record.expires_ms <= now_ms() {
            return Err(denied("expired"));
        }
        if record.role != token.role.as_str() || token.role != role {
            return Err(Status::permission_denied(format!(
                "a {} join token cannot join as {role}",
                record.role
            )));
        }
        Ok(())
    }
}

fn info(r: &JoinTokenRecord) -> pb::JoinTokenInfo {
    pb::JoinTokenInfo {
        id: r.id.clone(),
        role: r.role.clone(),
        created_ms: r.created_ms,
        expires_ms: r.expires_ms,
        revoked: r.revoked,
    }
}

#[tonic::async_trait]
impl pb::credentials_server::Credentials for CredentialsApi {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let by_operator = Caller::of(&request).is_some_and(|c| c.identity.role == Role::Operator);
        let req = request.into_inner();
        if req.join_token.len() > join_token::MAX_TOKEN_BYTES {
            return Err(Status::invalid_argument(format!(
                "join_token: at most {} bytes",
                join_token::MAX_TOKEN_BYTES
            )));
        }
        let role: Role = req
            .role
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("role: {e}")))?;
        if !role.joinable() {
            return Err(Status::invalid_argument(
                "role: controller certificates are not issued",
            ));
        }
        let identity = Identity::new(role, &req.name).map_err(Status::invalid_argument)?;
        if req.join_token.is_empty() {
            if !by_operator {
                return Err(Status::unauthenticated(
                    "Join needs a join token or an operator credential",
                ));
            }
        } else {
            self.check_token(&req.join_token, role)?;
        }
        let response = self
            .issue(identity.clone(), req.csr_pem, req.ttl_seconds)
            .await?;
        self.shared.event(EventRecord::normal(
            "Joined",
            format!("{role}/{}", identity.name),
            format!("{identity} joined: certificate issued"),
        ));
        Ok(Response::new(response))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = Caller::of(&request)
            .filter(|c| c.serial.is_some())
            .cloned()
            .ok_or_else(|| Status::permission_denied("Renew needs a client certificate"))?;
        let req = request.into_inner();
        let response = self.issue(caller.identity, req.csr_pem, 0).await?;
        Ok(Response::new(response))
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let req = request.into_inner();
        let Some(pki) = &self.shared.security.pki else {
            return Err(Status::failed_precondition(
                "this controller holds no CA (it runs with --tls-cert or --insecure): join tokens need one",
            ));
        };
        let role: Role = req
            .role
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("role: {e}")))?;
        if !role.joinable() {
            return Err(Status::invalid_argument("role: agent, proxy or operator"));
        }
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            s => Duration::from_secs(s),
        };
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(Status::invalid_argument(format!(
                "ttl_seconds: {} is outside {}..={}",
                ttl.as_secs(),
                MIN_TOKEN_TTL.as_secs(),
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        let token = JoinToken {
            role,
            ca_digest: pki.ca.digest(),
            id: rand::random(),
            secret: rand::random(),
        };
        let now = now_ms();
        let record = JoinTokenRecord {
            id: token.id_hex(),
            role: role.to_string(),
            secret_sha256: token.secret_digest().to_vec(),
            created_ms: now,
            expires_ms: now + ttl.as_millis() as i64,
            revoked: false,
        };
        self.store()?.add_join_token(&record).map_err(to_status)?;
        self.shared.event(EventRecord::normal(
            "JoinTokenCreated",
            format!("token/{}", record.id),
            format!(
                "{role} join token {} created, valid {}",
                record.id,
                humantime::format_duration(ttl)
            ),
        ));
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token: token.to_string(),
            info: Some(info(&record)),
        }))
    }

    async fn list_join_tokens(
        &self,
        _request: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        let tokens = self.store()?.join_tokens().map_err(to_status)?;
        Ok(Response::new(pb::ListJoinTokensResponse {
            tokens: tokens.iter().map(info).collect(),
        }))
    }

    async fn revoke_join_token(
        &self,
        request: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::RevokeJoinTokenResponse>, Status> {
        let id = join_token::parse_id(&request.into_inner().id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !self.store()?.revoke_join_token(&id).map_err(to_status)? {
            return Err(Status::not_found(format!("join token {id} not found")));
        }
        self.shared.event(EventRecord::normal(
            "JoinTokenRevoked",
            format!("token/{id}"),
            format!("join token {id} revoked"),
        ));
        Ok(Response::new(pb::RevokeJoinTokenResponse {}))
    }
}

/// Revokes every certificate of node `name`'s agent (`pssctl delete node/NAME`); returns how
/// many.
pub(crate) fn revoke_node(shared: &Shared, name: &str) -> Result<usize, Status> {
    let Some(store) = shared.store.credentials() else {
        return Ok(0);
    };
    let serials = store
        .revoke_certificates_of(Role::Agent.as_str(), name)
        .map_err(to_status)?;
    let n = serials.len();
    shared.security.revoked.add(serials);
    Ok(n)
}
