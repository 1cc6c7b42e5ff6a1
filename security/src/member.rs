//! How an agent or a proxy becomes a member and stays one: it joins with a join token (the
//! token pins the CA: the controller is verified before anything is sent) or with the seed's
//! operator token and the CA file, sending a CSR for a key that never leaves its state
//! directory; it keeps the certificate there (`cert.pem`, `key.pem` `0600`, `ca.pem`) and uses
//! it from then on; and it renews it when two thirds of its lifetime have passed, swapping it
//! in place ([`LiveCert`]) so no connection or pod is disturbed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pss_plumbing::{Backoff, Retry};
use pss_proto::v1 as pb;
use pss_proto::v1::credentials_client::CredentialsClient;
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;
use crate::join_token::JoinToken;
use crate::tls::{client_config, Dialer, Expect, LiveCert};
use crate::{Error, Result};

/// How to join.
#[derive(Clone)]
pub struct JoinOptions {
    /// Controller address, or several separated by commas (`a:50051,b:50051`): a join or a
    /// renewal goes to the first that answers.
    pub controller: String,
    /// Who this member is (its certificate will say so).
    pub identity: Identity,
    /// Where the key and certificate live (created `0700`).
    pub state_dir: PathBuf,
    /// A join token (`--join-token`).
    pub join_token: Option<String>,
    /// Or the seed's token, with the CA to verify the controller by.
    pub operator_token: Option<String>,
    pub ca_pem: Option<String>,
    /// Lifetime to ask for (zero: the controller's default).
    pub ttl: Duration,
}

impl std::fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinOptions")
            .field("controller", &self.controller)
            .field("identity", &self.identity)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// A member's credential.
pub struct Membership {
    pub identity: Identity,
    pub ca_pem: String,
    /// The certificate and key, swapped on renewal.
    pub cert: Arc<LiveCert>,
    not_before_ms: AtomicI64,
    not_after_ms: AtomicI64,
    options: JoinOptions,
    /// Index in [`JoinOptions::controller`]'s list of the controller that last answered:
    /// renewals start there.
    controller: AtomicUsize,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.identity)
            .field("not_after_ms", &self.not_after_ms())
            .finish_non_exhaustive()
    }
}

const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";
const CA: &str = "ca.pem";

