//! Per-state rules for external (control) events.

use super::Supervisor;

/// How a state treats external events, asked before each `dispatch_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExternalEventMode {
    /// Wait for the next external event; do no work of its own meanwhile.
    Block,
    /// Take an external event if one is queued, else do the state's work.
    Poll,
    /// Do the state's work; queued events stay queued for a later state.
    Ignore,
}

/// The external-event rules of a supervisor, per state. Associated functions
/// (no `self`): the rules are a property of the state machine, not of one
/// running component.
pub trait ExternalEventPolicy: Supervisor {
    /// The mode of `state`.
    fn external_event_mode(state: &Self::State) -> ExternalEventMode;

    /// The event to feed when the channel is found closed (every sender
    /// dropped, nothing queued) in `state` while blocking or polling; `None`
    /// means the component no longer listens and does its own work instead.
    fn on_external_event_channel_closed(state: &Self::State) -> Option<Self::Event>;
}
