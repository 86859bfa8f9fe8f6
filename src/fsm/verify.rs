//! Static checks of a declared table: [`FsmTable::verify`].
//!
//! The graph checked is the one the `fsm!` invocation declared: an edge per
//! declared target of an `on` clause, a `timeout` handler or the `unhandled`
//! hook. A handler that declared no targets may move anywhere: it counts as
//! an edge to every state (so it never makes a state look unreachable or
//! stuck by mistake) and is reported as unverifiable.

use std::collections::VecDeque;
use std::fmt;

use super::FsmTable;

/// Event name under which a `timeout` clause is reported.
pub const TIMEOUT_CLAUSE: &str = "<timeout>";
/// Event name under which the `unhandled` hook is reported.
pub const UNHANDLED_CLAUSE: &str = "<unhandled>";

/// One clause of a machine, as [`VerifyReport`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClauseRef {
    /// The state whose block holds the clause; `None` for the any-state
    /// block (`state _`) and the `unhandled` hook.
    pub state: Option<&'static str>,
    /// The event the clause handles; [`TIMEOUT_CLAUSE`] for a `timeout`
    /// clause, [`UNHANDLED_CLAUSE`] for the `unhandled` hook.
    pub event: &'static str,
}

impl fmt::Display for ClauseRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.event) {
            (None, UNHANDLED_CLAUSE) => write!(f, "the `unhandled` hook (from every state)"),
            (None, event) => write!(f, "`on {event}` in `state _` (from every state)"),
            (Some(state), TIMEOUT_CLAUSE) => write!(f, "the `timeout` of `{state}`"),
            (Some(state), event) => write!(f, "`on {event}` in `{state}`"),
        }
    }
}

/// What [`FsmTable::verify`] found wrong with a machine's declared graph.
/// Every list is in declaration order; an empty report means the machine
/// verified. `Display` renders one line per finding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// States that are not terminal and that no clause can move out of (no
    /// `on` clause of their own, no any-state clause, no `timeout` handler,
    /// no `unhandled` hook): a machine that gets there stays forever.
    pub dead_ends: Vec<&'static str>,
    /// States (not terminal, not dead ends) from which no declared terminal
    /// state can be reached. Checked only when `terminal:` is declared.
    pub no_path_to_terminal: Vec<&'static str>,
    /// States the initial state cannot reach.
    pub unreachable: Vec<&'static str>,
    /// Event variants no clause handles in any state (empty when an
    /// `unhandled` hook is declared: it takes every event; not checked for
    /// an event type whose `EventVariant::VARIANTS` is empty, as in a
    /// manual implementation that does not list them).
    pub unhandled_events: Vec<&'static str>,
    /// Handlers that declared no `[targets]`: they may move anywhere, so the
    /// reachability from their state cannot be verified.
    pub unverifiable: Vec<ClauseRef>,
    /// Clauses of terminal states' own blocks (`on` clauses and `timeout`
    /// handlers) that may move the machine: a terminal state is meant to be
    /// final. A clause declaring `[]` (it only fails, say to explain why an
    /// event comes too late) is not reported; any-state clauses neither.
    pub terminal_handlers: Vec<ClauseRef>,
    /// The initial state's variant is unknown (the header's `initial:` is
    /// not a path to a variant), so `unreachable` was not checked.
    /// [`StateMachine::verify`](super::StateMachine::verify) always knows it.
    pub initial_unknown: bool,
}

impl VerifyReport {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.dead_ends.is_empty()
            && self.no_path_to_terminal.is_empty()
            && self.unreachable.is_empty()
            && self.unhandled_events.is_empty()
            && self.unverifiable.is_empty()
            && self.terminal_handlers.is_empty()
            && !self.initial_unknown
    }
}

