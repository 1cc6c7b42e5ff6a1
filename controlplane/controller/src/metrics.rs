//! What `pss-controller --admin ADDR` serves: Prometheus `/metrics` (reconcile pass duration,
//! pods by phase, nodes by status, scheduling latency, gRPC requests by method and code, store
//! transaction latency), `/healthz` and `/readyz` (the store answers).
//!
//! Counters and histograms are process-wide statics recorded where the work happens (the
//! executor, the gRPC layer below, the store); gauges are computed from the store at scrape
//! time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pss_core::model::{NodeStatus, PodPhase};
use pss_plumbing::admin::Admin;
use pss_plumbing::prom::{render_gauge, CounterVec, HistogramVec};
use tonic::codegen::http;

use crate::Shared;

/// Duration of one reconcile pass.
pub(crate) static RECONCILE_SECONDS: HistogramVec = HistogramVec::new(
    "pss_reconcile_pass_seconds",
    "Duration of one reconcile pass (gather, plan, record).",
    &[],
);

/// From a pod's creation to its placement on a node.
pub(crate) static SCHEDULING_SECONDS: HistogramVec = HistogramVec::new(
    "pss_scheduling_latency_seconds",
    "Time from a pod's creation to its placement on a node.",
    &[],
);

/// gRPC requests served, by method and status code.
pub(crate) static GRPC_REQUESTS: CounterVec = CounterVec::new(
    "pss_grpc_requests_total",
    "gRPC requests served by the controller, by method and status code.",
    &["method", "code"],
);

/// The admin endpoints over one controller's shared state.
pub(crate) struct ControllerAdmin {
    pub shared: Arc<Shared>,
}

impl Admin for ControllerAdmin {
    fn metrics(&self) -> String {
        let mut out = String::new();
        RECONCILE_SECONDS.render(&mut out);
        SCHEDULING_SECONDS.render(&mut out);
        GRPC_REQUESTS.render(&mut out);
        pss_store::metrics::TRANSACTION_SECONDS.render(&mut out);
        let store = &self.shared.store;
        if let Ok(pods) = store.list_pods(None) {
            let phases = [
                PodPhase::Pending,
                PodPhase::Starting,
                PodPhase::Running,
                PodPhase::Failed,
                PodPhase::Succeeded,
                PodPhase::Terminating,
                PodPhase::Lost,
                PodPhase::Unknown,
            ];
            let counts: Vec<(String, f64)> = phases
                .iter()
                .map(|ph| {
                    let n = pods.iter().filter(|p| p.phase == *ph).count();
                    (ph.as_str().to_string(), n as f64)
                })
                .collect();
            render_gauge(&mut out, "pss_pods", "Pods by phase.", "phase", &counts);
        }
        if let Ok(nodes) = store.list_nodes() {
            let counts: Vec<(String, f64)> = [NodeStatus::Ready, NodeStatus::NotReady]
                .iter()
                .map(|st| {
                    let n = nodes.iter().filter(|n| n.status == *st).count();
                    (st.as_str().to_string(), n as f64)
                })
                .collect();
            render_gauge(&mut out, "pss_nodes", "Nodes by status.", "status", &counts);
        }
        let leadership = &self.shared.leadership;
        let mode = if leadership.is_elected() {
            "etcd"
        } else {
            "sole"
        };
        let leads = if leadership.may_act() { 1.0 } else { 0.0 };
        render_gauge(
            &mut out,
            "pss_controller_leader",
            "1 while this controller runs the control loops (mode: sole on SQLite, etcd when elected).",
            "mode",
            &[(mode.to_string(), leads)],
        );
        out
    }

    fn ready(&self) -> Result<String, String> {
        self.shared
            .store
            .get_node("")
            .map(|_| "the store answers".to_string())
            .map_err(|e| format!("the store does not answer: {e}"))
    }
}

/// The services whose methods are counted by name; anything else counts as `unknown`, so a
/// client cannot grow the label set.
const SERVICES: [&str; 3] = ["Operator", "NodeRegistry", "EndpointWatch"];

/// `Service/Method` of a gRPC path `/pss.v1.Service/Method`, or `unknown`.
fn method_label(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/pss.v1.") else {
        return "unknown".into();
    };
    match rest.split_once('/') {
        Some((service, method))
            if SERVICES.contains(&service)
                && !method.is_empty()
                && method.len() <= 32
                && method.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            rest.to_string()
        }
        _ => "unknown".into(),
    }
}

/// The tower layer counting every gRPC request into [`GRPC_REQUESTS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // An error returned by a handler (or the token check) is a trailers-only response
            // with `grpc-status` in the headers; a success carries it in the trailers.
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unavailable,
            };
            let method = if code == tonic::Code::Unimplemented {
                "unknown".to_string()
            } else {
                method
            };
            GRPC_REQUESTS.inc(&[&method, &format!("{code:?}")]);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label("/pss.v1.Operator/Apply"), "Operator/Apply");
        assert_eq!(method_label("/pss.v1.Operator/x1"), "unknown");
        assert_eq!(method_label("/pss.v1.Evil/Apply"), "unknown");
        assert_eq!(method_label("/other/Apply"), "unknown");
        assert_eq!(
            method_label(&format!("/pss.v1.Operator/{}", "A".repeat(40))),
            "unknown"
        );
    }
}
