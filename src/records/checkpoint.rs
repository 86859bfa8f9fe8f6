//! Checkpoints of streaming runs: where each source was and what each
//! transform and sink held at one consistent cut of the stream, so that a
//! run resumed after a crash replays only what came after it.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;
use super::json_depth::check_json_depth;

/// A run's checkpoint: the position of each source and the state of each
/// transform and sink, taken at one consistent cut of the stream (every
/// stage passed the same barrier). A run keeps only its latest one.
///
/// Recorded with [`WriteOp::RecordCheckpoint`](super::WriteOp::RecordCheckpoint),
/// which replaces the run's stored checkpoint only with one of a greater
/// `id`; read with [`Store::last_checkpoint`](crate::store::Store::last_checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run it belongs to.
    pub run_id: Uuid,
    /// Counts up from 1 within a run: a store keeps the checkpoint with the
    /// greatest id and refuses one whose id is not greater than it
    /// ([`StoreError::StaleCheckpoint`]). At most `i64::MAX`, the largest
    /// id every store can compare.
    pub id: u64,
    /// When the cut was complete (stores keep microseconds).
    pub taken_at: DateTime<Utc>,
    /// By stage name (streaming stages only).
    pub stages: BTreeMap<String, StageCheckpoint>,
}

/// One stage's part of a [`Checkpoint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCheckpoint {
    /// The stage had completed: it does not run again when the run resumes from this checkpoint.
    pub finished: bool,
    /// Its position (a source) or state (a transform or sink), as its logic's snapshot returned it; `None` if it keeps none.
    ///
    /// `Some(Value::Null)` (a state that is JSON `null`) is kept apart from
    /// `None`: in JSON the field is absent for `None`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub state: Option<Value>,
    /// Items it had taken in, at the cut.
    pub items_in: u64,
    /// Items it had sent on, at the cut.
    pub items_out: u64,
}

/// A `state` field that is present is `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Checkpoint {
    /// A checkpoint of `run_id` numbered `id`, taken now (to the
    /// microsecond, as every store keeps it: it reads back equal).
    pub fn new(run_id: Uuid, id: u64, stages: BTreeMap<String, StageCheckpoint>) -> Checkpoint {
        Checkpoint {
            run_id,
            id,
            taken_at: Utc::now().trunc_subsecs(6),
            stages,
        }
    }

    /// Checks the id is at least 1 (and at most `i64::MAX`), every stage
    /// name is not empty, and the nesting of every state
    /// ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.id == 0 || i64::try_from(self.id).is_err() {
            return Err(StoreError::InvalidInput {
                run_id: self.run_id,
                field: "id",
                value: self.id.to_string(),
                why: "a checkpoint's id counts up from 1 and is at most i64::MAX",
            });
        }
        for (name, stage) in &self.stages {
            if name.is_empty() {
                return Err(StoreError::InvalidInput {
                    run_id: self.run_id,
                    field: "stage",
                    value: String::new(),
                    why: "a checkpoint's stage names may not be empty",
                });
            }
            if let Some(state) = &stage.state {
                check_json_depth(self.run_id, "state", state)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stage(state: Option<Value>) -> StageCheckpoint {
        StageCheckpoint {
            finished: false,
            state,
            items_in: 3,
            items_out: u64::MAX,
        }
    }

    fn checkpoint(id: u64, stages: &[(&str, StageCheckpoint)]) -> Checkpoint {
        let stages = stages
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect();
        Checkpoint::new(Uuid::now_v7(), id, stages)
    }

    #[test]
    fn a_null_state_and_no_state_round_trip_apart() {
        let c = checkpoint(
            1,
            &[
                ("none", stage(None)),
                ("null", stage(Some(Value::Null))),
                ("offset", stage(Some(json!({"offset": 42})))),
            ],
        );
        let text = serde_json::to_string(&c).expect("encode");
        assert!(
            !text.contains(r#""none":{"finished":false,"state""#),
            "{text}"
        );
        let back: Checkpoint = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, c);
        assert_eq!(back.stages["null"].state, Some(Value::Null));
        assert_eq!(back.stages["none"].state, None);
    }

    #[test]
    fn validate_refuses_bad_ids_names_and_deep_states() {
        assert!(checkpoint(1, &[("s", stage(None))]).validate().is_ok());
        assert!(checkpoint(i64::MAX as u64, &[]).validate().is_ok());
        for id in [0, i64::MAX as u64 + 1, u64::MAX] {
            let err = checkpoint(id, &[]).validate().unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidInput { field: "id", .. }),
                "{id}: {err}"
            );
        }
        let err = checkpoint(1, &[("", stage(None))]).validate().unwrap_err();
        assert!(matches!(
            err,
            StoreError::InvalidInput { field: "stage", .. }
        ));
        let mut deep = json!(1);
        for _ in 0..=crate::records::MAX_JSON_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let err = checkpoint(1, &[("s", stage(Some(deep)))])
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::InvalidInput { field: "state", .. }
        ));
    }
}
