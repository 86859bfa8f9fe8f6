//! `run`: the drive loop to the end.

use std::future::Future;

use super::driver::{Driver, LoopOutcome, Progress};
use super::error::SupervisorError;
use super::traits::Supervised;

/// Drives `driver` until the component terminates or the loop fails.
///
/// After `Continue` the loop yields to the scheduler, so a component that
/// keeps answering `Continue` never starves its neighbours. After a handled
/// event it only spends tokio's cooperative budget, which yields once the
/// task has done its share: a yield per transition would cost more than
/// the transition itself (see `BENCHMARKS.md`, "Supervision drive loop").
async fn run_to_end<T: Supervised>(
    mut driver: Driver<T>,
) -> Result<LoopOutcome<T>, SupervisorError> {
    loop {
        match driver.step().await? {
            Progress::Continued => tokio::task::yield_now().await,
            Progress::Handled => tokio::task::coop::consume_budget().await,
            Progress::Terminated => return Ok(driver.into_outcome()),
        }
    }
}

/// `run` for every [`Supervised`] component:
/// `SupervisedExt::run(supervisor, initial_state, context).await`.
pub trait SupervisedExt: Supervised + Sized {
    /// Drives the component from `initial_state` until it terminates
    /// (completion written once: `Ok` with the supervisor, final state
    /// and context) or a failure cannot be mapped to an event (`Err`).
    /// See the [module docs](super) for the rules.
    fn run(
        self,
        initial_state: Self::State,
        context: Self::Context,
    ) -> impl Future<Output = Result<LoopOutcome<Self>, SupervisorError>> + Send;

    /// The same loop, one [`step`](Driver::step) at a time.
    fn driver(self, initial_state: Self::State, context: Self::Context) -> Driver<Self>;
}

impl<T: Supervised> SupervisedExt for T {
    fn run(
        self,
        initial_state: Self::State,
        context: Self::Context,
    ) -> impl Future<Output = Result<LoopOutcome<Self>, SupervisorError>> + Send {
        run_to_end(self.driver(initial_state, context))
    }

    fn driver(self, initial_state: Self::State, context: Self::Context) -> Driver<Self> {
        Driver::new(self, initial_state, context)
    }
}
