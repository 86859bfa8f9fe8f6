//! Support for the code `fsm!` generates. Not a public API: names here may
//! change in any release. The macro turns each clause into a closure and
//! passes it through one of these functions, whose bounds give the closures
//! their higher-ranked signatures (so handler parameters need no annotations).

use std::future::Future;
use std::pin::Pin;

use super::{FsmTable, IntoHandlerResult, StateMachine, StateVariant, Transition};
use crate::fsm::FsmError;

/// The future a handler returns.
pub type HandlerFuture<'a, S, A> =
    Pin<Box<dyn Future<Output = Result<Transition<S, A>, FsmError>> + Send + 'a>>;

/// The targets a clause declared (`[S::A, S::B]`), if any; see [`HandlerSpec::targets`](super::HandlerSpec::targets).
pub type DeclaredTargets = Option<&'static [&'static str]>;

/// What dispatch found for an event (or a timeout). The clause's declared
/// targets are asked for separately, and only by machines that declare some.
pub enum Dispatched<'a, S, A> {
    /// No clause and no `unhandled` hook (for a timeout: no handler).
    Unhandled,
    /// A synchronous handler ran: its result, no future made.
    Now(Result<Transition<S, A>, FsmError>),
    /// An async handler's future, to await.
    Later(HandlerFuture<'a, S, A>),
    /// An async handler was found but dispatch was asked not to run async
    /// handlers (`run_async == false`): it was not called.
    Deferred,
}

/// The generated behaviour of a machine, with its closures' types erased.
pub trait Behavior<S, E, C, A>: Send + Sync {
    /// Runs the state-specific handler for `event`, else the any-state one,
    /// else the `unhandled` hook; an async one only when `run_async`.
    fn dispatch<'a>(
        &'a self,
        state: &'a S,
        event: &'a E,
        ctx: &'a mut C,
        run_async: bool,
    ) -> Dispatched<'a, S, A>;
    /// The targets declared by the clause `dispatch` picks for (`state`, `event`).
    fn declared_targets(&self, state: &S, event: &E) -> DeclaredTargets;
    /// Actions of `state`'s `on_entry` hook (empty without one).
    fn on_entry(&self, state: &S, ctx: &mut C) -> Vec<A>;
    /// Actions of `state`'s `on_exit` hook (empty without one).
    fn on_exit(&self, state: &S, ctx: &mut C) -> Vec<A>;
    /// Index of `state`'s clause in [`FsmTable::timeouts`].
    fn timeout_index(&self, state: &S) -> Option<usize>;
    /// Runs `state`'s timeout handler, if it has one; an async one only when `run_async`.
    fn on_timeout<'a>(
        &'a self,
        state: &'a S,
        ctx: &'a mut C,
        run_async: bool,
    ) -> Dispatched<'a, S, A>;
}

/// The closures of one `fsm!` invocation.
pub struct Generated<D, Tg, En, Ex, Ti, To> {
    dispatch: D,
    declared_targets: Tg,
    on_entry: En,
    on_exit: Ex,
    timeout_index: Ti,
    on_timeout: To,
}

impl<S, E, C, A, D, Tg, En, Ex, Ti, To> Behavior<S, E, C, A> for Generated<D, Tg, En, Ex, Ti, To>
where
    D: for<'a> Fn(&'a S, &'a E, &'a mut C, bool) -> Dispatched<'a, S, A> + Send + Sync,
    Tg: Fn(&S, &E) -> DeclaredTargets + Send + Sync,
    En: Fn(&S, &mut C) -> Vec<A> + Send + Sync,
    Ex: Fn(&S, &mut C) -> Vec<A> + Send + Sync,
    Ti: Fn(&S) -> Option<usize> + Send + Sync,
    To: for<'a> Fn(&'a S, &'a mut C, bool) -> Dispatched<'a, S, A> + Send + Sync,
{
    #[inline]
    fn dispatch<'a>(
        &'a self,
        state: &'a S,
        event: &'a E,
        ctx: &'a mut C,
        run_async: bool,
    ) -> Dispatched<'a, S, A> {
        (self.dispatch)(state, event, ctx, run_async)
    }
    fn declared_targets(&self, state: &S, event: &E) -> DeclaredTargets {
        (self.declared_targets)(state, event)
    }
    #[inline]
    fn on_entry(&self, state: &S, ctx: &mut C) -> Vec<A> {
        (self.on_entry)(state, ctx)
    }
    #[inline]
    fn on_exit(&self, state: &S, ctx: &mut C) -> Vec<A> {
        (self.on_exit)(state, ctx)
    }
    #[inline]
    fn timeout_index(&self, state: &S) -> Option<usize> {
        (self.timeout_index)(state)
    }
    fn on_timeout<'a>(
        &'a self,
        state: &'a S,
        ctx: &'a mut C,
        run_async: bool,
    ) -> Dispatched<'a, S, A> {
        (self.on_timeout)(state, ctx, run_async)
    }
}

