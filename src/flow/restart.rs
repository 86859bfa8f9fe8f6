//! Restarts of stages, as an OTP supervisor restarts its children (the
//! user-facing docs are on [`Supervision`] and [`RestartPolicy`]). The flow
//! feeds the pure decision logic ([`RestartTracker`]) every exit of a stage
//! with the time it happened and gets back what to do.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::supervise::Backoff;

mod tracker;
pub(crate) use tracker::{RestartDecision, RestartTracker, StageExit, restart_group};

/// Which exits of a stage lead to a restart (OTP's child restart types).
/// A completion never does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Restarted after any exit that is not a completion: a failure, or a
    /// stop by someone else. The default, as in OTP.
    #[default]
    Permanent,
    /// Restarted only after a failure (an error, a panic); a stage stopped
    /// without failing is abandoned.
    Transient,
    /// Never restarted, even when a restart of other stages stopped it: the
    /// stage is abandoned and the run carries on.
    Temporary,
}

/// Which stages a restart takes with it (OTP's restart strategies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartStrategy {
    /// Only the stage that exited is restarted. The default, as in OTP.
    #[default]
    OneForOne,
    /// Every stage of the flow is stopped and restarted.
    OneForAll,
    /// The stage that exited and every stage after it in the flow's start
    /// order (each stage after its upstreams, as
    /// [`Topology::validate`](super::Topology::validate) orders them) are
    /// restarted; the stages before it keep running. In a pipeline: the
    /// failed stage and everything downstream of it.
    RestForOne,
}

/// How a flow supervises its stages, as an OTP supervisor's flags: the
/// [`RestartStrategy`] and the intensity, at most `max_restarts` restarts
/// of any of the run's stages within `period`; the exit that would need one
/// more fails the run, naming that stage and its last error. Set with
/// [`FlowBuilder::supervision`](super::FlowBuilder::supervision).
///
/// The default is OTP's: one-for-one, at most 1 restart in 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervision {
    /// Which stages a restart takes.
    pub strategy: RestartStrategy,
    /// Most restarts allowed within `period`, over all of a run's stages
    /// (a restart that takes several stages counts once).
    pub max_restarts: u32,
    /// The sliding window `max_restarts` applies to.
    pub period: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision::one_for_one()
    }
}

impl Supervision {
    /// One-for-one, with the default intensity (1 restart in 5 s).
    pub const fn one_for_one() -> Self {
        Self::with(RestartStrategy::OneForOne)
    }

    /// One-for-all, with the default intensity (1 restart in 5 s).
    pub const fn one_for_all() -> Self {
        Self::with(RestartStrategy::OneForAll)
    }

    /// Rest-for-one, with the default intensity (1 restart in 5 s).
    pub const fn rest_for_one() -> Self {
        Self::with(RestartStrategy::RestForOne)
    }

    const fn with(strategy: RestartStrategy) -> Self {
        Supervision {
            strategy,
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }

    /// Allows at most `max_restarts` restarts within `period`.
    pub const fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }
}

/// How one stage is restarted: its [`RestartType`] and the [`Backoff`]
/// before each restart. Set with [`FlowBuilder::restart`](super::FlowBuilder::restart)
/// or, for every stage without its own,
/// [`FlowBuilder::default_restart`](super::FlowBuilder::default_restart).
/// The default is permanent, with [`Backoff::default`].
///
/// A flow is the supervisor of its stages, as in OTP. Its [`Supervision`]
/// is the supervisor's flags: which stages a restart takes (`one_for_one`,
/// `one_for_all`, `rest_for_one`) and how many restarts the flow allows
/// within a period (the intensity, counted over every stage of the run)
/// before it gives up and the run fails. Each stage's `RestartPolicy` is
/// its child spec: which of its exits lead to a restart (`permanent`,
/// `transient`, `temporary`) and how long to wait first (capped
/// exponential [`Backoff`], troupe's addition). The defaults are OTP's:
/// one-for-one, at most 1 restart in 5 s, permanent stages.
///
/// A stage that ends and is not restarted (a temporary stage, also when a
/// restart of other stages stopped it, as in OTP; a transient one stopped
/// without failing) is **abandoned**, and the run carries on without it.
/// Its downstream gets what it had already emitted, then the end of its
/// input. The item it failed on, the items queued for it and any sent to
/// it later are
/// **dropped**, as messages to a dead process are, so that its upstream is
/// neither blocked nor failed by it. Its failure is in the run's failure
/// ledger, a finished run's outcome lists it (see
/// [`RunOutcome::abandoned_stages`](super::RunOutcome::abandoned_stages)),
/// and a run resumed after a restart of the process starts it again.
///
/// Where troupe departs from OTP, on purpose: a stage that **completed** is
/// never restarted, whatever its type (its work is done, and a restarted
/// source would replay its items).
///
/// ```
/// use std::time::Duration;
/// use troupe::flow::{Backoff, FlowDefinition, RestartPolicy, Supervision};
/// use troupe::stage::{Emitter, sink_fn, source_iter, transform_fn};
///
/// let def = FlowDefinition::<u64>::builder("orders")
///     .source("read", |_| source_iter(0..100_u64))
///     .transform("enrich", |_| transform_fn(|x: u64, out: &mut Emitter<u64>| Ok(out.push(x))))
///     .sink("audit", |_| sink_fn(|_: u64| Ok(())))
///     .pipeline(["read", "enrich", "audit"])
///     // A restart takes the failed stage and every stage after it; the run
///     // fails once its stages needed more than 3 restarts within 10 s.
///     .supervision(Supervision::rest_for_one().intensity(3, Duration::from_secs(10)))
///     // `enrich` waits 100 ms before its first restart, then 200 ms, ... (at most 5 s).
///     .restart(
///         "enrich",
///         RestartPolicy::permanent().backoff(Backoff {
///             initial: Duration::from_millis(100),
///             max: Duration::from_secs(5),
///             factor: 2.0,
///         }),
///     )
///     // `audit` is optional: never restarted, its failure alone does not fail the run.
///     .restart("audit", RestartPolicy::temporary())
///     .build()
///     .unwrap();
/// # let _ = def;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Which exits restart the stage.
    pub restart: RestartType,
    /// Delay before each restart.
    pub backoff: Backoff,
}

impl RestartPolicy {
    /// Permanent (the default), with [`Backoff::default`].
    pub fn permanent() -> Self {
        Self::of(RestartType::Permanent)
    }

    /// Transient, with [`Backoff::default`].
    pub fn transient() -> Self {
        Self::of(RestartType::Transient)
    }

    /// Temporary: never restarted.
    pub fn temporary() -> Self {
        Self::of(RestartType::Temporary)
    }

    fn of(restart: RestartType) -> Self {
        RestartPolicy {
            restart,
            backoff: Backoff::default(),
        }
    }

    /// Sets the backoff between restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_otps() {
        assert_eq!(
            Supervision::default(),
            Supervision {
                strategy: RestartStrategy::OneForOne,
                max_restarts: 1,
                period: Duration::from_secs(5),
            }
        );
        assert_eq!(RestartPolicy::default().restart, RestartType::Permanent);
        assert_eq!(RestartPolicy::default(), RestartPolicy::permanent());
    }
}
