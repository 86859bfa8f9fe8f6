//! The run's inbox: operator input (signals, typed stage events, replayed
//! items) accepted durably for one stage of a run and kept until that
//! stage has handled it, so that a crash between the two re-delivers it.

use chrono::{DateTime, SubsecRound, Utc};
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
            // Microseconds, as every store keeps them: an entry reads back
            // equal to what was written, whatever the backend.
            accepted_at: Utc::now().trunc_subsecs(6),
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

/// The stage name of a run-wide signal accepted while its run was not live
/// in any process: on resume it becomes one entry per stage not done.
pub(crate) const EVERY_STAGE: &str = "*";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kinds() -> [InboxMessage; 3] {
        [
            InboxMessage::Signal {
                name: "pause".into(),
                payload: json!({"for": 3}),
            },
            InboxMessage::Event {
                payload: json!("Reroute"),
            },
            InboxMessage::Item {
                payload: json!([1, 2]),
            },
        ]
    }

    #[test]
    fn kind_and_payload_name_each_message() {
        let [signal, event, item] = kinds();
        assert_eq!(
            [signal.kind(), event.kind(), item.kind()],
            ["signal", "event", "item"]
        );
        assert_eq!(signal.payload(), &json!({"for": 3}));
        assert_eq!(event.payload(), &json!("Reroute"));
        assert_eq!(item.payload(), &json!([1, 2]));
    }

    /// The JSON of a message is what the SQLite store keeps: its shape is
    /// a stored format, tagged by `kind()`.
    #[test]
    fn a_message_encodes_tagged_by_its_kind() {
        let [signal, event, item] = kinds();
        let encoded = [&signal, &event, &item].map(|m| serde_json::to_value(m).unwrap());
        assert_eq!(
            encoded,
            [
                json!({"type": "signal", "name": "pause", "payload": {"for": 3}}),
                json!({"type": "event", "payload": "Reroute"}),
                json!({"type": "item", "payload": [1, 2]}),
            ]
        );
        for (message, json) in kinds().iter().zip(encoded) {
            assert_eq!(json["type"], message.kind());
            assert_eq!(
                &serde_json::from_value::<InboxMessage>(json).unwrap(),
                message
            );
        }
    }

    #[test]
    fn new_entries_are_unsettled_with_fresh_ids() {
        let run = Uuid::now_v7();
        let before = Utc::now();
        let [signal, ..] = kinds();
        let a = InboxEntry::new(run, "parse", signal.clone());
        let b = InboxEntry::new(run, "parse", signal.clone());
        assert_ne!(a.id, b.id);
        assert_eq!(
            (a.run_id, a.stage.as_str(), &a.message, &a.settled),
            (run, "parse", &signal, &None)
        );
        assert!(before <= a.accepted_at && a.accepted_at <= Utc::now());
    }

    #[test]
    fn validate_checks_the_payload_of_every_kind() {
        let mut deep = json!(1);
        for _ in 0..=crate::records::MAX_JSON_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let messages = [
            InboxMessage::Signal {
                name: "s".into(),
                payload: deep.clone(),
            },
            InboxMessage::Event {
                payload: deep.clone(),
            },
            InboxMessage::Item { payload: deep },
        ];
        for message in messages {
            let err = InboxEntry::new(Uuid::now_v7(), "parse", message)
                .validate()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::InvalidInput {
                        field: "payload",
                        ..
                    }
                ),
                "{err}"
            );
        }
        for message in kinds() {
            assert!(
                InboxEntry::new(Uuid::now_v7(), "s", message)
                    .validate()
                    .is_ok()
            );
        }
    }
}
