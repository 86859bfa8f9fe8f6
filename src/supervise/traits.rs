//! The traits a supervised component implements.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use super::EventLoopDirective;
use super::channel::StateWatcher;
use crate::fsm::{EventVariant, FsmAction, FsmContext, StateMachine, StateVariant};
use crate::ids::{StageId, WriterId};

/// The error type of user callbacks (`dispatch_state`, `write_completion_event`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a `dispatch_state` call returns.
pub type DispatchResult<E> = Result<EventLoopDirective<E>, BoxError>;

/// A boxed `Send` future, as `async_trait` methods return; the stage actor's
/// spawner returns one too.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A component run by a state machine: its four types and how to build the
/// machine.
///
/// The bounds on the associated types are what the drive loop needs:
/// `State: Clone + PartialEq` so that the state watcher publishes a copy and
/// only on change; `Send + Sync` everywhere so that a drive loop is a `Send`
/// future that can run in a tokio task or a ractor actor.
pub trait Supervisor: Send + Sync {
    /// The machine's state type.
    type State: StateVariant + Clone + PartialEq + Debug + Send + Sync + 'static;
    /// The machine's event type.
    type Event: EventVariant + Send + Sync + 'static;
    /// The context handlers and actions work on.
    type Context: FsmContext + Send;
    /// The actions transitions ask for.
    type Action: FsmAction<Context = Self::Context>;

    /// Builds the machine, starting in `initial_state`.
    fn build_state_machine(
        &self,
        initial_state: Self::State,
    ) -> StateMachine<Self::State, Self::Event, Self::Context, Self::Action>;

    /// A name for spans and errors.
    fn name(&self) -> &str;

    /// Where the drive loop publishes state changes; `None` (the default)
    /// publishes nowhere. [`WithExternalEvents`](super::WithExternalEvents)
    /// returns its watcher.
    fn state_watcher(&self) -> Option<&StateWatcher<Self::State>> {
        None
    }
}

/// The work half of a supervised component: what each state does, how the
/// component records its completion, and how a failure reaches its machine.
///
/// System components and stages implement the same contract; a stage also
/// says which stage it is ([`stage_id`](Self::stage_id)), so that the loop's
/// span and errors name it.
///
/// Drive it with [`SupervisedExt::run`](super::SupervisedExt::run), or one
/// step at a time with a [`Driver`](super::Driver).
#[async_trait]
pub trait Supervised: Supervisor {
    /// Does the work of `state` (or waits for some) and says what happens next.
    /// An `Err` or a panic (of user code it calls too) becomes
    /// [`event_for_action_error`](Self::event_for_action_error).
    async fn dispatch_state(
        &mut self,
        state: &Self::State,
        context: &mut Self::Context,
    ) -> DispatchResult<Self::Event>;

    /// Who writes this component's completion event (a stage's: its stage id).
    fn writer_id(&self) -> WriterId;

    /// Records that the component completed; awaited exactly once, on `Terminate`.
    async fn write_completion_event(&self) -> Result<(), BoxError>;

    /// The event that reports a failure (a dispatch error, a failed or
    /// panicking action, an FSM error) to the machine.
    fn event_for_action_error(&self, msg: String) -> Self::Event;

    /// The stage this component runs, if it is a stage's supervisor; `None`
    /// (the default) for other components.
    fn stage_id(&self) -> Option<StageId> {
        None
    }
}