/// Builds a machine from the generated table and closures.
#[allow(clippy::too_many_arguments)]
pub fn machine<S, E, C, A, D, Tg, En, Ex, Ti, To>(
    initial: S,
    table: &'static FsmTable,
    dispatch: D,
    declared_targets: Tg,
    on_entry: En,
    on_exit: Ex,
    timeout_index: Ti,
    on_timeout: To,
) -> StateMachine<S, E, C, A>
where
    S: StateVariant + Send + 'static,
    E: 'static,
    C: 'static,
    A: 'static,
    D: for<'a> Fn(&'a S, &'a E, &'a mut C, bool) -> Dispatched<'a, S, A> + Send + Sync + 'static,
    Tg: Fn(&S, &E) -> DeclaredTargets + Send + Sync + 'static,
    En: Fn(&S, &mut C) -> Vec<A> + Send + Sync + 'static,
    Ex: Fn(&S, &mut C) -> Vec<A> + Send + Sync + 'static,
    Ti: Fn(&S) -> Option<usize> + Send + Sync + 'static,
    To: for<'a> Fn(&'a S, &'a mut C, bool) -> Dispatched<'a, S, A> + Send + Sync + 'static,
{
    StateMachine::from_behavior(
        initial,
        table,
        Box::new(Generated {
            dispatch,
            declared_targets,
            on_entry,
            on_exit,
            timeout_index,
            on_timeout,
        }),
    )
}

/// Gives an `on` or `unhandled` handler closure its signature.
#[inline(always)]
pub fn handler<S, E, C, A, F>(f: F) -> F
where
    F: for<'a> Fn(&'a S, &'a E, &'a mut C) -> HandlerFuture<'a, S, A> + Send + Sync + 'static,
{
    f
}

/// Gives an `on_entry` / `on_exit` hook closure its signature.
#[inline(always)]
pub fn hook<S, C, A, F>(f: F) -> F
where
    F: Fn(&S, &mut C) -> Vec<A> + Send + Sync + 'static,
{
    f
}

/// Gives a `timeout ... => handler` closure its signature.
#[inline(always)]
pub fn timeout_handler<S, C, A, F>(f: F) -> F
where
    F: for<'a> Fn(&'a S, &'a mut C) -> HandlerFuture<'a, S, A> + Send + Sync + 'static,
{
    f
}

/// Gives a synchronous `on` or `unhandled` handler closure its signature
/// (`sync |s, e, c| ...`); its result is anything [`IntoHandlerResult`].
#[inline(always)]
pub fn sync_handler<S, E, C, A, R, F>(f: F) -> F
where
    F: for<'a> Fn(&'a S, &'a E, &'a mut C) -> R + Send + Sync + 'static,
    R: IntoHandlerResult<S, A>,
{
    f
}

/// Gives a synchronous `timeout ... => sync |s, c| ...` closure its signature.
#[inline(always)]
pub fn sync_timeout_handler<S, C, A, R, F>(f: F) -> F
where
    F: for<'a> Fn(&'a S, &'a mut C) -> R + Send + Sync + 'static,
    R: IntoHandlerResult<S, A>,
{
    f
}

/// A synchronous handler's result as dispatch returns it.
#[inline(always)]
pub fn now<S, A, R: IntoHandlerResult<S, A>>(result: R) -> Dispatched<'static, S, A> {
    Dispatched::Now(result.into_handler_result())
}
