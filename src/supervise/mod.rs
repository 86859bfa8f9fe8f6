//! Supervision: runs a state machine against the work of a component so that
//! no failure is lost or silent.
//!
//! A component implements [`Supervisor`] (its machine) and [`Supervised`]
//! (its work; a stage also names itself with `stage_id`). Its
//! `dispatch_state` does the work of the current state and returns an
//! [`EventLoopDirective`]; the drive loop ([`SupervisedExt::run`], or
//! [`Driver`] one step at a time) does the rest:
//!
//! 1. builds the machine, runs the initial state's entry actions, then calls
//!    `dispatch_state(current_state, ctx)` in a loop;
//! 2. `Continue`: dispatches again, yielding to the scheduler between
//!    iterations (the loop never spins: an idle component waits inside
//!    `dispatch_state` or in `Block` mode). After a handled event the loop
//!    spends tokio's cooperative budget instead of yielding every time, so a
//!    run of transitions cannot starve other tasks either;
//! 3. `Transition(e)`: `machine.handle(e)`, then runs the returned actions in order;
//! 4. `Err(error)`: feeds `event_for_action_error(error.to_string())` to the
//!    machine and runs its actions. A failing action takes the same path;
//!    the rest of its batch is dropped (traced with `index`, `total`, `dropped`);
//! 5. a panic in `dispatch_state`, a user handler it calls, a machine handler
//!    or hook, or an action is caught and takes the failure path with its message;
//! 6. an FSM error (an unhandled event, a failed handler) takes the failure
//!    path once; if the failure event itself cannot be handled, the loop ends
//!    with [`SupervisorError::FailureUnhandled`]. The same failure repeated
//!    [`MAX_IDENTICAL_FAILURES`] times in one state without a successful step
//!    ends it with [`SupervisorError::RepeatedFailure`];
//! 7. `Terminate`: `write_completion_event()` is awaited exactly once and the
//!    loop returns; a failed write is returned as
//!    [`SupervisorError::CompletionWrite`], never swallowed;
//! 8. every state change is published to the supervisor's [`StateWatcher`]
//!    (if it has one), only on change (compared with `PartialEq`).
//!
//! A state's `timeout` clause is honoured by the loop: the dispatch in
//! progress is cancelled (dropped) when the deadline passes and
//! `handle_timeout` runs instead, with the same failure mapping.
//!
//! External control events come through a channel from a [`ChannelBuilder`]:
//! wrap the supervisor in [`WithExternalEvents`] and give it an
//! [`ExternalEventPolicy`] saying, per state, whether to `Block` on, `Poll`
//! or `Ignore` the channel ([`ExternalEventMode`]).
//!
//! # Example: a small supervised component
//!
//! A counter that works through items until a bad one fails it; the failure
//! becomes the `Failure` event, the machine moves to `Failed`, logs once, and
//! the component then terminates, writing its completion exactly once.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use async_trait::async_trait;
//! use troupe::fsm::{fsm, EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition};
//! use troupe::ids::WriterId;
//! use troupe::supervise::{BoxError, DispatchResult, EventLoopDirective, Supervised, SupervisedExt, Supervisor};
//!
//! #[derive(Debug, Clone, PartialEq, StateVariant)]
//! enum Phase { Working, Failed(String) }
//! #[derive(Debug, EventVariant)]
//! enum Ev { Failure(String) }
//!
//! struct Items { next: u32, log: Vec<String> }
//! impl FsmContext for Items {}
//!
//! #[derive(Debug)]
//! struct Log(String);
//! #[async_trait]
//! impl FsmAction for Log {
//!     type Context = Items;
//!     async fn execute(&self, ctx: &mut Items) -> Result<(), FsmError> {
//!         Ok(ctx.log.push(self.0.clone()))
//!     }
//! }
//!
//! #[derive(Default)]
//! struct Counter { completions: AtomicUsize }
//!
//! impl Supervisor for Counter {
//!     type State = Phase;
//!     type Event = Ev;
//!     type Context = Items;
//!     type Action = Log;
//!     fn build_state_machine(&self, initial: Phase) -> StateMachine<Phase, Ev, Items, Log> {
//!         fsm! {
//!             state: Phase; event: Ev; context: Items; action: Log; initial: initial;
//!             state _ {
//!                 on Ev::Failure => |_, e, _| {
//!                     let Ev::Failure(why) = e;
//!                     let why = why.clone();
//!                     Box::pin(async move {
//!                         Ok(Transition::to(Phase::Failed(why.clone())).with_action(Log(format!("failed: {why}"))))
//!                     })
//!                 };
//!             }
//!         }
//!     }
//!     fn name(&self) -> &str { "counter" }
//! }
//!
//! #[async_trait]
//! impl Supervised for Counter {
//!     async fn dispatch_state(&mut self, state: &Phase, items: &mut Items) -> DispatchResult<Ev> {
//!         match state {
//!             Phase::Working if items.next == 3 => Err(format!("item {} is invalid", items.next).into()),
//!             Phase::Working => { items.next += 1; Ok(EventLoopDirective::Continue) }
//!             Phase::Failed(_) => Ok(EventLoopDirective::Terminate),
//!         }
//!     }
//!     fn writer_id(&self) -> WriterId { WriterId::new_const(1) }
//!     async fn write_completion_event(&self) -> Result<(), BoxError> {
//!         self.completions.fetch_add(1, Ordering::SeqCst);
//!         Ok(())
//!     }
//!     fn event_for_action_error(&self, msg: String) -> Ev { Ev::Failure(msg) }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let items = Items { next: 0, log: Vec::new() };
//! let done = SupervisedExt::run(Counter::default(), Phase::Working, items).await?;
//! assert_eq!(done.state, Phase::Failed("item 3 is invalid".into()));
//! assert_eq!(done.context.log, ["failed: item 3 is invalid"]);
//! assert_eq!(done.supervisor.completions.load(Ordering::SeqCst), 1);
//! # Ok::<(), troupe::supervise::SupervisorError>(())
//! # }).unwrap();
//! ```

mod backoff;
mod channel;
mod directive;
mod driver;
mod error;
mod external;
mod panic;
mod policy;
mod run;
mod streak;
mod traits;

pub use backoff::Backoff;
pub use channel::{
    ChannelBuilder, DEFAULT_CONTROL_CAPACITY, ExternalEventReceiver, ExternalEventSendError,
    ExternalEventSender, StateWatcher,
};
pub use directive::EventLoopDirective;
pub use driver::{Driver, LoopOutcome, Progress};
pub use error::{SupervisorError, SupervisorIdentity};
pub use external::WithExternalEvents;
pub(crate) use panic::panic_message;
pub use policy::{ExternalEventMode, ExternalEventPolicy};
pub use run::SupervisedExt;
pub use streak::MAX_IDENTICAL_FAILURES;
pub(crate) use traits::BoxFuture;
pub use traits::{BoxError, DispatchResult, Supervised, Supervisor};
