//! [`RunHandle`]: how a user steers and observes one run.

use std::sync::{Arc, Weak};

use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::actor::FlowMsg;
use super::cell::{Route, RunCell, RunHost};
use super::control::{ControlEvent, HandleError, RunOutcome};
use super::machine::RunState;
use crate::progress::{ProgressBoard, ProgressWatch, RunProgress};
use crate::records::RunStatus;

/// A handle to one run of a flow. Cheap to clone, `Send`; it does not keep
/// the run alive and stays usable after the run ended (`wait` then returns
/// the outcome at once, `send` a [`HandleError::Finished`]). It stays good
/// while the run hibernates: what it sends wakes the run first.
#[derive(Clone)]
pub struct RunHandle {
    run_id: Uuid,
    /// The run as its runtime keeps it (dangling for a handle to a run that
    /// had ended before it was made, or once the runtime is gone).
    cell: Weak<RunCell>,
    state: watch::Receiver<RunState>,
    outcome: watch::Receiver<Option<RunOutcome>>,
    stages: Arc<[String]>,
    /// The run's counters: kept (they are small) so that the final counts
    /// stay readable after the run ended.
    progress: Arc<ProgressBoard>,
    /// The runtime, where `wait` finds the next run of a chain.
    host: Option<Weak<dyn RunHost>>,
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
    /// A handle to the run of `cell`.
    pub(crate) fn new(cell: &Arc<RunCell>) -> Self {
        let (state, outcome) = cell.subscribe();
        RunHandle {
            run_id: cell.run_id,
            cell: Arc::downgrade(cell),
            state,
            outcome,
            stages: cell.stages.clone(),
            progress: cell.progress.clone(),
            host: cell.host.clone(),
        }
    }

    /// A handle to a run that has ended with `outcome` (read from the
    /// journal): its state is terminal and input to it is refused.
    pub(crate) fn ended(outcome: RunOutcome, stages: Arc<[String]>) -> Self {
        let state = match outcome.status {
            RunStatus::Finished => RunState::Finished,
            RunStatus::Cancelled => RunState::Cancelled,
            RunStatus::ContinuedAsNew => RunState::ContinuedAsNew,
            _ => RunState::Failed(outcome.reason.clone().unwrap_or_default()),
        };
        RunHandle {
            run_id: outcome.run_id,
            cell: Weak::new(),
            state: watch::channel(state).1,
            outcome: watch::channel(Some(outcome)).1,
            progress: ProgressBoard::closed(&stages),
            stages,
            host: None,
        }
    }

    /// The names of the run's stages, in declaration order.
    pub fn stage_names(&self) -> &[String] {
        &self.stages
    }

    /// The flow actor, for tests that kill it.
    #[cfg(test)]
    pub(crate) fn actor_ref(&self) -> ractor::ActorRef<FlowMsg> {
        match self.cell.upgrade().map(|cell| cell.route()) {
            Some(Route::Live(actor)) => actor,
            _ => panic!("not a live run's handle"),
        }
    }

    /// Whether the run hibernates: it has no flow or stage actor now, and
    /// its runtime wakes it when its timer is due, a child it awaits ends,
    /// or something is sent to it (see [`RuntimeBuilder::hibernate_after`](crate::runtime::RuntimeBuilder::hibernate_after)).
    pub fn is_hibernated(&self) -> bool {
        self.cell.upgrade().is_some_and(|cell| cell.is_hibernated())
    }

    /// Waits until the run has ended or hibernates.
    pub(crate) async fn settled(&self) {
        if let Some(cell) = self.cell.upgrade() {
            cell.settled().await;
        }
    }

    /// The run's id (its run record in the journal).
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// Sends a control event and waits until the flow has taken it (and
    /// recorded what it records, e.g. the `Waiting` status for `Pause`).
    pub async fn send(&self, event: ControlEvent) -> Result<(), HandleError> {
        let name = event.name();
        self.ask(name, |reply| FlowMsg::Control {
            event: event.clone(),
            reply,
        })
        .await
    }

    /// At a shutdown: stops the run without an outcome if it may sleep now
    /// (every unfinished stage waits durably, and the journal says so), so
    /// that the next start resumes it asleep instead of the shutdown
    /// waiting for a signal that may never come. Whether it stopped.
    pub(crate) async fn park(&self) -> bool {
        let Some(cell) = self.cell.upgrade() else {
            return false;
        };
        let Route::Live(actor) = cell.route() else {
            return false;
        };
        let (reply, parked) = oneshot::channel();
        actor.send_message(FlowMsg::Park(reply)).is_ok() && parked.await.unwrap_or(false)
    }

