//! The running machine: current state, dispatch, hooks and the state timer.

use std::fmt;
use std::future::Future;
use std::mem::{discriminant, take};
use std::time::Duration;

use tokio::time::Instant;

use super::generated::{Behavior, Dispatched};
use super::verify::TIMEOUT_CLAUSE as TIMEOUT_EVENT;
use super::{
    EventVariant, FsmAction, FsmContext, FsmError, FsmTable, StateVariant, Transition, VerifyReport,
};

/// A state machine built by [`fsm!`](super::fsm): its current state, the
/// declared table and the generated dispatch code.
///
/// * [`handle`](Self::handle) runs the handler for an event and moves to the
///   state it returns ([`handle_now`](Self::handle_now) does it without a
///   future when the handler is synchronous); it returns the actions to run, in the order
///   *exit hook of the old state, transition, entry hook of the new state*.
///   Hooks run only when the state's variant changes; a move to the same
///   variant (a self-transition) keeps the state's timer and runs no hooks.
/// * [`execute_actions`](Self::execute_actions) runs those actions.
/// * The timer of a state with a `timeout` clause starts when the machine
///   enters it and again each time the timeout fires; the host awaits
///   [`wait_deadline`](Self::wait_deadline) (or reads [`deadline`](Self::deadline))
///   and then calls [`handle_timeout`](Self::handle_timeout).
/// * The initial state's `on_entry` actions are returned by [`enter`](Self::enter),
///   or, if the host never calls it, ahead of the first successful transition.
///
/// On any error the state and pending entry actions are unchanged (firing a
/// timeout restarts the state's timer even when it fails, so a host that
/// waits on the deadline never spins).
pub struct StateMachine<S, E, C, A> {
    state: S,
    entered: bool,
    pending_entry: Vec<A>,
    deadline: Option<Instant>,
    /// Whether any clause declares targets; spares the others the check.
    checks_targets: bool,
    /// `!checks_targets && pending_entry.is_empty()`, kept in one flag so
    /// the common case of `handle` tests one byte.
    settles_plainly: bool,
    initial: &'static str,
    table: &'static FsmTable,
    behavior: Box<dyn Behavior<S, E, C, A>>,
}

impl<S, E, C, A> StateMachine<S, E, C, A>
where
    S: StateVariant,
{
    pub(crate) fn from_behavior(
        initial: S,
        table: &'static FsmTable,
        behavior: Box<dyn Behavior<S, E, C, A>>,
    ) -> Self {
        let mut machine = StateMachine {
            initial: initial.variant_name(),
            state: initial,
            entered: false,
            pending_entry: Vec::new(),
            deadline: None,
            checks_targets: table.handlers.iter().any(|h| h.targets.is_some())
                || table.unhandled_targets.is_some(),
            settles_plainly: false,
            table,
            behavior,
        };
        machine.arm_timer();
        machine.update_settles_plainly();
        machine
    }

    /// Recomputes [`settles_plainly`](Self::settles_plainly); called wherever
    /// `pending_entry` changes.
    fn update_settles_plainly(&mut self) {
        self.settles_plainly = !self.checks_targets && self.pending_entry.is_empty();
    }

    /// The current state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The table the `fsm!` invocation declared.
    pub fn table(&self) -> &'static FsmTable {
        self.table
    }

    /// Variant name of the state the machine was built with.
    pub fn initial_state_name(&self) -> &'static str {
        self.initial
    }

    /// Whether the current state is one of the declared terminal states
    /// (`terminal: S::A, S::B;` in the header).
    pub fn is_terminal(&self) -> bool {
        self.table.is_terminal(self.state.variant_name())
    }

    /// Checks the declared graph like [`FsmTable::verify`], from the state
    /// this machine was built with (known even when the header's `initial:`
    /// is not a path).
    // A check run once, in a test or at start-up: the report is read, not
    // passed up a hot path, so it is returned unboxed.
    #[allow(clippy::result_large_err)]
    pub fn verify(&self) -> Result<(), VerifyReport> {
        self.table.verify_from(Some(self.initial))
    }

    /// Panics with the readable [`VerifyReport`] when [`verify`](Self::verify)
    /// finds something; meant for a `#[test]`.
    #[track_caller]
    pub fn assert_verified(&self) {
        if let Err(report) = self.verify() {
            panic!("fsm! machine over `{}`: {report}", self.table.state_type);
        }
    }

    /// The declared table as a Mermaid `stateDiagram-v2`; see [`FsmTable::to_mermaid`].
    pub fn to_mermaid(&self) -> String {
        self.table.to_mermaid(Some(self.initial))
    }

    /// When the current state's timeout fires, if it declares one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The current state's declared timeout, if any.
    pub fn state_timeout(&self) -> Option<Duration> {
        self.behavior
            .timeout_index(&self.state)
            .map(|i| self.table.timeouts[i].after)
    }

    /// Whether the current state's deadline has passed.
    pub fn is_timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| d <= Instant::now())
    }

    /// Completes when the current state's deadline passes; never completes
    /// when the state has no timeout. Cancel-safe, so it fits `tokio::select!`
    /// next to the host's event source.
    pub async fn wait_deadline(&self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// Puts the machine in `state`, as a host resuming it from a journal
    /// does: no hook runs (the initial state's `on_entry` ran when the
    /// machine first started), and the state's timer is set to `deadline`
    /// (`None`: armed anew from now). A state without a `timeout` clause
    /// has no timer, whatever `deadline` says; a deadline in the past
    /// fires at the host's next look ([`is_timed_out`](Self::is_timed_out)).
    pub fn resume(&mut self, state: S, deadline: Option<Instant>) {
        self.state = state;
        self.entered = true;
        self.pending_entry.clear();
        self.update_settles_plainly();
        self.arm_timer();
        if self.deadline.is_some() && deadline.is_some() {
            self.deadline = deadline;
        }
    }

    fn arm_timer(&mut self) {
        self.deadline = self
            .behavior
            .timeout_index(&self.state)
            .map(|i| Instant::now() + self.table.timeouts[i].after);
    }
}

