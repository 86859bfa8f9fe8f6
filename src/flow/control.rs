//! What a user sends to a run in progress and what it gets back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::machine::RunState;
use crate::records::RunStatus;

/// A control event for a run in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlEvent {
    /// Pause every stage after its current batch; the run becomes `Waiting`.
    Pause,
    /// Resume a paused flow.
    Resume,
    /// Cancel: stages stop at their next batch boundary, no stage output is
    /// recorded after this is, and the outcome is `RunCancelled`. Sticky.
    /// A source blocked in `produce` or on a full output, and a stage
    /// waiting for input or paused, stop at once; a stage inside
    /// `process`, `consume`, `on_event` or its completion stops once that
    /// returns, or is killed after the flow's cancel grace.
    Cancel {
        /// Why, recorded with the cancel request.
        reason: String,
    },
    /// Finish gracefully: sources stop producing, the rest works off what is
    /// in flight, and the flow completes.
    Drain,
    /// A user-defined event: accepted into the run's inbox (one entry per
    /// stage not done, and an audit event in its log) and handed to every
    /// such stage's `on_signal`, again after a restart or a crash until the
    /// stage has taken it (at-least-once).
    Signal {
        /// The signal's name.
        name: String,
        /// Its data.
        payload: Value,
    },
}

impl ControlEvent {
    /// The event's name, for errors and spans.
    pub fn name(&self) -> &'static str {
        match self {
            ControlEvent::Pause => "Pause",
            ControlEvent::Resume => "Resume",
            ControlEvent::Cancel { .. } => "Cancel",
            ControlEvent::Drain => "Drain",
            ControlEvent::Signal { .. } => "Signal",
        }
    }
}

/// A control event for one stage (see [`StageHandle`](super::StageHandle)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StageControl {
    /// Pause this stage after its current batch (its neighbours wait on it).
    Pause,
    /// Resume it.
    Resume,
    /// Drain it: a source stops producing; the flow completes once every
    /// stage has.
    Drain,
    /// A user-defined event for this stage's `on_signal` (for events of a
    /// type the stage declares, see [`TypedStageHandle`](super::TypedStageHandle)).
    Signal {
        /// The signal's name.
        name: String,
        /// Its data.
        payload: Value,
    },
}

/// The reason of a cancel requested through the control plane (the run's
/// record), which a flow hears of without one of its own.
pub(crate) const CONTROL_PLANE_CANCEL_REASON: &str = "cancel requested through the control plane";

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The run.
    pub run_id: Uuid,
    /// Its terminal status: `Finished`, `Failed` or `Cancelled`; or
    /// `ContinuedAsNew` for an outcome read of one run of a chain (what
    /// [`RunHandle::outcome`](super::RunHandle::outcome) holds; `wait`
    /// follows the chain to its last run's outcome).
    pub status: RunStatus,
    /// For a finished run, `{"steps": {stage: output}}`, and, if stages
    /// were abandoned (ended and not restarted, per their
    /// [`RestartType`](super::RestartType)), `"abandoned": {stage:
    /// {"reason": ...}}`: items were dropped with them (see
    /// [`abandoned_stages`](Self::abandoned_stages)), and, if items were
    /// dead-lettered, `"dead_letters": {stage: count}` (see
    /// [`dead_letters`](Self::dead_letters)).
    pub structured_output: Option<Value>,
    /// For a failed or cancelled run, why. For a cancelled run: the reason
    /// of the first [`ControlEvent::Cancel`] the flow took;
    /// `cancel requested through the control plane` for a cancel requested
    /// with [`RunManager::request_cancel`](crate::runs::RunManager::request_cancel)
    /// (e.g. through [`Runtime::runs`](crate::runtime::Runtime::runs));
    /// `cancel requested before a restart` for a resumed run whose cancel
    /// was requested before the process stopped; `the run was already
    /// cancelled through the control plane` for a run that
    /// [`RunManager::cancel`](crate::runs::RunManager::cancel) ended while
    /// its flow ran.
    pub reason: Option<String>,
    /// Whether the journal holds this outcome (the run's terminal status and
    /// its terminal event). `false`: the run ended this way but recording
    /// it failed — `reason` ends with the error — so the run record is still
    /// not terminal, and the next start of a runtime with this flow
    /// registered resumes the run and records its outcome then.
    pub recorded: bool,
    /// For a run that continued as new (status `ContinuedAsNew`), the next
    /// run of its chain.
    pub next_run_id: Option<Uuid>,
}

