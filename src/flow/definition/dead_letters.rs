//! The builder's dead-letter settings: how items are kept and what a dead
//! letter does to its run.

use serde::{Deserialize, Serialize};

use super::FlowBuilder;
use crate::stage::dead_letter::serde_item;
use crate::stage::replay::serde_decode;

/// What a dead letter (an item a stage gave up on, see
/// [`RetryPolicy`](crate::flow::RetryPolicy)) does to its run, once it is
/// recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterPolicy {
    /// The run fails, its reason naming the stage, the item's position and
    /// its last error: a run never reports plain success while items were
    /// dropped.
    #[default]
    FailRun,
    /// The run carries on; a finished run's outcome counts the dead letters
    /// per stage ([`RunOutcome::dead_letters`](crate::flow::RunOutcome::dead_letters)).
    Continue,
}

impl<T: Clone + Send + 'static> FlowBuilder<T> {
    /// What a dead letter does to its run (default
    /// [`DeadLetterPolicy::FailRun`]). The last call wins.
    pub fn on_dead_letter(mut self, policy: DeadLetterPolicy) -> Self {
        self.dead_letter = policy;
        self
    }
}

impl<T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static> FlowBuilder<T> {
    /// Dead letters keep their item as JSON (serialized with serde), and
    /// items can be replayed into the flow's transforms and sinks
    /// ([`Runtime::replay_dead_letters`](crate::runtime::Runtime::replay_dead_letters));
    /// without this, a dead letter's item is `{"unserializable": "<type
    /// name>"}` and cannot be replayed.
    ///
    /// ```
    /// use troupe::flow::{DeadLetterPolicy, FlowDefinition};
    /// use troupe::stage::{sink_fn, source_iter};
    ///
    /// let def = FlowDefinition::<u64>::builder("kept")
    ///     .source("numbers", |_| source_iter(1..=3_u64))
    ///     .sink("drop", |_| sink_fn(|_x: u64| Ok(())))
    ///     .pipeline(["numbers", "drop"])
    ///     .serde_items()
    ///     .on_dead_letter(DeadLetterPolicy::Continue)
    ///     .build()
    ///     .unwrap();
    /// # let _ = def;
    /// ```
    pub fn serde_items(mut self) -> Self {
        self.encode = serde_item::<T>;
        self.decode = Some(serde_decode::<T>);
        self
    }
}
