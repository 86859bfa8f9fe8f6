//! Item retries: an error for one item is an item failure, tried again on
//! its stage before the stage itself fails.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dead_letter::{is_permanent, report_dead_letter};
use super::ports::Ports;
use super::supervisor::Reporter;
use super::work::Bells;
use crate::progress::StageCounters;
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
/// When the attempts are spent, or the error is a
/// [`PermanentError`](super::PermanentError), the item is **dead-lettered**:
/// recorded in the journal (see
/// [`Store::list_dead_letters`](crate::store::Store::list_dead_letters))
/// before the stage goes on, and the run fails or carries on per its
/// [`DeadLetterPolicy`](crate::flow::DeadLetterPolicy). If the logic
/// panics, the dead letter cannot be recorded, or the stage fails for any
/// other reason while it holds the item, the stage fails and keeps the
/// item: its restart (per its [`RestartPolicy`](crate::flow::RestartPolicy))
/// tries it first. If the restarts run out too, the run fails; an item is
/// never silently dropped. A step (which has no item) fails the stage once
/// its attempts are spent.
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
    /// One attempt per item: a failed item is dead-lettered at once.
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

/// What follows a failed attempt.
pub(crate) enum AfterFailure {
    /// Try again (the backoff was waited).
    Retry,
    /// A cancel or drain cut the wait short: the caller returns to its
    /// stage, keeping the item.
    Interrupted,
    /// No more attempts (they are spent, or the error is permanent): the
    /// error that fails the stage if the item is not dead-lettered.
    GiveUp(BoxError),
}

/// How a stage applies its retry policy, given to each unit of work.
pub(crate) struct Retries<'a> {
    pub(crate) stage: &'a str,
    pub(crate) policy: &'a RetryPolicy,
    /// A cancel or drain cuts a backoff wait short.
    pub(crate) bells: &'a Bells,
    /// The stage's index and generation, and how it reaches its flow: for
    /// dead letters.
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) report: &'a Reporter,
    /// The stage's live counters (a step's retries are counted here).
    pub(crate) counters: &'a StageCounters,
}

impl Retries<'_> {
    /// After an item's `failed`-th failed attempt in this start (the
    /// failure already noted in `ports`): waits the backoff and returns
    /// `Ok(true)` to try again, `Ok(false)` if a cancel or drain cut the
    /// wait short, or, once no attempt is left, dead-letters the item and
    /// returns `Ok(true)` (the next item is next). If the dead letter
    /// cannot be recorded, the error fails the stage, which keeps the item.
    pub(crate) async fn after_item_failure<T: Clone + Send + 'static>(
        &self,
        ports: &mut Ports<T>,
        failed: u32,
        error: BoxError,
    ) -> Result<bool, BoxError> {
        match self.next(failed, error).await {
            AfterFailure::Retry => Ok(true),
            AfterFailure::Interrupted => Ok(false),
            AfterFailure::GiveUp(_) => {
                let Some((letter, acked)) = ports.dead_letter(self.index, self.generation) else {
                    return Err("an item failed but the stage holds none".into());
                };
                tracing::warn!(
                    stage = self.stage,
                    position = letter.position,
                    attempts = letter.attempts,
                    "item dead-lettered"
                );
                report_dead_letter(self.stage, self.report, letter, acked).await?;
                ports.settle();
                Ok(true)
            }
        }
    }

    /// After `failed` failed attempts (counting this one) ending in
    /// `error`: what follows, the backoff waited before a retry.
    async fn next(&self, failed: u32, error: BoxError) -> AfterFailure {
        let stage = self.stage;
        let max = self.policy.max_attempts.max(1);
        if is_permanent(&error) {
            return AfterFailure::GiveUp(error);
        }
        if failed >= max {
            return AfterFailure::GiveUp(match max {
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
        if delay.is_zero() {
            // A zero sleep still waits for the timer's next tick.
            return AfterFailure::Retry;
        }
        // Cancel-safe: the caller still holds the item.
        tokio::select! {
            biased;
            () = self.bells.halt.notified() => AfterFailure::Interrupted,
            () = tokio::time::sleep(delay) => AfterFailure::Retry,
        }
    }

    /// A step's [`next`](Self::next): `Ok(true)` to try again, `Ok(false)`
    /// if a cancel or drain cut the wait short, or the error that fails
    /// the stage once no attempt is left.
    pub(crate) async fn after_failure(
        &self,
        failed: u32,
        error: BoxError,
    ) -> Result<bool, BoxError> {
        match self.next(failed, error).await {
            AfterFailure::Retry => {
                self.counters.add_retry();
                Ok(true)
            }
            AfterFailure::Interrupted => Ok(false),
            AfterFailure::GiveUp(error) => {
                tracing::warn!(stage = self.stage, attempt = failed, %error, "step failed its last attempt; the stage fails");
                Err(error)
            }
        }
    }
}
