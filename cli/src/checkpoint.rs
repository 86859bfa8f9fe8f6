//! `runs show`'s checkpoint section: the run's latest checkpoint, compactly
//! (its id and time, then per stage whether it had finished, its item
//! counts and whether it keeps a state; the states themselves only with
//! `--json`).

use troupe::records::Checkpoint;

use crate::render::{Table, time};

/// The section's text, starting with a blank line.
pub fn section(checkpoint: Option<&Checkpoint>) -> String {
    let Some(checkpoint) = checkpoint else {
        return "\nCheckpoint (none)\n".to_owned();
    };
    let mut text = format!(
        "\nCheckpoint {}, taken {} ({} stages)\n",
        checkpoint.id,
        time(checkpoint.taken_at),
        checkpoint.stages.len()
    );
    if checkpoint.stages.is_empty() {
        return text;
    }
    let mut table = Table::new(&["STAGE", "FINISHED", "ITEMS IN", "ITEMS OUT", "STATE"]);
    for (name, stage) in &checkpoint.stages {
        table.row(vec![
            name.clone(),
            if stage.finished { "yes" } else { "no" }.to_owned(),
            stage.items_in.to_string(),
            stage.items_out.to_string(),
            if stage.state.is_some() { "kept" } else { "-" }.to_owned(),
        ]);
    }
    text.push_str(&table.render());
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use serde_json::json;
    use troupe::records::StageCheckpoint;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_checkpoint_is_shown_per_stage_without_its_states() {
        let stage = |finished, state, items_in, items_out| StageCheckpoint {
            finished,
            state,
            items_in,
            items_out,
        };
        let checkpoint = Checkpoint {
            run_id: Uuid::now_v7(),
            id: 7,
            taken_at: DateTime::from_timestamp(1_767_225_600, 0).expect("time"),
            stages: BTreeMap::from([
                (
                    "read".to_owned(),
                    stage(true, Some(json!({"offset": "secret-123"})), 10, 10),
                ),
                ("parse".to_owned(), stage(false, None, 10, 9)),
            ]),
        };
        assert_eq!(
            section(Some(&checkpoint)),
            "\nCheckpoint 7, taken 2026-01-01 00:00:00 UTC (2 stages)\n\
             STAGE  FINISHED  ITEMS IN  ITEMS OUT  STATE\n\
             parse  no        10        9          -\n\
             read   yes       10        10         kept\n"
        );
        assert_eq!(section(None), "\nCheckpoint (none)\n");
        let empty = Checkpoint {
            stages: BTreeMap::new(),
            ..checkpoint
        };
        assert_eq!(
            section(Some(&empty)),
            "\nCheckpoint 7, taken 2026-01-01 00:00:00 UTC (0 stages)\n"
        );
    }
}
