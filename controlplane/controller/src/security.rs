//! The controller's side of issue 11: how it serves (TLS with its CA, TLS with certificates
//! the user brought, or plaintext with `--insecure`), the guard every call passes
//! ([`pss_security::guard`]: identity, revocation, role policy), and the revocation list kept
//! in memory from the store.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pss_security::files::ControllerPki;
use pss_security::guard::{Guard, Revocations};
use pss_security::policy::Server;
use pss_security::tls::{self, ClientAuth, LiveCert};
use pss_security::Role;
use pss_store::StateStore;

use crate::{Error, Result};

/// Default lifetime of the certificates issued to agents, proxies and operators who join.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest certificate lifetime the controller issues.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(5);
/// Default and bounds of a join token's validity.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);

/// How the controller serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSetup {
    /// Plaintext, the shared token only (`--insecure`).
    Insecure,
    /// TLS with the controller's own CA, kept in this directory (created on first start).
    Auto { dir: PathBuf },
    /// TLS with certificates the user brought (`--tls-cert`, `--tls-key`, `--client-ca`);
    /// the controller then holds no CA key and issues nothing.
    Files {
        cert: PathBuf,
        key: PathBuf,
        client_ca: PathBuf,
    },
}

/// Revoked serials, in memory (loaded from the store at start, added to on revocation).
#[derive(Default)]
pub(crate) struct RevokedSet(RwLock<HashSet<String>>);

impl Revocations for RevokedSet {
    fn is_revoked(&self, serial: &str) -> bool {
        self.0.read().expect("revoked set").contains(serial)
    }
}

impl RevokedSet {
    pub fn add(&self, serials: impl IntoIterator<Item = String>) {
        self.0.write().expect("revoked set").extend(serials);
    }
}

/// What the controller's TLS needs at run time.
pub(crate) struct Security {
    /// The CA and the controller's certificate (`Auto` only).
    pub pki: Option<ControllerPki>,
    /// The server configuration (`None`: plaintext).
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// The CA agents' certificates are checked against, and the controller's client
    /// certificate, for dialing agents (`None`: plaintext with the token).
    pub agent_tls: Option<(String, Arc<LiveCert>)>,
    pub revoked: Arc<RevokedSet>,
    /// Lifetime of issued certificates.
    pub cert_ttl: Duration,
}

impl Security {
    /// Sets up TLS as `setup` says (key generation runs on a blocking thread), and loads the
    /// revocation list.
    pub async fn setup(
        setup: &TlsSetup,
        extra_sans: Vec<String>,
        store: &Arc<dyn StateStore>,
        cert_ttl: Duration,
    ) -> Result<Security> {
        let revoked = Arc::new(RevokedSet::default());
        if let Some(creds) = store.credentials() {
            revoked.add(creds.revoked_serials(pss_plumbing::clock::now_ms())?);
        }
        let config = |e: pss_security::Error| Error::Config(e.to_string());
        let (pki, server, agent_tls) = match setup.clone() {
            TlsSetup::Insecure => (None, None, None),
            TlsSetup::Auto { dir } => {
                if dir.as_os_str().is_empty() {
                    return Err(Error::Config("TLS: no directory for the CA".into()));
                }
                if store.credentials().is_none() {
                    return Err(Error::Config(
                        "this state store keeps no credentials: the CA cannot run on it".into(),
                    ));
                }
                let pki = tokio::task::spawn_blocking(move || {
                    ControllerPki::load_or_create(&dir, &extra_sans)
                })
                .await
                .map_err(|e| Error::Config(e.to_string()))?
                .map_err(config)?;
                let server =
                    tls::server_config(pki.cert.clone(), pki.ca.cert_pem(), ClientAuth::Optional)
                        .map_err(config)?;
                let agent = (pki.ca.cert_pem().to_string(), pki.cert.clone());
                (Some(pki), Some(server), Some(agent))
            }
            TlsSetup::Files {
                cert,
                key,
                client_ca,
            } => {
                let read = |p: &PathBuf| pss_security::files::read_text(p).map_err(config);
                let (cert_pem, key_pem, ca_pem) = (read(&cert)?, read(&key)?, read(&client_ca)?);
                let live = LiveCert::from_pem(&cert_pem, &key_pem).map_err(config)?;
                let server = tls::server_config(live.clone(), &ca_pem, ClientAuth::Optional)
                    .map_err(config)?;
                (None, Some(server), Some((ca_pem, live)))
            }
        };
        Ok(Security {
            pki,
            server,
            agent_tls,
            revoked,
            cert_ttl: cert_ttl.max(MIN_CERT_TTL),
        })
    }

    /// The guard of the controller's server; the seed's token stands for an operator.
    pub fn guard(&self, token: &str) -> Guard {
        let guard = Guard::new(Server::Controller, self.revoked.clone());
        if token.is_empty() {
            guard
        } else {
            guard.with_token(token, Role::Operator)
        }
    }
}

/// Lifetime of the local operator's certificate the controller writes on first start.
pub const OPERATOR_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// On first start with its own CA: a certificate for operator `name` and a pssctl
/// configuration at `path` (controller `address`, the CA, the certificate and key, `0600`).
/// An existing file is kept (it may be for another cluster); returns whether one was written.
pub fn write_operator_config(
    pki_dir: &std::path::Path,
    store: &dyn StateStore,
    path: &std::path::Path,
    address: &str,
    name: &str,
) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let config = |e: pss_security::Error| Error::Config(e.to_string());
    let pki = ControllerPki::load_or_create(pki_dir, &[]).map_err(config)?;
    let identity = pss_security::Identity::new(Role::Operator, name).map_err(Error::Config)?;
    let (issued, key_pem) = pki
        .ca
        .issue_with_key(&identity, OPERATOR_CERT_TTL, &[])
        .map_err(config)?;
    if let Some(creds) = store.credentials() {
        creds.add_certificate(&pss_store::CertificateRecord {
            serial: issued.serial.clone(),
            role: Role::Operator.to_string(),
            name: name.to_string(),
            issued_ms: pss_plumbing::clock::now_ms(),
            not_after_ms: issued.not_after_ms,
            revoked: false,
        })?;
    }
    pss_security::config_file::ClientConfig {
        controllers: vec![address.to_string()],
        ca: pki.ca.cert_pem().to_string(),
        server_name: None,
        certificate: Some(issued.cert_pem),
        key: Some(key_pem),
        token: None,
    }
    .save(path)
    .map_err(config)?;
    Ok(true)
}
