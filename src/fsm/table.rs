//! The declared table of a machine: what `fsm!` saw, for introspection and diagrams.

use std::fmt::Write as _;
use std::time::Duration;

/// The table a `fsm!` invocation declared. Built at compile time; every
/// machine built by the same invocation shares one `'static` table.
///
/// Names are variant names (paths without their enum prefix and fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmTable {
    /// Name of the state type as written in the header.
    pub state_type: &'static str,
    /// Name of the event type as written in the header.
    pub event_type: &'static str,
    /// States that have a `state` block, in declaration order.
    pub states: &'static [&'static str],
    /// Events that some handler accepts, in order of first appearance.
    pub events: &'static [&'static str],
    /// Every `on` clause, in declaration order.
    pub handlers: &'static [HandlerSpec],
    /// States with an `on_entry` hook.
    pub entry_hooks: &'static [&'static str],
    /// States with an `on_exit` hook.
    pub exit_hooks: &'static [&'static str],
    /// Every `timeout` clause.
    pub timeouts: &'static [TimeoutSpec],
    /// Whether an `unhandled => ...` hook is declared.
    pub has_unhandled_hook: bool,
    /// The targets the `unhandled` hook declared (`unhandled => [S::A] handler;`), if any.
    pub unhandled_targets: Option<&'static [&'static str]>,
    /// Variant name of the initial state, when the header's `initial:` is a
    /// path to a variant (`S::Idle`, `S::Busy { .. }`, `S::Failed(..)`);
    /// `None` for any other expression (a variable, a function call).
    pub initial: Option<&'static str>,
    /// The states the header declared with `terminal: S::A, S::B;`.
    pub terminals: &'static [&'static str],
    /// Every variant of the state type ([`StateVariant::VARIANTS`](super::StateVariant::VARIANTS)).
    pub all_states: &'static [&'static str],
    /// Every variant of the event type ([`EventVariant::VARIANTS`](super::EventVariant::VARIANTS)).
    pub all_events: &'static [&'static str],
}

/// One `on Event => ...` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerSpec {
    /// The state the clause belongs to; `None` for the any-state clause (`state _`).
    pub state: Option<&'static str>,
    /// The event it handles.
    pub event: &'static str,
    /// The targets it declared with `[S::A, S::B]`, if any; the machine
    /// rejects a move to any other state with [`FsmError::UndeclaredTarget`](super::FsmError::UndeclaredTarget).
    pub targets: Option<&'static [&'static str]>,
    /// Whether the handler is synchronous (`sync |s, e, c| ...`).
    pub sync: bool,
}

/// One `timeout <duration> ...` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSpec {
    /// The state the clause belongs to.
    pub state: &'static str,
    /// How long the machine may stay in the state before the timeout fires.
    pub after: Duration,
    /// Whether a handler runs when it fires; without one, firing is
    /// [`FsmError::Timeout`](super::FsmError::Timeout).
    pub has_handler: bool,
    /// The targets its handler declared with `timeout D => [S::A] handler;`, if any.
    pub targets: Option<&'static [&'static str]>,
}

impl FsmTable {
    /// Whether `state` has its own handler for `event` (the any-state clause not counted).
    pub fn handles(&self, state: &str, event: &str) -> bool {
        self.handlers
            .iter()
            .any(|h| h.state == Some(state) && h.event == event)
    }

    /// Whether the any-state clause handles `event`.
    pub fn handles_in_any_state(&self, event: &str) -> bool {
        self.handlers
            .iter()
            .any(|h| h.state.is_none() && h.event == event)
    }

    /// The timeout clause of `state`, if it has one.
    pub fn timeout_of(&self, state: &str) -> Option<&TimeoutSpec> {
        self.timeouts.iter().find(|t| t.state == state)
    }

    /// Whether `state` is one of the declared terminal states.
    pub fn is_terminal(&self, state: &str) -> bool {
        self.terminals.contains(&state)
    }

