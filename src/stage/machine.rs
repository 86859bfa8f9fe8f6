//! The state machine of every stage, declared with `fsm!` (its states, with
//! the diagram, are documented on [`StageState`]).

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::durable::Settler;
use super::ports::PortLease;
use super::work::Work;
use crate::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};
use crate::progress::StageStatus;

/// Where a stage is in its life: the states of the stage machine.
///
/// ```text
/// Starting ──Started──▶ Running ──Pause──▶ Paused ──Resume──▶ Running
///                         │ InputEnded / Drain      │ Drain
///                         ▼                         ▼
///                       Draining ──Flushed──▶ Completed
/// any non-terminal state ──Failure──▶ Failed     ──Cancel──▶ Cancelled
/// ```
///
/// `Starting` takes the stage's ends of the pipes, `Running` works a batch
/// per step, `Draining` lets a transform or sink finish its input, then calls
/// the completion hook and closes the outputs. Control events a state has no
/// use for (a `Resume` while running) leave it where it is.
#[derive(Debug, Clone, PartialEq, StateVariant)]
pub enum StageState {
    /// Taking over its ends of the data plane.
    Starting,
    /// Working: producing, transforming or consuming a batch per step.
    Running,
    /// Paused by a control event; does no work.
    Paused,
    /// Finishing: the rest of the input, the completion hook, closing outputs.
    Draining,
    /// Done; its output is recorded (terminal).
    Completed,
    /// Failed with this reason (terminal).
    Failed(String),
    /// Cancelled (terminal).
    Cancelled,
}

impl StageState {
    /// Whether the stage has stopped for good.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StageState::Completed | StageState::Failed(_) | StageState::Cancelled
        )
    }
}

impl From<&StageState> for StageStatus {
    fn from(state: &StageState) -> Self {
        match state {
            StageState::Starting => StageStatus::Starting,
            StageState::Running => StageStatus::Running,
            StageState::Paused => StageStatus::Paused,
            StageState::Draining => StageStatus::Draining,
            StageState::Completed => StageStatus::Completed,
            StageState::Failed(_) => StageStatus::Failed,
            StageState::Cancelled => StageStatus::Cancelled,
        }
    }
}

/// What moves a stage: its own progress and failures, and control events
/// (`Pause`, `Resume`, `Drain`, `Cancel`, `Signal`) sent by its flow.
#[derive(Debug, Clone, PartialEq, EventVariant)]
pub enum StageEvent {
    /// The ports are taken; work can begin.
    Started,
    /// The input ended (or the source is exhausted).
    InputEnded,
    /// Completion hook ran and outputs are closed.
    Flushed,
    /// Something failed: an error, a panic, an FSM error.
    Failure(String),
    /// Stop working until `Resume`.
    Pause,
    /// Work again after `Pause`.
    Resume,
    /// Finish: a source stops producing, others finish their input.
    Drain,
    /// Stop for good; nothing more is recorded.
    Cancel,
    /// A flow-wide `Signal` for the stage's logic. Shared, so the flow hands
    /// one signal to every stage without copying it, and a control event
    /// stays small (each stage's control channel allocates room for 32).
    Signal(Arc<StageSignal>),
}

/// A user-defined signal: a name and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSignal {
    /// The signal's name.
    pub name: String,
    /// Its data.
    pub payload: Value,
    /// Its id in the run's inbox, where it stays until the stage has handled
    /// it (every signal sent through a run is accepted there first).
    pub id: Option<uuid::Uuid>,
}

/// What the stage's handlers and actions work on.
pub(crate) struct StageCtx<T: Send + 'static, W> {
    /// The user's logic.
    pub(crate) work: W,
    /// The ports, once taken in `Starting`.
    pub(crate) ports: Option<PortLease<T>>,
    /// The output to record, set by `Draining`.
    pub(crate) output: Option<Value>,
    /// Settles the inbox entries of the signals the logic takes.
    pub(crate) settle: Settler,
}

impl<T: Send + 'static, W> FsmContext for StageCtx<T, W> {}

/// Side effects of stage transitions.
pub(crate) enum StageActionKind {
    /// Cancelled: refuse further input, drop the outputs.
    Abandon,
    /// Hand a signal to the user logic.
    Signal(Arc<StageSignal>),
}