impl<S, E, C, A> StateMachine<S, E, C, A>
where
    S: StateVariant + Send,
    E: EventVariant + Send,
    C: FsmContext + Send,
    A: Send,
{
    /// Runs the initial state's `on_entry` hook (once) and returns its actions.
    /// Later calls, and calls after a successful transition, return nothing.
    pub fn enter(&mut self, ctx: &mut C) -> Vec<A> {
        self.enter_quietly(ctx);
        let pending = take(&mut self.pending_entry);
        self.update_settles_plainly();
        pending
    }

    /// Handles `event`: runs the current state's handler for it (else the
    /// any-state handler, else the `unhandled` hook), moves to the state it
    /// returns and returns the actions to run.
    ///
    /// Errors: [`FsmError::UnhandledEvent`] when nothing accepts the event,
    /// [`FsmError::HandlerFailed`] (or whatever the handler returned),
    /// [`FsmError::UndeclaredTarget`]. The state is unchanged on error.
    pub async fn handle(&mut self, event: E, ctx: &mut C) -> Result<Vec<A>, FsmError> {
        self.enter_quietly(ctx);
        // A synchronous handler has already run here: no future made.
        let result = match self.behavior.dispatch(&self.state, &event, ctx, true) {
            Dispatched::Later(future) => future.await,
            Dispatched::Now(result) => result,
            Dispatched::Unhandled | Dispatched::Deferred => {
                return Err(*self.unhandled_error(&event));
            }
        };
        self.conclude(result, &event, ctx)
    }

    /// Handles `event` at once when the clause that takes it is synchronous
    /// (`sync |s, e, c| ...`), like [`handle`](Self::handle) but with no
    /// future: `Some` with what `handle` would return. `None` when the
    /// clause is async: it was not run, nothing changed (but the initial
    /// state's `on_entry` hook, which runs once either way), and the caller
    /// passes the event to `handle`. An event nothing handles gives
    /// `Some(Err(FsmError::UnhandledEvent))`.
    ///
    /// Run the returned actions with [`execute_actions`](Self::execute_actions)
    /// (its future allocates nothing when every action answers
    /// [`FsmAction::execute_now`]).
    pub fn handle_now(&mut self, event: &E, ctx: &mut C) -> Option<Result<Vec<A>, FsmError>> {
        self.enter_quietly(ctx);
        let result = match self.behavior.dispatch(&self.state, event, ctx, false) {
            Dispatched::Now(result) => result,
            Dispatched::Later(_) | Dispatched::Deferred => return None,
            Dispatched::Unhandled => return Some(Err(*self.unhandled_error(event))),
        };
        Some(self.conclude(result, event, ctx))
    }

    /// Settles a handler's result: the common case (same variant, nothing
    /// to check or prepend) inline, everything else in `settle`, out of
    /// line. The slow paths return their error boxed so the result is not
    /// copied through a temporary (BENCHMARKS.md, "FSM dispatch").
    #[inline(always)]
    fn conclude(
        &mut self,
        result: Result<Transition<S, A>, FsmError>,
        event: &E,
        ctx: &mut C,
    ) -> Result<Vec<A>, FsmError> {
        match result {
            Ok(Transition {
                next_state,
                actions,
            }) if self.plain_move(&next_state) => {
                self.state = next_state;
                Ok(actions)
            }
            result => self.settle(result, event, ctx).map_err(|error| *error),
        }
    }

    /// Whether moving to `next` needs nothing but storing it: no declared
    /// targets to check, no pending entry actions, same variant.
    #[inline]
    fn plain_move(&self, next: &S) -> bool {
        self.settles_plainly && discriminant(&self.state) == discriminant(next)
    }

    /// Applies what a handler returned for `event` when it is not a
    /// [`plain_move`](Self::plain_move). The targets checked are those of
    /// the clause dispatch picked (for an event that reached the `unhandled`
    /// hook, the hook's own).
    #[inline(never)]
    fn settle(
        &mut self,
        result: Result<Transition<S, A>, FsmError>,
        event: &E,
        ctx: &mut C,
    ) -> Result<Vec<A>, Box<FsmError>> {
        let transition = match result {
            Ok(transition) => transition,
            Err(error) => return Err(Box::new(self.locate(error, event.variant_name()))),
        };
        if self.checks_targets {
            self.check_target(event, &transition.next_state)
                .map_err(Box::new)?;
        }
        Ok(self.apply(transition, ctx))
    }

    #[cold]
    fn unhandled_error(&self, event: &E) -> Box<FsmError> {
        Box::new(FsmError::UnhandledEvent {
            state: self.state.variant_name(),
            event: event.variant_name(),
        })
    }

    /// Fires the current state's timeout now (the host decides when, usually
    /// after [`wait_deadline`](Self::wait_deadline)) and restarts its timer.
    ///
    /// With a handler, this is like [`handle`](Self::handle) for a timeout
    /// event. Without one (`timeout <duration>;`), it is
    /// [`FsmError::Timeout`]. A state without a timeout clause gives
    /// [`FsmError::NoTimeout`].
    pub async fn handle_timeout(&mut self, ctx: &mut C) -> Result<Vec<A>, FsmError> {
        let state = self.state.variant_name();
        let Some(index) = self.behavior.timeout_index(&self.state) else {
            return Err(FsmError::NoTimeout { state });
        };
        self.enter_quietly(ctx);
        self.arm_timer();
        let result = match self.behavior.on_timeout(&self.state, ctx, true) {
            Dispatched::Later(future) => future.await,
            Dispatched::Now(result) => result,
            Dispatched::Unhandled | Dispatched::Deferred => {
                let after = self.table.timeouts[index].after;
                return Err(FsmError::Timeout { state, after });
            }
        };
        self.conclude_timeout(index, result, ctx)
    }

    /// Fires the current state's timeout like [`handle_timeout`](Self::handle_timeout),
    /// without a future, when its handler is synchronous (or it has none):
    /// `Some` with what `handle_timeout` would return. `None` when the
    /// handler is async: it was not run, nothing changed, and the caller
    /// calls `handle_timeout`.
    pub fn handle_timeout_now(&mut self, ctx: &mut C) -> Option<Result<Vec<A>, FsmError>> {
        let state = self.state.variant_name();
        let Some(index) = self.behavior.timeout_index(&self.state) else {
            return Some(Err(FsmError::NoTimeout { state }));
        };
        self.enter_quietly(ctx);
        let result = match self.behavior.on_timeout(&self.state, ctx, false) {
            Dispatched::Now(result) => Some(result),
            Dispatched::Later(_) | Dispatched::Deferred => return None,
            Dispatched::Unhandled => None,
        };
        self.arm_timer();
        let Some(result) = result else {
            let after = self.table.timeouts[index].after;
            return Some(Err(FsmError::Timeout { state, after }));
        };
        Some(self.conclude_timeout(index, result, ctx))
    }

    /// Checks a timeout handler's result against the clause's declared
    /// targets and applies it.
    fn conclude_timeout(
        &mut self,
        index: usize,
        result: Result<Transition<S, A>, FsmError>,
        ctx: &mut C,
    ) -> Result<Vec<A>, FsmError> {
        let transition = result.map_err(|e| self.locate(e, TIMEOUT_EVENT))?;
        if let Some(declared) = self.table.timeouts[index].targets {
            let target = transition.next_state.variant_name();
            if !declared.contains(&target) {
                return Err(FsmError::UndeclaredTarget {
                    state: self.state.variant_name(),
                    event: TIMEOUT_EVENT,
                    target,
                    declared,
                });
            }
        }
        Ok(self.apply(transition, ctx))
    }

    #[inline]
    fn enter_quietly(&mut self, ctx: &mut C) {
        if !self.entered {
            self.enter_now(ctx);
        }
    }

    #[cold]
    #[inline(never)]
    fn enter_now(&mut self, ctx: &mut C) {
        self.entered = true;
        if !self.table.entry_hooks.is_empty() {
            self.pending_entry = self.behavior.on_entry(&self.state, ctx);
            self.update_settles_plainly();
        }
    }

    /// Moves to the transition's state and assembles the actions in order:
    /// pending initial entry, exit of the old state, transition, entry of the new.
    #[inline(never)]
    fn apply(&mut self, transition: Transition<S, A>, ctx: &mut C) -> Vec<A> {
        let changed = discriminant(&self.state) != discriminant(&transition.next_state);
        let mut actions = take(&mut self.pending_entry);
        self.update_settles_plainly();
        if !changed {
            self.state = transition.next_state;
            if actions.is_empty() {
                return transition.actions;
            }
            actions.extend(transition.actions);
            return actions;
        }
        if !self.table.exit_hooks.is_empty() {
            actions.extend(self.behavior.on_exit(&self.state, ctx));
        }
        if actions.is_empty() {
            actions = transition.actions;
        } else {
            actions.extend(transition.actions);
        }
        self.state = transition.next_state;
        if !self.table.entry_hooks.is_empty() {
            actions.extend(self.behavior.on_entry(&self.state, ctx));
        }
        self.arm_timer();
        actions
    }

    #[inline(never)]
    fn check_target(&self, event: &E, next: &S) -> Result<(), FsmError> {
        let Some(declared) = self.behavior.declared_targets(&self.state, event) else {
            return Ok(());
        };
        let target = next.variant_name();
        if declared.contains(&target) {
            return Ok(());
        }
        Err(FsmError::UndeclaredTarget {
            state: self.state.variant_name(),
            event: event.variant_name(),
            target,
            declared,
        })
    }

    #[cold]
    #[inline(never)]
    fn locate(&self, error: FsmError, event: &'static str) -> FsmError {
        match error {
            FsmError::HandlerFailed { message, .. } => FsmError::HandlerFailed {
                state: self.state.variant_name(),
                event,
                message,
            },
            other => other,
        }
    }
}

