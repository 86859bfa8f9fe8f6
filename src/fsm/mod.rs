//! State machines: the pure core every stage and flow runs on (no actors, no IO).
//!
//! Declare a machine with [`fsm!`]: a header naming the state, event,
//! context and action types and the initial state, then one block per state
//! listing the events it handles. Dispatch compiles to a `match` on variants:
//! no string keys, no maps, one boxed future per handled event. Actions
//! that are plain synchronous work answer [`FsmAction::execute_now`] and run
//! without the boxed future `#[async_trait]` gives `execute`.
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
//!
//!         state Door::Closed {
//!             on Input::Pull => [Door::Open] |_, _, _| Box::pin(async {
//!                 Ok(Transition::to(Door::Open).with_action(Say::Creak))
//!             });
//!         }
//!         state Door::Open {
//!             on Input::Push => [Door::Closed] |_, _, _| Box::pin(async { Ok(Transition::to(Door::Closed)) });
//!             // Left open too long: close by itself.
//!             timeout Duration::from_secs(30) => |_, _| Box::pin(async { Ok(Transition::to(Door::Closed)) });
//!         }
//!         // Any state: breaking the door raises the alarm.
//!         state _ {
//!             on Input::Break => |_s, e, _c| {
//!                 let Input::Break(why) = e else { unreachable!() };
//!                 let why = why.clone();
//!                 Box::pin(async move { Ok(Transition::to(Door::Alarm(why)).with_action(Say::Siren)) })
//!             };
//!         }
//!     }
//! }
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
//! let actions = door.handle(Input::Break("crowbar".into()), &mut log).await?;
//! door.execute_actions(actions, &mut log).await?;
//! assert_eq!(log.0, ["creak", "siren"]);
//! assert!(door.to_mermaid().contains("Closed --> Open : Pull"));
//! # Ok::<(), FsmError>(())
//! # }).unwrap();
//! ```
//!
//! See [`fsm!`] for the full syntax and the checks it makes at compile time.

mod error;
#[doc(hidden)]
pub mod generated;
mod machine;
mod table;
mod traits;
mod transition;
mod verify;

pub use error::FsmError;
pub use generated::HandlerFuture;
pub use machine::StateMachine;
pub use table::{FsmTable, HandlerSpec, TimeoutSpec};
pub use traits::{EventVariant, FsmAction, FsmContext, NoAction, StateVariant};
pub use transition::{IntoHandlerResult, Transition};
pub use troupe_macros::{EventVariant, StateVariant, fsm};
pub use verify::{ClauseRef, TIMEOUT_CLAUSE, UNHANDLED_CLAUSE, VerifyReport};
