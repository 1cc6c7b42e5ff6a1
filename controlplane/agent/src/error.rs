//! The agent's error type.

use thiserror::Error;

/// Every failure of the agent library.
#[derive(Debug, Error)]
pub enum Error {
    /// Talking to Podman failed.
    #[error("podman: {0}")]
    Podman(#[from] crate::podman::PodmanError),
    /// The agent was started with an unusable configuration (flags, environment).
    #[error("{0}")]
    Config(String),
    /// A request was well-formed but not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A gRPC call to the controller failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    /// A gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            Error::Rpc(s) => s.clone(),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}