impl RunOutcome {
    /// The stages a finished run abandoned: stages that ended (a temporary
    /// stage that failed, or was stopped by a restart of other stages; a
    /// transient one stopped without failing) and were not restarted. The
    /// run carried on without them; what reached them after their end was
    /// dropped, and their failures are in the run's failure ledger.
    pub fn abandoned_stages(&self) -> Vec<&str> {
        let abandoned = self
            .structured_output
            .as_ref()
            .and_then(|o| o.get("abandoned"));
        match abandoned {
            Some(Value::Object(stages)) => stages.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// How many items each stage dead-lettered, for a finished run (its
    /// `structured_output`'s `"dead_letters"`; empty if none were, or the
    /// run did not finish). Each is listed by
    /// [`Store::list_dead_letters`](crate::store::Store::list_dead_letters).
    pub fn dead_letters(&self) -> BTreeMap<String, u64> {
        let counts = self
            .structured_output
            .as_ref()
            .and_then(|o| o.get("dead_letters"));
        match counts {
            Some(Value::Object(stages)) => stages
                .iter()
                .filter_map(|(stage, n)| Some((stage.clone(), n.as_u64()?)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Why a request made through a [`RunHandle`](super::RunHandle) or
/// [`StageHandle`](super::StageHandle) failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandleError {
    /// The run has finished (or its actor is gone); nothing was delivered.
    #[error("run {run_id} has finished; {event} was not delivered")]
    Finished {
        /// The run.
        run_id: Uuid,
        /// The event that was not delivered.
        event: &'static str,
    },
    /// The flow's current state does not accept this event.
    #[error("run {run_id} is {state}; it does not accept {event}")]
    Rejected {
        /// The run.
        run_id: Uuid,
        /// The state the flow is in.
        state: &'static str,
        /// The event.
        event: &'static str,
    },
    /// The flow accepted the event but recording it failed; the flow fails.
    #[error("run {run_id}: {event} could not be recorded: {reason}")]
    NotRecorded {
        /// The run.
        run_id: Uuid,
        /// The event.
        event: &'static str,
        /// Why.
        reason: String,
    },
    /// The stage is not running (completed, failed and not yet restarted, or
    /// no such stage); nothing was delivered.
    #[error("run {run_id}: stage `{stage}` is not running")]
    StageNotRunning {
        /// The run.
        run_id: Uuid,
        /// The stage.
        stage: String,
    },
    /// A stage has not taken the control events already queued for it (it is
    /// blocked, e.g. waiting on a full output or inside its own `produce`);
    /// nothing was delivered. Try again once it makes progress, or cancel.
    #[error(
        "run {run_id}: stage `{stage}` is not taking control events (its queue is full); \
         {event} was not delivered"
    )]
    Busy {
        /// The run.
        run_id: Uuid,
        /// The stage whose queue is full.
        stage: String,
        /// The event that was not delivered.
        event: &'static str,
    },
    /// The stage does not take user events of the type asked for: it
    /// declared another type, or none (see
    /// [`FlowBuilder::with_events`](super::FlowBuilder::with_events)).
    #[error("run {run_id}: stage `{stage}` takes {declared}, not events of type `{asked}`")]
    EventType {
        /// The run.
        run_id: Uuid,
        /// The stage.
        stage: String,
        /// What it takes: `events of type ...`, or `no user events`.
        declared: String,
        /// The type asked for.
        asked: &'static str,
    },
    /// The stage takes durable events of another shape: the event does not
    /// decode as the stage's event type; nothing was accepted.
    #[error("run {run_id}: stage `{stage}` refused the event: it {reason}")]
    EventRefused {
        /// The run.
        run_id: Uuid,
        /// The stage.
        stage: String,
        /// Why.
        reason: String,
    },
    /// The flow has no stage with this name.
    #[error("run {run_id} has no stage named `{stage}`")]
    UnknownStage {
        /// The run.
        run_id: Uuid,
        /// The name asked for.
        stage: String,
    },
    /// The run hibernates and its runtime is shutting down, so it is not
    /// woken for `event`: the run resumes at the runtime's next start
    /// (send it then, or through [`Runtime::send_signal`](crate::runtime::Runtime::send_signal),
    /// which journals a signal for a run that is not live).
    #[error("run {run_id}: refused {event}: the run hibernates and the runtime is shutting down")]
    Hibernated {
        /// The run.
        run_id: Uuid,
        /// What was refused.
        event: &'static str,
    },
    /// The run is executed by another process now: this runtime's lease
    /// on it (a journal shared over PostgreSQL) lapsed and another runtime
    /// took it over, so it was stopped here. Its outcome will be in the
    /// journal once its new owner ends it.
    #[error("run {run_id} moved to another process: this runtime lost its lease on it")]
    Moved {
        /// The run.
        run_id: Uuid,
    },
    /// The flow's actor stopped without publishing an outcome.
    #[error("run {run_id}: the flow actor stopped without an outcome (last state {last_state:?})")]
    Lost {
        /// The run.
        run_id: Uuid,
        /// The last state it published.
        last_state: RunState,
    },
}
