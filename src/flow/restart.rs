//! Restart policies for stages, in the OTP tradition: which exits restart a
//! stage (`permanent`, `transient`, `temporary`), whether a restart takes just
//! that stage or all of the flow's stages (`one-for-one`, `one-for-all`), how
//! many restarts are allowed in a period (intensity), and how long to wait
//! before each one (capped exponential backoff).
//!
//! The flow feeds the pure decision logic (`RestartTracker`) every exit of a
//! stage with the time it happened and gets back what to do.
//!
//! ```
//! use std::time::Duration;
//! use troupe::flow::{Backoff, RestartPolicy, RestartStrategy};
//!
//! // Restart after failures (not completions), at most 2 times in 10 s,
//! // waiting 100 ms, then 200 ms, ... (at most 5 s); a restart takes every stage.
//! let policy = RestartPolicy::transient()
//!     .intensity(2, Duration::from_secs(10))
//!     .backoff(Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5), factor: 2.0 })
//!     .strategy(RestartStrategy::OneForAll);
//! # let _ = policy;
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::supervise::Backoff;

/// Which exits of a stage lead to a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Restarted after any exit that is not a completion.
    Permanent,
    /// Restarted only after a failure (an error, a panic).
    Transient,
    /// Never restarted; a failure fails the flow.
    Temporary,
}

/// What a restart of one stage takes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartStrategy {
    /// Only the stage that exited is restarted.
    OneForOne,
    /// Every stage of the flow is restarted.
    OneForAll,
}

/// How a stage is restarted. The default is OTP's: transient, one-for-one,
/// at most 3 restarts in 10 s, with [`Backoff::default`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Which exits restart the stage.
    pub restart: RestartType,
    /// Whether a restart takes the other stages with it.
    pub strategy: RestartStrategy,
    /// Most restarts allowed within `period`; one more fails the flow.
    pub max_restarts: u32,
    /// The sliding window `max_restarts` applies to.
    pub period: Duration,
    /// Delay before each restart.
    pub backoff: Backoff,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restart: RestartType::Transient,
            strategy: RestartStrategy::OneForOne,
            max_restarts: 3,
            period: Duration::from_secs(10),
            backoff: Backoff::default(),
        }
    }
}

impl RestartPolicy {
    /// The default policy with `restart: permanent`.
    pub fn permanent() -> Self {
        RestartPolicy {
            restart: RestartType::Permanent,
            ..Self::default()
        }
    }

    /// The default policy (`restart: transient`).
    pub fn transient() -> Self {
        Self::default()
    }

    /// A policy that never restarts.
    pub fn temporary() -> Self {
        RestartPolicy {
            restart: RestartType::Temporary,
            ..Self::default()
        }
    }

    /// Allows at most `max_restarts` restarts within `period`.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Sets the backoff between restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: RestartStrategy) -> Self {
        self.strategy = strategy;
        self
    }
}

/// How a stage's actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageExit {
    /// It finished its work (its inputs ended and its output was flushed).
    Completed,
    /// It stopped cleanly before finishing its work.
    Stopped,
    /// It failed: an error, a panic, a crash; with the reason.
    Failed(String),
}

/// What the flow does after a stage exit.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartDecision {
    /// Nothing to restart and nothing failed (a completion, or a clean stop
    /// the policy does not restart).
    Done,
    /// Restart after `after`, taking the stages `strategy` says.
    Restart {
        /// The backoff delay to wait first.
        after: Duration,
        /// Just this stage, or all of the flow's stages.
        strategy: RestartStrategy,
    },
    /// Do not restart: the flow fails.
    GiveUp(GiveUp),
}

/// Why a stage is not restarted after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp {
    /// What ran out.
    pub cause: GiveUpCause,
    /// The failure that ended the stage last.
    pub last_error: String,
}

/// What ran out when a stage is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpCause {
    /// The stage's restart type does not restart this exit (temporary).
    NotRestartable(RestartType),
    /// One more restart would exceed `max_restarts` within `period`.
    IntensityExceeded {
        /// The policy's `max_restarts`.
        max_restarts: u32,
        /// The policy's `period`.
        period: Duration,
    },
}

impl GiveUp {
    /// The flow's failure reason, naming the stage and the last error.
    pub fn describe(&self, stage: &str) -> String {
        format!("stage `{stage}` {self}")
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            GiveUpCause::NotRestartable(kind) => write!(
                f,
                "failed and is {kind:?} (never restarted); last error: {}",
                self.last_error
            ),
            GiveUpCause::IntensityExceeded {
                max_restarts,
                period,
            } => write!(
                f,
                "exceeded its restart intensity ({max_restarts} restarts in {period:?}); last error: {}",
                self.last_error
            ),
        }
    }
}

