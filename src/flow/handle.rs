//! [`RunHandle`]: how a user steers and observes one run.

use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::actor::FlowMsg;
use super::control::{ControlEvent, HandleError, RunOutcome};
use super::machine::RunState;
use crate::records::RunStatus;

/// A handle to one run of a flow. Cheap to clone, `Send`; it does not keep
/// the run alive and stays usable after the run ended (`wait` then returns
/// the outcome at once, `send` a [`HandleError::Finished`]).
#[derive(Clone)]
pub struct RunHandle {
    run_id: Uuid,
    /// `None` for a handle to a run that had ended before it was made.
    actor: Option<ActorRef<FlowMsg>>,
    state: watch::Receiver<RunState>,
    outcome: watch::Receiver<Option<RunOutcome>>,
    stages: Arc<[String]>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.run_id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl RunHandle {
    pub(crate) fn new(
        run_id: Uuid,
        actor: ActorRef<FlowMsg>,
        state: watch::Receiver<RunState>,
        outcome: watch::Receiver<Option<RunOutcome>>,
        stages: Arc<[String]>,
    ) -> Self {
        RunHandle {
            run_id,
            actor: Some(actor),
            state,
            outcome,
            stages,
        }
    }

    /// A handle to a run that has ended with `outcome` (read from the
    /// journal): its state is terminal and input to it is refused.
    pub(crate) fn ended(outcome: RunOutcome, stages: Arc<[String]>) -> Self {
        let state = match outcome.status {
            RunStatus::Finished => RunState::Finished,
            RunStatus::Cancelled => RunState::Cancelled,
            _ => RunState::Failed(outcome.reason.clone().unwrap_or_default()),
        };
        RunHandle {
            run_id: outcome.run_id,
            actor: None,
            state: watch::channel(state).1,
            outcome: watch::channel(Some(outcome)).1,
            stages,
        }
    }

    /// The names of the run's stages, in declaration order.
    pub fn stage_names(&self) -> &[String] {
        &self.stages
    }

    /// The flow actor, for tests that kill it.
    #[cfg(test)]
    pub(crate) fn actor_ref(&self) -> &ActorRef<FlowMsg> {
        self.actor.as_ref().expect("a live run's handle")
    }

    /// The run's id (its run record in the journal).
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// Sends a control event and waits until the flow has taken it (and
    /// recorded what it records, e.g. the `Waiting` status for `Pause`).
    pub async fn send(&self, event: ControlEvent) -> Result<(), HandleError> {
        let name = event.name();
        self.ask(name, |reply| FlowMsg::Control { event, reply })
            .await
    }

    /// Sends the flow the message `msg` builds around a reply and waits for
    /// the answer; [`HandleError::Finished`] (naming `event`) if the run has
    /// ended or its flow stops before answering.
    pub(crate) async fn ask<R>(
        &self,
        event: &'static str,
        msg: impl FnOnce(oneshot::Sender<Result<R, HandleError>>) -> FlowMsg,
    ) -> Result<R, HandleError> {
        let finished = || HandleError::Finished {
            run_id: self.run_id,
            event,
        };
        if self.has_ended() {
            return Err(finished());
        }
        let (reply, replied) = oneshot::channel();
        let Some(actor) = &self.actor else {
            return Err(finished());
        };
        if actor.send_message(msg(reply)).is_err() {
            return Err(finished());
        }
        // A flow that stops before answering drops the reply.
        replied.await.unwrap_or_else(|_| Err(finished()))
    }

    /// The flow's current state.
    pub fn state(&self) -> RunState {
        self.state.borrow().clone()
    }

    /// A `watch` receiver of the flow's state, woken on each change.
    pub fn watch(&self) -> watch::Receiver<RunState> {
        self.state.clone()
    }

    /// The outcome, once the run has ended (see [`wait`](Self::wait) on
    /// whether it is recorded).
    pub fn outcome(&self) -> Option<RunOutcome> {
        self.outcome.borrow().clone()
    }

    /// Whether the flow has ended (without cloning its outcome).
    pub(crate) fn has_ended(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    /// Waits for the flow to end and returns its outcome, which is recorded
    /// in the journal by then — unless recording it failed: the outcome then
    /// says so with [`RunOutcome::recorded`] `== false` (and the error at the
    /// end of its `reason`); the run stays unfinished in the journal until a
    /// later start resumes it and records it.
    pub async fn wait(&self) -> Result<RunOutcome, HandleError> {
        let mut outcome = self.outcome.clone();
        let waited = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
        // The sender is gone: the last published value still counts.
        let outcome = waited.unwrap_or_else(|_| outcome.borrow().clone());
        outcome.ok_or_else(|| self.lost())
    }

    fn lost(&self) -> HandleError {
        HandleError::Lost {
            run_id: self.run_id,
            last_state: self.state(),
        }
    }
}
