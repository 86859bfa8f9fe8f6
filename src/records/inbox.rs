//! The run's inbox: operator input (signals, typed stage events, replayed
//! items) accepted durably for one stage of a run and kept until that
//! stage has handled it, so that a crash between the two re-delivers it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;
use super::json_depth::check_json_depth;

/// One message accepted for one stage of a run.
///
/// A run-wide signal is one entry per stage, all with the same `id`; an
/// entry is keyed by `(run_id, id, stage)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The message's id, given to its sender: a stage that must not act on
    /// a message twice (it is re-delivered after a crash if the stage had
    /// not settled it) deduplicates by it.
    pub id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The stage it is for.
    pub stage: String,
    /// What it says.
    pub message: InboxMessage,
    /// When it was accepted.
    pub accepted_at: DateTime<Utc>,
    /// When and how it was settled; `None` while it waits for its stage.
    pub settled: Option<Settled>,
}

impl InboxEntry {
    /// A new, unsettled entry with a fresh id, accepted now.
    pub fn new(run_id: Uuid, stage: impl Into<String>, message: InboxMessage) -> InboxEntry {
        InboxEntry {
            id: super::run::new_run_id(),
            run_id,
            stage: stage.into(),
            message,
            accepted_at: Utc::now(),
            settled: None,
        }
    }

    /// Checks the nesting of the message's payload
    /// ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_json_depth(self.run_id, "payload", self.message.payload())
    }
}

/// What an [`InboxEntry`] carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboxMessage {
    /// A `Signal` control event, for the stage's `on_signal`.
    Signal {
        /// The signal's name.
        name: String,
        /// Its data.
        payload: Value,
    },
    /// A typed stage event, serialized.
    Event {
        /// The event as JSON.
        payload: Value,
    },
    /// An item for the stage's input (a dead letter replayed).
    Item {
        /// The item as JSON.
        payload: Value,
    },
}

impl InboxMessage {
    /// The JSON the message carries.
    pub fn payload(&self) -> &Value {
        match self {
            InboxMessage::Signal { payload, .. }
            | InboxMessage::Event { payload }
            | InboxMessage::Item { payload } => payload,
        }
    }

    /// `signal`, `event` or `item`.
    pub fn kind(&self) -> &'static str {
        match self {
            InboxMessage::Signal { .. } => "signal",
            InboxMessage::Event { .. } => "event",
            InboxMessage::Item { .. } => "item",
        }
    }
}

/// How an [`InboxEntry`] was settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    /// When.
    pub at: DateTime<Utc>,
    /// `None`: its stage handled it. `Some(why)`: it could not be handed to
    /// its stage (the stage had ended, or the message does not decode as the
    /// stage's event type); the failure ledger says so too.
    pub undeliverable: Option<String>,
}
