//! PSS security (issue 11): mutual TLS on every gRPC connection, with a CA the controller
//! creates, a certificate naming each member, join tokens per role, and a role/method policy
//! checked on every call.
//!
//! Pure parts (no I/O): [`identity`] (role + name, the certificate's URI), [`join_token`]
//! (format and parsing), [`policy`] (role → methods).
//! Around them: [`ca`] (issuing with rcgen), [`peer`] (reading a peer certificate), [`pem`],
//! [`files`] (key files `0600` in `0700` directories; the controller's PKI directory),
//! [`tls`] (rustls configurations, reloadable certificates, the TLS connector and acceptor for
//! tonic), [`guard`] (the tower layer enforcing the policy), [`member`] (how an agent or proxy
//! joins, keeps and renews its certificate).

pub mod ca;
pub mod config_file;
pub mod files;
pub mod guard;
pub mod identity;
pub mod join_token;
pub mod member;
pub mod peer;
pub mod pem;
pub mod policy;
pub mod tls;

pub use identity::{Identity, Role};

/// Errors of this crate; the message names the field or file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("certificate: {0}")]
    Pki(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Rpc(String),
}

impl Error {
    pub(crate) fn pki(e: impl std::fmt::Display) -> Error {
        Error::Pki(e.to_string())
    }
}

impl From<String> for Error {
    fn from(m: String) -> Error {
        Error::Invalid(m)
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        match e {
            Error::Invalid(m) => tonic::Status::invalid_argument(m),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// At most 64 characters of user input, for error messages.
pub(crate) fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}
