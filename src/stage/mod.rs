//! Stages: the units of work of a flow.
//!
//! A stage is a source, a transform, a sink, or a single workflow step
//! ([`Source`], [`Transform`], [`Sink`], [`Step`]); users write its logic,
//! troupe runs it as a ractor actor hosting a handler-supervised component
//! whose machine (its states are [`StageState`]) is declared with `fsm!`.
//! Items travel between stages over bounded, batched pipes ([`PipeConfig`]),
//! never through actor mailboxes: the actor takes one step (about one batch)
//! per message and handles control in between. A stage's ends of the pipes
//! outlive its actor, so a restarted stage carries on where the failed one
//! stopped: upstream never sees its downstream vanish, and the items of the
//! batch being worked through and the items already emitted survive.
//!
//! Each logic trait has one method called on the hot path and an optional
//! `complete` called once when the stage finishes its work (its input ended
//! or, for a source, it was drained); the JSON value `complete` returns is
//! recorded with the stage's completion. An item's error is retried per the
//! stage's [`RetryPolicy`], then the item is dead-lettered (a
//! [`PermanentError`] at once); other errors (and panics) fail the stage;
//! its flow's [`RestartPolicy`](crate::flow::RestartPolicy) decides what
//! happens next. Items are handed over without per-item allocation: a source
//! fills an [`Emitter`] a batch at a time, a transform pushes zero or more
//! items per input into one, a sink takes items by value. A transform can
//! also drive an `fsm!` machine per item ([`transform_fsm`]), and a whole
//! stage can be the user's own `fsm!` machine ([`MachineStage`]): items,
//! user events, the end of input and its timeouts are its events, and a
//! durable one resumes in its journaled state after a crash.
//!
//! A stage may also take typed user events: its logic implements
//! [`OnEvent<Ev>`] and its [`EventPolicy`] says, per state, when it takes
//! them.
//!
//! ```
//! use troupe::stage::{Emitter, Produced, Source, source_iter, transform_fn, sink_fn};
//! use troupe::supervise::BoxError;
//!
//! // Logic is plain Rust: a struct implementing a trait, or a closure.
//! struct Countdown(u32);
//! impl Source<u32> for Countdown {
//!     async fn produce(&mut self, out: &mut Emitter<u32>) -> Result<Produced, BoxError> {
//!         if self.0 == 0 {
//!             return Ok(Produced::Done);
//!         }
//!         out.push(self.0);
//!         self.0 -= 1;
//!         Ok(Produced::More)
//!     }
//! }
//! let _numbers = source_iter(0..10_u32);
//! let _double = transform_fn(|x: u32, out: &mut Emitter<u32>| Ok(out.push(x * 2)));
//! let _print = sink_fn(|x: u32| Ok(println!("{x}")));
//! # let _ = Countdown(3);
//! ```

pub(crate) mod actor;
mod barrier;
pub mod child;
mod context;
pub mod continue_as_new;
pub(crate) mod dead_letter;
pub(crate) mod durable;
pub(crate) mod events;
mod fsm_transform;
pub(crate) mod inlet;
mod kind;
mod logic;
mod machine;
mod machine_stage;
mod memo;
pub(crate) mod pipe;
pub(crate) mod ports;
mod received;
pub(crate) mod replay;
mod retry;
mod signal_wait;
mod slot;
mod supervisor;
pub(crate) mod timer;
pub(crate) mod work;

pub use actor::{EXIT_CANCELLED, EXIT_COMPLETED, StageStartError};
pub use child::{ChildError, ChildRun, ParentClose};
pub use context::{InputError, StageContext};
pub(crate) use context::{KeptSignals, RunContext};
pub use continue_as_new::ContinueAsNew;
pub use dead_letter::PermanentError;
pub use durable::Durable;
pub use events::{DEFAULT_EVENT_CAPACITY, EventPolicy, MAX_EVENT_CAPACITY, NoEvents, OnEvent};
pub use fsm_transform::{FsmTransform, ItemNotSettled, MAX_EVENTS_PER_ITEM, transform_fsm};
pub use kind::StageKind;
pub use logic::{
    Attempted, Emitter, FnSink, FnStep, FnTransform, IterSource, Produced, Sink, Source, Step,
    StepInputs, Transform, sink_fn, source_iter, step_fn, transform_fn,
};
pub use machine::{StageEvent, StageSignal, StageState};
pub(crate) use machine_stage::AsMachine;
pub use machine_stage::{MachineContext, MachineStage, MachineStageError, StageInput};
pub use memo::MemoError;
pub use pipe::{MAX_BATCH_SIZE, MAX_PIPE_CAPACITY, PipeConfig};
pub use ports::DownstreamGone;
pub use retry::RetryPolicy;
pub(crate) use supervisor::{StageDone, StageIdentity, StageReport, StageWait};
