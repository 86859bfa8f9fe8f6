//! The state machine of every flow, declared with `fsm!` (its states,
//! with the diagram, are documented on [`RunState`]). Handlers only decide;
//! the side effects are actions ([`FlowAction`]) the flow actor runs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::context::FlowCtx;
use crate::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};
use crate::records::RunStatus;
use crate::stage::StageEvent;

/// Where a run is in its life: the states of the flow machine.
///
/// ```text
/// Created ──Start / Recover──▶ Running ──Pause──▶ Waiting ──Resume──▶ Running
///                      │ Drain            │ Drain
///                      ▼                  ▼
///                    Draining ──(every stage completed)──▶ Finished
/// Created / Running / Waiting / Draining ──StageGaveUp / Failure──▶ Failed
/// any non-terminal ──Cancel──▶ Cancelling ──StagesGone──▶ Cancelled
/// Running / Waiting / Draining ──ContinueAsNew──▶ ContinuedAsNew
/// ```
///
/// A run finishes when every stage has completed (from `Running` and
/// `Waiting` too: a pipeline whose sources end needs no `Drain`). A cancel
/// before any stage is live goes straight to `Cancelled`; once cancelling,
/// a failure no longer fails the run (cancel wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, StateVariant)]
pub enum RunState {
    /// The run record exists; stages are not started.
    Created,
    /// Stages are running.
    Running,
    /// Paused by a control event (the run is `Waiting`).
    Waiting,
    /// Sources stopped producing; the rest works off what is in flight.
    Draining,
    /// Cancel requested; waiting for the stages to stop.
    Cancelling,
    /// Every stage completed; outcome recorded (terminal).
    Finished,
    /// Failed with this reason; outcome recorded (terminal).
    Failed(String),
    /// Cancelled; outcome recorded (terminal).
    Cancelled,
    /// A step continued the run as a new run; outcome and the new run
    /// recorded (terminal).
    ContinuedAsNew,
}

impl RunState {
    /// Whether the run has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunState::Finished
                | RunState::Failed(_)
                | RunState::Cancelled
                | RunState::ContinuedAsNew
        )
    }
}

/// What moves a flow: control events, stage progress and failures.
#[derive(Debug, Clone, PartialEq, EventVariant)]
pub enum FlowEvent {
    /// Start the stages.
    Start,
    /// Start the stages of a run found unfinished after a restart.
    Recover,
    /// Control: pause.
    Pause,
    /// Control: resume.
    Resume,
    /// Control: drain.
    Drain,
    /// Control: cancel, with the reason.
    Cancel(String),
    /// Control: a user signal.
    Signal {
        /// Its name.
        name: String,
        /// Its data.
        payload: Value,
    },
    /// A stage completed and its output is recorded.
    StageCompleted,
    /// A stage ended and is not restarted (its restart type says so): the
    /// flow carries on without it.
    StageAbandoned,
    /// A stage's exit exceeded the flow's restart intensity; the reason
    /// names it and its last error.
    StageGaveUp(String),
    /// Every stage actor has stopped (after a cancel).
    StagesGone,
    /// The flow's own work failed (e.g. a journal write).
    Failure(String),
    /// A step ended the run by continuing it as a new run with this input.
    ContinueAsNew(Value),
}

/// Side effects of flow transitions, run by the flow actor in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FlowAction {
    /// Persist a non-terminal run status with an audit event.
    Persist(RunStatus, &'static str),
    /// Start every stage due its first start, in start order (steps once
    /// their upstream steps are done).
    SpawnStages,
    /// Send a control event to every live stage.
    Broadcast(StageEvent),
    /// Drain the sources and resume everything else.
    DrainSources,
    /// Persist the sticky cancel request, cancel the stages, arm the grace timer.
    RequestCancel(String),
    /// Record a user signal and hand it to the stages.
    Signal(String, Value),
    /// Record `RunCompleted` with the stages' outputs, publish, stop.
    Complete,
    /// Record `RunFailed`, publish, stop.
    Fail(String),
    /// Record `RunCancelled`, publish, stop.
    Cancelled,
    /// Record `RunContinuedAsNew` with the new run (this input), start it,
    /// publish, stop.
    ContinueAsNew(Value),
}

impl FsmContext for FlowCtx {}

#[async_trait]
impl FsmAction for FlowAction {
    type Context = FlowCtx;

    async fn execute(&self, ctx: &mut FlowCtx) -> Result<(), FsmError> {
        ctx.apply(self).await.map_err(FsmError::action)
    }
}

/// What the flow machine's handlers return: they are all synchronous.
type Handled = Transition<RunState, FlowAction>;

fn to(state: RunState, actions: Vec<FlowAction>) -> Handled {
    Transition::to(state).with_actions(actions)
}

/// Completed if that was the last stage, else where it is, starting the
/// steps that were waiting for it.
fn after_stage_done(state: &RunState, ctx: &FlowCtx) -> Handled {
    if ctx.all_done() {
        to(RunState::Finished, vec![FlowAction::Complete])
    } else {
        to(state.clone(), vec![FlowAction::SpawnStages])
    }
}

