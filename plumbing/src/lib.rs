//! Process plumbing shared by every PSS binary, control plane and data plane alike, so that a
//! listen address, a duration flag, a retry loop or a SIGTERM behaves the same in all of them:
//!
//! - [`addr`]: listen addresses as users write them (`:50051`), the URI a client dials, and the
//!   `TCP_NODELAY` accept stream of the gRPC servers.
//! - [`clock`]: the wall clock in unix milliseconds.
//! - [`controllers`]: controller address lists (`--controller a:1,b:2`) and the move to the
//!   next controller when one stops answering.
//! - [`duration`]: `10s`, `500ms`, `2m` on every command line.
//! - [`backoff`]: exponential retry back-off with jitter.
//! - [`shutdown`]: SIGINT/SIGTERM into one `CancellationToken`.
//! - [`logging`]: tracing set-up (text or JSON, `RUST_LOG`).
//! - [`token`]: the shared token every binary starts with.
//! - [`server_args`]: the flags every server shares, and the first steps of its `main`.
//! - [`admin`]: the `/metrics`, `/healthz`, `/readyz` HTTP server of `--admin`.
//! - [`prom`]: counters and histograms in Prometheus' text format.

pub mod addr;
pub mod admin;
pub mod backoff;
pub mod clock;
pub mod controllers;
pub mod duration;
pub mod logging;
pub mod prom;
pub mod server_args;
pub mod shutdown;
pub mod token;

pub use backoff::{Backoff, Retry};
