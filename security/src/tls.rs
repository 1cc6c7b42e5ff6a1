//! TLS for tonic, on rustls (ring): server and client configurations, certificates that can
//! be swapped while serving ([`LiveCert`]: renewal without a restart), the verifier that
//! checks who the server is (the controller, or one named agent, or whoever holds the CA a
//! join token pins), the connector clients dial with, and the accept stream servers serve on.
//!
//! Every PSS client verifies the server against the cluster CA and the identity it expects,
//! not against the host name it dialled: an agent registers any address it likes, and the
//! controller must find that node's certificate there before it sends a byte of a request.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{Identity, Role};
use crate::{Error, Result};

/// How long a TLS handshake may take on the server before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one server.
const HANDSHAKES_AT_ONCE: usize = 128;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key that can be replaced while in use: servers present, and
/// clients authenticate with, whatever it holds at each handshake.
#[derive(Debug)]
pub struct LiveCert(ArcSwap<CertifiedKey>);

impl LiveCert {
    /// From a chain (leaf first) and a key, PEM.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Arc<LiveCert>> {
        Ok(Arc::new(LiveCert(ArcSwap::from_pointee(certified_key(
            chain_pem, key_pem,
        )?))))
    }

    /// Replaces the certificate (renewal); connections already open keep theirs.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<()> {
        self.0.store(Arc::new(certified_key(chain_pem, key_pem)?));
        Ok(())
    }

    /// The current leaf certificate, DER.
    pub fn leaf_der(&self) -> Vec<u8> {
        self.0.load().cert[0].to_vec()
    }
}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let chain = crate::pem::certs(chain_pem)?;
    let key = rustls::crypto::ring::sign::any_supported_type(&crate::pem::key(key_pem)?)
        .map_err(|e| Error::Invalid(format!("private key: {e}")))?;
    Ok(CertifiedKey::new(chain, key))
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _issuers: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The trust store of one CA (PEM, possibly several certificates).
pub fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in crate::pem::certs(ca_pem)? {
        roots
            .add(c)
            .map_err(|e| Error::Invalid(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Whether a server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Verified when presented, else the call needs a token (the controller: joiners and
    /// seed-token operators have no certificate).
    Optional,
    /// Required (an agent: only the controller calls it).
    Required,
}

/// A server configuration presenting `cert`, verifying client certificates against
/// `client_ca_pem`, speaking HTTP/2.
pub fn server_config(
    cert: Arc<LiveCert>,
    client_ca_pem: &str,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots(client_ca_pem)?, provider());
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    let verifier = builder.build().map_err(Error::pki)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::pki)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Who a client expects to find at the other end.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The controller: a certificate from the CA carrying DNS name `server_name`
    /// (`pss-controller` for the CA the controller made).
    Controller { ca_pem: String, server_name: String },
    /// The agent of one node: a certificate from the CA naming `agent/<node>`.
    Agent { ca_pem: String, node: String },
    /// Whatever the CA with this SHA-256 (DER) signed for `pss-controller`, the CA being sent
    /// in the server's chain: how a joiner with only a token verifies the controller.
    PinnedCa([u8; 32]),
}

/// A client configuration: verify the server as `expect` says, authenticate with `cert`.
pub fn client_config(expect: Expect, cert: Option<Arc<LiveCert>>) -> Result<Arc<ClientConfig>> {
    let verifier = Arc::new(Verifier::new(expect)?);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::pki)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match cert {
        Some(c) => builder.with_client_cert_resolver(c),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The server verifier of [`Expect`]: webpki chain verification against a fixed name, then
/// the identity check.
#[derive(Debug)]
struct Verifier {
    /// Chain verifier of a known CA; `None` with a pinned CA (built per handshake).
    known: Option<Arc<dyn ServerCertVerifier>>,
    pinned: Option<[u8; 32]>,
    name: ServerName<'static>,
    /// The identity the leaf must name, if any.
    identity: Option<Identity>,
    provider: Arc<CryptoProvider>,
}

fn webpki(roots: Arc<RootCertStore>) -> Result<Arc<dyn ServerCertVerifier>> {
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(Error::pki)?;
    Ok(v)
}

fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_string())
        .map_err(|e| Error::Invalid(format!("server name {name:?}: {e}")))
}

