//! The drive loop: dispatch, feed the machine, map every failure to an event.

use std::pin::pin;

use tracing::Instrument;

use super::EventLoopDirective;
use super::error::{SupervisorError, SupervisorIdentity};
use super::panic::{catching, catching_sync};
use super::streak::FailureStreak;
use super::traits::Supervised;
use crate::fsm::{EventVariant, FsmAction, FsmError, StateMachine, StateVariant};

/// What one [`Driver::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `dispatch_state` returned `Continue`: nothing happened, call `step` again.
    Continued,
    /// The machine handled an event (a transition, a timeout or a failure):
    /// call `step` again.
    Handled,
    /// The component terminated and its completion event was written.
    Terminated,
}

impl Progress {
    /// Whether the loop goes on (anything but [`Progress::Terminated`]).
    pub fn is_running(self) -> bool {
        self != Progress::Terminated
    }
}

/// What a completed drive loop hands back.
pub struct LoopOutcome<T: super::Supervisor> {
    /// The supervisor, after its completion event was written.
    pub supervisor: T,
    /// The state the component terminated in.
    pub state: T::State,
    /// The context, as the last action left it.
    pub context: T::Context,
}

impl<T: super::Supervisor> std::fmt::Debug for LoopOutcome<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopOutcome")
            .field("supervisor", &self.supervisor.name())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Internal phases: the initial entry actions run on the first step, and
/// nothing runs after the loop ended (terminated or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fresh,
    Running,
    Ended,
}

/// What a dispatch produced: a directive, the state's deadline passing
/// first, or a failure message (an error or a panic).
enum Dispatched<E> {
    Directive(EventLoopDirective<E>),
    TimedOut,
    Failed(String),
}

type Machine<T> = StateMachine<
    <T as super::Supervisor>::State,
    <T as super::Supervisor>::Event,
    <T as super::Supervisor>::Context,
    <T as super::Supervisor>::Action,
>;

/// A supervised component's drive loop, one step at a time, for hosts (such
/// as a ractor actor) that interleave it with other work. `run` is a loop
/// of steps over this.
///
/// Each [`step`](Self::step) makes one `dispatch_state` call (raced against
/// the current state's `timeout`, which cancels the dispatch and fires
/// `handle_timeout`) and carries out what it asks for, mapping every failure
/// on the way into the supervisor's failure event. The driver is a plain
/// value: no task, no channel, nothing runs between steps.
///
/// Cancelling a step (dropping its future, e.g. in `tokio::select!`) while
/// `dispatch_state` is pending is as safe as that dispatch is (the external
/// event wrappers' waits are: no event is lost). Once the machine has
/// handled an event, cancelling leaves the rest of that step's actions
/// unrun; once `Terminate` was dispatched the driver has ended, so a
/// completion is never written twice.
pub struct Driver<T: Supervised> {
    supervisor: T,
    machine: Machine<T>,
    context: T::Context,
    phase: Phase,
    streak: FailureStreak<T::State>,
    span: tracing::Span,
}

impl<T: Supervised> Driver<T> {
    /// Builds the machine (`build_state_machine(initial_state)`); nothing runs yet.
    pub fn new(supervisor: T, initial_state: T::State, context: T::Context) -> Self {
        let machine = supervisor.build_state_machine(initial_state);
        let span = tracing::info_span!(
            "supervise",
            supervisor = supervisor.name(),
            writer = %supervisor.writer_id(),
            stage = supervisor.stage_id().map(|s| s.get()),
        );
        Driver {
            supervisor,
            machine,
            context,
            phase: Phase::Fresh,
            streak: FailureStreak::default(),
            span,
        }
    }

