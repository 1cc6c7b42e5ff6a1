//! The pure core of PSS: the object model, its validation (one definition of every rule and
//! default), and every decision the control plane takes. No I/O, no tokio, no SQLite, no
//! clock and no randomness: time, IDs and random draws are arguments, so each decision is a
//! function a test (or a proptest) can call with any world it likes.
//!
//! - [`model`]: the YAML objects users write (Workload, Service, AutoScalePolicy), their
//!   validation, and the records kept about pods, nodes and events.
//! - [`scheduler`]: where a pod goes (spread or binpack).
//! - [`reconciler`]: the diff between desired and observed state, as actions (rollouts bounded
//!   by maxSurge/maxUnavailable, drains).
//! - [`rollout_progress`]: where a rollout stands; its deadline and automatic revert.
//! - [`autoscaler`]: the replica count a policy recommends.
//! - [`podstate`]: the pod state machine (an agent's report applied to a pod record).
//! - [`crashloop`]: when a failing pod may restart.
//! - [`liveness`]: which nodes went silent, and what becomes of their pods.
//! - [`endpoints`]: which pods are a service's endpoints.
//! - [`paging`]: keyset paging of lists that grow (pods, events).
//! - [`text`]: echoed input cut short.
//! - [`node_condition`]: conditions of a node besides readiness (RuntimeUnresponsive).
//! - [`node_input`]: the bounds on what agents send (registration, heartbeats, pod reports).

pub mod autoscaler;
pub mod crashloop;
pub mod endpoints;
mod error;
pub mod liveness;
pub mod model;
pub mod node_condition;
pub mod node_input;
pub mod paging;
pub mod podstate;
pub mod reconciler;
pub mod rollout_progress;
pub mod scheduler;
pub mod text;

pub use error::{Error, Result};
