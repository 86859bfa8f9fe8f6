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
///     state: S; event: E; context: C; action: A;   // the four types
///     initial: <expr of type S>;
///
///     state S::Variant {                          // one block per state
///         on E::Variant => handler;               // run on this event in this state
///         on E::Other => [S::A, S::B] handler;    // ... declaring its possible targets
///         on_entry => |s, c| vec![...];           // actions when the state is entered
///         on_exit => |s, c| vec![...];            // actions when the state is left
///         timeout <const Duration> => handler;    // fires after that long in the state
///         timeout <const Duration>;               // ... or is FsmError::Timeout
///     }
///     state _ { on E::Variant => handler; }       // any state without its own handler
///     unhandled => handler;                       // anything else (default: FsmError::UnhandledEvent)
/// }
/// ```
///
/// * A handler is a closure `|state: &S, event: &E, ctx: &mut C|` returning
///   `Box::pin(async move { Ok(Transition { .. }) })` (a
///   `troupe::fsm::HandlerFuture`); a timeout handler takes `|state, ctx|`.
///   Handlers must be `Send + Sync + 'static` (use `move` to capture values);
///   work with `state`, `event` and `ctx` before the `async` block and move
///   owned values into it.
/// * Hooks are closures `|state: &S, ctx: &mut C| -> Vec<A>`.
/// * Variants are named by path without their fields: `S::Failed` matches
///   `Failed(String)` and `Failed { .. }` alike.
/// * Timeout durations must be constant expressions (`Duration::from_secs(5)`):
///   they are part of the machine's `'static` table.
///
/// Compile-time checks, each pointing at the offending tokens: a state or
/// event that is not a variant of the declared enum; two handlers for one
/// (state, event); two `on_entry`, `on_exit` or `timeout` clauses in one
/// state; two blocks for one state; a duplicate, unknown or missing header key.
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