impl Verifier {
    fn new(expect: Expect) -> Result<Verifier> {
        let controller = crate::ca::role_dns_name(Role::Controller);
        let (known, pinned, name, identity) = match expect {
            Expect::Controller {
                ca_pem,
                server_name: n,
            } => (Some(webpki(roots(&ca_pem)?)?), None, n, None),
            Expect::Agent { ca_pem, node } => (
                Some(webpki(roots(&ca_pem)?)?),
                None,
                crate::ca::role_dns_name(Role::Agent),
                Some(Identity::new(Role::Agent, &node)?),
            ),
            Expect::PinnedCa(d) => (None, Some(d), controller, None),
        };
        Ok(Verifier {
            known,
            pinned,
            name: server_name(&name)?,
            identity,
            provider: provider(),
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let other = |m: String| rustls::Error::General(m);
        match (&self.known, self.pinned) {
            (Some(v), _) => {
                v.verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)?
            }
            (None, Some(pin)) => {
                let ca = intermediates
                    .iter()
                    .find(|c| crate::sha256(c) == pin)
                    .ok_or_else(|| {
                        other("the controller's CA is not the one the join token pins".into())
                    })?;
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone().into_owned())?;
                let v = webpki(Arc::new(roots)).map_err(|e| other(e.to_string()))?;
                v.verify_server_cert(end_entity, &[], &self.name, ocsp, now)?
            }
            (None, None) => return Err(other("no CA to verify the server with".into())),
        };
        if let Some(want) = &self.identity {
            let seen = crate::peer::identity_of(end_entity).map_err(|e| other(e.to_string()))?;
            if &seen.identity != want {
                return Err(other(format!(
                    "the server's certificate names {}, expected {want}",
                    seen.identity
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How a client dials: TLS with a configuration, or plaintext (`--insecure`).
#[derive(Clone)]
pub struct Dialer {
    tls: Option<Arc<ClientConfig>>,
}

impl Dialer {
    pub fn tls(config: Arc<ClientConfig>) -> Dialer {
        Dialer { tls: Some(config) }
    }

    pub fn plaintext() -> Dialer {
        Dialer { tls: None }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint of `addr` (`host:port`, `:port`, or a URI); TLS is the connector's job, so
    /// the URI is always `http://`.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        let uri = pss_plumbing::addr::dial_uri(addr);
        let uri = match uri.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => uri,
        };
        Endpoint::from_shared(uri).map_err(|e| Error::Invalid(format!("address {addr:?}: {e}")))
    }

    /// A channel that connects on first use (and reconnects by itself).
    pub fn lazy(&self, endpoint: Endpoint) -> Channel {
        match &self.tls {
            Some(c) => endpoint.connect_with_connector_lazy(connector(c.clone())),
            None => endpoint.connect_lazy(),
        }
    }

    /// A channel connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(c) => endpoint.connect_with_connector(connector(c.clone())).await,
            None => endpoint.connect().await,
        }
    }
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// The connector: TCP (no Nagle), then TLS with `config`.
fn connector(
    config: Arc<ClientConfig>,
) -> impl tower::Service<
    http::Uri,
    Response = TlsIo,
    Error = std::io::Error,
    Future = futures::future::BoxFuture<'static, std::io::Result<TlsIo>>,
> + Clone {
    tower::service_fn(move |uri: http::Uri| {
        let config = config.clone();
        let fut: futures::future::BoxFuture<'static, std::io::Result<TlsIo>> =
            Box::pin(async move {
                let host = uri
                    .host()
                    .ok_or_else(|| std::io::Error::other("address without a host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                // The name is not what is verified (see `Verifier`); it is only sent as SNI.
                let name = ServerName::try_from("pss-controller").expect("a valid DNS name");
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok(hyper_util::rt::TokioIo::new(tls))
            });
        fut
    })
}

/// The TLS connections of `listener`: TCP accepted with `TCP_NODELAY`, handshakes run
/// concurrently with a deadline; failed handshakes are logged at debug and dropped.
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    pss_plumbing::addr::nodelay_incoming(listener)
        .filter_map(|conn| async move {
            match conn {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    None
                }
            }
        })
        .map(move |tcp| {
            let acceptor = acceptor.clone();
            async move {
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => Some(Ok(s)),
                    Ok(Err(e)) => {
                        tracing::debug!(?peer, error = %e, "TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(?peer, "TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .buffer_unordered(HANDSHAKES_AT_ONCE)
        .filter_map(futures::future::ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Ca;

    /// A TLS server on loopback presenting a certificate for `identity` (chain: leaf, CA).
    async fn server(ca: &Ca, identity: &Identity) -> std::net::SocketAddr {
        let (issued, key) = ca
            .issue_with_key(identity, Duration::from_secs(60), &[])
            .unwrap();
        let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
        let config = server_config(
            LiveCert::from_pem(&chain, &key).unwrap(),
            ca.cert_pem(),
            ClientAuth::Optional,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        addr
    }

    async fn handshake(addr: std::net::SocketAddr, expect: Expect) -> std::io::Result<()> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("pss-controller").unwrap();
        tokio_rustls::TlsConnector::from(client_config(expect, None).unwrap())
            .connect(name, tcp)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn the_controller_dialing_an_agent_accepts_only_that_node_s_certificate() {
        let ca = Ca::generate().unwrap();
        let b = server(&ca, &Identity::new(Role::Agent, "node-b").unwrap()).await;
        let expect = |node: &str| Expect::Agent {
            ca_pem: ca.cert_pem().into(),
            node: node.into(),
        };
        handshake(b, expect("node-b")).await.unwrap();
        let e = handshake(b, expect("node-a")).await.unwrap_err();
        assert!(e.to_string().contains("expected agent/node-a"), "{e}");
        // Another CA's certificate for the right name: refused too.
        let other = Ca::generate().unwrap();
        let forged = server(&other, &Identity::new(Role::Agent, "node-b").unwrap()).await;
        assert!(handshake(forged, expect("node-b")).await.is_err());
    }

    #[tokio::test]
    async fn a_joiner_accepts_only_the_ca_its_token_pins() {
        let ca = Ca::generate().unwrap();
        let controller = server(&ca, &Identity::new(Role::Controller, "controller").unwrap()).await;
        handshake(controller, Expect::PinnedCa(ca.digest()))
            .await
            .unwrap();
        let e = handshake(controller, Expect::PinnedCa([0; 32]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("pins"), "{e}");
        // A member's certificate is not a controller's.
        let agent = server(&ca, &Identity::new(Role::Agent, "x").unwrap()).await;
        assert!(handshake(agent, Expect::PinnedCa(ca.digest()))
            .await
            .is_err());
    }
}
