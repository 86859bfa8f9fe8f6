//! `run`: the drive loop to the end, for each supervisor kind.

use std::future::Future;

use super::driver::{Driver, LoopOutcome, Progress};
use super::error::SupervisorError;
use super::kind::{HandlerKind, SelfKind, Supervised};
use super::traits::{HandlerSupervised, SelfSupervised};

/// Drives `driver` until the component terminates or the loop fails.
///
/// After `Continue` the loop yields to the scheduler, so a component that
/// keeps answering `Continue` never starves its neighbours. After a handled
/// event it only spends tokio's cooperative budget, which yields once the
/// task has done its share: a yield per transition would cost more than
/// the transition itself (see `BENCHMARKS.md`).
async fn run_to_end<T: Supervised<K>, K>(
    mut driver: Driver<T, K>,
) -> Result<LoopOutcome<T>, SupervisorError> {
    loop {
        match driver.step().await? {
            Progress::Continued => tokio::task::yield_now().await,
            Progress::Handled => tokio::task::coop::consume_budget().await,
            Progress::Terminated => return Ok(driver.into_outcome()),
        }
    }
}

/// Declares the extension trait of one supervisor kind (both have the same shape).
macro_rules! run_ext {
    ($(#[$doc:meta])* $ext:ident for $kind_trait:ident, $marker:ty) => {
        $(#[$doc])*
        pub trait $ext: $kind_trait + Sized {
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
            fn driver(self, initial_state: Self::State, context: Self::Context) -> Driver<Self, $marker>;
        }

        impl<T: $kind_trait> $ext for T {
            fn run(
                self,
                initial_state: Self::State,
                context: Self::Context,
            ) -> impl Future<Output = Result<LoopOutcome<Self>, SupervisorError>> + Send {
                run_to_end(self.driver(initial_state, context))
            }

            fn driver(self, initial_state: Self::State, context: Self::Context) -> Driver<Self, $marker> {
                Driver::new(self, initial_state, context)
            }
        }
    };
}

run_ext!(
    /// `run` for every [`SelfSupervised`] component:
    /// `SelfSupervisedExt::run(supervisor, initial_state, context).await`.
    SelfSupervisedExt for SelfSupervised, SelfKind
);
run_ext!(
    /// `run` for every [`HandlerSupervised`] stage:
    /// `HandlerSupervisedExt::run(supervisor, initial_state, context).await`.
    HandlerSupervisedExt for HandlerSupervised, HandlerKind
);