impl<S, E, C, A> StateMachine<S, E, C, A>
where
    C: Send,
    A: FsmAction<Context = C>,
{
    /// Runs `actions` in order against `ctx`: each through
    /// [`FsmAction::execute_now`] when it answers there, else by awaiting
    /// [`FsmAction::execute`]. Stops at the first failure and returns it as
    /// [`FsmError::ActionFailed`] with the failed action's position and the
    /// number of later actions dropped (also traced).
    // Not an `async fn`: that future would also hold `&self`, which the loop
    // never reads; this one holds only the actions and `ctx`, and measured
    // faster (BENCHMARKS.md, "FSM dispatch").
    #[allow(clippy::manual_async_fn)]
    pub fn execute_actions<'a>(
        &'a self,
        actions: Vec<A>,
        ctx: &'a mut C,
    ) -> impl Future<Output = Result<(), FsmError>> + 'a {
        async move {
            let total = actions.len();
            for (index, action) in actions.iter().enumerate() {
                let result = match action.execute_now(ctx) {
                    Some(result) => result,
                    None => action.execute(ctx).await,
                };
                if let Err(error) = result {
                    return Err(*action_failed(error, index, total));
                }
            }
            Ok(())
        }
    }
}

/// The error path of `execute_actions`, kept out of its loop.
#[cold]
#[inline(never)]
fn action_failed(error: FsmError, index: usize, total: usize) -> Box<FsmError> {
    let failure = FsmError::in_batch(error.into_action_message(), index, total);
    tracing::warn!(%failure, "action failed; later actions dropped");
    Box::new(failure)
}

impl<S: fmt::Debug, E, C, A> fmt::Debug for StateMachine<S, E, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("state", &self.state)
            .field("deadline", &self.deadline)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}