/// A [`StageActionKind`] typed for the stage's context.
pub(crate) struct StageAction<T, W> {
    kind: StageActionKind,
    _ctx: PhantomData<fn() -> (T, W)>,
}

impl<T, W> StageAction<T, W> {
    fn new(kind: StageActionKind) -> Self {
        StageAction {
            kind,
            _ctx: PhantomData,
        }
    }
}

#[async_trait]
impl<T: Clone + Send + 'static, W: Work<T>> FsmAction for StageAction<T, W> {
    type Context = StageCtx<T, W>;

    async fn execute(&self, ctx: &mut StageCtx<T, W>) -> Result<(), FsmError> {
        self.run(ctx);
        Ok(())
    }

    /// Both kinds are synchronous: run here, no boxed future.
    fn execute_now(&self, ctx: &mut StageCtx<T, W>) -> Option<Result<(), FsmError>> {
        self.run(ctx);
        Some(Ok(()))
    }
}

impl<T: Clone + Send + 'static, W: Work<T>> StageAction<T, W> {
    fn run(&self, ctx: &mut StageCtx<T, W>) {
        match &self.kind {
            StageActionKind::Abandon => {
                if let Some(ports) = ctx.ports.as_mut() {
                    ports.abandon();
                }
            }
            StageActionKind::Signal(signal) => {
                // A panicking `on_signal` settles it undeliverable: it is
                // not handed to the restarted stage again.
                let handling = ctx.settle.handling(signal.id);
                ctx.work.signal(&signal.name, &signal.payload);
                handling.handled(None);
            }
        }
    }
}

/// What the stage machine's handlers return: they are all synchronous.
type Handled<T, W> = Transition<StageState, StageAction<T, W>>;

fn stay<T, W>(state: &StageState) -> Handled<T, W>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    Transition::to(state.clone())
}

fn go<T, W>(state: StageState) -> Handled<T, W>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    Transition::to(state)
}

/// The stage machine, starting in `initial`.
pub(crate) fn stage_machine<T, W>(
    initial: StageState,
) -> StateMachine<StageState, StageEvent, StageCtx<T, W>, StageAction<T, W>>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    fsm! {
        state: StageState; event: StageEvent; context: StageCtx<T, W>; action: StageAction<T, W>;
        initial: initial;

        state StageState::Starting {
            on StageEvent::Started => [StageState::Running] sync |_, _, _| go(StageState::Running);
        }
        state StageState::Running {
            on StageEvent::Pause => [StageState::Paused] sync |_, _, _| go(StageState::Paused);
            on StageEvent::Drain => [StageState::Draining] sync |_, _, _| go(StageState::Draining);
            on StageEvent::InputEnded => [StageState::Draining] sync |_, _, _| go(StageState::Draining);
        }
        state StageState::Paused {
            on StageEvent::Resume => [StageState::Running] sync |_, _, _| go(StageState::Running);
            on StageEvent::Drain => [StageState::Draining] sync |_, _, _| go(StageState::Draining);
        }
        state StageState::Draining {
            on StageEvent::Flushed => [StageState::Completed] sync |_, _, _| go(StageState::Completed);
        }
        state _ {
            on StageEvent::Failure => sync |s, e, _| {
                match (s.is_terminal(), e) {
                    (false, StageEvent::Failure(why)) => go(StageState::Failed(why.clone())),
                    _ => stay(s),
                }
            };
            on StageEvent::Cancel => sync |s, _, _| {
                if s.is_terminal() {
                    return stay(s);
                }
                Transition::to(StageState::Cancelled)
                    .with_action(StageAction::new(StageActionKind::Abandon))
            };
            on StageEvent::Signal => sync |s, e, _| {
                let state = s.clone();
                let action = match e {
                    StageEvent::Signal(signal) => {
                        Some(StageAction::new(StageActionKind::Signal(signal.clone())))
                    }
                    _ => None,
                };
                Transition::to(state).with_actions(action)
            };
        }
        unhandled => sync |s, _, _| stay(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage's control channel allocates a block of 32 events up front,
    /// so the event's size is paid by each idle stage: keep it at a pointer
    /// plus a `String` (a fat `Signal` made it 56 bytes).
    #[test]
    fn a_control_event_stays_small() {
        assert!(
            std::mem::size_of::<StageEvent>() <= 32,
            "StageEvent is {} bytes",
            std::mem::size_of::<StageEvent>()
        );
    }
}
