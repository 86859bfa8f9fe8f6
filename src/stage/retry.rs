//! Item retries: an error for one item is an item failure, tried again on
//! its stage before the stage itself fails.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::work::Bells;
use crate::supervise::{Backoff, BoxError};

/// How a stage retries an item its logic failed on: the error a
/// transform's [`process`](super::Transform::process), a sink's
/// [`consume`](super::Sink::consume) or a step's [`run`](super::Step::run)
/// returns is an item failure; the call is made again, with a clone of the
/// item, up to `max_attempts` times in all, waiting a capped exponential
/// backoff in between. Items a failed `process` emitted are discarded
/// before the retry. A source's `produce` error is not an item failure: it
/// fails the stage.
///
/// When the attempts are spent (or the logic panics, or the stage fails
/// for any other reason while it holds the item), the stage fails and
/// keeps the item: its restart (per its
/// [`RestartPolicy`](crate::flow::RestartPolicy)) tries it first. If the
/// restarts run out too, the run fails; an item is never silently dropped.
///
/// Retries make item work **at-least-once**: a sink whose `consume` wrote
/// somewhere before it failed writes again on the retry, and so does a
/// transform's side effect. Make such effects idempotent (a key per item).
///
/// ```
/// use std::time::Duration;
/// use troupe::flow::{Backoff, RetryPolicy};
///
/// // Five attempts in all, waiting 50 ms, 100 ms, 200 ms, 400 ms (at most
/// // 1 s), each shortened by up to a tenth at random.
/// let policy = RetryPolicy::attempts(5)
///     .backoff(Backoff { initial: Duration::from_millis(50), max: Duration::from_secs(1), factor: 2.0 })
///     .jitter(0.1);
/// assert_eq!(policy.delay(1), Duration::from_millis(100));
/// assert_eq!(RetryPolicy::none().max_attempts, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per item, the first included (0 is taken as 1).
    pub max_attempts: u32,
    /// Delay before each retry of an item: `backoff.delay(n)` before the
    /// `n`-th retry (from 0).
    pub backoff: Backoff,
    /// Fraction of each delay taken off at random (0 to 1; 0 is none):
    /// items failing together do not all come back at once.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 3 attempts, waiting 10 ms then 20 ms (doubling, at most 1 s), with a
    /// jitter of 0.2.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
                factor: 2.0,
            },
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// One attempt per item: a failure fails the stage at once (which
    /// still keeps the item for its restart).
    pub fn none() -> Self {
        Self::attempts(1)
    }

    /// The default policy with `max_attempts` attempts per item.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..Self::default()
        }
    }

    /// Sets the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the jitter (see [`RetryPolicy::jitter`](#structfield.jitter)).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry `n` (from 0), without jitter.
    pub fn delay(&self, n: usize) -> Duration {
        self.backoff.delay(n)
    }
}

/// The error a stage fails with when an item spent its attempts.
#[derive(Debug, thiserror::Error)]
#[error("{last} (after {attempts} attempts)")]
struct RetriesExhausted {
    attempts: u32,
    last: BoxError,
}

/// How a stage applies its retry policy, given to each unit of work.
pub(crate) struct Retries<'a> {
    pub(crate) stage: &'a str,
    pub(crate) policy: &'a RetryPolicy,
    /// A cancel or drain cuts a backoff wait short.
    pub(crate) bells: &'a Bells,
}

impl Retries<'_> {
    /// After `failed` failed attempts (counting this one) ending in
    /// `error`: waits the backoff and returns `Ok(true)` to try again,
    /// `Ok(false)` if a cancel or drain cut the wait short (the caller
    /// returns to its stage, keeping the item), or the error that fails
    /// the stage once the attempts are spent.
    pub(crate) async fn after_failure(
        &self,
        failed: u32,
        error: BoxError,
    ) -> Result<bool, BoxError> {
        let stage = self.stage;
        let max = self.policy.max_attempts.max(1);
        if failed >= max {
            tracing::warn!(stage, attempt = failed, %error, "item failed its last attempt; the stage fails and keeps it");
            return Err(match max {
                1 => error,
                attempts => RetriesExhausted {
                    attempts,
                    last: error,
                }
                .into(),
            });
        }
        let n = usize::try_from(failed - 1).unwrap_or(usize::MAX);
        let delay = self.policy.backoff.delay_with_jitter(n, self.policy.jitter);
        tracing::warn!(stage, attempt = failed, %error, ?delay, "item failed; retrying");
        // Cancel-safe: the caller still holds the item.
        tokio::select! {
            biased;
            () = self.bells.halt.notified() => Ok(false),
            () = tokio::time::sleep(delay) => Ok(true),
        }
    }
}
