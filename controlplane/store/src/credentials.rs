//! Credentials the controller keeps (issue 11): join tokens, of which only the SHA-256 of the
//! secret is stored, and every certificate the CA issued, so that deleting a node revokes its
//! certificates and a revocation survives a restart.

use crate::Result;

/// A join token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// 16 hex digits.
    pub id: String,
    /// `agent`, `proxy` or `operator`.
    pub role: String,
    pub secret_sha256: Vec<u8>,
    pub created_ms: i64,
    /// 0: never expires.
    pub expires_ms: i64,
    pub revoked: bool,
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Lowercase hex.
    pub serial: String,
    pub role: String,
    pub name: String,
    pub issued_ms: i64,
    pub not_after_ms: i64,
    pub revoked: bool,
}

/// Storage of join tokens and issued certificates.
pub trait CredentialStore: Send + Sync {
    fn add_join_token(&self, token: &JoinTokenRecord) -> Result<()>;
    /// Every token, newest first.
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>>;
    fn get_join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>>;
    /// Marks a token revoked; false when there is no such token.
    fn revoke_join_token(&self, id: &str) -> Result<bool>;
    fn add_certificate(&self, cert: &CertificateRecord) -> Result<()>;
    /// Revokes every certificate of `role`/`name`; returns their serials.
    fn revoke_certificates_of(&self, role: &str, name: &str) -> Result<Vec<String>>;
    /// Serials of revoked certificates that have not expired at `now_ms`.
    fn revoked_serials(&self, now_ms: i64) -> Result<Vec<String>>;
}