/// Applies a [`RestartPolicy`] to the exits of one stage.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// When the restarts still inside the period happened, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker with no restarts yet.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Restarts counted inside the period ending at `now`.
    #[cfg(test)]
    pub fn recent_restarts(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.recent.len()
    }

    /// Decides what follows `exit`, which happened at `now`, and counts the restart if any.
    pub fn on_exit(&mut self, exit: &StageExit, now: Instant) -> RestartDecision {
        let restarts = match (exit, self.policy.restart) {
            (StageExit::Completed, _) => false,
            (StageExit::Stopped, RestartType::Permanent) => true,
            (StageExit::Stopped, _) => false,
            (StageExit::Failed(_), RestartType::Temporary) => {
                return self.give_up(exit, GiveUpCause::NotRestartable(RestartType::Temporary));
            }
            (StageExit::Failed(_), _) => true,
        };
        if !restarts {
            return RestartDecision::Done;
        }
        self.forget_before(now);
        if self.recent.len() >= self.policy.max_restarts as usize {
            let cause = GiveUpCause::IntensityExceeded {
                max_restarts: self.policy.max_restarts,
                period: self.policy.period,
            };
            return self.give_up(exit, cause);
        }
        let after = self.policy.backoff.delay(self.recent.len());
        self.recent.push_back(now);
        RestartDecision::Restart {
            after,
            strategy: self.policy.strategy,
        }
    }

    fn give_up(&self, exit: &StageExit, cause: GiveUpCause) -> RestartDecision {
        let last_error = match exit {
            StageExit::Failed(reason) => reason.clone(),
            StageExit::Stopped => "stopped before completing".to_string(),
            StageExit::Completed => "completed".to_string(),
        };
        RestartDecision::GiveUp(GiveUp { cause, last_error })
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) < self.policy.period {
                break;
            }
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_third_failure_within_the_period_gives_up_and_says_why() {
        let policy = RestartPolicy::transient().intensity(2, Duration::from_secs(10));
        let mut tracker = RestartTracker::new(policy);
        let now = Instant::now();
        let crash = StageExit::Failed("connection reset".into());
        assert!(matches!(
            tracker.on_exit(&crash, now),
            RestartDecision::Restart { .. }
        ));
        assert!(matches!(
            tracker.on_exit(&crash, now),
            RestartDecision::Restart { .. }
        ));
        let RestartDecision::GiveUp(why) = tracker.on_exit(&crash, now) else {
            panic!("a third failure within 10 s exceeds the intensity")
        };
        assert_eq!(
            why.describe("enrich"),
            "stage `enrich` exceeded its restart intensity (2 restarts in 10s); last error: connection reset"
        );
    }

    use super::*;

    fn failed() -> StageExit {
        StageExit::Failed("boom".into())
    }

    fn restart_after(d: RestartDecision) -> Duration {
        match d {
            RestartDecision::Restart { after, .. } => after,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn restart_types_decide_which_exits_restart() {
        let now = Instant::now();
        for (policy, completed, stopped, failed_restarts) in [
            (RestartPolicy::permanent(), false, true, true),
            (RestartPolicy::transient(), false, false, true),
            (RestartPolicy::temporary(), false, false, false),
        ] {
            let mut t = RestartTracker::new(policy);
            assert_eq!(
                t.on_exit(&StageExit::Completed, now) != RestartDecision::Done,
                completed
            );
            let stop = t.on_exit(&StageExit::Stopped, now);
            assert_eq!(
                matches!(stop, RestartDecision::Restart { .. }),
                stopped,
                "{policy:?}"
            );
            let fail = t.on_exit(&failed(), now);
            assert_eq!(
                matches!(fail, RestartDecision::Restart { .. }),
                failed_restarts
            );
            if !failed_restarts {
                assert_eq!(
                    fail,
                    RestartDecision::GiveUp(GiveUp {
                        cause: GiveUpCause::NotRestartable(RestartType::Temporary),
                        last_error: "boom".into()
                    })
                );
            }
        }
    }

    #[test]
    fn intensity_is_a_sliding_window() {
        let policy = RestartPolicy::transient()
            .intensity(3, Duration::from_secs(10))
            .backoff(Backoff::NONE);
        let mut t = RestartTracker::new(policy);
        let t0 = Instant::now();
        for s in [0, 1, 2] {
            restart_after(t.on_exit(&failed(), t0 + Duration::from_secs(s)));
        }
        assert!(matches!(
            t.on_exit(&failed(), t0 + Duration::from_secs(9)),
            RestartDecision::GiveUp(_)
        ));
        // At t0 + 10 s the first restart leaves the window: one more is allowed.
        restart_after(t.on_exit(&failed(), t0 + Duration::from_secs(10)));
        assert_eq!(t.recent_restarts(t0 + Duration::from_secs(10)), 3);
        assert_eq!(t.recent_restarts(t0 + Duration::from_secs(30)), 0);
    }

    #[test]
    fn zero_intensity_gives_up_at_once_naming_the_stage() {
        let mut t =
            RestartTracker::new(RestartPolicy::permanent().intensity(0, Duration::from_secs(1)));
        let RestartDecision::GiveUp(why) = t.on_exit(&StageExit::Stopped, Instant::now()) else {
            panic!("expected give-up");
        };
        assert_eq!(
            why.describe("sink"),
            "stage `sink` exceeded its restart intensity (0 restarts in 1s); last error: stopped before completing"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped_then_resets_with_the_window() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            factor: 2.0,
        };
        let policy = RestartPolicy::transient()
            .intensity(10, Duration::from_secs(60))
            .backoff(backoff)
            .strategy(RestartStrategy::OneForAll);
        let mut t = RestartTracker::new(policy);
        let t0 = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|_| restart_after(t.on_exit(&failed(), t0)))
            .collect();
        assert_eq!(
            delays,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec()
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            t.on_exit(&failed(), later),
            RestartDecision::Restart {
                after: Duration::from_millis(100),
                strategy: RestartStrategy::OneForAll
            }
        );
    }
}
