//! State machines: the pure core every stage and flow runs on (no actors, no IO).
//!
//! Declare a machine with [`fsm!`]: a header naming the state, event and
//! context types (and the action type, when transitions ask for side
//! effects), the initial state and the terminal states, then one block per
//! state listing the events it handles. Dispatch compiles to a `match` on
//! variants: no string keys, no maps. A synchronous handler (`sync |s, e, c|
//! ...`) runs without a future, so an event it handles allocates nothing
//! ([`StateMachine::handle_now`] handles it outside async code); an async
//! handler returns one boxed future. Actions that are plain synchronous
//! work answer [`FsmAction::execute_now`] and run without the boxed future
//! `#[async_trait]` gives `execute`. [`FsmTable::verify`] checks the declared
//! graph (dead ends, unreachable states, unhandled events) in a test.
//!
//! ```
//! use std::time::Duration;
//! use async_trait::async_trait;
//! use troupe::fsm::{fsm, EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition};
//!
//! #[derive(Debug, Clone, PartialEq, StateVariant)]
//! enum Door { Closed, Open, Alarm(String) }
//!
//! #[derive(Debug, EventVariant)]
//! enum Input { Push, Pull, Break(String) }
//!
//! #[derive(Default)]
//! struct Log(Vec<&'static str>);
//! impl FsmContext for Log {}
//!
//! #[derive(Debug)]
//! enum Say { Creak, Siren }
//!
//! #[async_trait]
//! impl FsmAction for Say {
//!     type Context = Log;
//!     async fn execute(&self, log: &mut Log) -> Result<(), FsmError> {
//!         log.0.push(match self { Say::Creak => "creak", Say::Siren => "siren" });
//!         Ok(())
//!     }
//! }
//!
//! fn door() -> StateMachine<Door, Input, Log, Say> {
//!     fsm! {
//!         state: Door; event: Input; context: Log; action: Say; initial: Door::Closed;
//!         terminal: Door::Alarm;
//!
//!         state Door::Closed {
//!             // Synchronous: returns the transition itself, no future.
//!             on Input::Pull => [Door::Open] sync |_, _, _| Transition::to(Door::Open).with_action(Say::Creak);
//!         }
//!         state Door::Open {
//!             on Input::Push => [Door::Closed] sync |_, _, _| Transition::to(Door::Closed);
//!             // Left open too long: close by itself.
//!             timeout Duration::from_secs(30) => [Door::Closed] sync |_, _| Transition::to(Door::Closed);
//!         }
//!         // Any state: breaking the door raises the alarm. An async handler
//!         // (it could await); sync and async handlers mix freely.
//!         state _ {
//!             on Input::Break => [Door::Alarm] |_s, e, _c| {
//!                 let Input::Break(why) = e else { unreachable!() };
//!                 let why = why.clone();
//!                 Box::pin(async move { Ok(Transition::to(Door::Alarm(why)).with_action(Say::Siren)) })
//!             };
//!         }
//!     }
//! }
//!
//! // Every state reachable, none stuck, every event handled (a `#[test]` would do this).
//! door().assert_verified();
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let mut door = door();
//! let mut log = Log::default();
//! let actions = door.handle(Input::Pull, &mut log).await?;
//! door.execute_actions(actions, &mut log).await?;
//! assert_eq!(door.state(), &Door::Open);
//! assert!(door.deadline().is_some());
//!
//! // `Pull` has no handler in `Open`: a typed error, and the state stays.
//! let err = door.handle(Input::Pull, &mut log).await.unwrap_err();
//! assert_eq!(err.to_string(), "no handler for event `Pull` in state `Open`");
//!
//! // Outside async code: a sync handler runs at once (`None` for an async one).
//! let actions = door.handle_now(&Input::Push, &mut log).expect("a sync handler")?;
//! assert!(actions.is_empty() && door.state() == &Door::Closed);
//!
//! let actions = door.handle(Input::Break("crowbar".into()), &mut log).await?;
//! door.execute_actions(actions, &mut log).await?;
//! assert!(door.is_terminal());
//! assert_eq!(log.0, ["creak", "siren"]);
//! assert!(door.to_mermaid().contains("Closed --> Open : Pull"));
//! # Ok::<(), FsmError>(())
//! # }).unwrap();
//! ```
//!
//! A machine whose transitions ask for no side effects leaves out `action:`
//! (its action type is [`NoAction`]), and `verify` says what is missing:
//!
//! ```
//! use troupe::fsm::{fsm, EventVariant, StateVariant, Transition};
//!
//! #[derive(Debug, PartialEq, StateVariant)]
//! enum Ticket { Open, Resolved, Archived }
//! #[derive(Debug, EventVariant)]
//! enum Ev { Resolve, Reopen }
//!
//! let ticket = fsm! {
//!     state: Ticket; event: Ev; context: (); initial: Ticket::Open;
//!     terminal: Ticket::Archived;
//!     state Ticket::Open { on Ev::Resolve => [Ticket::Resolved] sync |_, _, _| Transition::to(Ticket::Resolved); }
//!     state Ticket::Resolved { on Ev::Reopen => [Ticket::Open] sync |_, _, _| Transition::to(Ticket::Open); }
//! };
//! let report = ticket.verify().unwrap_err();
//! assert_eq!(report.unreachable, ["Archived"]);
//! assert_eq!(report.no_path_to_terminal, ["Open", "Resolved"]);
//! println!("{report}");
//! ```
//!
//! See [`fsm!`] for the full syntax and the checks it makes at compile time.

mod error;
mod fingerprint;
#[doc(hidden)]
pub mod generated;
mod machine;
mod table;
mod traits;
mod transition;
mod verify;

pub use error::FsmError;
pub(crate) use fingerprint::Canonical;
pub use generated::HandlerFuture;
pub use machine::StateMachine;
pub use table::{FsmTable, HandlerSpec, TimeoutSpec};
pub use traits::{EventVariant, FsmAction, FsmContext, NoAction, StateVariant};
pub use transition::{IntoHandlerResult, Transition};
pub use troupe_macros::{EventVariant, StateVariant, fsm};
pub use verify::{ClauseRef, TIMEOUT_CLAUSE, UNHANDLED_CLAUSE, VerifyReport};
