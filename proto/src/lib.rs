//! The PSS gRPC API (`pss.v1`), generated at build time from `proto/pss.proto`.
//!
//! Every surface (operator, node registry, endpoint watch, agent) lives in one file so the
//! controller, agent, proxy and CLI agree on one contract. Without the default `grpc` feature
//! only the messages are built (prost, no tonic, no tokio): that is what the pure core links.
//! [`auth`] (with `grpc`) holds both sides of the shared-token scheme every call carries.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/pss.v1.rs"));
}

#[cfg(feature = "grpc")]
pub mod auth;

pub use v1::*;
