//! Dead letters: items a stage gave up on, kept with why.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;
use super::json_depth::check_json_depth;

/// How many attempt errors a [`DeadLetter`] keeps (the last ones): an item
/// retried many times must not make its record unbounded.
pub const MAX_DEAD_LETTER_ERRORS: usize = 8;

/// An item a stage gave up on (its attempts ran out, or its error was
/// permanent), recorded instead of failing the run with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The run.
    pub run_id: Uuid,
    /// The stage that gave up on the item.
    pub stage: String,
    /// The item's index in the stage's input (0 for the first item it took).
    pub position: u64,
    /// How many attempts the item had.
    pub attempts: u32,
    /// The errors of the last attempts (at most [`MAX_DEAD_LETTER_ERRORS`]),
    /// oldest first; `attempts` counts them all.
    pub errors: Vec<String>,
    /// The item as JSON, or `{"unserializable": "<type name>"}` when the
    /// flow has no encoder for its items.
    pub item: Value,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    /// Checks the nesting of `item` ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_json_depth(self.run_id, "item", &self.item)
    }
}
