//! Store latency for the controller's `/metrics`: every read and every write transaction of
//! [`crate::SqliteStore`] is timed into [`TRANSACTION_SECONDS`].

use pss_plumbing::prom::HistogramVec;

/// Duration of store transactions, by kind (`read`, `write`).
pub static TRANSACTION_SECONDS: HistogramVec = HistogramVec::new(
    "pss_store_transaction_seconds",
    "Duration of state store transactions (SQLite), by kind.",
    &["kind"],
);