    /// Sends the flow the message `msg` builds around a reply and waits for
    /// the answer, waking the run first if it hibernates;
    /// [`HandleError::Finished`] (naming `event`) if the run has ended or
    /// its flow stops before answering, [`HandleError::Hibernated`] if it
    /// hibernates and the runtime is shutting down. A flow that hibernated
    /// with the message unread is asked again (`msg` builds it again).
    pub(crate) async fn ask<R>(
        &self,
        event: &'static str,
        mut msg: impl FnMut(oneshot::Sender<Result<R, HandleError>>) -> FlowMsg,
    ) -> Result<R, HandleError> {
        let finished = || HandleError::Finished {
            run_id: self.run_id,
            event,
        };
        loop {
            if self.has_ended() {
                return Err(finished());
            }
            let Some(cell) = self.cell.upgrade() else {
                return Err(finished());
            };
            let _hold = cell.hold();
            let Some(actor) = cell.actor().await else {
                if cell.is_hibernated() {
                    let run_id = self.run_id;
                    return Err(HandleError::Hibernated { run_id, event });
                }
                return Err(finished());
            };
            let (reply, replied) = oneshot::channel();
            if actor.send_message(msg(reply)).is_ok()
                && let Ok(answer) = replied.await
            {
                return answer;
            }
            // The flow stopped before answering: it ended, or it hibernated
            // (or was woken again) with the message unread.
            let moved = match cell.route() {
                Route::Live(now) => now.get_id() != actor.get_id(),
                Route::Hibernated | Route::Waking => true,
                Route::Gone => false,
            };
            if !moved {
                return Err(finished());
            }
        }
    }

    /// The run's live progress: per stage its state, items in and out,
    /// pipe depth, restarts, retries, dead letters and last checkpoint
    /// (see [`progress`](crate::progress)). A few relaxed atomic loads per
    /// stage, no message to the run and no journal read: cheap enough for
    /// a progress bar every 100 ms, and it does not wake a hibernated run.
    /// After the run ended it holds the final counts — except for a handle
    /// made for a run that had ended before (from the journal): it counts
    /// nothing; read its [`outcome`](Self::outcome)'s structured output.
    pub fn progress(&self) -> RunProgress {
        self.progress.read()
    }

    /// Waits for the run's progress to change (see [`ProgressWatch`]).
    pub fn watch_progress(&self) -> ProgressWatch {
        ProgressWatch::new(self.progress.clone())
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
    ///
    /// A run that continued as new
    /// ([`StageContext::continue_as_new`](crate::stage::StageContext::continue_as_new))
    /// is followed along its chain: the outcome is the last run's (its
    /// `run_id` says which). A next run that neither runs in this runtime
    /// nor has ended (e.g. another process claimed it) cannot be followed:
    /// the outcome is then the `ContinuedAsNew` one naming it
    /// ([`RunOutcome::next_run_id`]).
    pub async fn wait(&self) -> Result<RunOutcome, HandleError> {
        let mut outcome = self.wait_here().await?;
        let mut host = self.host.clone();
        while outcome.status == RunStatus::ContinuedAsNew && outcome.recorded {
            let (Some(next), Some(runtime)) =
                (outcome.next_run_id, host.as_ref().and_then(Weak::upgrade))
            else {
                break;
            };
            let Some(handle) = runtime.handle(next).await else {
                break;
            };
            outcome = handle.wait_here().await?;
            host = handle.host.clone().or(host);
        }
        Ok(outcome)
    }

    /// This run's own outcome, once it has ended (see [`wait`](Self::wait)).
    async fn wait_here(&self) -> Result<RunOutcome, HandleError> {
        let mut outcome = self.outcome.clone();
        let waited = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
        // The sender is gone: the last published value still counts.
        let outcome = waited.unwrap_or_else(|_| outcome.borrow().clone());
        outcome.ok_or_else(|| self.lost())
    }

    fn lost(&self) -> HandleError {
        if self.cell.upgrade().is_some_and(|cell| cell.has_moved()) {
            return HandleError::Moved {
                run_id: self.run_id,
            };
        }
        HandleError::Lost {
            run_id: self.run_id,
            last_state: self.state(),
        }
    }
}