    /// Renders the table as a Mermaid `stateDiagram-v2`.
    ///
    /// Handlers that declared targets become edges labelled with their event;
    /// handlers without declared targets (their next state is computed at run
    /// time) are listed inside their state as `on Event`. Any-state handlers
    /// are drawn from every state that does not handle the event itself.
    /// A timeout that declared targets becomes edges labelled `after <d>`;
    /// terminal states get an edge to `[*]`.
    /// `initial` names the initial state (`[*] -->` edge), if known.
    pub fn to_mermaid(&self, initial: Option<&str>) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        if let Some(initial) = initial {
            let _ = writeln!(out, "    [*] --> {initial}");
        }
        for state in self.states {
            for h in self.handlers.iter().filter(|h| h.state == Some(state)) {
                render_handler(&mut out, state, h);
            }
            for h in self.handlers.iter().filter(|h| h.state.is_none()) {
                if !self.handles(state, h.event) {
                    render_handler(&mut out, state, h);
                }
            }
            if self.entry_hooks.contains(state) {
                let _ = writeln!(out, "    {state} : entry / actions");
            }
            if self.exit_hooks.contains(state) {
                let _ = writeln!(out, "    {state} : exit / actions");
            }
            if let Some(t) = self.timeout_of(state) {
                match t.targets {
                    Some(targets) => {
                        for target in targets {
                            let _ = writeln!(out, "    {state} --> {target} : after {:?}", t.after);
                        }
                    }
                    None => {
                        let what = if t.has_handler { "handler" } else { "error" };
                        let _ = writeln!(out, "    {state} : after {:?} / {what}", t.after);
                    }
                }
            }
        }
        for state in self.terminals {
            let _ = writeln!(out, "    {state} --> [*]");
        }
        out
    }
}

fn render_handler(out: &mut String, state: &str, h: &HandlerSpec) {
    match h.targets {
        Some(targets) => {
            for target in targets {
                let _ = writeln!(out, "    {state} --> {target} : {}", h.event);
            }
        }
        None => {
            let _ = writeln!(out, "    {state} : on {}", h.event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TABLE: FsmTable = FsmTable {
        state_type: "S",
        event_type: "E",
        states: &["A", "B"],
        events: &["Go", "Poke", "Err"],
        handlers: &[
            HandlerSpec {
                state: Some("A"),
                event: "Go",
                targets: Some(&["B"]),
                sync: false,
            },
            HandlerSpec {
                state: Some("B"),
                event: "Poke",
                targets: None,
                sync: true,
            },
            HandlerSpec {
                state: None,
                event: "Err",
                targets: Some(&["A"]),
                sync: false,
            },
        ],
        entry_hooks: &["B"],
        exit_hooks: &["A"],
        timeouts: &[TimeoutSpec {
            state: "B",
            after: Duration::from_secs(5),
            has_handler: false,
            targets: None,
        }],
        has_unhandled_hook: false,
        unhandled_targets: None,
        initial: Some("A"),
        terminals: &[],
        all_states: &["A", "B"],
        all_events: &["Go", "Poke", "Err"],
    };

    #[test]
    fn mermaid_renders_edges_notes_and_hooks() {
        assert_eq!(
            TABLE.to_mermaid(Some("A")),
            "stateDiagram-v2\n    [*] --> A\n    A --> B : Go\n    A --> A : Err\n    A : exit / actions\n    \
             B : on Poke\n    B --> A : Err\n    B : entry / actions\n    B : after 5s / error\n"
        );
    }

    #[test]
    fn lookups() {
        assert!(TABLE.handles("A", "Go"));
        assert!(!TABLE.handles("A", "Err"));
        assert!(TABLE.handles_in_any_state("Err"));
        assert_eq!(TABLE.timeout_of("B").unwrap().after, Duration::from_secs(5));
        assert!(TABLE.timeout_of("A").is_none());
    }
}
