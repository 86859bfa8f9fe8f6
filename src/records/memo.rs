//! Memos: the journaled results of memoized side effects
//! ([`StageContext::run`](crate::stage::StageContext::run)).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;
use super::json_depth::check_json_depth;

/// The result of one memoized side effect of a run's stage, keyed by
/// `(run_id, stage, name)`: the first one recorded for a key stays, so a
/// stage that runs the effect again (after a crash or a retry) gets this
/// result instead of calling it twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memo {
    /// The run.
    pub run_id: Uuid,
    /// The stage that ran the effect.
    pub stage: String,
    /// The effect's name, unique within the stage and run.
    pub name: String,
    /// What it returned: its value as JSON, or its permanent error's message.
    pub result: Result<Value, String>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

impl Memo {
    /// Checks the name is not empty and the nesting of the value
    /// ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.name.is_empty() {
            return Err(StoreError::InvalidInput {
                run_id: self.run_id,
                field: "name",
                value: String::new(),
                why: "a memo's name may not be empty",
            });
        }
        match &self.result {
            Ok(value) => check_json_depth(self.run_id, "memo", value),
            Err(_) => Ok(()),
        }
    }
}
