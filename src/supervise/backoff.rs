//! Capped exponential backoff, shared by stage restarts and item retries.

use std::hash::BuildHasher;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff: the `n`-th delay (from 0) is `initial * factor^n`,
/// capped at `max`. For restarts `n` counts the restarts still inside the
/// intensity period; for item retries, the retries of the item so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Growth per step (values below 1 are treated as 1).
    pub factor: f64,
}

impl Backoff {
    /// No delay at all.
    pub const NONE: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        factor: 1.0,
    };

    /// The delay that follows `recent` earlier ones.
    pub fn delay(&self, recent: usize) -> Duration {
        let exponent = i32::try_from(recent).unwrap_or(i32::MAX);
        let scaled = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        if scaled.is_finite() && scaled < self.max.as_secs_f64() {
            Duration::from_secs_f64(scaled)
        } else {
            self.max
        }
    }

    /// [`delay`](Self::delay) less a random part of up to `jitter` of it
    /// (a fraction, clamped to `0..=1`; 0 is no jitter). Jitter only
    /// shortens a delay, so it never exceeds `max`; it spreads the retries
    /// of many items failing together (a downstream service that went away)
    /// instead of sending them back at the same instant.
    pub fn delay_with_jitter(&self, recent: usize, jitter: f64) -> Duration {
        shave(self.delay(recent), jitter, random_unit())
    }
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 10 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

/// `delay` less `jitter * unit` of it, where `unit` is in `0..1`.
fn shave(delay: Duration, jitter: f64, unit: f64) -> Duration {
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    delay.mul_f64(1.0 - jitter * unit.clamp(0.0, 1.0))
}

/// A number in `0..1` good enough to spread delays: std's per-process
/// random hash keys over a counter (no dependency, no allocation).
fn random_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let bits = std::collections::hash_map::RandomState::new()
        .hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
    // The top 53 bits, as the mantissa of a float in [0, 1).
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_survives_absurd_settings() {
        let wild = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            factor: f64::INFINITY,
        };
        assert_eq!(wild.delay(0), Duration::from_secs(1));
        assert_eq!(wild.delay(1), Duration::from_secs(5));
        assert_eq!(wild.delay(usize::MAX), Duration::from_secs(5));
        let shrinking = Backoff {
            factor: 0.1,
            ..Backoff::default()
        };
        assert_eq!(shrinking.delay(5), Duration::from_millis(100));
        assert_eq!(Backoff::NONE.delay(7), Duration::ZERO);
    }

    #[test]
    fn jitter_only_shortens_a_delay_and_never_past_zero() {
        let second = Duration::from_secs(1);
        assert_eq!(shave(second, 0.0, 0.9), second);
        assert_eq!(shave(second, 0.5, 0.0), second);
        assert_eq!(shave(second, 0.5, 1.0), Duration::from_millis(500));
        assert_eq!(shave(second, 7.0, 1.0), Duration::ZERO);
        assert_eq!(shave(second, -1.0, 1.0), second);
        assert_eq!(shave(second, f64::NAN, 1.0), second);
        let capped = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
            factor: 2.0,
        };
        for n in 0..20 {
            let d = capped.delay_with_jitter(n, 0.5);
            assert!(d <= capped.delay(n) && d >= capped.delay(n) / 2, "{d:?}");
        }
    }
}
