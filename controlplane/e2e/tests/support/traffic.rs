//! A request loop through a proxy, recording every result: what the "zero failed requests"
//! assertions of the whole-cluster tests count.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Result of one request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub ok: bool,
    /// Why it failed; shown by the assertions' `{:?}`.
    pub detail: String,
}

/// One request: `Ok` with what was read, or why it failed.
pub type Probe = fn(SocketAddr) -> Result<(), String>;

/// `GET /` must answer 200 (the demo image's httpd).
pub fn http_probe(addr: SocketAddr) -> Result<(), String> {
    match super::cluster::http_get(&addr.to_string()) {
        Ok(body) if body.contains(" 200 ") => Ok(()),
        Ok(body) => Err(body.lines().next().unwrap_or("").to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A fake agent's pod answers its id and closes: a line must come back.
pub fn line_probe(addr: SocketAddr) -> Result<(), String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    if buf.trim().is_empty() {
        Err("empty answer".into())
    } else {
        Ok(())
    }
}

/// A client that probes `addr` every 20 ms until stopped.
pub struct ClientLoop {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ClientLoop {
    pub fn start(addr: SocketAddr) -> Self {
        Self::with_probe(addr, http_probe)
    }

    pub fn with_probe(addr: SocketAddr, probe: Probe) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (s, t) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !t.is_cancelled() {
                let r = tokio::task::spawn_blocking(move || probe(addr))
                    .await
                    .unwrap();
                s.lock().unwrap().push(Sample {
                    at: Instant::now(),
                    ok: r.is_ok(),
                    detail: r.err().unwrap_or_default(),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        ClientLoop {
            samples,
            stop,
            task,
        }
    }

    /// Failures since `since`.
    pub fn failures_since(&self, since: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= since && !s.ok)
            .cloned()
            .collect()
    }

    pub fn count_since(&self, since: Instant) -> usize {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= since)
            .count()
    }

    /// Stops the loop and asserts that it sent more than `min_requests` since `since`, none of
    /// them failed.
    pub async fn stop_expecting_no_failures(self, since: Instant, min_requests: usize) {
        let failures = self.failures_since(since);
        let total = self.count_since(since);
        self.stop().await;
        assert!(total > min_requests, "only {total} requests");
        assert!(
            failures.is_empty(),
            "{} of {total} requests failed: {failures:?}",
            failures.len()
        );
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
