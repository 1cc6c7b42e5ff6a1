//! What a peer's certificate says: its [`Identity`] (URI SAN), serial and expiry, read with
//! x509-parser. The chain itself was verified by rustls during the handshake.

use x509_parser::extensions::GeneralName;

use crate::identity::Identity;
use crate::{Error, Result};

/// The facts of a certificate the guard and the clients need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub identity: Identity,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Start of validity, unix milliseconds.
    pub not_before_ms: i64,
    /// Expiry, unix milliseconds.
    pub not_after_ms: i64,
}

/// Reads a DER certificate; fails when it names no PSS identity.
pub fn identity_of(der: &[u8]) -> Result<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Invalid(format!("certificate: {e}")))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| Error::Invalid(format!("certificate: {e}")))?;
    let identity = sans
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|n| match n {
            GeneralName::URI(u) => Identity::from_uri(u),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Invalid("certificate names no PSS identity (spiffe://pss/...)".into())
        })?;
    Ok(PeerCert {
        identity,
        serial: hex::encode(cert.raw_serial()),
        not_before_ms: cert.validity().not_before.timestamp().saturating_mul(1000),
        not_after_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
    })
}
