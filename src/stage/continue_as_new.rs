//! Continue-as-new, the stage's side: a step ends its run by continuing it
//! as a new run of the same flow with a fresh input
//! ([`StageContext::continue_as_new`]).
//!
//! The step's `run` returns the error `continue_as_new` gives; the stage
//! does not retry it but reports it to its flow, which ends the run with a
//! `RunContinuedAsNew` outcome naming the next run **in the same write**
//! that creates the next run (see
//! [`RunManager::continue_as_new`](crate::runs::RunManager::continue_as_new)),
//! then starts it. The next run has an empty history (no outputs, memos or
//! events of the old run), its own input, the flow's definition a fresh
//! start would get, and the old run's parent and key (a
//! [`RunOptions::id`](crate::flow::RunOptions::id) moves along the chain:
//! starting that id again returns the chain's current run).
//!
//! - **Once.** A crash before the write leaves the run as it was: the step
//!   runs again (its memos answer) and continues again. The next run's id
//!   follows from the old one's
//!   ([`continued_run_id`](crate::records::continued_run_id)), and a run
//!   ends once: a second attempt creates no second run.
//! - **Followed.** [`RunHandle::wait`](crate::flow::RunHandle::wait) and
//!   [`StageContext::await_child`] follow the chain to its last run's
//!   outcome; [`RunManager::chain`](crate::runs::RunManager::chain) lists
//!   it from any of its runs.
//! - **Steps only.** A source, transform or sink returning it fails its
//!   item permanently. A cancel requested before wins (the run ends
//!   cancelled). The run's other stages are stopped and children it leaves
//!   behind follow their [`ParentClose`](super::ParentClose) policy, as
//!   when a run fails (and as Temporal closes a run that continues).
//!
//! ```
//! use troupe::prelude::*;
//! use troupe::stage::StageContext;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // Counts to 3, one run per number: each run's history stays small.
//! let count = FlowDefinition::<u64>::builder("count")
//!     .step("next", |ctx: &StageContext| {
//!         let ctx = ctx.clone();
//!         step_fn(move |_| {
//!             let ctx = ctx.clone();
//!             async move {
//!                 let n: u64 = ctx.input()?;
//!                 if n < 3 {
//!                     return ctx.continue_as_new(n + 1);
//!                 }
//!                 Ok(serde_json::json!(n))
//!             }
//!         })
//!     })
//!     .build()?;
//! let runtime = Runtime::builder().memory().register(count)?.start().await?;
//! let first = runtime.start_with("count", RunOptions::new().input(0_u64)).await?;
//! let outcome = first.wait().await?;
//! assert_eq!(outcome.status, RunStatus::Finished);
//! assert_eq!(outcome.structured_output.unwrap()["steps"]["next"], 3);
//! assert_eq!(runtime.runs().chain(first.run_id()).await?.len(), 4);
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::context::StageContext;
use super::dead_letter::PermanentError;
use crate::supervise::BoxError;

/// What [`StageContext::continue_as_new`] returns (as the error of a
/// step's `run`): the run continues as a new run with `input`. Not a
/// failure: the stage reports it to its flow instead of retrying it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinueAsNew {
    input: Value,
}

impl ContinueAsNew {
    /// The next run's input.
    pub fn input(&self) -> &Value {
        &self.input
    }

    pub(crate) fn into_input(self) -> Value {
        self.input
    }
}

impl fmt::Display for ContinueAsNew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the run continues as a new run (only a step's `run` can end its run this way)")
    }
}

impl std::error::Error for ContinueAsNew {}

impl StageContext {
    /// Ends this run by continuing it as a new run of its flow with
    /// `input` (see the [module docs](super::continue_as_new)): return what
    /// it returns from a step's `run` (`return ctx.continue_as_new(next);`).
    /// Always an `Err`: a [`ContinueAsNew`], or a [`PermanentError`] if
    /// `input` does not serialize to JSON (the step then fails at once).
    pub fn continue_as_new(&self, input: impl Serialize) -> Result<Value, BoxError> {
        match serde_json::to_value(input) {
            Ok(input) => Err(Box::new(ContinueAsNew { input })),
            Err(error) => Err(PermanentError::new(format!(
                "run {}: the input to continue as new with does not serialize: {error}",
                self.run_id()
            ))
            .into()),
        }
    }
}

/// A step's continue-as-new, reported to its flow.
#[derive(Debug)]
pub(crate) struct StageContinue {
    /// The stage's index in its flow.
    pub(crate) stage: usize,
    /// Which start of the stage reports it.
    pub(crate) generation: u64,
    /// The next run's input.
    pub(crate) input: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn continue_as_new_is_an_error_a_step_returns_and_never_retried() {
        let ctx = crate::stage::context::tests::ctx(Value::Null).await;
        let error = ctx.continue_as_new(7_u64).unwrap_err();
        let continued = error
            .downcast_ref::<ContinueAsNew>()
            .expect("a ContinueAsNew");
        assert_eq!(continued.input(), &serde_json::json!(7));
        assert!(crate::stage::dead_letter::is_permanent(&error));

        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        let error = ctx.continue_as_new(bad).unwrap_err();
        assert!(error.downcast_ref::<PermanentError>().is_some(), "{error}");
    }
}
