//! A run's latest checkpoint, summarized: which cut, and per stage whether
//! it had finished, its item counts and whether it keeps a state (never
//! the state itself: a position or a state may hold user data).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::records::Checkpoint;

/// The redacted summary of a [`Checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// The checkpoint's id (counts up from 1 within the run).
    pub id: u64,
    /// When the cut was complete.
    pub taken_at: DateTime<Utc>,
    /// By stage name.
    pub stages: BTreeMap<String, StageCheckpointSummary>,
}

/// One stage's part of a [`CheckpointSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCheckpointSummary {
    /// The stage had completed at the cut.
    pub finished: bool,
    /// Items it had taken in.
    pub items_in: u64,
    /// Items it had sent on.
    pub items_out: u64,
    /// Whether the checkpoint keeps a position or state for it.
    pub keeps_state: bool,
}

impl CheckpointSummary {
    /// The summary of `checkpoint`.
    pub fn of(checkpoint: &Checkpoint) -> CheckpointSummary {
        let stages = checkpoint.stages.iter().map(|(name, stage)| {
            let summary = StageCheckpointSummary {
                finished: stage.finished,
                items_in: stage.items_in,
                items_out: stage.items_out,
                keeps_state: stage.state.is_some(),
            };
            (name.clone(), summary)
        });
        CheckpointSummary {
            id: checkpoint.id,
            taken_at: checkpoint.taken_at,
            stages: stages.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::records::StageCheckpoint;

    #[test]
    fn a_summary_keeps_counts_and_drops_states() {
        let stage = |state| StageCheckpoint {
            finished: false,
            state,
            items_in: 3,
            items_out: 2,
        };
        let stages = BTreeMap::from([
            ("sum".to_owned(), stage(Some(json!({"secret": 7})))),
            ("sink".to_owned(), stage(None)),
        ]);
        let checkpoint = Checkpoint::new(Uuid::from_u128(1), 4, stages);
        let summary = CheckpointSummary::of(&checkpoint);
        assert_eq!(summary.id, 4);
        assert!(summary.stages["sum"].keeps_state);
        assert!(!summary.stages["sink"].keeps_state);
        assert_eq!(
            (
                summary.stages["sum"].items_in,
                summary.stages["sum"].items_out
            ),
            (3, 2)
        );
        assert!(!serde_json::to_string(&summary).unwrap().contains("secret"));
    }
}
