//! The wrapper that adds an external-event channel to a supervisor.

use async_trait::async_trait;

use super::EventLoopDirective;
use super::channel::{ExternalEventReceiver, Polled, StateWatcher};
use super::policy::{ExternalEventMode, ExternalEventPolicy};
use super::traits::{BoxError, DispatchResult, Supervised, Supervisor};
use crate::fsm::{StateMachine, StateVariant};
use crate::ids::{StageId, WriterId};

/// A supervisor whose `dispatch_state` first consults its
/// [`ExternalEventPolicy`] and the control channel, then (if no control event
/// applies) its inner supervisor. It is [`Supervised`] when the inner one is,
/// and publishes state changes to its [`StateWatcher`] when driven.
///
/// Per call of `dispatch_state`, by the mode of the current state:
/// * `Block`: wait for the next control event and return `Transition(event)`;
/// * `Poll`: return `Transition(event)` if one is queued, else delegate;
/// * `Ignore`: delegate; queued events stay queued;
/// * channel closed while blocking or polling:
///   [`on_external_event_channel_closed`](ExternalEventPolicy::on_external_event_channel_closed)
///   gives `Some(event)` → `Transition(event)`, `None` → delegate.
///
/// It never builds the inner supervisor's state machine to do so.
pub struct WithExternalEvents<I: Supervisor> {
    inner: I,
    receiver: ExternalEventReceiver<I::Event>,
    watcher: StateWatcher<I::State>,
}

impl<I: Supervisor> WithExternalEvents<I> {
    /// Wraps `inner`, reading control events from `receiver` and publishing
    /// its state to `watcher` (the three come from a
    /// [`ChannelBuilder`](super::ChannelBuilder)).
    pub fn new(
        inner: I,
        receiver: ExternalEventReceiver<I::Event>,
        watcher: StateWatcher<I::State>,
    ) -> Self {
        WithExternalEvents {
            inner,
            receiver,
            watcher,
        }
    }

    /// The wrapped supervisor.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// The wrapped supervisor, mutably.
    pub fn inner_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// The control events not yet taken.
    pub fn receiver(&self) -> &ExternalEventReceiver<I::Event> {
        &self.receiver
    }

    /// Unwraps into the inner supervisor, the receiver and the watcher.
    pub fn into_parts(self) -> (I, ExternalEventReceiver<I::Event>, StateWatcher<I::State>) {
        (self.inner, self.receiver, self.watcher)
    }
}

impl<I: ExternalEventPolicy> WithExternalEvents<I> {
    /// The control event this dispatch turns into, if any; `None` delegates.
    async fn control_event(&mut self, state: &I::State) -> Option<I::Event> {
        let closed = match I::external_event_mode(state) {
            ExternalEventMode::Ignore => return None,
            ExternalEventMode::Block => match self.receiver.next().await {
                Some(event) => return Some(event),
                None => true,
            },
            ExternalEventMode::Poll => match self.receiver.poll_now() {
                Polled::Event(event) => return Some(event),
                Polled::Empty => false,
                Polled::Closed => true,
            },
        };
        if !closed {
            return None;
        }
        let mapped = I::on_external_event_channel_closed(state);
        tracing::debug!(
            supervisor = self.inner.name(),
            state = state.variant_name(),
            mapped = mapped.is_some(),
            "control channel closed"
        );
        mapped
    }
}

impl<I: Supervisor> Supervisor for WithExternalEvents<I> {
    type State = I::State;
    type Event = I::Event;
    type Context = I::Context;
    type Action = I::Action;

    fn build_state_machine(
        &self,
        initial_state: Self::State,
    ) -> StateMachine<Self::State, Self::Event, Self::Context, Self::Action> {
        self.inner.build_state_machine(initial_state)
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn state_watcher(&self) -> Option<&StateWatcher<Self::State>> {
        Some(&self.watcher)
    }
}

impl<I: ExternalEventPolicy> ExternalEventPolicy for WithExternalEvents<I> {
    fn external_event_mode(state: &Self::State) -> ExternalEventMode {
        I::external_event_mode(state)
    }

    fn on_external_event_channel_closed(state: &Self::State) -> Option<Self::Event> {
        I::on_external_event_channel_closed(state)
    }
}

#[async_trait]
impl<I: Supervised + ExternalEventPolicy> Supervised for WithExternalEvents<I> {
    async fn dispatch_state(
        &mut self,
        state: &Self::State,
        context: &mut Self::Context,
    ) -> DispatchResult<Self::Event> {
        if let Some(event) = self.control_event(state).await {
            return Ok(EventLoopDirective::Transition(event));
        }
        self.inner.dispatch_state(state, context).await
    }

    fn writer_id(&self) -> WriterId {
        self.inner.writer_id()
    }

    async fn write_completion_event(&self) -> Result<(), BoxError> {
        self.inner.write_completion_event().await
    }

    fn event_for_action_error(&self, msg: String) -> Self::Event {
        self.inner.event_for_action_error(msg)
    }

    // Delegated, not defaulted: a wrapped stage must still name its stage.
    fn stage_id(&self) -> Option<StageId> {
        self.inner.stage_id()
    }
}
