//! Backend set of one service: an immutable [`Snapshot`] (backends, their health verdict, the
//! round-robin cursor) behind one `ArcSwap`.
//!
//! The pick is lock-free: load the current snapshot (no refcount traffic), bump its cursor, index
//! the precomputed list of healthy backends. Every change — a new endpoint set, a health flip —
//! builds a new snapshot and swaps it in. Backends that stay keep their `Arc<Backend>` and thus
//! their health state; removed backends simply stop being picked, while connections already
//! open to them keep their sockets and finish.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::health::HealthState;

/// One backend address and its health-check state, shared by every snapshot that contains it.
#[derive(Debug)]
pub struct Backend {
    /// Where connections go.
    pub addr: SocketAddr,
    /// Consecutive results and the current verdict; touched by checks and failed connects only.
    health: Mutex<HealthState>,
    /// Mirror of `health.on_probation()`, readable without the lock.
    probation: AtomicBool,
    /// Traffic counters of this backend (shared by every worker: one atomic add per event).
    pub stats: BackendStats,
}

/// Per-backend counters served on `/metrics` with a `backend` label.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections forwarded to this backend.
    pub connections: AtomicU64,
    /// Connections to it open now.
    pub active: AtomicU64,
    /// Bytes client → backend of connections that ended.
    pub bytes_up: AtomicU64,
    /// Bytes backend → client of connections that ended.
    pub bytes_down: AtomicU64,
    /// Connects to it that failed.
    pub connect_errors: AtomicU64,
    /// Health verdict changes (checks, ejections, readmissions).
    pub health_flips: AtomicU64,
}

impl BackendStats {
    /// A connection to this backend opened.
    pub fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to this backend closed after moving `up` and `down` bytes.
    pub fn closed(&self, up: u64, down: u64) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
    }
}

impl Backend {
    /// A backend that starts up: endpoints come from the controller as ready, and static ones
    /// are assumed up until checks say otherwise (as HAProxy does).
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            health: Mutex::new(HealthState::new(true)),
            probation: AtomicBool::new(false),
            stats: BackendStats::default(),
        }
    }

    /// Current verdict.
    pub fn is_up(&self) -> bool {
        self.health().up()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one check or connect result; returns the new verdict if it flipped.
    pub fn record(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        self.health().record(ok, rise, fall)
    }

    /// Records one client-connect result without active checks (passive ejection).
    pub fn record_passive(&self, ok: bool, fall: u32, now: Instant) -> Option<bool> {
        let mut h = self.health();
        let r = h.record_passive(ok, fall, now);
        self.probation.store(h.on_probation(), Ordering::Relaxed);
        r
    }

    /// Readmits an ejected backend whose back-off expired (passive mode).
    pub fn readmit(&self, now: Instant) -> bool {
        let mut h = self.health();
        let r = h.readmit(now);
        self.probation.store(h.on_probation(), Ordering::Relaxed);
        r
    }

    /// When an ejected backend becomes eligible again (passive mode).
    pub fn readmit_at(&self) -> Option<Instant> {
        self.health().readmit_at()
    }

    /// Readmitted and not yet proven: the connect path reports its next success (a cheap
    /// flag, so healthy backends cost no lock per connection).
    pub fn on_probation(&self) -> bool {
        self.probation.load(Ordering::Relaxed)
    }
}

/// An immutable view of the backend set.
#[derive(Debug)]
pub struct Snapshot {
    /// Controller version this set came from (0 for static sets).
    version: u64,
    /// Every backend, healthy or not, in the order the source gave.
    backends: Box<[Arc<Backend>]>,
    /// Indexes into `backends` of the ones that are up, precomputed so a pick is O(1).
    healthy: Box<[u32]>,
    /// Round-robin position; the only mutable part, and it only affects fairness.
    cursor: AtomicUsize,
}

