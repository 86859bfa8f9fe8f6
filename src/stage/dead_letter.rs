//! Dead letters, the stage's side: an item whose attempts ran out (or whose
//! error was permanent) is reported to the flow, which records it; the
//! stage goes on only once the record is durable.

use std::any::type_name;
use std::fmt;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::ports::Ports;
use super::supervisor::{Reporter, StageReport};
use crate::supervise::BoxError;

/// An error that says retrying cannot help: the item it failed on is
/// dead-lettered at once, without another attempt (as Restate's
/// `TerminalError`). Return it from a transform's `process` or a sink's
/// `consume`; a step's `run` returning it fails the step at once.
///
/// ```
/// use troupe::stage::{PermanentError, sink_fn};
///
/// let _strict = sink_fn(|order: i64| {
///     if order < 0 {
///         return Err(PermanentError::new(format!("order {order} is negative")).into());
///     }
///     Ok(())
/// });
/// ```
#[derive(Debug)]
pub struct PermanentError(BoxError);

impl PermanentError {
    /// Marks `error` permanent.
    pub fn new(error: impl Into<BoxError>) -> Self {
        PermanentError(error.into())
    }

    /// The error it wraps.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for PermanentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PermanentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// Whether `error` says retrying cannot help.
pub(crate) fn is_permanent(error: &BoxError) -> bool {
    error.downcast_ref::<PermanentError>().is_some()
        || error.is::<super::ContinueAsNew>()
        || (error.downcast_ref::<super::MemoError>()).is_some_and(super::MemoError::is_permanent)
        || (error.downcast_ref::<super::ChildError>()).is_some_and(super::ChildError::is_permanent)
}

/// Turns an item into the JSON its dead letter keeps.
pub(crate) type ItemEncoder<T> = fn(&T) -> Value;

/// The encoder of a flow whose items are not known to be serializable.
pub(crate) fn unserializable<T>(_: &T) -> Value {
    json!({ "unserializable": type_name::<T>() })
}

/// The encoder [`FlowBuilder::serde_items`](crate::flow::FlowBuilder::serde_items) installs.
pub(crate) fn serde_item<T: serde::Serialize>(item: &T) -> Value {
    serde_json::to_value(item)
        .unwrap_or_else(|e| json!({ "unserializable": type_name::<T>(), "error": e.to_string() }))
}

/// An item a stage gave up on, reported to its flow, which records it and
/// acknowledges.
#[derive(Debug)]
pub(crate) struct StageDeadLetter {
    /// The stage's index in its flow.
    pub stage: usize,
    /// Which start of the stage reports it.
    pub generation: u64,
    /// The item's index in the stage's input.
    pub position: u64,
    /// Its attempts, all counted.
    pub attempts: u32,
    /// The errors of the last attempts, oldest first.
    pub errors: Vec<String>,
    /// The item, encoded.
    pub item: Value,
    /// `Ok` once recorded, `Err` why not.
    pub ack: oneshot::Sender<Result<(), String>>,
}

/// Why a dead letter was not recorded: the stage fails with this (keeping
/// the item, so that its restart tries it again).
#[derive(Debug, thiserror::Error)]
#[error(
    "stage `{stage}`: item {position} failed ({last}) and recording its dead letter failed: {reason}"
)]
pub(crate) struct DeadLetterNotRecorded {
    stage: String,
    position: u64,
    last: String,
    reason: String,
}

/// Reports `letter` through `report` and waits for the flow's acknowledgement.
pub(crate) async fn report_dead_letter(
    stage: &str,
    report: &Reporter,
    letter: StageDeadLetter,
    acked: oneshot::Receiver<Result<(), String>>,
) -> Result<(), BoxError> {
    let position = letter.position;
    let last = letter.errors.last().cloned().unwrap_or_default();
    let failed = |reason: String| -> BoxError {
        DeadLetterNotRecorded {
            stage: stage.to_owned(),
            position,
            last: last.clone(),
            reason,
        }
        .into()
    };
    if !report(StageReport::DeadLetter(letter)) {
        return Err(failed("the flow is gone".into()));
    }
    match acked.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(failed(reason)),
        Err(_) => Err(failed("the flow is gone".into())),
    }
}

impl<T: Clone + Send + 'static> Ports<T> {
    /// The held item's dead letter (`None` if no item is held): the item
    /// stays held until [`settle`](Self::settle), so that it is not lost
    /// if the letter cannot be recorded.
    pub(crate) fn dead_letter(
        &self,
        stage: usize,
        generation: u64,
    ) -> Option<(StageDeadLetter, oneshot::Receiver<Result<(), String>>)> {
        let item = self.received.held()?;
        let (ack, acked) = oneshot::channel();
        let letter = StageDeadLetter {
            stage,
            generation,
            // `items_in` counted the held item when it was taken.
            position: self.items_in.saturating_sub(1),
            attempts: self.received.held_failures,
            errors: self.received.held_errors.iter().cloned().collect(),
            item: (self.encode)(item),
            ack,
        };
        Some((letter, acked))
    }
}
