//! Per-service counters and the admin server that serves them as Prometheus text on
//! `GET /metrics`.
//!
//! Counters are sharded per worker thread and each shard is written by its worker only, so the
//! hot path does plain relaxed loads and stores on a cache line no other core writes. A scrape
//! sums the shards.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::balancer::{Backend, Balancer};

/// Counters of one service on one worker. Cache-line aligned so workers never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Shard {
    connections: AtomicU64,
    active: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    connect_errors: AtomicU64,
    retries: AtomicU64,
    pipes: AtomicU64,
    rejected: AtomicU64,
    no_backend: AtomicU64,
    idle_closed: AtomicU64,
    no_descriptors: AtomicU64,
}

/// Adds to a counter whose only writer is the current thread: a load and a store, no locked
/// read-modify-write.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Shard {
    #[inline]
    pub fn connection_opened(&self) {
        bump(&self.connections, 1);
        bump(&self.active, 1);
    }
    #[inline]
    pub fn connection_closed(&self) {
        bump(&self.active, u64::MAX); // wrapping -1
    }
    #[inline]
    pub fn bytes_up(&self, n: usize) {
        bump(&self.bytes_up, n as u64);
    }
    #[inline]
    pub fn bytes_down(&self, n: usize) {
        bump(&self.bytes_down, n as u64);
    }
    pub fn connect_error(&self) {
        bump(&self.connect_errors, 1);
    }
    pub fn retry(&self) {
        bump(&self.retries, 1);
    }
    pub fn pipe_taken(&self) {
        bump(&self.pipes, 1);
    }
    pub fn pipe_returned(&self) {
        bump(&self.pipes, u64::MAX);
    }
    pub fn rejected(&self) {
        bump(&self.rejected, 1);
    }
    pub fn no_backend(&self) {
        bump(&self.no_backend, 1);
    }
    pub fn idle_closed(&self) {
        bump(&self.idle_closed, 1);
    }
    pub fn no_descriptors(&self) {
        bump(&self.no_descriptors, 1);
    }
}

/// All counters of one service.
#[derive(Debug)]
pub struct ServiceMetrics {
    name: String,
    /// One per worker thread.
    shards: Box<[Shard]>,
    /// Written by the health-check side only (rare).
    health_flips: AtomicU64,
}

impl ServiceMetrics {
    pub fn new(name: &str, workers: usize) -> Self {
        ServiceMetrics {
            name: name.to_owned(),
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
            health_flips: AtomicU64::new(0),
        }
    }

    /// The shard a worker writes.
    pub fn shard(&self, worker: usize) -> &Shard {
        &self.shards[worker]
    }

    pub fn health_flip(&self) {
        self.health_flips.fetch_add(1, Relaxed);
    }

    pub fn health_flips(&self) -> u64 {
        self.health_flips.load(Relaxed)
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(f(s).load(Relaxed)))
    }

    /// A consistent-enough reading of every counter (shards are read one after another).
    pub fn stats(&self, balancer: &Balancer) -> ServiceStats {
        let snap = balancer.load();
        ServiceStats {
            connections_total: self.sum(|s| &s.connections),
            connections_active: self.sum(|s| &s.active),
            bytes_client_to_backend: self.sum(|s| &s.bytes_up),
            bytes_backend_to_client: self.sum(|s| &s.bytes_down),
            connect_errors: self.sum(|s| &s.connect_errors),
            retries: self.sum(|s| &s.retries),
            pipes_in_use: self.sum(|s| &s.pipes),
            rejected_max_connections: self.sum(|s| &s.rejected),
            no_backend_closes: self.sum(|s| &s.no_backend),
            idle_timeouts: self.sum(|s| &s.idle_closed),
            no_descriptor_closes: self.sum(|s| &s.no_descriptors),
            health_flips: self.health_flips(),
            backends: snap.backends().len() as u64,
            backends_up: snap.healthy_count() as u64,
            snapshot_version: snap.version(),
        }
    }
}

