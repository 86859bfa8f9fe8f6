//! What a handler returns: the next state and the actions to run.

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
