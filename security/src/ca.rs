//! The cluster CA: an ECDSA P-256 key and a self-signed certificate the controller creates on
//! first start, and the certificates it issues, each naming one [`Identity`] (URI SAN
//! `spiffe://pss/<role>/<name>`, common name `<role>/<name>`, DNS SAN `pss-<role>`), valid for
//! both TLS server and client authentication, with a random 128-bit serial.
//!
//! A CSR is read only for its public key (and its signature checked): the identity and the
//! lifetime are the controller's decision, never the requester's.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::identity::{Identity, Role};
use crate::{Error, Result};

/// Largest CSR accepted (PEM text).
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// How far back a certificate's validity starts, for clocks slightly behind.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// The DNS name every certificate of `role` carries; clients verify the controller against
/// `pss-controller`, whatever address they dialled (the trust is the cluster CA).
pub fn role_dns_name(role: Role) -> String {
    format!("pss-{role}")
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its serial, lowercase hex.
    pub serial: String,
    /// Expiry, unix milliseconds.
    pub not_after_ms: i64,
}

/// The CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    digest: [u8; 32],
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

impl Ca {
    /// A new CA (ten years), named `pss-ca`.
    pub fn generate() -> Result<Ca> {
        let key = KeyPair::generate().map_err(Error::pki)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "pss-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(Error::pki)?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA of a certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).map_err(Error::pki)?;
        let der = crate::pem::first_cert_der(cert_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(Error::pki)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            digest: crate::sha256(&der),
            issuer,
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of the CA certificate (DER): what join tokens pin.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Issues a certificate for `identity` and `public_key`, valid `ttl` from now, with
    /// `extra_sans` (DNS names or IP addresses) beside the identity's own names.
    pub fn issue(
        &self,
        identity: &Identity,
        public_key: &impl PublicKeyData,
        ttl: Duration,
        extra_sans: &[String],
    ) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::pki)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        let ia5 = |s: String| s.try_into().map_err(Error::pki);
        params.subject_alt_names = vec![
            SanType::URI(ia5(identity.uri())?),
            SanType::DnsName(ia5(role_dns_name(identity.role))?),
        ];
        for san in extra_sans {
            params.subject_alt_names.push(match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(ia5(san.clone())?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(Error::pki)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: hex::encode(serial.to_bytes()),
            not_after_ms: i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX),
        })
    }

    /// Issues a certificate for the public key of `csr_pem` (its signature checked; nothing
    /// else of it is used).
    pub fn issue_for_csr(
        &self,
        identity: &Identity,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Issued> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(Error::Invalid(format!(
                "csr_pem: {} bytes, at most {MAX_CSR_BYTES}",
                csr_pem.len()
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::Invalid(format!("csr_pem: not a valid signed CSR ({e})")))?;
        self.issue(identity, &csr.public_key, ttl, &[])
    }

    /// A new key and a certificate for it (the controller's own, the local operator's).
    pub fn issue_with_key(
        &self,
        identity: &Identity,
        ttl: Duration,
        extra_sans: &[String],
    ) -> Result<(Issued, String)> {
        let key = KeyPair::generate().map_err(Error::pki)?;
        let issued = self.issue(identity, &key, ttl, extra_sans)?;
        Ok((issued, key.serialize_pem()))
    }
}

/// A new key and a CSR for it (PEM both): what a joining member sends.
pub fn new_key_and_csr(identity: &Identity) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(Error::pki)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.to_string());
    let csr = params.serialize_request(&key).map_err(Error::pki)?;
    Ok((key.serialize_pem(), csr.pem().map_err(Error::pki)?))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // no leading zero byte: the hex form is the DER form
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_identity_and_ignore_what_the_csr_asks() {
        let ca = Ca::generate().unwrap();
        let reloaded = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(reloaded.digest(), ca.digest());
        let me = Identity::new(Role::Agent, "node-a").unwrap();
        let (_key, csr) = new_key_and_csr(&Identity::new(Role::Operator, "evil").unwrap()).unwrap();
        let issued = ca
            .issue_for_csr(&me, &csr, Duration::from_secs(3600))
            .unwrap();
        let der = crate::pem::first_cert_der(&issued.cert_pem).unwrap();
        let seen = crate::peer::identity_of(&der).unwrap();
        assert_eq!(seen.identity, me);
        assert_eq!(seen.serial, issued.serial);
        let in_an_hour = pss_plumbing::clock::now_ms() + 3_600_000;
        assert!((issued.not_after_ms - in_an_hour).abs() < 5_000);
    }

    #[test]
    fn bad_and_huge_csrs_are_refused_naming_the_field() {
        let ca = Ca::generate().unwrap();
        let me = Identity::new(Role::Agent, "a").unwrap();
        let e = ca
            .issue_for_csr(&me, "garbage", Duration::from_secs(60))
            .unwrap_err();
        assert!(e.to_string().contains("csr_pem"), "{e}");
        let e = ca
            .issue_for_csr(&me, &"x".repeat(MAX_CSR_BYTES + 1), Duration::from_secs(60))
            .unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