/// The flow machine, starting in `initial`.
pub(crate) fn flow_machine(
    initial: RunState,
) -> StateMachine<RunState, FlowEvent, FlowCtx, FlowAction> {
    use FlowAction as A;
    fsm! {
        state: RunState; event: FlowEvent; context: FlowCtx; action: FlowAction;
        initial: initial;

        state RunState::Created {
            on FlowEvent::Start => [RunState::Running] sync |_, _, _| to(
                RunState::Running,
                vec![A::Persist(RunStatus::Running, "started"), A::SpawnStages],
            );
            on FlowEvent::Recover => [RunState::Running] sync |_, _, _| to(
                RunState::Running,
                vec![A::Persist(RunStatus::Running, "recovered"), A::SpawnStages],
            );
        }
        state RunState::Running {
            on FlowEvent::Pause => [RunState::Waiting] sync |_, _, _| to(
                RunState::Waiting,
                vec![A::Broadcast(StageEvent::Pause), A::Persist(RunStatus::Waiting, "waiting")],
            );
            on FlowEvent::Drain => [RunState::Draining] sync |_, _, _| to(RunState::Draining, vec![A::DrainSources]);
            on FlowEvent::StageCompleted => sync |s, _, c| after_stage_done(s, c);
            on FlowEvent::StageAbandoned => sync |s, _, c| after_stage_done(s, c);
        }
        state RunState::Waiting {
            on FlowEvent::Resume => [RunState::Running] sync |_, _, _| to(
                RunState::Running,
                vec![A::Persist(RunStatus::Running, "resumed"), A::Broadcast(StageEvent::Resume)],
            );
            on FlowEvent::Drain => [RunState::Draining] sync |_, _, _| to(
                RunState::Draining,
                vec![A::Persist(RunStatus::Running, "resumed"), A::DrainSources],
            );
            on FlowEvent::StageCompleted => sync |s, _, c| after_stage_done(s, c);
            on FlowEvent::StageAbandoned => sync |s, _, c| after_stage_done(s, c);
        }
        state RunState::Draining {
            on FlowEvent::StageCompleted => sync |s, _, c| after_stage_done(s, c);
            on FlowEvent::StageAbandoned => sync |s, _, c| after_stage_done(s, c);
        }
        state RunState::Cancelling {
            on FlowEvent::StagesGone => [RunState::Cancelled] sync |_, _, _| to(RunState::Cancelled, vec![A::Cancelled]);
            // Late completions are refused by the actor; nothing to do here.
            on FlowEvent::StageCompleted => sync |s, _, _| to(s.clone(), vec![]);
        }
        state _ {
            on FlowEvent::Cancel => sync |s, e, c| {
                let FlowEvent::Cancel(reason) = e else { return to(s.clone(), vec![]) };
                match s {
                    RunState::Created => to(
                        RunState::Cancelled,
                        vec![A::RequestCancel(reason.clone()), A::Cancelled],
                    ),
                    RunState::Running | RunState::Waiting | RunState::Draining if c.live_stages() == 0 => to(
                        RunState::Cancelled,
                        vec![A::RequestCancel(reason.clone()), A::Cancelled],
                    ),
                    RunState::Running | RunState::Waiting | RunState::Draining => to(
                        RunState::Cancelling,
                        vec![A::RequestCancel(reason.clone())],
                    ),
                    // Cancelling already, or ended: cancel is idempotent.
                    _ => to(s.clone(), vec![]),
                }
            };
            on FlowEvent::Signal => sync |s, e, _| match (s.is_terminal(), e) {
                (false, FlowEvent::Signal { name, payload }) => {
                    to(s.clone(), vec![A::Signal(name.clone(), payload.clone())])
                }
                _ => to(s.clone(), vec![]),
            };
            on FlowEvent::StageGaveUp => sync |s, e, _| fail(s, e);
            on FlowEvent::Failure => sync |s, e, _| fail(s, e);
            on FlowEvent::ContinueAsNew => sync |s, e, _| continue_as_new(s, e);
        }
    }
}

/// A step's continue-as-new ends a running flow (a cancelling or ended one
/// stays put: cancel wins, and an ended run continues no more).
fn continue_as_new(state: &RunState, event: &FlowEvent) -> Handled {
    match (state, event) {
        (
            RunState::Running | RunState::Waiting | RunState::Draining,
            FlowEvent::ContinueAsNew(input),
        ) => to(
            RunState::ContinuedAsNew,
            vec![FlowAction::ContinueAsNew(input.clone())],
        ),
        _ => to(state.clone(), vec![]),
    }
}

/// A failure fails a running flow; a cancelling or ended one stays put (its
/// failure is already in the ledger or the trace, and cancel wins).
fn fail(state: &RunState, event: &FlowEvent) -> Handled {
    let reason = match event {
        FlowEvent::StageGaveUp(reason) | FlowEvent::Failure(reason) => reason.clone(),
        _ => return to(state.clone(), vec![]),
    };
    match state {
        RunState::Created | RunState::Running | RunState::Waiting | RunState::Draining => to(
            RunState::Failed(reason.clone()),
            vec![FlowAction::Fail(reason)],
        ),
        _ => to(state.clone(), vec![]),
    }
}
