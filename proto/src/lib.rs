//! The PSS gRPC API (`pss.v1`), generated at build time from `proto/pss.proto`.
//!
//! Every surface (operator, node registry, endpoint watch, agent) lives in one file so the
//! controller, agent, proxy and CLI agree on one contract. [`auth`] holds the client side of the
//! shared-token scheme that every call carries.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("pss.v1");
}

pub mod auth;

pub use v1::*;
