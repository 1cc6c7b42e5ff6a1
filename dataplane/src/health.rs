//! Backend health: active TCP checks with rise/fall thresholds, or, when active checks are off
//! (`interval: 0s`), passive ejection with back-off.
//!
//! Active: a backend's verdict flips only after `fall` consecutive failures (checks, or client
//! connects that failed) or `rise` consecutive successful checks; only flips are logged. A flip
//! rebuilds the balancer snapshot so the pick sees it at once.
//!
//! Passive: `fall` consecutive failed client connects eject a backend for a back-off that
//! doubles with each consecutive ejection ([`PASSIVE_BACKOFF_INITIAL`] up to
//! [`PASSIVE_BACKOFF_MAX`]). When it expires the backend is readmitted on probation: the next
//! client connect decides — a success clears the ejection history, a failure ejects it again at
//! once for twice as long. Nothing else could ever bring it back, since no check runs. (When
//! every backend is ejected the proxy still tries them, see `proxy::connect_backend`, so a
//! restarted single backend serves again at once, as HAProxy without `check` does.)
//!
//! The decisions are pure functions of [`HealthState`] and the time given
//! ([`HealthState::record`], [`HealthState::record_passive`], [`HealthState::readmit`]),
//! tested with proptest; the loops around them are thin.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::balancer::Balancer;
use crate::config::HealthConfig;
use crate::metrics::ServiceMetrics;

/// First passive ejection period.
pub const PASSIVE_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest passive ejection period.
pub const PASSIVE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Consecutive results and the verdict they produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    /// Consecutive successes while down.
    successes: u32,
    /// Consecutive failures while up.
    failures: u32,
    /// Passive mode: ejections since the last successful connect (sets the back-off).
    ejections: u32,
    /// Passive mode: when an ejected backend may be tried again.
    readmit_at: Option<Instant>,
    /// Passive mode: readmitted, and no connect has succeeded since.
    probation: bool,
}

impl HealthState {
    /// A state with the given verdict and no streak.
    pub fn new(up: bool) -> Self {
        HealthState {
            up,
            successes: 0,
            failures: 0,
            ejections: 0,
            readmit_at: None,
            probation: false,
        }
    }

    /// Current verdict.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Passive mode: readmitted after an ejection, waiting for a connect to succeed.
    pub fn on_probation(&self) -> bool {
        self.probation
    }

    /// Passive mode: when an ejected backend becomes eligible again.
    pub fn readmit_at(&self) -> Option<Instant> {
        self.readmit_at
    }

    /// The ejection period after the `n`-th consecutive ejection (n ≥ 1).
    pub fn passive_backoff(n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(16);
        (PASSIVE_BACKOFF_INITIAL * (1u32 << doublings)).min(PASSIVE_BACKOFF_MAX)
    }

    /// Records one client-connect result without active checks; returns the new verdict if it
    /// flipped. A success always brings the backend up with a clean history (it was tried
    /// while ejected because nothing else was up, and answered).
    pub fn record_passive(&mut self, ok: bool, fall: u32, now: Instant) -> Option<bool> {
        if ok {
            let flipped = !self.up;
            *self = HealthState::new(true);
            return flipped.then_some(true);
        }
        if !self.up {
            return None; // a connect racing the ejection; the back-off already runs
        }
        self.failures += 1;
        // On probation one failure is enough: the backend has not shown it is back.
        if self.failures >= fall || self.probation {
            self.ejections = self.ejections.saturating_add(1);
            *self = HealthState {
                readmit_at: Some(now + Self::passive_backoff(self.ejections)),
                ejections: self.ejections,
                ..HealthState::new(false)
            };
            return Some(false);
        }
        None
    }