fn names(list: &[&str]) -> String {
    list.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "the machine verified: no finding");
        }
        writeln!(f, "the machine's declared graph has problems:")?;
        if !self.dead_ends.is_empty() {
            let list = names(&self.dead_ends);
            writeln!(
                f,
                "  - dead ends (not terminal, and no clause moves out of them): {list}"
            )?;
        }
        if !self.no_path_to_terminal.is_empty() {
            let list = names(&self.no_path_to_terminal);
            writeln!(f, "  - no path to a terminal state from: {list}")?;
        }
        if !self.unreachable.is_empty() {
            let list = names(&self.unreachable);
            writeln!(f, "  - unreachable from the initial state: {list}")?;
        }
        if !self.unhandled_events.is_empty() {
            let list = names(&self.unhandled_events);
            writeln!(f, "  - events no clause handles: {list}")?;
        }
        for clause in &self.unverifiable {
            let from = clause.state.unwrap_or("every state");
            writeln!(
                f,
                "  - undeclared targets: cannot verify reachability from `{from}`: {clause} declares no `[targets]`"
            )?;
        }
        for clause in &self.terminal_handlers {
            writeln!(f, "  - handler on a terminal state: {clause}")?;
        }
        if self.initial_unknown {
            writeln!(
                f,
                "  - the initial state is not a path to a variant (`initial: S::Idle`), so reachability \
                 from it was not checked; `StateMachine::verify` knows it"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyReport {}

/// Where one state's clauses may move the machine.
#[derive(Default)]
struct Out {
    /// Some clause can fire in the state.
    any_clause: bool,
    /// Some clause declared no targets.
    anywhere: bool,
    targets: Vec<&'static str>,
}

impl FsmTable {
    /// Checks the declared graph; see [`VerifyReport`] for what is checked.
    /// Reachability from the initial state uses [`initial`](Self::initial).
    ///
    /// ```
    /// use troupe::fsm::{fsm, EventVariant, StateVariant, Transition};
    /// #[derive(Debug, StateVariant)]
    /// enum Job { Queued, Running, Done, Lost }
    /// #[derive(Debug, EventVariant)]
    /// enum Ev { Start, Finish }
    /// let job = fsm! {
    ///     state: Job; event: Ev; context: (); initial: Job::Queued; terminal: Job::Done;
    ///     state Job::Queued { on Ev::Start => [Job::Running] sync |_, _, _| Transition::to(Job::Running); }
    ///     state Job::Running { on Ev::Finish => [Job::Done] sync |_, _, _| Transition::to(Job::Done); }
    /// };
    /// let report = job.table().verify().unwrap_err();
    /// assert_eq!(report.dead_ends, ["Lost"]);
    /// assert_eq!(report.unreachable, ["Lost"]);
    /// ```
    // A check run once, in a test or at start-up: the report is read, not
    // passed up a hot path, so it is returned unboxed.
    #[allow(clippy::result_large_err)]
    pub fn verify(&self) -> Result<(), VerifyReport> {
        self.verify_from(self.initial)
    }

    /// Panics with the readable [`VerifyReport`] when [`verify`](Self::verify)
    /// finds something; meant for a `#[test]`.
    #[track_caller]
    pub fn assert_verified(&self) {
        if let Err(report) = self.verify() {
            panic!("fsm! machine over `{}`: {report}", self.state_type);
        }
    }

    /// [`verify`](Self::verify) with the initial state given by the caller.
    #[allow(clippy::result_large_err)]
    pub(crate) fn verify_from(&self, initial: Option<&'static str>) -> Result<(), VerifyReport> {
        let states = self.state_list();
        let mut report = VerifyReport::default();
        let outs: Vec<Out> = states.iter().map(|s| self.out_of(s)).collect();
        for h in self.handlers.iter().filter(|h| h.targets.is_none()) {
            report.unverifiable.push(ClauseRef {
                state: h.state,
                event: h.event,
            });
        }
        for t in self.timeouts.iter().filter(|t| t.has_handler) {
            let clause = ClauseRef {
                state: Some(t.state),
                event: TIMEOUT_CLAUSE,
            };
            if t.targets.is_none() {
                report.unverifiable.push(clause);
            }
            if self.is_terminal(t.state) && t.targets != Some(&[]) {
                report.terminal_handlers.push(clause);
            }
        }
        if self.has_unhandled_hook && self.unhandled_targets.is_none() {
            report.unverifiable.push(ClauseRef {
                state: None,
                event: UNHANDLED_CLAUSE,
            });
        }
        for h in self.handlers.iter().filter(|h| h.targets != Some(&[])) {
            if let Some(state) = h.state.filter(|s| self.is_terminal(s)) {
                report.terminal_handlers.push(ClauseRef {
                    state: Some(state),
                    event: h.event,
                });
            }
        }
        report.terminal_handlers.sort_by_key(|c| {
            let state = c.state.and_then(|s| states.iter().position(|x| *x == s));
            (state, c.event == TIMEOUT_CLAUSE)
        });
        for (state, out) in states.iter().zip(&outs) {
            if !self.is_terminal(state) && !out.any_clause {
                report.dead_ends.push(state);
            }
        }
        if !self.terminals.is_empty() {
            for (i, state) in states.iter().enumerate() {
                if self.is_terminal(state) || !outs[i].any_clause {
                    continue;
                }
                let seen = reach(&states, &outs, i);
                if !states
                    .iter()
                    .zip(&seen)
                    .any(|(s, r)| *r && self.is_terminal(s))
                {
                    report.no_path_to_terminal.push(state);
                }
            }
        }
        match initial.and_then(|i| states.iter().position(|s| *s == i)) {
            Some(start) => {
                let seen = reach(&states, &outs, start);
                report.unreachable = states
                    .iter()
                    .zip(&seen)
                    .filter(|(_, r)| !**r)
                    .map(|(s, _)| *s)
                    .collect();
            }
            None => report.initial_unknown = true,
        }
        if !self.has_unhandled_hook {
            report.unhandled_events = self
                .all_events
                .iter()
                .copied()
                .filter(|e| !self.handlers.iter().any(|h| h.event == *e))
                .collect();
        }
        if report.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    }

    /// Every state: the state type's variants, else (a manual
    /// `StateVariant` without `VARIANTS`) every state the table names.
    fn state_list(&self) -> Vec<&'static str> {
        if !self.all_states.is_empty() {
            return self.all_states.to_vec();
        }
        let mut states: Vec<&'static str> = Vec::new();
        let handler_targets = self.handlers.iter().filter_map(|h| h.targets);
        let timeout_targets = self.timeouts.iter().filter_map(|t| t.targets);
        let named = self
            .initial
            .iter()
            .chain(self.states)
            .chain(self.terminals)
            .chain(handler_targets.chain(timeout_targets).flatten())
            .chain(self.unhandled_targets.into_iter().flatten());
        for state in named {
            if !states.contains(state) {
                states.push(state);
            }
        }
        states
    }

    /// Where the clauses that can fire in `state` may move the machine.
    fn out_of(&self, state: &str) -> Out {
        let mut out = Out::default();
        let mut add = |targets: Option<&'static [&'static str]>| {
            out.any_clause = true;
            match targets {
                Some(targets) => out.targets.extend_from_slice(targets),
                None => out.anywhere = true,
            }
        };
        for h in self.handlers {
            let fires = match h.state {
                Some(s) => s == state,
                None => !self.handles(state, h.event),
            };
            if fires {
                add(h.targets);
            }
        }
        if let Some(t) = self.timeout_of(state).filter(|t| t.has_handler) {
            add(t.targets);
        }
        if self.has_unhandled_hook {
            add(self.unhandled_targets);
        }
        out
    }
}

/// Which states `start` can reach (itself included).
fn reach(states: &[&'static str], outs: &[Out], start: usize) -> Vec<bool> {
    let mut seen = vec![false; states.len()];
    seen[start] = true;
    let mut queue = VecDeque::from([start]);
    while let Some(i) = queue.pop_front() {
        let out = &outs[i];
        for (j, state) in states.iter().enumerate() {
            if !seen[j] && (out.anywhere || out.targets.contains(state)) {
                seen[j] = true;
                queue.push_back(j);
            }
        }
    }
    seen
}
