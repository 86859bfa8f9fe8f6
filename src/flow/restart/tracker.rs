//! The pure decisions of a flow's supervision: the flow feeds its
//! [`RestartTracker`] every exit of a stage with the time it happened and
//! gets back what to do; [`restart_group`] names the stages a restart takes.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::{RestartPolicy, RestartStrategy, RestartType, Supervision};

/// How a stage's actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageExit {
    /// It finished its work (its inputs ended and its output was flushed).
    Completed,
    /// It stopped cleanly before finishing its work.
    Stopped,
    /// It failed: an error, a panic, a crash; with the reason.
    Failed(String),
}

impl fmt::Display for StageExit {
    /// What ended the stage, as a failure reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageExit::Completed => f.write_str("completed"),
            StageExit::Stopped => f.write_str("stopped before completing"),
            StageExit::Failed(reason) => f.write_str(reason),
        }
    }
}

/// What the flow does after a stage exit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RestartDecision {
    /// The stage completed: nothing to restart.
    Done,
    /// The stage's restart type does not restart this exit (a temporary
    /// stage, a transient one that stopped without failing): the stage is
    /// abandoned and the flow carries on without it.
    Abandon,
    /// Restart after `after`, taking the stages `strategy` says.
    Restart {
        /// The backoff delay to wait first.
        after: Duration,
        /// Which stages the restart takes.
        strategy: RestartStrategy,
    },
    /// Do not restart: the flow fails.
    GiveUp(GiveUp),
}

/// Why the flow gives up: one more restart would exceed its intensity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GiveUp {
    /// The flow's `max_restarts`.
    pub(crate) max_restarts: u32,
    /// The flow's `period`.
    pub(crate) period: Duration,
    /// The failure that ended the stage last.
    pub(crate) last_error: String,
}

impl GiveUp {
    /// The flow's failure reason, naming the stage and the last error.
    pub(crate) fn describe(&self, stage: &str) -> String {
        format!("stage `{stage}` {self}")
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let GiveUp {
            max_restarts,
            period,
            last_error,
        } = self;
        let restarts = if *max_restarts == 1 {
            "restart"
        } else {
            "restarts"
        };
        write!(
            f,
            "exceeded the flow's restart intensity ({max_restarts} {restarts} in {period:?}); \
             last error: {last_error}"
        )
    }
}

/// Applies a flow's [`Supervision`] and its stages' [`RestartPolicy`]s to
/// the exits of the stages of one run. The intensity is the flow's, as an
/// OTP supervisor's: restarts of every stage count against one window.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    supervision: Supervision,
    /// When the restarts still inside the period happened, and of which
    /// stage (for its backoff), oldest first.
    recent: VecDeque<(Instant, usize)>,
}

impl RestartTracker {
    /// A tracker with no restarts yet.
    pub(crate) fn new(supervision: Supervision) -> Self {
        RestartTracker {
            supervision,
            recent: VecDeque::new(),
        }
    }

    /// Restarts counted inside the period ending at `now`.
    #[cfg(test)]
    pub(crate) fn recent_restarts(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.recent.len()
    }

    /// Decides what follows `exit` of stage `stage` (restarted per
    /// `policy`), which happened at `now`, and counts the restart if any.
    pub(crate) fn on_exit(
        &mut self,
        stage: usize,
        policy: &RestartPolicy,
        exit: &StageExit,
        now: Instant,
    ) -> RestartDecision {
        let restarts = match (exit, policy.restart) {
            (StageExit::Completed, _) => return RestartDecision::Done,
            (StageExit::Stopped, RestartType::Permanent) => true,
            (StageExit::Failed(_), RestartType::Permanent | RestartType::Transient) => true,
            (StageExit::Stopped | StageExit::Failed(_), _) => false,
        };
        if !restarts {
            return RestartDecision::Abandon;
        }
        self.forget_before(now);
        if self.recent.len() >= self.supervision.max_restarts as usize {
            return RestartDecision::GiveUp(GiveUp {
                max_restarts: self.supervision.max_restarts,
                period: self.supervision.period,
                last_error: exit.to_string(),
            });
        }
        let own = self.recent.iter().filter(|(_, s)| *s == stage).count();
        let after = policy.backoff.delay(own);
        self.recent.push_back((now, stage));
        RestartDecision::Restart {
            after,
            strategy: self.supervision.strategy,
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&(oldest, _)) = self.recent.front() {
            if now.saturating_duration_since(oldest) < self.supervision.period {
                break;
            }
            self.recent.pop_front();
        }
    }
}