    /// Passive mode: readmits an ejected backend whose back-off has expired (on probation);
    /// returns whether it did.
    pub fn readmit(&mut self, now: Instant) -> bool {
        match self.readmit_at {
            Some(at) if !self.up && now >= at => {
                *self = HealthState {
                    probation: true,
                    ejections: self.ejections,
                    ..HealthState::new(true)
                };
                true
            }
            _ => false,
        }
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
/// Without active checks (`cfg.interval` zero) the passive rules apply.
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
    let flipped = if cfg.interval.is_zero() {
        backend.record_passive(ok, cfg.fall, Instant::now())
    } else {
        backend.record(ok, cfg.rise, cfg.fall)
    };
    if !ok && matches!(source, Source::ClientConnect) {
        backend.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(up) = flipped {
        backend.stats.health_flips.fetch_add(1, Ordering::Relaxed);
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

/// Passive mode: readmits every ejected backend whose back-off expired; returns the earliest
/// time another one becomes due.
fn readmit_due(
    service: &str,
    balancer: &Balancer,
    metrics: &ServiceMetrics,
    now: Instant,
) -> Option<Instant> {
    let snap = balancer.load_full();
    let mut readmitted = false;
    let mut next: Option<Instant> = None;
    for b in snap.backends() {
        if b.readmit(now) {
            readmitted = true;
            b.stats.health_flips.fetch_add(1, Ordering::Relaxed);
            metrics.health_flip();
            tracing::info!(service, backend = %b.addr, "ejection over: trying the backend again");
        } else if let Some(at) = b.readmit_at() {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    if readmitted {
        balancer.refresh();
    }
    next
}

/// One TCP check: can we connect within `limit`? `None` when the proxy itself is out of
/// resources (descriptors): that says nothing about the backend and is not counted.
pub async fn check(addr: SocketAddr, limit: Duration) -> Option<bool> {
    match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Some(true),
        Ok(Err(e)) if crate::fds::is_local_exhaustion(&e) => None,
        _ => Some(false),
    }
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
        return run_passive(service, balancer, metrics, shutdown).await;
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
            match ok {
                Some(ok) => report(&service, &balancer, &metrics, &cfg, addr, ok, Source::Check),
                None => {
                    tracing::warn!(service, backend = %addr, "health check skipped: the proxy is out of descriptors")
                }
            }
        }
    }
}

/// Without active checks: readmits ejected backends when their back-off expires. Sleeps until
/// the next one is due, looking at least once per [`PASSIVE_BACKOFF_INITIAL`] for new
/// ejections (an ejection never needs readmitting sooner than that).
async fn run_passive(
    service: String,
    balancer: Arc<Balancer>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let now = Instant::now();
        let next = readmit_due(&service, &balancer, &metrics, now);
        let wake = next.map_or(now + PASSIVE_BACKOFF_INITIAL, |n| {
            n.min(now + PASSIVE_BACKOFF_INITIAL)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Without active checks, a backend never stays out for good: whatever the sequence of
        /// connect results, once its back-off has passed it is tried again; and it is only
        /// ever ejected after `fall` consecutive failures (or one on probation).
        #[test]
        fn passive_ejection_always_ends(
            results in prop::collection::vec(any::<bool>(), 0..60),
            fall in 1u32..5,
            steps in prop::collection::vec(0u64..40_000, 60),
        ) {
            let mut s = HealthState::new(true);
            let mut now = Instant::now();
            let mut streak = 0u32;
            for (ok, step) in results.iter().zip(steps) {
                now += Duration::from_millis(step);
                s.readmit(now);
                let was_probation = s.on_probation();
                let was_up = s.up();
                streak = if *ok { 0 } else { streak + 1 };
                match s.record_passive(*ok, fall, now) {
                    Some(false) => {
                        prop_assert!(was_up && !ok);
                        prop_assert!(was_probation || streak >= fall);
                        streak = 0;
                    }
                    Some(true) => prop_assert!(!was_up && *ok),
                    None => {}
                }
                if !s.up() {
                    let at = s.readmit_at().expect("an ejected backend has a readmission time");
                    prop_assert!(at <= now + PASSIVE_BACKOFF_MAX);
                    let mut later = s;
                    prop_assert!(later.readmit(at), "readmitted once the back-off passed");
                    prop_assert!(later.up() && later.on_probation());
                }
            }
        }

        #[test]
        fn passive_backoff_grows_and_is_bounded(n in 1u32..100) {
            let d = HealthState::passive_backoff(n);
            prop_assert!(d >= PASSIVE_BACKOFF_INITIAL && d <= PASSIVE_BACKOFF_MAX);
            prop_assert!(HealthState::passive_backoff(n + 1) >= d);
        }
    }

    #[test]
    fn a_success_on_probation_clears_the_ejection_history() {
        let t0 = Instant::now();
        let mut s = HealthState::new(true);
        assert_eq!(s.record_passive(false, 1, t0), Some(false));
        let first = s.readmit_at().unwrap();
        assert!(s.readmit(first));
        assert_eq!(s.record_passive(false, 1, first), Some(false));
        let second = s.readmit_at().unwrap();
        assert_eq!(second - first, PASSIVE_BACKOFF_INITIAL * 2, "doubles");
        assert!(s.readmit(second));
        assert_eq!(s.record_passive(true, 1, second), None, "already up");
        assert!(!s.on_probation());
        assert_eq!(s.record_passive(false, 1, second), Some(false));
        assert_eq!(s.readmit_at().unwrap() - second, PASSIVE_BACKOFF_INITIAL);
    }

    /// Regression: with `interval: 0s`, a backend that failed `fall` connects used to stay
    /// down forever. The passive loop brings it back after the back-off (paused time).
    #[tokio::test(start_paused = true)]
    async fn without_active_checks_an_ejected_backend_is_readmitted_after_backoff() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let balancer = Arc::new(Balancer::new(1, &[addr]));
        let metrics = Arc::new(ServiceMetrics::new("svc", 1));
        let cfg = HealthConfig {
            interval: Duration::ZERO,
            fall: 2,
            ..HealthConfig::default()
        };
        for _ in 0..2 {
            report(
                "svc",
                &balancer,
                &metrics,
                &cfg,
                addr,
                false,
                Source::ClientConnect,
            );
        }
        assert_eq!(balancer.load().healthy_count(), 0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            "svc".into(),
            balancer.clone(),
            metrics.clone(),
            cfg,
            stop.clone(),
        ));
        tokio::time::sleep(PASSIVE_BACKOFF_INITIAL / 2).await;
        assert_eq!(balancer.load().healthy_count(), 0, "still ejected");
        tokio::time::sleep(PASSIVE_BACKOFF_INITIAL).await;
        assert_eq!(balancer.load().healthy_count(), 1, "readmitted");
        stop.cancel();
        task.await.unwrap();
    }

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
