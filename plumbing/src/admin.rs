//! The admin HTTP server of `pss-controller --admin` and `pss-agent --admin`: `GET /metrics`
//! (Prometheus text), `GET /healthz` (the process answers) and `GET /readyz` (it can do its
//! job), each answered by the caller's [`Admin`] implementation. Plain HTTP/1 on its own
//! listener, so a scrape never queues behind gRPC traffic.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

/// What an admin endpoint answers.
pub trait Admin: Send + Sync + 'static {
    /// The Prometheus text of `/metrics`.
    fn metrics(&self) -> String;
    /// `Ok` with a short note when ready, or why not (`/readyz` answers 503 then).
    fn ready(&self) -> Result<String, String>;
}

/// Headers and a slow client may take this long before the connection is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<dyn Admin>,
    shutdown: CancellationToken,
) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};

    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admin = Arc::clone(&admin);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(respond(&req, admin.as_ref()).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn respond(req: &Request<hyper::body::Incoming>, admin: &dyn Admin) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    let (status, body, ctype) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            admin.metrics(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "ok\n".to_string(), text),
        (&hyper::Method::GET, "/readyz") => match admin.ready() {
            Ok(note) => (StatusCode::OK, format!("ready: {note}\n"), text),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
                text,
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try GET /metrics, /healthz or /readyz\n".to_string(),
            text,
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
