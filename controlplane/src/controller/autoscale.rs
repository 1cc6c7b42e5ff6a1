//! The autoscaler loop around the pure [`crate::autoscaler`] recommendation.

use std::sync::Arc;

use super::Shared;

/// What the autoscaler remembers between evaluations (recommendation history per policy).
#[derive(Default)]
pub(crate) struct AutoscaleMemory {}

pub(crate) async fn run(shared: Arc<Shared>) {
    shared.shutdown.cancelled().await;
}