impl Membership {
    /// The stored credential when it names this identity and is still valid (and its CA is
    /// the one a join token pins), else a new one from the controller; retries while the
    /// controller is unreachable, until `shutdown`.
    pub async fn obtain(
        options: JoinOptions,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Membership>> {
        let token = match &options.join_token {
            Some(t) => Some(
                t.parse::<JoinToken>()
                    .map_err(|e| Error::Invalid(e.to_string()))?,
            ),
            None => None,
        };
        if token.is_none() && (options.operator_token.is_none() || options.ca_pem.is_none()) {
            if let Some(m) = Self::stored(&options, None)? {
                return Ok(m);
            }
            return Err(Error::Invalid(
                "no credential: pass --join-token (see `pssctl token create`), or the operator \
                 --token with --ca, or --insecure"
                    .into(),
            ));
        }
        if let Some(m) = Self::stored(&options, token.as_ref())? {
            tracing::info!(identity = %m.identity, "using the stored certificate");
            return Ok(m);
        }
        let mut retry = Retry::new(Backoff::default());
        loop {
            match Self::join(&options, token.as_ref()).await {
                Ok(m) => return Ok(m),
                Err(JoinError::Final(e)) => return Err(e),
                Err(JoinError::Retry(e)) if shutdown.is_cancelled() => return Err(e),
                Err(JoinError::Retry(e)) => {
                    let delay = retry.next_delay();
                    tracing::warn!(controller = %options.controller, retry_in = ?delay, "join: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Error::Rpc("shut down while joining".into())),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn stored(options: &JoinOptions, token: Option<&JoinToken>) -> Result<Option<Arc<Membership>>> {
        let dir = &options.state_dir;
        if !dir.join(CERT).exists() {
            return Ok(None);
        }
        let read = |f: &str| crate::files::read_text(&dir.join(f));
        let (cert_pem, key_pem, ca_pem) = (read(CERT)?, read(KEY)?, read(CA)?);
        let peer = crate::peer::identity_of(&crate::pem::first_cert_der(&cert_pem)?)?;
        let ca_digest = crate::sha256(&crate::pem::first_cert_der(&ca_pem)?);
        let usable = peer.identity == options.identity
            && peer.not_after_ms > pss_plumbing::clock::now_ms() + 10_000
            && token.is_none_or(|t| t.ca_digest == ca_digest)
            && options
                .ca_pem
                .as_deref()
                .is_none_or(|c| c.trim() == ca_pem.trim());
        if !usable {
            return Ok(None);
        }
        Ok(Some(Arc::new(Membership {
            identity: peer.identity,
            ca_pem,
            cert: LiveCert::from_pem(&cert_pem, &key_pem)?,
            not_before_ms: AtomicI64::new(peer.not_before_ms),
            not_after_ms: AtomicI64::new(peer.not_after_ms),
            options: options.clone(),
            controller: AtomicUsize::new(0),
        })))
    }

    async fn join(
        options: &JoinOptions,
        token: Option<&JoinToken>,
    ) -> Result<Arc<Membership>, JoinError> {
        let expect = match (token, &options.ca_pem) {
            (Some(t), _) => Expect::PinnedCa(t.ca_digest),
            (None, Some(ca)) => Expect::Controller {
                ca_pem: ca.clone(),
                server_name: crate::ca::role_dns_name(crate::Role::Controller),
            },
            (None, None) => unreachable!("checked by obtain"),
        };
        let dialer = Dialer::tls(client_config(expect, None).map_err(JoinError::Final)?);
        let identity = options.identity.clone();
        let (key_pem, csr_pem) =
            tokio::task::spawn_blocking(move || crate::ca::new_key_and_csr(&identity))
                .await
                .map_err(|e| JoinError::Final(Error::Rpc(e.to_string())))?
                .map_err(JoinError::Final)?;
        // Every controller in turn: the first that answers issues the certificate; one that
        // cannot be reached is passed over, one that refuses ends the join.
        let addresses = controllers(&options.controller);
        let mut last = None;
        for (i, address) in addresses.iter().enumerate() {
            match Self::join_at(options, token, &dialer, address, &csr_pem).await {
                Ok(response) => {
                    let m =
                        Self::install(options, &response, &key_pem, i).map_err(JoinError::Final)?;
                    tracing::info!(identity = %m.identity, controller = %address, "joined the cluster: certificate stored in {}", options.state_dir.display());
                    return Ok(m);
                }
                Err(JoinError::Retry(e)) => {
                    if addresses.len() > 1 {
                        tracing::warn!(controller = %address, "join: {e}; trying the next controller");
                    }
                    last = Some(JoinError::Retry(e));
                }
                Err(final_error) => return Err(final_error),
            }
        }
        Err(last
            .unwrap_or_else(|| JoinError::Final(Error::Invalid("no controller address".into()))))
    }

    /// One join request to the controller at `address`.
    async fn join_at(
        options: &JoinOptions,
        token: Option<&JoinToken>,
        dialer: &Dialer,
        address: &str,
        csr_pem: &str,
    ) -> Result<pb::JoinResponse, JoinError> {
        let endpoint = dialer
            .endpoint(address)
            .map_err(JoinError::Final)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let channel = dialer
            .connect(endpoint)
            .await
            .map_err(|e| JoinError::Retry(Error::Rpc(format!("connect: {}", chain(&e)))))?;
        let mut request = tonic::Request::new(pb::JoinRequest {
            join_token: options.join_token.clone().unwrap_or_default(),
            role: options.identity.role.to_string(),
            name: options.identity.name.clone(),
            csr_pem: csr_pem.to_string(),
            ttl_seconds: options.ttl.as_secs(),
        });
        if let (None, Some(t)) = (token, &options.operator_token) {
            let value = format!("Bearer {t}")
                .parse()
                .map_err(|_| JoinError::Final(Error::Invalid("token: not header text".into())))?;
            request
                .metadata_mut()
                .insert(pss_proto::auth::AUTHORIZATION, value);
        }
        let response = CredentialsClient::new(channel)
            .join(request)
            .await
            .map_err(|s| {
                let e = Error::Rpc(format!(
                    "the controller refused to join us: {}",
                    s.message()
                ));
                if s.code() == tonic::Code::Unavailable {
                    JoinError::Retry(e)
                } else {
                    JoinError::Final(e)
                }
            })?
            .into_inner();
        if let Some(t) = token {
            let got = crate::sha256(
                &crate::pem::first_cert_der(&response.ca_pem).map_err(JoinError::Final)?,
            );
            if got != t.ca_digest {
                return Err(JoinError::Final(Error::Invalid(
                    "the controller sent a CA other than the one the join token pins".into(),
                )));
            }
        }
        Ok(response)
    }

    /// Writes a new credential to the state directory and builds the membership.
    fn install(
        options: &JoinOptions,
        response: &pb::JoinResponse,
        key_pem: &str,
        controller: usize,
    ) -> Result<Arc<Membership>> {
        let peer =
            crate::peer::identity_of(&crate::pem::first_cert_der(&response.certificate_pem)?)?;
        if peer.identity != options.identity {
            return Err(Error::Invalid(format!(
                "the controller issued a certificate for {}, not {}",
                peer.identity, options.identity
            )));
        }
        write_credential(
            &options.state_dir,
            &response.certificate_pem,
            key_pem,
            &response.ca_pem,
        )?;
        Ok(Arc::new(Membership {
            identity: peer.identity,
            ca_pem: response.ca_pem.clone(),
            cert: LiveCert::from_pem(&response.certificate_pem, key_pem)?,
            not_before_ms: AtomicI64::new(peer.not_before_ms),
            not_after_ms: AtomicI64::new(peer.not_after_ms),
            options: options.clone(),
            controller: AtomicUsize::new(controller),
        }))
    }

    /// Expiry of the current certificate, unix milliseconds.
    pub fn not_after_ms(&self) -> i64 {
        self.not_after_ms.load(Ordering::Relaxed)
    }

    /// TLS to the controller with this membership's certificate.
    pub fn dialer(&self) -> Result<Dialer> {
        Ok(Dialer::tls(client_config(
            Expect::Controller {
                ca_pem: self.ca_pem.clone(),
                server_name: crate::ca::role_dns_name(crate::Role::Controller),
            },
            Some(self.cert.clone()),
        )?))
    }

    /// When the certificate should be renewed: two thirds into its lifetime.
    pub fn renew_at_ms(&self) -> i64 {
        let issued =
            self.not_before_ms.load(Ordering::Relaxed) + crate::ca::BACKDATE.as_millis() as i64;
        let end = self.not_after_ms();
        issued + (end - issued) * 2 / 3
    }

    /// Asks the controller for a new certificate (new key) and swaps it in; with several
    /// controllers, the one that answered last is asked first, then the others in turn.
    pub async fn renew(&self) -> Result<()> {
        let identity = self.identity.clone();
        let (key_pem, csr_pem) =
            tokio::task::spawn_blocking(move || crate::ca::new_key_and_csr(&identity))
                .await
                .map_err(|e| Error::Rpc(e.to_string()))??;
        let dialer = self.dialer()?;
        let addresses = controllers(&self.options.controller);
        let first = self.controller.load(Ordering::Relaxed);
        let mut last = None;
        let mut response = None;
        for k in 0..addresses.len() {
            let i = (first + k) % addresses.len();
            match Self::renew_at(&dialer, &addresses[i], &csr_pem).await {
                Ok(r) => {
                    if i != first % addresses.len() {
                        tracing::warn!(
                            "switched controller from {} to {}: certificate renewal",
                            addresses[first % addresses.len()],
                            addresses[i]
                        );
                    }
                    self.controller.store(i, Ordering::Relaxed);
                    response = Some(r);
                    break;
                }
                Err(e) => {
                    if addresses.len() > 1 {
                        tracing::debug!(controller = %addresses[i], "renewal: {e}");
                    }
                    last = Some(e);
                }
            }
        }
        let Some(response) = response else {
            return Err(last.unwrap_or_else(|| Error::Invalid("no controller address".into())));
        };
        let peer =
            crate::peer::identity_of(&crate::pem::first_cert_der(&response.certificate_pem)?)?;
        if peer.identity != self.identity {
            return Err(Error::Invalid(format!(
                "renewed certificate names {}",
                peer.identity
            )));
        }
        write_credential(
            &self.options.state_dir,
            &response.certificate_pem,
            &key_pem,
            &self.ca_pem,
        )?;
        self.cert.replace(&response.certificate_pem, &key_pem)?;
        self.not_before_ms
            .store(peer.not_before_ms, Ordering::Relaxed);
        self.not_after_ms
            .store(peer.not_after_ms, Ordering::Relaxed);
        tracing::info!(identity = %self.identity, not_after_ms = peer.not_after_ms, "certificate renewed");
        Ok(())
    }

    /// One renewal request to the controller at `address`.
    async fn renew_at(dialer: &Dialer, address: &str, csr_pem: &str) -> Result<pb::JoinResponse> {
        let endpoint = dialer
            .endpoint(address)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let channel = dialer
            .connect(endpoint)
            .await
            .map_err(|e| Error::Rpc(format!("connect to {address}: {}", chain(&e))))?;
        Ok(CredentialsClient::new(channel)
            .renew(pb::RenewRequest {
                csr_pem: csr_pem.to_string(),
            })
            .await
            .map_err(|s| Error::Rpc(format!("renew refused by {address}: {}", s.message())))?
            .into_inner())
    }

    /// Renews the certificate two thirds into each lifetime until `shutdown`; a failed renewal
    /// is retried with back-off (at most every 30 s).
    pub async fn keep_renewed(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retry = Retry::new(Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            factor: 2.0,
        });
        loop {
            let wait = (self.renew_at_ms() - pss_plumbing::clock::now_ms()).max(0) as u64;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
            loop {
                match self.renew().await {
                    Ok(()) => {
                        retry.reset();
                        break;
                    }
                    Err(e) => {
                        let delay = retry.next_delay();
                        tracing::warn!(identity = %self.identity, retry_in = ?delay, "certificate renewal failed: {e}");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }
}

/// The controller addresses of a [`JoinOptions::controller`]: one, or several separated by
/// commas (checked by the flag that gave them; empty items are skipped here).
pub fn controllers(list: &str) -> Vec<String> {
    let v: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if v.is_empty() {
        vec![list.trim().to_string()]
    } else {
        v
    }
}

fn write_credential(dir: &Path, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<()> {
    crate::files::private_dir(dir)?;
    crate::files::write_private(&dir.join(KEY), key_pem)?;
    crate::files::write_private(&dir.join(CERT), cert_pem)?;
    crate::files::write_private(&dir.join(CA), ca_pem)
}

enum JoinError {
    /// Worth retrying (the controller is not there yet).
    Retry(Error),
    Final(Error),
}

/// An error and its sources on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}
