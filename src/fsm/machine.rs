//! The running machine: current state, dispatch, hooks and the state timer.

use std::fmt;
use std::future::Future;
use std::mem::{discriminant, take};
use std::time::Duration;

use tokio::time::Instant;

use super::generated::Behavior;
use super::{EventVariant, FsmAction, FsmContext, FsmError, FsmTable, StateVariant, Transition};

/// Event name used in errors raised by a state's timeout handler.
const TIMEOUT_EVENT: &str = "<timeout>";

/// A state machine built by [`fsm!`](super::fsm): its current state, the
/// declared table and the generated dispatch code.
///
/// * [`handle`](Self::handle) runs the handler for an event and moves to the
///   state it returns; it returns the actions to run, in the order
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
            checks_targets: table.handlers.iter().any(|h| h.targets.is_some()),
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
        let Some(future) = self.behavior.dispatch(&self.state, &event, ctx) else {
            return Err(*self.unhandled_error(&event));
        };
        // The common case (same variant, nothing to check or prepend) is
        // settled inline; everything else goes to `settle`, out of line. The
        // slow paths return their error boxed so this future's output is not
        // copied through a temporary (BENCHMARKS.md, "FSM dispatch").
        match future.await {
            Ok(Transition {
                next_state,
                actions,
            }) if self.plain_move(&next_state) => {
                self.state = next_state;
                Ok(actions)
            }
            result => self.settle(result, &event, ctx).map_err(|error| *error),
        }
    }

    /// Whether moving to `next` needs nothing but storing it: no declared
    /// targets to check, no pending entry actions, same variant.
    #[inline]
    fn plain_move(&self, next: &S) -> bool {
        self.settles_plainly && discriminant(&self.state) == discriminant(next)
    }

    /// Applies what a handler returned for `event` when it is not a
    /// [`plain_move`](Self::plain_move). Only clauses declare targets: an
    /// event that reached the `unhandled` hook has no clause in this state,
    /// so the target check passes it.
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
        let result = match self.behavior.on_timeout(&self.state, ctx) {
            Some(future) => future.await,
            None => {
                let after = self.table.timeouts[index].after;
                return Err(FsmError::Timeout { state, after });
            }
        };
        let transition = result.map_err(|e| self.locate(e, TIMEOUT_EVENT))?;
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