/// Totals of one service, as served on `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub connections_total: u64,
    pub connections_active: u64,
    pub bytes_client_to_backend: u64,
    pub bytes_backend_to_client: u64,
    pub connect_errors: u64,
    pub retries: u64,
    pub pipes_in_use: u64,
    pub rejected_max_connections: u64,
    pub no_backend_closes: u64,
    pub idle_timeouts: u64,
    pub no_descriptor_closes: u64,
    pub health_flips: u64,
    pub backends: u64,
    pub backends_up: u64,
    pub snapshot_version: u64,
}

/// Every service's metrics with its balancer, for rendering.
#[derive(Debug, Default)]
pub struct Registry {
    pub services: Vec<(Arc<ServiceMetrics>, Arc<Balancer>)>,
}

impl Registry {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let stats: Vec<(&str, ServiceStats)> = self
            .services
            .iter()
            .map(|(m, b)| (m.name.as_str(), m.stats(b)))
            .collect();
        type Get = fn(&ServiceStats) -> u64;
        let families: [(&str, &str, &str, Get); 15] = [
            (
                "pss_proxy_connections_total",
                "counter",
                "Client connections accepted.",
                |s| s.connections_total,
            ),
            (
                "pss_proxy_connections_active",
                "gauge",
                "Client connections open now.",
                |s| s.connections_active,
            ),
            (
                "pss_proxy_bytes_client_to_backend_total",
                "counter",
                "Bytes forwarded from clients to backends.",
                |s| s.bytes_client_to_backend,
            ),
            (
                "pss_proxy_bytes_backend_to_client_total",
                "counter",
                "Bytes forwarded from backends to clients.",
                |s| s.bytes_backend_to_client,
            ),
            (
                "pss_proxy_connect_errors_total",
                "counter",
                "Backend connects that failed.",
                |s| s.connect_errors,
            ),
            (
                "pss_proxy_retries_total",
                "counter",
                "Connects retried on the next backend.",
                |s| s.retries,
            ),
            (
                "pss_proxy_backends",
                "gauge",
                "Backends in the current snapshot.",
                |s| s.backends,
            ),
            (
                "pss_proxy_backends_up",
                "gauge",
                "Backends passing health checks.",
                |s| s.backends_up,
            ),
            (
                "pss_proxy_health_flips_total",
                "counter",
                "Backend health verdict changes.",
                |s| s.health_flips,
            ),
            (
                "pss_proxy_snapshot_version",
                "gauge",
                "Endpoint snapshot version held.",
                |s| s.snapshot_version,
            ),
            (
                "pss_proxy_pipes_in_use",
                "gauge",
                "Splice pipes held by connections.",
                |s| s.pipes_in_use,
            ),
            (
                "pss_proxy_rejected_max_connections_total",
                "counter",
                "Connections closed at once because max_connections was reached.",
                |s| s.rejected_max_connections,
            ),
            (
                "pss_proxy_no_backend_closes_total",
                "counter",
                "Connections closed because no backend was up or reachable.",
                |s| s.no_backend_closes,
            ),
            (
                "pss_proxy_no_descriptor_closes_total",
                "counter",
                "Connections closed at once because the descriptor budget was reached.",
                |s| s.no_descriptor_closes,
            ),
            (
                "pss_proxy_idle_timeouts_total",
                "counter",
                "Connections closed by the idle timeout.",
                |s| s.idle_timeouts,
            ),
        ];
        let mut out = String::with_capacity(4096);
        let names: Vec<String> = stats.iter().map(|(n, _)| escape_label(n)).collect();
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (service, (_, s)) in names.iter().zip(&stats) {
                let _ = writeln!(out, "{name}{{service=\"{service}\"}} {}", get(s));
            }
        }
        self.render_backends(&names, &mut out);
        let budget = &crate::fds::BUDGET;
        let _ = writeln!(
            out,
            "# HELP pss_proxy_fds_used Descriptors the workers hold (connections, pipes).\n# TYPE pss_proxy_fds_used gauge\npss_proxy_fds_used {}",
            budget.used()
        );
        if budget.limit() != usize::MAX {
            let _ = writeln!(
                out,
                "# HELP pss_proxy_fds_budget Descriptors the workers may hold.\n# TYPE pss_proxy_fds_budget gauge\npss_proxy_fds_budget {}",
                budget.limit()
            );
        }
        out
    }

    /// The per-backend families (`service` and `backend` labels).
    fn render_backends(&self, names: &[String], out: &mut String) {
        type Get = fn(&Backend) -> u64;
        fn load(a: &AtomicU64) -> u64 {
            a.load(Relaxed)
        }
        let families: [(&str, &str, &str, Get); 7] = [
            (
                "pss_proxy_backend_up",
                "gauge",
                "1 when the backend is in the pick (healthy), else 0.",
                |b| u64::from(b.is_up()),
            ),
            (
                "pss_proxy_backend_connections_total",
                "counter",
                "Connections forwarded to the backend.",
                |b| load(&b.stats.connections),
            ),
            (
                "pss_proxy_backend_connections_active",
                "gauge",
                "Connections to the backend open now.",
                |b| load(&b.stats.active),
            ),
            (
                "pss_proxy_backend_bytes_client_to_backend_total",
                "counter",
                "Bytes sent to the backend (counted when a connection ends).",
                |b| load(&b.stats.bytes_up),
            ),
            (
                "pss_proxy_backend_bytes_backend_to_client_total",
                "counter",
                "Bytes received from the backend (counted when a connection ends).",
                |b| load(&b.stats.bytes_down),
            ),
            (
                "pss_proxy_backend_connect_errors_total",
                "counter",
                "Client-driven connects to the backend that failed.",
                |b| load(&b.stats.connect_errors),
            ),
            (
                "pss_proxy_backend_health_flips_total",
                "counter",
                "Health verdict changes of the backend.",
                |b| load(&b.stats.health_flips),
            ),
        ];
        let snaps: Vec<_> = self.services.iter().map(|(_, b)| b.load_full()).collect();
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (service, snap) in names.iter().zip(&snaps) {
                for b in snap.backends() {
                    let _ = writeln!(
                        out,
                        "{name}{{service=\"{service}\",backend=\"{}\"}} {}",
                        b.addr,
                        get(b)
                    );
                }
            }
        }
    }
}

