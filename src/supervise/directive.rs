//! What one call of `dispatch_state` asks the drive loop to do next.

/// The outcome of one `dispatch_state` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventLoopDirective<E> {
    /// Nothing to report: dispatch again (after yielding to the scheduler).
    Continue,
    /// Feed this event to the state machine and run the actions it returns.
    Transition(E),
    /// The component is finished: write its completion event once and stop.
    Terminate,
}
