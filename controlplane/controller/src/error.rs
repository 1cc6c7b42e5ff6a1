//! The controller's error type, and how each error reaches a gRPC client.

use thiserror::Error;

/// Every failure of the controller library.
#[derive(Debug, Error)]
pub enum Error {
    /// A manifest failed to parse or validate; the message names file, document, line and field.
    #[error("{0}")]
    Manifest(#[from] pss_core::model::ManifestError),
    /// An object sent over gRPC is not acceptable.
    #[error(transparent)]
    Core(#[from] pss_core::Error),
    /// The state store failed (or an object it was asked for does not exist).
    #[error(transparent)]
    Store(#[from] pss_store::Error),
    /// An object that was asked for does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    /// The controller was started with an unusable configuration.
    #[error("{0}")]
    Config(String),
    /// A request was well-formed but not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A call to an agent failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    /// A gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Manifest(_) | Error::Invalid(_) | Error::Core(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            Error::NotFound { .. } | Error::Store(pss_store::Error::NotFound { .. }) => {
                tonic::Status::not_found(e.to_string())
            }
            Error::Store(pss_store::Error::Unavailable(_) | pss_store::Error::NotLeader) => {
                tonic::Status::unavailable(e.to_string())
            }
            Error::Store(pss_store::Error::Conflict(_)) => tonic::Status::aborted(e.to_string()),
            Error::Store(pss_store::Error::Refused(_)) => {
                tonic::Status::failed_precondition(e.to_string())
            }
            Error::Rpc(s) => s.clone(),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

/// The gRPC status for any error the controller's libraries return (store, core, its own).
pub(crate) fn to_status(e: impl Into<Error>) -> tonic::Status {
    e.into().into()
}
