//! [`FlowMsg`]: what a flow actor is told, by handles (control events,
//! operator input), by its stages (completions, dead letters, settled inbox
//! entries) and by its own timers.

use tokio::sync::oneshot;

use super::control::{ControlEvent, HandleError};
use crate::stage::dead_letter::StageDeadLetter;
use crate::stage::durable::Settlement;
use crate::stage::events::EventPort;
use crate::stage::{StageDone, StageEvent, StageState};

/// Messages of a flow actor.
pub(crate) enum FlowMsg {
    /// A shutdown asks: stop now if the run may sleep (see
    /// [`RunHandle::park`](super::RunHandle::park)); whether it did.
    Park(oneshot::Sender<bool>),
    /// A control event from a [`RunHandle`](super::RunHandle).
    Control {
        /// The event.
        event: ControlEvent,
        /// Whether the flow accepted it.
        reply: oneshot::Sender<Result<(), HandleError>>,
    },
    /// A control event for one stage, from a [`StageHandle`](super::StageHandle).
    StageControl {
        /// The stage's index.
        stage: usize,
        /// The event.
        event: StageEvent,
        /// Whether the stage was running to take it, and its state.
        reply: oneshot::Sender<Result<StageState, HandleError>>,
    },
    /// The sending end of a stage's user-event queue, for a
    /// [`TypedStageHandle`](super::TypedStageHandle).
    StageEvents {
        /// The stage's index.
        stage: usize,
        /// The port, `None` if the stage declares no events; refused once
        /// the stage has completed or was abandoned (also before a restart
        /// of the run).
        reply: oneshot::Sender<Result<Option<EventPort>, HandleError>>,
    },
    /// A stage completed its work.
    StageDone(StageDone),
    /// A stage gave up on an item.
    DeadLetter(StageDeadLetter),
    /// A stage's logic took an inbox entry (or could not).
    Settled(Settlement),
    /// A step continues the run as a new run.
    ContinueAsNew(crate::stage::continue_as_new::StageContinue),
    /// A stage started or stopped waiting durably.
    StageWaiting(crate::stage::StageWait),
    /// A durable event (as JSON) for a stage: accept it into the inbox, then
    /// forward it to the stage.
    AcceptEvent {
        /// The stage's index.
        stage: usize,
        /// The event.
        payload: serde_json::Value,
        /// Its inbox id, once it is in the journal.
        reply: oneshot::Sender<Result<uuid::Uuid, HandleError>>,
    },
    /// Items (as JSON) replayed into a stage's input: accept them into the
    /// inbox, then queue them there.
    AcceptItems {
        /// The stage's index.
        stage: usize,
        /// The items.
        items: Vec<serde_json::Value>,
        /// Their inbox ids, once they are in the journal.
        reply: oneshot::Sender<Result<Vec<uuid::Uuid>, HandleError>>,
    },
    /// A signal for one stage or (`None`) every stage, from
    /// [`Runtime::send_signal`](crate::runtime::Runtime::send_signal).
    AcceptSignal {
        /// The stage's index, or every stage not done.
        stage: Option<usize>,
        /// The signal's name.
        name: String,
        /// Its data.
        payload: serde_json::Value,
        /// Its inbox id, once it is in the journal.
        reply: oneshot::Sender<Result<uuid::Uuid, HandleError>>,
    },
    /// A backoff timer fired: restart the stage if it is still down.
    Restart {
        /// The stage's index.
        stage: usize,
        /// The generation that exited.
        generation: u64,
    },
    /// The cancel grace period ended: kill the stages still running.
    CancelGraceExpired,
    /// Input was journaled into the run's inbox by another process (a
    /// shared journal's doorbell): hand over what is unsettled and was not
    /// handed over yet.
    CheckInbox,
    /// Messages sent to the run were answered: it may hibernate now.
    Reconsider,
    /// Hibernate, if nothing came since message `epoch` and the run still
    /// may (see `actor/hibernate.rs`).
    Hibernate {
        /// The flow's message count when this was asked.
        epoch: u64,
    },
}
