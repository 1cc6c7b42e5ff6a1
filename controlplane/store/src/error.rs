//! The store's error type.

use thiserror::Error;

/// Every failure a [`crate::StateStore`] reports.
#[derive(Debug, Error)]
pub enum Error {
    /// SQLite failed (I/O, a constraint, a database it cannot open).
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    /// An object that was asked for does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    /// Stored data could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// A batched write failed (the message is the transaction's error, shared by every caller
    /// in the batch); nothing of it was written.
    #[error("batched write: {0}")]
    Batch(String),
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
