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
    /// The store cannot be reached (etcd down or cut off): nothing was written.
    #[error("state store unavailable: {0}; writes are refused until it is back")]
    Unavailable(String),
    /// The store refused the write itself (etcd: too large, too many operations, out of
    /// space); nothing was written, and trying again as is will not help.
    #[error("state store refused the write: {0}")]
    Refused(String),
    /// A write met a concurrent change it could not retry past; nothing was written.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// This controller lost the leader lease: its write was refused (fencing).
    #[error("this controller no longer holds the leader lease; write refused")]
    NotLeader,
    /// The store's configuration is unusable (an address, a prefix).
    #[error("state store configuration: {0}")]
    Config(String),
    /// A stored value could not be decoded (names the key).
    #[error("state store holds a bad value: {0}")]
    Corrupt(String),
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
