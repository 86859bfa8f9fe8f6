//! What a handler returns: the next state and the actions to run.

use super::FsmError;

/// The outcome of a handler: the state to move to and the actions to run.
///
/// ```
/// use troupe::fsm::Transition;
/// let t: Transition<&str, u8> = Transition::to("Paid").with_action(1).with_action(2);
/// assert_eq!(t.next_state, "Paid");
/// assert_eq!(t.actions, vec![1, 2]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition<S, A> {
    /// The state the machine moves to.
    pub next_state: S,
    /// The actions to run, in order, after the move.
    pub actions: Vec<A>,
}

impl<S, A> Transition<S, A> {
    /// A move to `next_state` with no actions.
    pub fn to(next_state: S) -> Self {
        Transition {
            next_state,
            actions: Vec::new(),
        }
    }

    /// Adds one action after the ones already listed.
    pub fn with_action(mut self, action: A) -> Self {
        self.actions.push(action);
        self
    }

    /// Adds several actions after the ones already listed.
    pub fn with_actions(mut self, actions: impl IntoIterator<Item = A>) -> Self {
        self.actions.extend(actions);
        self
    }
}

/// What a synchronous handler (`on E::X => sync |s, e, c| ...`) may return:
/// a [`Transition`] (the handler cannot fail) or a
/// `Result<Transition, FsmError>` (the same result an async handler's future
/// gives). The machine turns either into the latter.
///
/// ```
/// use troupe::fsm::{FsmError, IntoHandlerResult, Transition};
/// let plain: Transition<&str, ()> = Transition::to("Paid");
/// assert_eq!(plain.into_handler_result(), Ok(Transition::to("Paid")));
/// let failed: Result<Transition<&str, ()>, FsmError> = Err(FsmError::handler("no"));
/// assert!(failed.into_handler_result().is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "a synchronous `fsm!` handler must return `Transition<{S}, {A}>` or `Result<Transition<{S}, {A}>, FsmError>`, not `{Self}`",
    label = "this handler returns `{Self}`",
    note = "an async handler is written without `sync` and returns `Box::pin(async move {{ .. }})`"
)]
pub trait IntoHandlerResult<S, A> {
    /// The handler's result as the machine settles it.
    fn into_handler_result(self) -> Result<Transition<S, A>, FsmError>;
}

impl<S, A> IntoHandlerResult<S, A> for Transition<S, A> {
    #[inline(always)]
    fn into_handler_result(self) -> Result<Transition<S, A>, FsmError> {
        Ok(self)
    }
}

impl<S, A> IntoHandlerResult<S, A> for Result<Transition<S, A>, FsmError> {
    #[inline(always)]
    fn into_handler_result(self) -> Result<Transition<S, A>, FsmError> {
        self
    }
}
