//! PEM in and out: certificates and keys as rustls wants them.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// Every certificate of a PEM text, in order.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Invalid(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Invalid("certificate PEM: no certificate".into()));
    }
    Ok(certs)
}

/// The first certificate of a PEM text, DER.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    Ok(certs(pem)?.remove(0).to_vec())
}

/// The private key of a PEM text.
pub fn key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Invalid(format!("private key PEM: {e}")))
}
