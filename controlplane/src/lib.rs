//! PSS control plane: everything but the data plane.
//!
//! - [`model`]: the YAML objects users write (Workload, Service, AutoScalePolicy), their
//!   validation, and the records the controller keeps about pods, nodes and events.
//! - [`store`]: the [`store::StateStore`] trait and its SQLite implementation (desired and
//!   observed state; a restarted controller loses nothing).
//! - [`scheduler`], [`reconciler`], [`autoscaler`]: pure decision functions over plain data.
//! - [`services`]: endpoint computation and snapshot fan-out to proxies.
//! - [`controller`]: the gRPC server, node registry and control loops of `pss-controller`.
//! - [`agent`]: `pss-agent`: the Podman REST client and the agent's gRPC server.
//! - [`cli`]: the `pssctl` command line.
//! - [`auth`]: shared-token checks for every gRPC server.
//!
//! The binaries in `src/bin/` are thin: they parse flags and call into this library.

pub mod addr;
pub mod agent;
pub mod auth;
pub mod autoscaler;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod duration;
pub mod error;
pub mod logging;
pub mod model;
pub mod reconciler;
pub mod scheduler;
pub mod services;
pub mod store;

pub use error::{Error, Result};
