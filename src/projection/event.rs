//! Lifecycle records (what happened, by identity only) and lifecycle
//! events (a record with its id, occurrence and cause).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::id::LifecycleId;
use super::phase::{PhaseKey, PhaseStatus};
use crate::records::RunEvent;

/// The journal event a lifecycle event or a refusal came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Causation {
    /// The journal event's id (the writer's id, or `#<seq>`).
    pub event_id: String,
    /// Its position in the run's log.
    pub seq: u64,
}

impl Causation {
    /// The cause `event` is.
    pub fn of(event: &RunEvent) -> Causation {
        Causation {
            event_id: event.event_id.clone(),
            seq: event.seq,
        }
    }
}

/// What a lifecycle event says. Its canonical JSON is the identity its id
/// is hashed from, so it holds ids, names and statuses, never a time, a
/// position or a user payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LifecycleRecord {
    /// A phase took a status (the guard allowed it).
    Phase {
        /// The phase.
        phase: PhaseKey,
        /// The status it took.
        status: PhaseStatus,
    },
    /// A run-level fact that moves no phase.
    Note {
        /// Which.
        note: Note,
    },
}

/// A run-level fact worth a lifecycle event that moves no phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// A cancel was asked for (it is sticky: at most once).
    CancelRequested,
    /// A runtime took over the run after a restart.
    Recovered,
    /// A signal was accepted into the run's inbox (its payload is not here).
    SignalAccepted {
        /// The inbox entry's id.
        id: Uuid,
        /// The signal's name.
        name: String,
        /// The one stage it is for, if not every stage.
        stage: Option<String>,
    },
    /// A typed stage event was accepted into the run's inbox.
    EventAccepted {
        /// The inbox entry's id.
        id: Uuid,
        /// The stage it is for.
        stage: String,
    },
    /// Dead letters were put back into a stage's input.
    ItemsReplayed {
        /// The stage.
        stage: String,
        /// How many items.
        items: u64,
    },
}

/// One lifecycle event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Its stable id (see [`LifecycleId::derive`]).
    pub id: LifecycleId,
    /// How many times the same record occurred in the run, this one included.
    pub occurrence: u32,
    /// What happened.
    pub record: LifecycleRecord,
    /// The journal event it came from.
    pub caused_by: Causation,
    /// When that journal event was stored.
    pub at: DateTime<Utc>,
}

impl LifecycleRecord {
    /// The canonical text the id is hashed from: the record's JSON (its
    /// fields in declaration order, so the same record gives the same text).
    pub fn identity(&self) -> String {
        // Plain enums, strings and uuids: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The phase this record moves, if it moves one.
    pub fn phase(&self) -> Option<(&PhaseKey, PhaseStatus)> {
        match self {
            LifecycleRecord::Phase { phase, status } => Some((phase, *status)),
            LifecycleRecord::Note { .. } => None,
        }
    }

    /// A short human label: `stage check → completed`, `cancel requested`.
    pub fn label(&self) -> String {
        match self {
            LifecycleRecord::Phase { phase, status } => format!("{phase} → {}", status.as_str()),
            LifecycleRecord::Note { note } => match note {
                Note::CancelRequested => "cancel requested".to_owned(),
                Note::Recovered => "recovered".to_owned(),
                Note::SignalAccepted { name, stage, .. } => match stage {
                    Some(stage) => format!("signal {name} accepted for stage {stage}"),
                    None => format!("signal {name} accepted"),
                },
                Note::EventAccepted { stage, .. } => format!("event accepted for stage {stage}"),
                Note::ItemsReplayed { stage, items } => {
                    format!("{items} items replayed into stage {stage}")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::phase::PhaseKind;

    #[test]
    fn identity_is_the_same_for_equal_records_and_differs_otherwise() {
        let waiting = LifecycleRecord::Phase {
            phase: PhaseKey::new(PhaseKind::Stage, "check"),
            status: PhaseStatus::Waiting,
        };
        assert_eq!(waiting.identity(), waiting.clone().identity());
        assert_eq!(
            waiting.identity(),
            r#"{"kind":"phase","phase":{"kind":"stage","name":"check"},"status":"waiting"}"#
        );
        let running = LifecycleRecord::Phase {
            phase: PhaseKey::new(PhaseKind::Stage, "check"),
            status: PhaseStatus::Running,
        };
        assert_ne!(waiting.identity(), running.identity());
        let note = LifecycleRecord::Note {
            note: Note::ItemsReplayed {
                stage: "check".into(),
                items: 2,
            },
        };
        assert_eq!(note.label(), "2 items replayed into stage check");
        assert_eq!(running.label(), "stage check → running");
    }
}