impl Snapshot {
    /// A snapshot over `backends`, taking each one's current verdict.
    pub fn new(version: u64, backends: Vec<Arc<Backend>>, cursor: usize) -> Self {
        let healthy = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_up())
            .map(|(i, _)| i as u32)
            .collect();
        Snapshot {
            version,
            backends: backends.into(),
            healthy,
            cursor: AtomicUsize::new(cursor),
        }
    }

    /// Snapshot version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every backend.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Number of backends that are up.
    pub fn healthy_count(&self) -> usize {
        self.healthy.len()
    }

    /// Starts a pick: returns a position to pass to [`Snapshot::candidate`], or `None` when no
    /// backend is up.
    pub fn start(&self) -> Option<usize> {
        if self.healthy.is_empty() {
            return None;
        }
        Some(self.cursor.fetch_add(1, Ordering::Relaxed))
    }

    /// The `attempt`-th backend to try for a pick that started at `start`: consecutive attempts
    /// walk the healthy list, so a retry goes to the next healthy backend.
    pub fn candidate(&self, start: usize, attempt: usize) -> Option<&Arc<Backend>> {
        let n = self.healthy.len();
        if attempt >= n {
            return None;
        }
        let i = self.healthy[start.wrapping_add(attempt) % n];
        Some(&self.backends[i as usize])
    }

    /// Starts a pick over *every* backend, up or not (the fallback when none is up and no
    /// active check could bring one back); `None` only for an empty set.
    pub fn start_any(&self) -> Option<usize> {
        if self.backends.is_empty() {
            return None;
        }
        Some(self.cursor.fetch_add(1, Ordering::Relaxed))
    }

    /// The `attempt`-th backend of a [`Snapshot::start_any`] pick.
    pub fn candidate_any(&self, start: usize, attempt: usize) -> Option<&Arc<Backend>> {
        let n = self.backends.len();
        if attempt >= n {
            return None;
        }
        Some(&self.backends[start.wrapping_add(attempt) % n])
    }

    /// Next backend by round robin over the healthy ones.
    pub fn pick(&self) -> Option<&Arc<Backend>> {
        self.start().and_then(|s| self.candidate(s, 0))
    }

    /// The snapshot for a new endpoint list: backends that stay keep their state (same `Arc`),
    /// new ones start up, and the cursor carries over.
    pub fn with_addrs(&self, version: u64, addrs: &[SocketAddr]) -> Snapshot {
        // Linear scans beat hashing for the usual handful of endpoints; index big sets.
        const INDEX_FROM: usize = 32;
        let index: Option<HashMap<SocketAddr, &Arc<Backend>>> = (self.backends.len() > INDEX_FROM)
            .then(|| self.backends.iter().map(|b| (b.addr, b)).collect());
        let mut seen = (addrs.len() > INDEX_FROM).then(|| HashSet::with_capacity(addrs.len()));
        let mut backends: Vec<Arc<Backend>> = Vec::with_capacity(addrs.len());
        for a in addrs {
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(*a),
                None => backends.iter().any(|b| b.addr == *a),
            };
            if duplicate {
                continue; // duplicates would skew the round robin
            }
            let kept = match &index {
                Some(index) => index.get(a).copied(),
                None => self.backends.iter().find(|b| b.addr == *a),
            };
            backends.push(kept.map_or_else(|| Arc::new(Backend::new(*a)), Arc::clone));
        }
        Snapshot::new(version, backends, self.cursor.load(Ordering::Relaxed))
    }

    /// The same set with the healthy list recomputed from each backend's verdict.
    pub fn refreshed(&self) -> Snapshot {
        Snapshot::new(
            self.version,
            self.backends.to_vec(),
            self.cursor.load(Ordering::Relaxed),
        )
    }

    /// The backend with this address, if present.
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.addr == addr)
    }
}

/// The swappable backend set of one service.
#[derive(Debug)]
pub struct Balancer {
    current: ArcSwap<Snapshot>,
}

impl Balancer {
    /// A balancer over a first set of addresses.
    pub fn new(version: u64, addrs: &[SocketAddr]) -> Self {
        let empty = Snapshot::new(0, Vec::new(), 0);
        Balancer {
            current: ArcSwap::from_pointee(empty.with_addrs(version, addrs)),
        }
    }

    /// The current snapshot, for a short-lived look (do not hold it across `.await`).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, owned (may be held across `.await`).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a new endpoint set if `version` is newer than the one held; returns whether it
    /// was applied.
    pub fn update(&self, version: u64, addrs: &[SocketAddr]) -> bool {
        let mut applied = false;
        self.current.rcu(|cur| {
            applied = version > cur.version;
            if applied {
                Arc::new(cur.with_addrs(version, addrs))
            } else {
                Arc::clone(cur)
            }
        });
        applied
    }

