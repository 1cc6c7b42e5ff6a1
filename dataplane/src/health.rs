//! Active TCP health checks with rise/fall thresholds.
//!
//! A backend's verdict flips only after `fall` consecutive failures (checks, or client
//! connects that failed) or `rise` consecutive successful checks; only flips are logged. A flip
//! rebuilds the balancer snapshot so the pick sees it at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::balancer::Balancer;
use crate::config::HealthConfig;
use crate::metrics::ServiceMetrics;

/// Consecutive results and the verdict they produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    /// Consecutive successes while down.
    successes: u32,
    /// Consecutive failures while up.
    failures: u32,
}

impl HealthState {
    /// A state with the given verdict and no streak.
    pub fn new(up: bool) -> Self {
        HealthState {
            up,
            successes: 0,
            failures: 0,
        }
    }

    /// Current verdict.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Records one result; returns the new verdict if this result flipped it.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        match (self.up, ok) {
            (true, true) => self.failures = 0,
            (false, false) => self.successes = 0,
            (true, false) => {
                self.failures += 1;
                if self.failures >= fall {
                    *self = HealthState::new(false);
                    return Some(false);
                }
            }
            (false, true) => {
                self.successes += 1;
                if self.successes >= rise {
                    *self = HealthState::new(true);
                    return Some(true);
                }
            }
        }
        None
    }
}

/// Where a result came from, for the flip log line.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    Check,
    ClientConnect,
}

/// Records a result for the backend at `addr` (if it is still in the set) and applies a flip.
pub fn report(
    service: &str,
    balancer: &Balancer,
    metrics: &ServiceMetrics,
    cfg: &HealthConfig,
    addr: SocketAddr,
    ok: bool,
    source: Source,
) {
    let backend = match balancer.load().find(addr) {
        Some(b) => Arc::clone(b),
        None => return,
    };
    if let Some(up) = backend.record(ok, cfg.rise, cfg.fall) {
        balancer.refresh();
        metrics.health_flip();
        let healthy = balancer.load().healthy_count();
        if up {
            tracing::info!(service, backend = %addr, healthy, "backend up after {} good checks", cfg.rise);
        } else {
            tracing::warn!(service, backend = %addr, healthy, ?source, "backend down after {} failures", cfg.fall);
        }
    }
}

/// One TCP check: can we connect within `limit`?
pub async fn check(addr: SocketAddr, limit: Duration) -> bool {
    matches!(timeout(limit, TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// Checks every backend of the current snapshot each `cfg.interval` until `shutdown`.
pub async fn run(
    service: String,
    balancer: Arc<Balancer>,
    metrics: Arc<ServiceMetrics>,
    cfg: HealthConfig,
    shutdown: CancellationToken,
) {
    if cfg.interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let addrs: Vec<SocketAddr> = balancer.load().backends().iter().map(|b| b.addr).collect();
        let results = futures::future::join_all(addrs.iter().map(|a| check(*a, cfg.timeout))).await;
        for (addr, ok) in addrs.into_iter().zip(results) {
            report(&service, &balancer, &metrics, &cfg, addr, ok, Source::Check);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_only_after_consecutive_results() {
        let mut s = HealthState::new(true);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(
            s.record(true, 2, 3),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), Some(false));
        assert_eq!(s.record(false, 2, 3), None, "already down: no second flip");
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(
            s.record(false, 2, 3),
            None,
            "a failure resets the success streak"
        );
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(s.record(true, 2, 3), Some(true));
        assert!(s.up());
    }

    /// The check loop marks a dead backend down after `fall` intervals and a revived one up
    /// after `rise`, driven by paused time so no real waiting happens.
    #[tokio::test(start_paused = true)]
    async fn check_loop_takes_a_dead_backend_down_and_brings_it_back() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead); // nothing listens there now: connects are refused at once
        let balancer = Arc::new(Balancer::new(1, &[live.local_addr().unwrap(), dead_addr]));
        let metrics = Arc::new(ServiceMetrics::new("svc", 1));
        let cfg = HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            "svc".into(),
            balancer.clone(),
            metrics.clone(),
            cfg,
            stop.clone(),
        ));
        let wait_for = |want: usize| {
            let balancer = balancer.clone();
            async move {
                for _ in 0..200 {
                    if balancer.load().healthy_count() == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("healthy count never became {want}");
            }
        };
        wait_for(1).await;
        assert_eq!(
            balancer.load().pick().unwrap().addr,
            live.local_addr().unwrap()
        );
        let _revived = std::net::TcpListener::bind(dead_addr).unwrap();
        wait_for(2).await;
        assert_eq!(metrics.health_flips(), 2);
        stop.cancel();
        task.await.unwrap();
    }
}
