//! The crate's error type.

use thiserror::Error;

/// Every failure the control-plane library reports.
#[derive(Debug, Error)]
pub enum Error {
    /// A manifest failed to parse or validate; the message names file, document, line and field.
    #[error("{0}")]
    Manifest(#[from] crate::model::ManifestError),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    /// An object that was asked for does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    /// A process was started with an unusable configuration (flags, environment).
    #[error("{0}")]
    Config(String),
    /// A request was well-formed but not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Talking to Podman failed.
    #[error("podman: {0}")]
    Podman(String),
    /// A gRPC call failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    /// A gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Manifest(_) | Error::Invalid(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            Error::NotFound { .. } => tonic::Status::not_found(e.to_string()),
            Error::Rpc(s) => s.clone(),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}
