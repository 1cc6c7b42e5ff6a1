//! The process's file-descriptor budget, so running out of descriptors degrades in order instead
//! of failing at random.
//!
//! At start the proxy reads its `RLIMIT_NOFILE` soft limit and the descriptors already open,
//! and keeps [`reserve`] of the rest for the admin server, health checks and the controller
//! stream. The workers share the remainder: every client connection takes two descriptors (its
//! socket and the backend's), every splice pipe two, pooled or leased. Under pressure, in this
//! order:
//!
//! 1. a direction that wants a *new* pipe keeps copying once pipes would eat into the last
//!    quarter of the budget ([`FdBudget::take_pipe`]), and a freed pipe is closed instead of
//!    pooled once half the budget is used ([`FdBudget::pressure`]);
//! 2. only when a connection's own two descriptors do not fit is the client refused
//!    ([`FdBudget::take_connection`]: accepted and closed at once, counted, logged at most once
//!    a second) — never blamed on a backend.
//!
//! Idle pooled pipes are also trimmed over time (see `forward::splice::trim_pool`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Descriptors a connection holds: the client socket and the backend socket.
pub const PER_CONNECTION: usize = 2;
/// Descriptors a splice pipe holds.
pub const PER_PIPE: usize = 2;

/// Descriptors kept out of the workers' budget for everything else (admin server, health
/// checks, controller stream, logs): 1/16 of the limit, between 16 and 256.
pub fn reserve(limit: usize) -> usize {
    (limit / 16).clamp(16, 256)
}

/// A shared count of descriptors against a limit.
#[derive(Debug)]
pub struct FdBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl FdBudget {
    /// An unlimited budget (until [`FdBudget::set_limit`]).
    pub const fn new() -> Self {
        FdBudget {
            limit: AtomicUsize::new(usize::MAX),
            used: AtomicUsize::new(0),
        }
    }

    /// Sets how many descriptors the workers may hold together.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Descriptors counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` if they fit under `ceiling`.
    fn take_under(&self, n: usize, ceiling: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u.saturating_add(n) <= ceiling).then_some(u + n)
            })
            .is_ok()
    }

    /// Room for one more connection? Takes its descriptors if so.
    pub fn take_connection(&self) -> bool {
        self.take_under(PER_CONNECTION, self.limit())
    }

    /// Room for a new pipe while leaving a quarter of the budget to connections?
    pub fn take_pipe(&self) -> bool {
        let limit = self.limit();
        self.take_under(PER_PIPE, limit - limit / 4)
    }

    /// Gives `n` descriptors back.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// More than half the budget is used: do not keep idle pipes.
    pub fn pressure(&self) -> bool {
        self.used() > self.limit() / 2
    }
}

impl Default for FdBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// The budget of this process's workers.
pub static BUDGET: FdBudget = FdBudget::new();

/// The `RLIMIT_NOFILE` soft limit, read from `/proc/self/limits` (no system call wrapper
/// needed); `None` when unknown or unlimited.
pub fn nofile_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors open now.
pub fn open_now() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// Sizes [`BUDGET`] from the process limit: limit − open now − reserve. Returns the budget.
pub fn configure() -> Option<usize> {
    let limit = nofile_limit()?;
    let open = open_now().unwrap_or(0);
    let budget = limit.saturating_sub(open + reserve(limit));
    BUDGET.set_limit(budget);
    Some(budget)
}

/// Errors that mean *this process* is out of resources, not that a peer failed.
pub fn is_local_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the sequence of takes and releases, the count never passes the limit,
        /// pipes never eat into the last quarter, and a connection is refused only when its
        /// two descriptors really do not fit.
        #[test]
        fn budget_orders_pipes_before_connections(
            limit in 8usize..400,
            ops in prop::collection::vec(0u8..4, 0..300),
        ) {
            let b = FdBudget::new();
            b.set_limit(limit);
            let (mut conns, mut pipes) = (0usize, 0usize);
            for op in ops {
                match op {
                    0 => {
                        let before = b.used();
                        if b.take_connection() { conns += 1 }
                        else { prop_assert!(before + PER_CONNECTION > limit) }
                    }
                    1 => {
                        let before = b.used();
                        if b.take_pipe() { pipes += 1 }
                        else { prop_assert!(before + PER_PIPE > limit - limit / 4) }
                    }
                    2 if conns > 0 => { b.release(PER_CONNECTION); conns -= 1 }
                    3 if pipes > 0 => { b.release(PER_PIPE); pipes -= 1 }
                    _ => {}
                }
                prop_assert_eq!(b.used(), conns * PER_CONNECTION + pipes * PER_PIPE);
                prop_assert!(b.used() <= limit);
                prop_assert!(pipes * PER_PIPE <= limit - limit / 4);
            }
        }
    }

    #[test]
    fn the_process_limit_is_readable() {
        let limit = nofile_limit().expect("/proc/self/limits has Max open files");
        assert!(limit > open_now().unwrap());
        assert!(reserve(limit) >= 16);
    }
}
