//! The error type of the state-machine layer.

use std::time::Duration;

/// Everything that can go wrong while a [`StateMachine`](super::StateMachine)
/// handles an event or runs actions.
///
/// Handlers and actions build their own failures with [`FsmError::handler`] and
/// [`FsmError::action`]; the machine fills in where the failure happened
/// (state, event, action position) before returning it, so the message a
/// caller sees always names the place to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsmError {
    /// No handler (state-specific, any-state or `unhandled` hook) accepts this
    /// event in the current state. The state did not change.
    #[error("no handler for event `{event}` in state `{state}`")]
    UnhandledEvent {
        /// Variant name of the current state.
        state: &'static str,
        /// Variant name of the rejected event.
        event: &'static str,
    },

    /// A handler returned an error. The state did not change.
    #[error("handler for event `{event}` in state `{state}` failed: {message}")]
    HandlerFailed {
        /// Variant name of the state whose handler failed (filled in by the machine).
        state: &'static str,
        /// Variant name of the event being handled (filled in by the machine).
        event: &'static str,
        /// What the handler reported.
        message: String,
    },

    /// A handler moved to a state that is not among the targets it declared
    /// (`on E::X => [S::A, S::B] ...`). The state did not change.
    #[error(
        "handler for event `{event}` in state `{state}` moved to `{target}`, \
         which is not one of its declared targets {declared:?}"
    )]
    UndeclaredTarget {
        /// Variant name of the current state.
        state: &'static str,
        /// Variant name of the event being handled.
        event: &'static str,
        /// Variant name of the state the handler returned.
        target: &'static str,
        /// The targets the handler declared.
        declared: &'static [&'static str],
    },

    /// An action failed. Actions after it in the same batch were not run.
    #[error("action {index} of {total} failed ({dropped} later action(s) dropped): {message}")]
    ActionFailed {
        /// Zero-based position of the failed action in its batch (filled in by the machine).
        index: usize,
        /// Number of actions in the batch (filled in by the machine).
        total: usize,
        /// Number of actions after the failed one that were not run.
        dropped: usize,
        /// What the action reported.
        message: String,
    },

    /// The current state declared `timeout <duration>;` without a handler and
    /// its deadline was reached. The state did not change.
    #[error("state `{state}` timed out after {after:?}")]
    Timeout {
        /// Variant name of the state that timed out.
        state: &'static str,
        /// The state's declared timeout.
        after: Duration,
    },

    /// [`StateMachine::handle_timeout`](super::StateMachine::handle_timeout) was
    /// called while the current state declares no timeout.
    #[error("state `{state}` declares no timeout")]
    NoTimeout {
        /// Variant name of the current state.
        state: &'static str,
    },
}

impl FsmError {
    /// A handler failure with `message`; the machine adds the state and event.
    ///
    /// ```
    /// # use troupe::fsm::FsmError;
    /// let e = FsmError::handler("quantity must be positive");
    /// assert!(e.to_string().contains("quantity must be positive"));
    /// ```
    pub fn handler(message: impl std::fmt::Display) -> Self {
        FsmError::HandlerFailed {
            state: "?",
            event: "?",
            message: message.to_string(),
        }
    }

    /// An action failure with `message`; the machine adds the action's position.
    pub fn action(message: impl std::fmt::Display) -> Self {
        FsmError::ActionFailed {
            index: 0,
            total: 0,
            dropped: 0,
            message: message.to_string(),
        }
    }

    /// The error for an event that nothing handles; useful in an `unhandled` hook
    /// that only accepts some events.
    pub fn unhandled(state: &'static str, event: &'static str) -> Self {
        FsmError::UnhandledEvent { state, event }
    }

    /// Action `index` of a batch of `total` failed with `message`; the
    /// actions after it are dropped. Every runner of action batches reports
    /// a failure with this, so they all word it alike.
    pub(crate) fn in_batch(message: String, index: usize, total: usize) -> Self {
        FsmError::ActionFailed {
            index,
            total,
            dropped: total - index - 1,
            message,
        }
    }

    /// What an action that returned this error reported: its own message
    /// for an action failure, else the error's text.
    pub(crate) fn into_action_message(self) -> String {
        match self {
            FsmError::ActionFailed { message, .. } => message,
            other => other.to_string(),
        }
    }
}
