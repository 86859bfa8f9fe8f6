//! Procedural macros of [troupe](https://docs.rs/troupe): `fsm!` and the
//! `StateVariant` / `EventVariant` derives. Use them through `troupe::fsm`,
//! which re-exports them next to the traits they implement.

mod fsm;
mod variant;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Declares a state machine and returns a `troupe::fsm::StateMachine<S, E, C, A>`.
///
/// ```text
/// fsm! {
///     state: S; event: E; context: C;             // the types
///     action: A;                                  // optional: without it, A = troupe::fsm::NoAction<C>
///     initial: <expr of type S>;
///     terminal: S::Done, S::Failed;               // optional: the final states
///
///     state S::Variant {                          // one block per state
///         on E::Variant => handler;               // run on this event in this state
///         on E::Other => [S::A, S::B] handler;    // ... declaring its possible targets
///         on E::Tick => sync |s, e, c| ...;       // a synchronous handler: no future
///         on_entry => |s, c| vec![...];           // actions when the state is entered
///         on_exit => |s, c| vec![...];            // actions when the state is left
///         timeout <const Duration> => [S::A] handler; // fires after that long in the state
///         timeout <const Duration>;               // ... or is FsmError::Timeout
///     }
///     state _ { on E::Variant => handler; }       // any state without its own handler
///     unhandled => [S::A] handler;                // anything else (default: FsmError::UnhandledEvent)
/// }
/// ```
///
/// * An async handler is a closure `|state: &S, event: &E, ctx: &mut C|`
///   returning `Box::pin(async move { Ok(Transition { .. }) })` (a
///   `troupe::fsm::HandlerFuture`); a timeout handler takes `|state, ctx|`.
///   Work with `state`, `event` and `ctx` before the `async` block and move
///   owned values into it.
/// * A synchronous handler is the same closure after the word `sync`
///   (`sync |s, e, c| Transition::to(..)`), returning a `Transition` or a
///   `Result<Transition, FsmError>` (anything `troupe::fsm::IntoHandlerResult`;
///   annotate the closure's return type to use `?` in it). The machine runs
///   it without making a future: `StateMachine::handle` settles it before
///   its first await, and `StateMachine::handle_now` runs it with no future
///   at all. `sync` works for `on`, `timeout` and `unhandled` handlers, and
///   sync and async handlers mix freely in one machine.
/// * Handlers must be `Send + Sync + 'static` (use `move` to capture values).
/// * `[S::A, S::B]` declares the states a handler may move to: the machine
///   rejects any other with `FsmError::UndeclaredTarget`, the Mermaid diagram
///   draws them as edges and `FsmTable::verify` follows them. `[]` declares a
///   handler that only fails (any `Ok` is rejected), such as an `unhandled`
///   hook that reports. A handler without targets may move anywhere: it
///   runs unchecked, and `verify` reports it as unverifiable.
/// * `terminal:` names the final states: `StateMachine::is_terminal` and
///   `FsmTable::verify`, which reports states without a path to one. A state
///   may still have clauses of its own; `verify` reports them.
/// * Hooks are closures `|state: &S, ctx: &mut C| -> Vec<A>`.
/// * Variants are named by path without their fields: `S::Failed` matches
///   `Failed(String)` and `Failed { .. }` alike.
/// * Timeout durations must be constant expressions (`Duration::from_secs(5)`):
///   they are part of the machine's `'static` table, and so are the state and
///   event types' variant lists: `S` and `E` must be concrete types (not
///   generic parameters of the enclosing function).
///
/// Compile-time checks, each pointing at the offending tokens: a state,
/// event, target or terminal that is not a variant of the declared enum; a
/// `sync` handler whose result is not a `Transition` (or its `Result`); two
/// handlers for one (state, event); two `on_entry`, `on_exit` or `timeout`
/// clauses in one state; two blocks for one state; a state listed twice in
/// `terminal`; a duplicate, unknown or missing header key.
#[proc_macro]
pub fn fsm(input: TokenStream) -> TokenStream {
    match fsm::fsm(input.into()) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Derives `troupe::fsm::StateVariant` for an enum: `variant_name()` returns
/// the variant's identifier and `VARIANTS` lists them all.
#[proc_macro_derive(StateVariant)]
pub fn derive_state_variant(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    variant::derive(input, "StateVariant")
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Derives `troupe::fsm::EventVariant` for an enum: `variant_name()` returns
/// the variant's identifier and `VARIANTS` lists them all.
#[proc_macro_derive(EventVariant)]
pub fn derive_event_variant(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    variant::derive(input, "EventVariant")
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}