/// The other stages a restart of stage `failed` takes, by `strategy`:
/// none (one-for-one), every other stage (one-for-all), or the stages
/// after it in `start_order` (rest-for-one).
pub(crate) fn restart_group(
    strategy: RestartStrategy,
    failed: usize,
    start_order: &[usize],
) -> Vec<usize> {
    match strategy {
        RestartStrategy::OneForOne => Vec::new(),
        RestartStrategy::OneForAll => start_order
            .iter()
            .copied()
            .filter(|&s| s != failed)
            .collect(),
        RestartStrategy::RestForOne => start_order
            .iter()
            .skip_while(|&&s| s != failed)
            .skip(1)
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Backoff;

    fn failed() -> StageExit {
        StageExit::Failed("boom".into())
    }

    fn restart_after(d: RestartDecision) -> Duration {
        match d {
            RestartDecision::Restart { after, .. } => after,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    fn tracker(max_restarts: u32, secs: u64) -> RestartTracker {
        RestartTracker::new(
            Supervision::one_for_one().intensity(max_restarts, Duration::from_secs(secs)),
        )
    }

    #[test]
    fn a_third_failure_within_the_period_gives_up_and_says_why() {
        let mut tracker = tracker(2, 10);
        let policy = RestartPolicy::transient();
        let now = Instant::now();
        let crash = StageExit::Failed("connection reset".into());
        restart_after(tracker.on_exit(0, &policy, &crash, now));
        restart_after(tracker.on_exit(0, &policy, &crash, now));
        let RestartDecision::GiveUp(why) = tracker.on_exit(0, &policy, &crash, now) else {
            panic!("a third failure within 10 s exceeds the intensity")
        };
        assert_eq!(
            why.describe("enrich"),
            "stage `enrich` exceeded the flow's restart intensity (2 restarts in 10s); \
             last error: connection reset"
        );
    }

    /// OTP counts restarts per supervisor: two stages failing once each
    /// exceed an intensity of 1, although each alone is within it.
    #[test]
    fn the_intensity_counts_the_restarts_of_every_stage() {
        let mut t = RestartTracker::new(Supervision::default());
        let policy = RestartPolicy::permanent();
        let t0 = Instant::now();
        restart_after(t.on_exit(0, &policy, &failed(), t0));
        let RestartDecision::GiveUp(why) =
            t.on_exit(1, &policy, &failed(), t0 + Duration::from_secs(4))
        else {
            panic!("the flow's second restart within 5 s exceeds 1 in 5 s");
        };
        assert_eq!(
            why.describe("b"),
            "stage `b` exceeded the flow's restart intensity (1 restart in 5s); last error: boom"
        );
        // Once the first restart left the window, the other stage may restart.
        let mut t = RestartTracker::new(Supervision::default());
        restart_after(t.on_exit(0, &policy, &failed(), t0));
        restart_after(t.on_exit(1, &policy, &failed(), t0 + Duration::from_secs(5)));
    }

    /// Which exits restart a stage, and which abandon it, by restart type:
    /// a completion never restarts; a temporary stage is never restarted,
    /// and neither is a transient one that stopped without failing.
    #[test]
    fn restart_types_decide_which_exits_restart() {
        use RestartDecision::{Abandon, Done};
        let now = Instant::now();
        for (policy, stopped_restarts, failed_restarts) in [
            (RestartPolicy::permanent(), true, true),
            (RestartPolicy::transient(), false, true),
            (RestartPolicy::temporary(), false, false),
        ] {
            let mut t = tracker(10, 10);
            assert_eq!(t.on_exit(0, &policy, &StageExit::Completed, now), Done);
            for (exit, restarts) in [
                (StageExit::Stopped, stopped_restarts),
                (failed(), failed_restarts),
            ] {
                let decision = t.on_exit(0, &policy, &exit, now);
                match restarts {
                    true => restart_after(decision),
                    false => {
                        assert_eq!(decision, Abandon, "{policy:?} {exit:?}");
                        Duration::ZERO
                    }
                };
            }
        }
        // Abandoning is not a restart: it does not count against the intensity.
        let mut t = tracker(0, 10);
        let temporary = RestartPolicy::temporary();
        assert_eq!(t.on_exit(0, &temporary, &failed(), now), Abandon);
        assert_eq!(t.recent_restarts(now), 0);
    }

    #[test]
    fn intensity_is_a_sliding_window() {
        let mut t = tracker(3, 10);
        let policy = RestartPolicy::transient().backoff(Backoff::NONE);
        let t0 = Instant::now();
        for s in [0, 1, 2] {
            restart_after(t.on_exit(0, &policy, &failed(), t0 + Duration::from_secs(s)));
        }
        assert!(matches!(
            t.on_exit(0, &policy, &failed(), t0 + Duration::from_secs(9)),
            RestartDecision::GiveUp(_)
        ));
        // At t0 + 10 s the first restart leaves the window: one more is allowed.
        restart_after(t.on_exit(0, &policy, &failed(), t0 + Duration::from_secs(10)));
        assert_eq!(t.recent_restarts(t0 + Duration::from_secs(10)), 3);
        assert_eq!(t.recent_restarts(t0 + Duration::from_secs(30)), 0);
    }

    #[test]
    fn zero_intensity_gives_up_at_once_naming_the_stage() {
        let mut t =
            RestartTracker::new(Supervision::one_for_one().intensity(0, Duration::from_secs(1)));
        let policy = RestartPolicy::permanent();
        let RestartDecision::GiveUp(why) =
            t.on_exit(0, &policy, &StageExit::Stopped, Instant::now())
        else {
            panic!("expected give-up");
        };
        assert_eq!(
            why.describe("sink"),
            "stage `sink` exceeded the flow's restart intensity (0 restarts in 1s); \
             last error: stopped before completing"
        );
    }

    /// Backoff is per stage: a stage's delay grows with its own restarts,
    /// not with its siblings'.
    #[test]
    fn backoff_grows_per_stage_is_capped_then_resets_with_the_window() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            factor: 2.0,
        };
        let policy = RestartPolicy::transient().backoff(backoff);
        let mut t =
            RestartTracker::new(Supervision::one_for_all().intensity(10, Duration::from_secs(60)));
        let t0 = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|_| restart_after(t.on_exit(0, &policy, &failed(), t0)))
            .collect();
        assert_eq!(
            delays,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec()
        );
        assert_eq!(
            restart_after(t.on_exit(1, &policy, &failed(), t0)),
            Duration::from_millis(100)
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            t.on_exit(0, &policy, &failed(), later),
            RestartDecision::Restart {
                after: Duration::from_millis(100),
                strategy: RestartStrategy::OneForAll
            }
        );
    }

    #[test]
    fn a_group_is_what_the_strategy_takes() {
        let order = [2, 0, 1, 3];
        assert!(restart_group(RestartStrategy::OneForOne, 0, &order).is_empty());
        assert_eq!(
            restart_group(RestartStrategy::OneForAll, 0, &order),
            [2, 1, 3]
        );
        assert_eq!(
            restart_group(RestartStrategy::RestForOne, 0, &order),
            [1, 3]
        );
        assert_eq!(
            restart_group(RestartStrategy::RestForOne, 2, &order),
            [0, 1, 3]
        );
        assert!(restart_group(RestartStrategy::RestForOne, 3, &order).is_empty());
    }
}
