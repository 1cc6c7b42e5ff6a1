//! The core's error type: what is wrong with an object a user or a client sent.

use thiserror::Error;

/// Every failure the core reports.
#[derive(Debug, Error)]
pub enum Error {
    /// A manifest failed to parse or validate; the message names file, document, line and field.
    #[error("{0}")]
    Manifest(#[from] crate::model::ManifestError),
    /// An object that arrived as protobuf (typed gRPC input) is not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
