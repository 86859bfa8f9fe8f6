//! Why a drive loop ended without completing.

use std::fmt;

use super::traits::BoxError;
use crate::fsm::FsmError;
use crate::ids::{StageId, WriterId};

/// Who a [`SupervisorError`] is about: the supervisor's name, its writer and,
/// for a stage's supervisor, its stage id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorIdentity {
    /// [`Supervisor::name`](super::Supervisor::name).
    pub name: String,
    /// The writer of its completion event.
    pub writer: WriterId,
    /// [`Supervised::stage_id`](super::Supervised::stage_id): the stage, for
    /// a stage's supervisor.
    pub stage: Option<StageId>,
}

impl fmt::Display for SupervisorIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}", self.name, self.writer)?;
        if let Some(stage) = self.stage {
            write!(f, ", {stage}")?;
        }
        f.write_str(")")
    }
}

/// Why a drive loop (`run` or [`Driver::step`](super::Driver::step)) stopped
/// without completing. Every variant names the supervisor; none is ever
/// produced silently, each is also traced at `error` level.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The failure event (from `event_for_action_error`) could not be handled
    /// in the current state: the machine has no way to record the failure.
    #[error(
        "supervisor {who}: failure event `{event}` cannot be handled in state `{state}` \
         (while reporting: {failure}): {source}"
    )]
    FailureUnhandled {
        /// The supervisor.
        who: SupervisorIdentity,
        /// Variant name of the state the machine is in.
        state: &'static str,
        /// Variant name of the failure event.
        event: &'static str,
        /// The failure that was being reported.
        failure: String,
        /// Why the machine rejected the failure event.
        #[source]
        source: FsmError,
    },

    /// `event_for_action_error` itself panicked.
    #[error(
        "supervisor {who}: event_for_action_error panicked in state `{state}` \
         (while reporting: {failure}): {panic}"
    )]
    FailureEventPanicked {
        /// The supervisor.
        who: SupervisorIdentity,
        /// Variant name of the current state.
        state: &'static str,
        /// The failure that was being reported.
        failure: String,
        /// The panic message.
        panic: String,
    },

    /// The same failure repeated [`MAX_IDENTICAL_FAILURES`](super::MAX_IDENTICAL_FAILURES)
    /// times in a row without a state change or a successful step in between:
    /// the loop stopped instead of repeating the failing step forever.
    #[error(
        "supervisor {who}: the same failure repeated {count} times in state `{state}` \
         without progress: {failure}"
    )]
    RepeatedFailure {
        /// The supervisor.
        who: SupervisorIdentity,
        /// Variant name of the state it is stuck in.
        state: &'static str,
        /// How many identical failures in a row.
        count: u32,
        /// The repeated failure.
        failure: String,
    },

    /// `write_completion_event` failed; the completion may not be recorded.
    /// It was attempted exactly once: retrying is the caller's decision.
    #[error("supervisor {who}: writing the completion event failed: {source}")]
    CompletionWrite {
        /// The supervisor.
        who: SupervisorIdentity,
        /// What the write reported.
        #[source]
        source: BoxError,
    },

    /// `write_completion_event` panicked; the completion may not be recorded.
    #[error("supervisor {who}: writing the completion event panicked: {panic}")]
    CompletionPanicked {
        /// The supervisor.
        who: SupervisorIdentity,
        /// The panic message.
        panic: String,
    },

    /// [`Driver::step`](super::Driver::step) was called after the component
    /// terminated (or after the drive loop failed); nothing was run.
    #[error("supervisor {who}: the drive loop already ended")]
    AlreadyEnded {
        /// The supervisor.
        who: SupervisorIdentity,
    },
}