    /// The current state.
    pub fn state(&self) -> &T::State {
        self.machine.state()
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &T {
        &self.supervisor
    }

    /// The context.
    pub fn context(&self) -> &T::Context {
        &self.context
    }

    /// Whether the loop ended (terminated, or stopped with an error).
    pub fn has_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The supervisor, final state and context.
    pub fn into_outcome(self) -> LoopOutcome<T> {
        LoopOutcome {
            state: self.machine.state().clone(),
            supervisor: self.supervisor,
            context: self.context,
        }
    }

    /// Runs one iteration; the first also runs the initial state's entry actions.
    ///
    /// Returns [`Progress::Terminated`] once `Terminate` was dispatched and the
    /// completion event written. An error ends the loop; any later call
    /// returns [`SupervisorError::AlreadyEnded`] without running anything.
    pub async fn step(&mut self) -> Result<Progress, SupervisorError> {
        if self.phase == Phase::Ended {
            return Err(SupervisorError::AlreadyEnded { who: self.who() });
        }
        let span = self.span.clone();
        let result = self.step_inner().instrument(span).await;
        match &result {
            Ok(Progress::Continued | Progress::Handled) => {}
            Ok(Progress::Terminated) => self.phase = Phase::Ended,
            Err(error) => {
                self.phase = Phase::Ended;
                let _entered = self.span.enter();
                tracing::error!(%error, "supervised component stopped");
            }
        }
        result
    }

    /// The arms that handle an event, fail or complete are boxed: they are
    /// rare next to `Continue`, and inline they would size this future (and
    /// so every idle stage actor's task) for the largest of them.
    async fn step_inner(&mut self) -> Result<Progress, SupervisorError> {
        if self.phase == Phase::Fresh {
            Box::pin(self.start()).await?;
        }
        match self.dispatch().await {
            Dispatched::Directive(EventLoopDirective::Continue) => {
                self.streak.clear();
                Ok(Progress::Continued)
            }
            Dispatched::Directive(EventLoopDirective::Transition(event)) => {
                Box::pin(self.handle_event(event)).await?;
                Ok(Progress::Handled)
            }
            Dispatched::TimedOut => {
                Box::pin(self.handle_timeout()).await?;
                Ok(Progress::Handled)
            }
            Dispatched::Directive(EventLoopDirective::Terminate) => Box::pin(self.complete()).await,
            Dispatched::Failed(failure) => {
                Box::pin(self.fail(failure)).await?;
                Ok(Progress::Handled)
            }
        }
    }

    /// The first step: runs the initial state's entry actions.
    async fn start(&mut self) -> Result<(), SupervisorError> {
        self.phase = Phase::Running;
        let Driver {
            machine, context, ..
        } = &mut *self;
        let entered = catching_sync(|| machine.enter(context));
        self.publish_state();
        match entered {
            Ok(actions) => self.run_actions_or_fail(actions).await,
            Err(panic) => {
                let state = self.machine.state().variant_name();
                self.fail(format!("entry hook of state `{state}` panicked: {panic}"))
                    .await
            }
        }
    }

    async fn handle_event(&mut self, event: T::Event) -> Result<(), SupervisorError> {
        let event_name = event.variant_name();
        let handled = catching(pin!(self.machine.handle(event, &mut self.context))).await;
        self.after_handle(handled, event_name).await
    }

    async fn handle_timeout(&mut self) -> Result<(), SupervisorError> {
        let handled = catching(pin!(self.machine.handle_timeout(&mut self.context))).await;
        self.after_handle(handled, "<timeout>").await
    }

    /// One `dispatch_state` call, raced against the state's deadline if it has one.
    async fn dispatch(&mut self) -> Dispatched<T::Event> {
        let Driver {
            supervisor,
            machine,
            context,
            ..
        } = self;
        let state = machine.state();
        let state_name = state.variant_name();
        let dispatch = catching(supervisor.dispatch_state(state, context));
        let outcome = if machine.deadline().is_some() {
            tokio::select! {
                biased;
                outcome = dispatch => outcome,
                () = machine.wait_deadline() => {
                    tracing::debug!(state = state_name, "state timed out; dispatch cancelled");
                    return Dispatched::TimedOut;
                }
            }
        } else {
            dispatch.await
        };
        match outcome {
            Ok(Ok(directive)) => Dispatched::Directive(directive),
            Ok(Err(error)) => Dispatched::Failed(error.to_string()),
            Err(panic) => Dispatched::Failed(format!(
                "dispatch_state panicked in state `{state_name}`: {panic}"
            )),
        }
    }

    /// Carries on after `handle`/`handle_timeout` of an ordinary event: run
    /// its actions, or report the FSM error or panic as one failure.
    async fn after_handle(
        &mut self,
        handled: Result<Result<Vec<T::Action>, FsmError>, String>,
        event_name: &'static str,
    ) -> Result<(), SupervisorError> {
        self.publish_state();
        match handled {
            Ok(Ok(actions)) => self.run_actions_or_fail(actions).await,
            Ok(Err(error)) => self.fail(error.to_string()).await,
            Err(panic) => {
                let state = self.machine.state().variant_name();
                let failure = format!(
                    "handler for event `{event_name}` panicked in state `{state}`: {panic}"
                );
                self.fail(failure).await
            }
        }
    }

    async fn run_actions_or_fail(
        &mut self,
        actions: Vec<T::Action>,
    ) -> Result<(), SupervisorError> {
        match self.run_actions(actions).await {
            Ok(()) => {
                // A step without any failure: the component made progress.
                self.streak.clear();
                Ok(())
            }
            Err(failure) => self.fail(failure).await,
        }
    }

    /// The failure path: feed `event_for_action_error(failure)` to the
    /// machine and run its actions; a failing action reports again. Ends the
    /// loop when the failure event cannot be handled or the same failure
    /// repeats without progress.
    async fn fail(&mut self, mut failure: String) -> Result<(), SupervisorError> {
        loop {
            let state = self.machine.state().variant_name();
            let count = self.streak.record(&failure, self.machine.state());
            tracing::warn!(state, %failure, count, "failure mapped to the failure event");
            if count > super::MAX_IDENTICAL_FAILURES {
                return Err(SupervisorError::RepeatedFailure {
                    who: self.who(),
                    state,
                    count: super::MAX_IDENTICAL_FAILURES,
                    failure,
                });
            }
            let supervisor = &self.supervisor;
            let event = match catching_sync(|| supervisor.event_for_action_error(failure.clone())) {
                Ok(event) => event,
                Err(panic) => {
                    return Err(SupervisorError::FailureEventPanicked {
                        who: self.who(),
                        state,
                        failure,
                        panic,
                    });
                }
            };
            let event_name = event.variant_name();
            let handled = catching(pin!(self.machine.handle(event, &mut self.context))).await;
            self.publish_state();
            let actions = match handled {
                Ok(Ok(actions)) => actions,
                Ok(Err(source)) => {
                    return Err(self.failure_unhandled(state, event_name, failure, source));
                }
                Err(panic) => {
                    let source = FsmError::HandlerFailed {
                        state,
                        event: event_name,
                        message: format!("panicked: {panic}"),
                    };
                    return Err(self.failure_unhandled(state, event_name, failure, source));
                }
            };
            match self.run_actions(actions).await {
                Ok(()) => return Ok(()),
                Err(next) => failure = next,
            }
        }
    }

    fn failure_unhandled(
        &self,
        state: &'static str,
        event: &'static str,
        failure: String,
        source: FsmError,
    ) -> SupervisorError {
        SupervisorError::FailureUnhandled {
            who: self.who(),
            state,
            event,
            failure,
            source,
        }
    }

    /// Runs `actions` in order, each guarded against panics: through
    /// [`FsmAction::execute_now`] when it answers there, else by awaiting
    /// [`FsmAction::execute`], as `StateMachine::execute_actions` does; stops
    /// at the first failure and returns its description (later actions are
    /// dropped, which is traced with their number).
    async fn run_actions(&mut self, actions: Vec<T::Action>) -> Result<(), String> {
        let total = actions.len();
        for (index, action) in actions.iter().enumerate() {
            let context = &mut self.context;
            let result = match catching_sync(|| action.execute_now(context)) {
                Ok(Some(result)) => Ok(result),
                Ok(None) => catching(action.execute(context)).await,
                Err(panic) => Err(panic),
            };
            let message = match result {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error.into_action_message(),
                Err(panic) => format!("panicked: {panic}"),
            };
            // Same wording as `StateMachine::execute_actions`, plus panics.
            let failure = FsmError::in_batch(message, index, total);
            tracing::warn!(%failure, "action failed; the rest of its batch is dropped");
            return Err(failure.to_string());
        }
        Ok(())
    }

    /// `Terminate`: write the completion event, once. The loop ends before
    /// the write starts, so even a cancelled step never writes twice.
    async fn complete(&mut self) -> Result<Progress, SupervisorError> {
        self.phase = Phase::Ended;
        tracing::info!(
            state = self.machine.state().variant_name(),
            "terminating; writing completion"
        );
        match catching(self.supervisor.write_completion_event()).await {
            Ok(Ok(())) => Ok(Progress::Terminated),
            Ok(Err(source)) => Err(SupervisorError::CompletionWrite {
                who: self.who(),
                source,
            }),
            Err(panic) => Err(SupervisorError::CompletionPanicked {
                who: self.who(),
                panic,
            }),
        }
    }

    fn publish_state(&self) {
        if let Some(watcher) = self.supervisor.state_watcher()
            && watcher.publish(self.machine.state())
        {
            tracing::debug!(
                state = self.machine.state().variant_name(),
                "state published"
            );
        }
    }

    fn who(&self) -> SupervisorIdentity {
        SupervisorIdentity {
            name: self.supervisor.name().to_owned(),
            writer: self.supervisor.writer_id(),
            stage: self.supervisor.stage_id(),
        }
    }
}