/// Escapes a Prometheus label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// What the admin server renders on each scrape (the services change with reloads).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    render: Render,
    shutdown: CancellationToken,
) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let render = Arc::clone(&render);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = Arc::clone(&render);
                async move { Ok::<_, Infallible>(respond(&req, &*render)) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    render: &(dyn Fn() -> String + Send + Sync),
) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try GET /metrics\n".to_owned(),
            "text/plain",
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_shards_per_service() {
        let m = Arc::new(ServiceMetrics::new("web", 2));
        m.shard(0).connection_opened();
        m.shard(1).connection_opened();
        m.shard(1).connection_closed();
        m.shard(0).bytes_up(10);
        m.shard(1).bytes_up(5);
        let b = Arc::new(Balancer::new(7, &["127.0.0.1:1".parse().unwrap()]));
        let text = Registry {
            services: vec![(m, b)],
        }
        .render();
        assert!(
            text.contains("pss_proxy_connections_total{service=\"web\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("pss_proxy_connections_active{service=\"web\"} 1\n"));
        assert!(text.contains("pss_proxy_bytes_client_to_backend_total{service=\"web\"} 15\n"));
        assert!(text.contains("pss_proxy_snapshot_version{service=\"web\"} 7\n"));
        assert!(text.contains("pss_proxy_backends_up{service=\"web\"} 1\n"));
        assert!(text.contains("pss_proxy_backend_up{service=\"web\",backend=\"127.0.0.1:1\"} 1\n"));
    }

    /// Regression (adversarial test, issue 10): a service named `we"b` broke every scrape.
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("we\"b\\x\ny"), "we\\\"b\\\\x\\ny");
        let m = Arc::new(ServiceMetrics::new("we\"b", 1));
        let b = Arc::new(Balancer::new(1, &["127.0.0.1:1".parse().unwrap()]));
        let text = Registry {
            services: vec![(m, b)],
        }
        .render();
        assert!(
            text.contains("pss_proxy_connections_total{service=\"we\\\"b\"} 0\n"),
            "{text}"
        );
        // Every sample line has balanced, well-formed quoting: strip escapes, count quotes.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let unescaped = line.replace("\\\\", "").replace("\\\"", "");
            assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
        }
    }
}
