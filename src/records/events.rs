//! The event log: kinds, events to append, stored events, cursors.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;
use super::json_depth::{check_json_depth, check_opt_json_depth};

/// Position in the global event log. Cursors only grow; `Cursor(0)` is before
/// the first event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cursor(pub u64);

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A run's outcome, recorded at most once per run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TerminalEvent {
    /// The run completed.
    RunCompleted {
        /// The run's structured output, e.g. `{"steps": {...}}`.
        structured_output: Option<Value>,
    },
    /// The run failed.
    RunFailed {
        /// Why.
        reason: String,
    },
    /// The run was cancelled.
    RunCancelled,
    /// The run continued as a new run of its flow, `next_run_id`, created
    /// in the same write (see
    /// [`RunManager::continue_as_new`](crate::runs::RunManager::continue_as_new)).
    RunContinuedAsNew {
        /// The next run of the chain.
        next_run_id: Uuid,
    },
}

impl TerminalEvent {
    /// The kind name (`"RunCompleted"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TerminalEvent::RunCompleted { .. } => "RunCompleted",
            TerminalEvent::RunFailed { .. } => "RunFailed",
            TerminalEvent::RunCancelled => "RunCancelled",
            TerminalEvent::RunContinuedAsNew { .. } => "RunContinuedAsNew",
        }
    }
}

/// The names reserved for terminal kinds, in code order (SQLite codes 1, 2,
/// 3, then 0 for `RunContinuedAsNew`, the one added after custom kinds took
/// the codes from 4: see `store/sqlite/codec.rs`).
pub(crate) const TERMINAL_NAMES: [&str; 4] = [
    "RunCompleted",
    "RunFailed",
    "RunCancelled",
    "RunContinuedAsNew",
];

/// What an event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A terminal outcome (at most one per run).
    Terminal(TerminalEvent),
    /// Any other event: audit entries (`created`, `started`, ...), stage
    /// completions, user events.
    Custom {
        /// The kind name; must not be a terminal kind name.
        name: String,
        /// Event data (`Null` when there is none).
        payload: Value,
    },
}

impl EventKind {
    /// A custom event.
    pub fn custom(name: impl Into<String>, payload: Value) -> EventKind {
        EventKind::Custom {
            name: name.into(),
            payload,
        }
    }

    /// The kind name.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Terminal(t) => t.name(),
            EventKind::Custom { name, .. } => name,
        }
    }

    /// The name as a static string: the terminal kind's name, or `"custom"`
    /// (what error reports about terminal events need).
    pub(crate) fn name_static(&self) -> &'static str {
        match self {
            EventKind::Terminal(t) => t.name(),
            EventKind::Custom { .. } => "custom",
        }
    }

    /// The terminal outcome, if this is one.
    pub fn as_terminal(&self) -> Option<&TerminalEvent> {
        match self {
            EventKind::Terminal(t) => Some(t),
            EventKind::Custom { .. } => None,
        }
    }
}

impl From<TerminalEvent> for EventKind {
    fn from(t: TerminalEvent) -> Self {
        EventKind::Terminal(t)
    }
}

/// An event to append to a run's log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The run.
    pub run_id: Uuid,
    /// A caller-chosen id, unique within the run: appending again with the
    /// same id returns the stored event instead of adding one. `None` lets the
    /// store assign `#<seq>`. Caller ids must not start with `#`.
    pub event_id: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

impl NewEvent {
    /// An event without a caller-chosen id.
    pub fn new(run_id: Uuid, kind: impl Into<EventKind>) -> NewEvent {
        NewEvent {
            run_id,
            event_id: None,
            kind: kind.into(),
        }
    }

    /// An event with a caller-chosen idempotency id.
    pub fn with_id(run_id: Uuid, event_id: impl Into<String>, kind: impl Into<EventKind>) -> Self {
        NewEvent {
            run_id,
            event_id: Some(event_id.into()),
            kind: kind.into(),
        }
    }

    /// Checks the caller-supplied parts, so that every backend rejects the
    /// same inputs: the event id, the kind name, and the payload's nesting
    /// ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let invalid = |field, value: &str, why| StoreError::InvalidInput {
            run_id: self.run_id,
            field,
            value: value.to_owned(),
            why,
        };
        if let Some(id) = &self.event_id {
            if id.is_empty() || id.len() > MAX_NAME_LEN {
                return Err(invalid("event_id", id, "must be 1..=200 bytes"));
            }
            if id.starts_with('#') {
                return Err(invalid(
                    "event_id",
                    id,
                    "ids starting with '#' are store-assigned",
                ));
            }
        }
        match &self.kind {
            EventKind::Custom { payload, .. } => check_json_depth(self.run_id, "payload", payload)?,
            EventKind::Terminal(TerminalEvent::RunCompleted { structured_output }) => {
                check_opt_json_depth(self.run_id, "structured_output", structured_output.as_ref())?
            }
            EventKind::Terminal(_) => {}
        }
        if let EventKind::Custom { name, .. } = &self.kind {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(invalid("kind", name, "must be 1..=200 bytes"));
            }
            if TERMINAL_NAMES.contains(&name.as_str()) {
                return Err(invalid(
                    "kind",
                    name,
                    "terminal kinds must use EventKind::Terminal",
                ));
            }
        }
        Ok(())
    }
}

const MAX_NAME_LEN: usize = 200;

/// The event id the store assigns to an event appended without one.
pub(crate) fn assigned_event_id(seq: u64) -> String {
    format!("#{seq}")
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// Position in the global log.
    pub cursor: Cursor,
    /// The run.
    pub run_id: Uuid,
    /// Position in the run's log, from 1.
    pub seq: u64,
    /// Stable id, unique within the run: the caller's id or `#<seq>`.
    pub event_id: String,
    /// What happened.
    pub kind: EventKind,
    /// When it was stored.
    pub at: DateTime<Utc>,
}

/// The result of appending one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Where the event is (the earlier event's position for a duplicate).
    pub cursor: Cursor,
    /// Its position in the run's log.
    pub seq: u64,
    /// Whether an event with the same caller id was already stored (nothing was added).
    pub duplicate: bool,
}

/// The result of [`append_terminal_event_if_absent`](crate::store::Store::append_terminal_event_if_absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TerminalAppend {
    /// The terminal event was appended.
    Appended(Appended),
    /// The run already had a terminal event; nothing was appended.
    AlreadyPresent(RunEvent),
}
