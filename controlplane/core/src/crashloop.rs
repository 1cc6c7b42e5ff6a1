//! Crash-loop back-off as a pure function (time is an argument), after Kubernetes'
//! CrashLoopBackOff: a pod that fails is restarted in place at once the first time
//! (self-healing must replace a killed pod within seconds), then after 10 s, 20 s, 40 s ...
//! capped at 5 min. A pod that ran healthily for 10 min before failing starts a fresh streak.
//! The streak is the pod record's `failure_streak`; [`CrashLoop::on_failure`] is the whole
//! transition.

use std::time::Duration;

/// Delay before the second restart of a crash loop; it doubles from there.
pub const CRASH_INITIAL_DELAY: Duration = Duration::from_secs(10);
/// Longest crash-loop delay.
pub const CRASH_MAX_DELAY: Duration = Duration::from_secs(300);
/// A pod that ran this long before failing starts a fresh streak.
pub const CRASH_RESET_AFTER: Duration = Duration::from_secs(600);

/// Delay before restarting a pod that has failed `failures_in_a_row` times before this failure
/// without a healthy run in between: 0 → immediately, 1 → 10 s, 2 → 20 s, ... up to 5 min.
pub fn restart_delay(failures_in_a_row: u32) -> Duration {
    match failures_in_a_row {
        0 => Duration::ZERO,
        n => {
            // 2^(n-1), saturating: 2^5 x 10 s already exceeds the cap.
            let factor = 1u32 << (n - 1).min(16);
            CRASH_INITIAL_DELAY
                .saturating_mul(factor)
                .min(CRASH_MAX_DELAY)
        }
    }
}

/// The earliest restart time (unix ms) of a pod failing at `now_ms` after `failures_in_a_row`
/// earlier failures in its streak.
pub fn next_backoff_until(now_ms: i64, failures_in_a_row: u32) -> i64 {
    now_ms.saturating_add(duration_ms(restart_delay(failures_in_a_row)))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A pod's crash-loop state: what the controller stores beside the pod (`PodRecord`'s
/// `failure_streak` and `backoff_until_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrashLoop {
    /// Failures since the last healthy run (a run of at least [`CRASH_RESET_AFTER`]).
    pub failure_streak: u32,
    /// Earliest restart time (unix ms); 0 = none.
    pub backoff_until_ms: i64,
}

impl CrashLoop {
    /// The state after the pod, started at `started_at_ms` (0 = never started), fails at
    /// `now_ms`: a long healthy run resets the streak, then the back-off grows with it.
    pub fn on_failure(self, started_at_ms: i64, now_ms: i64) -> CrashLoop {
        let ran_healthy = started_at_ms > 0
            && now_ms.saturating_sub(started_at_ms) >= duration_ms(CRASH_RESET_AFTER);
        let streak = if ran_healthy { 0 } else { self.failure_streak };
        CrashLoop {
            failure_streak: streak.saturating_add(1),
            backoff_until_ms: next_backoff_until(now_ms, streak),
        }
    }

    /// Whether a restart may be attempted at `now_ms`.
    pub fn may_restart(&self, now_ms: i64) -> bool {
        self.backoff_until_ms <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crash_loop_delays_double_from_10s_to_5min() {
        let secs: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(restart_delay(u32::MAX), CRASH_MAX_DELAY);
        assert_eq!(next_backoff_until(1_000, 2), 21_000);
    }

    #[test]
    fn crash_loop_streak_grows_and_resets_after_a_healthy_run() {
        let mut state = CrashLoop::default();
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let started = now;
            now += 1_000; // crashed a second after starting
            state = state.on_failure(started, now);
            waits.push((state.backoff_until_ms - now) / 1000);
            assert!(!state.may_restart(now) || state.backoff_until_ms == now);
            now = state.backoff_until_ms;
            assert!(state.may_restart(now));
        }
        assert_eq!(waits, vec![0, 10, 20, 40]);
        assert_eq!(state.failure_streak, 4);
        let started = now;
        now += 600_000;
        state = state.on_failure(started, now);
        assert_eq!(
            state,
            CrashLoop {
                failure_streak: 1,
                backoff_until_ms: now
            },
            "ten healthy minutes reset it"
        );
    }

    #[test]
    fn never_started_pod_keeps_its_streak() {
        let state = CrashLoop {
            failure_streak: 3,
            backoff_until_ms: 0,
        }
        .on_failure(0, 10_000_000);
        assert_eq!(state.failure_streak, 4);
        assert_eq!(state.backoff_until_ms, 10_000_000 + 40_000);
    }

    proptest! {
        #[test]
        fn crash_delay_is_monotone_and_capped(n in 0u32..10_000) {
            prop_assert!(restart_delay(n) <= restart_delay(n + 1));
            prop_assert!(restart_delay(n) <= CRASH_MAX_DELAY);
        }

    }
}