    /// Installs an endpoint set whatever the version held (the watch client orders versions
    /// itself, and a controller's first snapshot may carry any version).
    pub fn replace(&self, version: u64, addrs: &[SocketAddr]) {
        self.current
            .rcu(|cur| Arc::new(cur.with_addrs(version, addrs)));
    }

    /// Recomputes the healthy list after a backend's verdict flipped.
    pub fn refresh(&self) {
        self.current.rcu(|cur| Arc::new(cur.refreshed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
    }

    /// A snapshot whose backend `i` is up iff `up[i]`.
    fn snapshot(up: &[bool], cursor: usize) -> Snapshot {
        let backends = up
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let b = Arc::new(Backend::new(addr(i)));
                if !u {
                    while b.record(false, 1, 1).is_none() {}
                }
                b
            })
            .collect();
        Snapshot::new(1, backends, cursor)
    }

    proptest! {
        #[test]
        fn round_robin_is_fair_over_healthy_backends(
            up in prop::collection::vec(any::<bool>(), 1..12),
            cursor in any::<usize>(),
            rounds in 1usize..20,
        ) {
            let s = snapshot(&up, cursor);
            let healthy = up.iter().filter(|u| **u).count();
            let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
            for _ in 0..healthy * rounds {
                let b = s.pick().expect("a healthy backend exists");
                *counts.entry(b.addr).or_default() += 1;
            }
            prop_assert_eq!(counts.len(), healthy);
            prop_assert!(counts.values().all(|&c| c == rounds));
        }

        #[test]
        fn never_picks_an_unhealthy_backend(
            up in prop::collection::vec(any::<bool>(), 1..12),
            cursor in any::<usize>(),
        ) {
            let s = snapshot(&up, cursor);
            for _ in 0..50 {
                match s.pick() {
                    Some(b) => prop_assert!(b.is_up()),
                    None => prop_assert!(up.iter().all(|u| !u)),
                }
            }
        }

        #[test]
        fn retries_walk_distinct_healthy_backends(
            up in prop::collection::vec(any::<bool>(), 1..12),
            cursor in any::<usize>(),
        ) {
            let s = snapshot(&up, cursor);
            let healthy = up.iter().filter(|u| **u).count();
            if let Some(start) = s.start() {
                let tried: Vec<_> = (0..).map_while(|i| s.candidate(start, i)).map(|b| b.addr).collect();
                let mut distinct = tried.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(tried.len(), healthy);
                prop_assert_eq!(distinct.len(), healthy);
            }
        }

        #[test]
        fn update_keeps_health_of_backends_that_stay(
            up in prop::collection::vec(any::<bool>(), 1..10),
            keep in prop::collection::vec(any::<bool>(), 10),
            added in 0usize..5,
        ) {
            let s = snapshot(&up, 0);
            let mut next: Vec<SocketAddr> = (0..up.len()).filter(|i| keep[*i]).map(addr).collect();
            next.extend((0..added).map(|i| addr(100 + i)));
            let n = s.with_addrs(2, &next);
            prop_assert_eq!(n.backends().len(), next.len());
            for b in n.backends() {
                match s.find(b.addr) {
                    Some(old) => {
                        prop_assert!(Arc::ptr_eq(old, b));
                        prop_assert_eq!(old.is_up(), b.is_up());
                    }
                    None => prop_assert!(b.is_up(), "new backends start up"),
                }
            }
            // Removed backends are never picked.
            for _ in 0..20 {
                if let Some(b) = n.pick() {
                    prop_assert!(next.contains(&b.addr));
                }
            }
        }
    }

    #[test]
    fn stale_versions_are_ignored() {
        let b = Balancer::new(5, &[addr(1)]);
        assert!(!b.update(5, &[addr(2)]));
        assert!(!b.update(4, &[addr(2)]));
        assert_eq!(b.load().backends()[0].addr, addr(1));
        assert!(b.update(6, &[addr(2)]));
        assert_eq!(b.load().backends()[0].addr, addr(2));
    }

    #[test]
    fn health_flip_is_visible_after_refresh() {
        let b = Balancer::new(1, &[addr(1), addr(2)]);
        let first = Arc::clone(&b.load().backends()[0]);
        assert_eq!(first.record(false, 1, 1), Some(false));
        b.refresh();
        let s = b.load();
        assert_eq!(s.healthy_count(), 1);
        for _ in 0..4 {
            assert_eq!(s.pick().unwrap().addr, addr(2));
        }
    }
}
