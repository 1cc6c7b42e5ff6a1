//! Retry back-off: exponential with jitter, for every reconnect and retry loop of both planes
//! (agent registration, a proxy's endpoint watch, the controller's calls to agents).

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with jitter for retry loops: attempt `n` (from 0) waits a random delay
/// in `[d/2, d]` with `d = min(max, base x factor^n)` ("equal jitter": never a hot loop, and
/// many clients that lost the same server do not come back in step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Ceiling of every delay.
    pub max: Duration,
    /// Growth per attempt (>= 1; smaller values are treated as 1).
    pub factor: f64,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s: suits reconnecting to the controller or an agent.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The largest delay of attempt `attempt`: `min(max, base x factor^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = if self.factor.is_finite() {
            self.factor.max(1.0)
        } else {
            1.0
        };
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * factor.powi(exponent);
        let max = self.max.as_secs_f64();
        if secs.is_finite() && secs < max {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The delay before retry number `attempt` (0 for the first retry), jittered with `rng`.
    pub fn next_delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos();
        let low = ceiling / 2;
        let nanos = if ceiling == 0 {
            0
        } else {
            rng.random_range(low..=ceiling)
        };
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A retry loop's state: the policy and how many attempts have failed in a row. The delays
/// are drawn from the thread's random generator; use [`Backoff::next_delay`] directly where a
/// test needs to choose the draws.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The delays' policy.
    pub policy: Backoff,
    /// Failed attempts since the last success.
    pub attempt: u32,
}

impl Retry {
    /// A loop that has not failed yet.
    pub fn new(policy: Backoff) -> Self {
        Retry { policy, attempt: 0 }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.policy.next_delay(self.attempt, &mut rand::rng());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn jittered_delays_stay_within_half_and_full_ceiling() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2.0,
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..64).map(|_| b.next_delay(2, &mut rng)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(200) && *d <= Duration::from_millis(400)));
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "jitter varies the delay"
        );
        let zero = Backoff {
            base: Duration::ZERO,
            ..b
        };
        assert_eq!(zero.next_delay(5, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_grows_then_resets_after_a_success() {
        let mut r = Retry::new(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(800),
            factor: 2.0,
        });
        let d: Vec<Duration> = (0..5).map(|_| r.next_delay()).collect();
        assert!(d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[4] <= Duration::from_millis(800));
        r.reset();
        assert!(r.next_delay() <= Duration::from_millis(100));
    }

    proptest! {

        #[test]
        fn backoff_ceiling_is_monotone_capped_and_delays_within_it(
            base_ms in 0u64..5_000,
            max_ms in 0u64..120_000,
            factor in 0.5f64..4.0,
            attempt in 0u32..200,
            seed in any::<u64>(),
        ) {
            let b = Backoff { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms), factor };
            prop_assert!(b.ceiling(attempt) <= b.ceiling(attempt + 1));
            prop_assert!(b.ceiling(attempt) <= b.max);
            let d = b.next_delay(attempt, &mut StdRng::seed_from_u64(seed));
            prop_assert!(d <= b.ceiling(attempt));
            prop_assert!(d >= b.ceiling(attempt) / 2);
        }
    }
}
