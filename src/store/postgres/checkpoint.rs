//! A run's checkpoint: kept as the run's latest if its id is greater than
//! the stored one's, for a run that has not ended (inside the writer's
//! transaction), and read back.

use tokio_postgres::Client;
use uuid::Uuid;

use super::codec::pg;
use super::ops::OpCtx;
use crate::records::{Checkpoint, RowRef, RunStatus, StoreError, WriteOutcome, mismatch};
use crate::store::sqlite::codec::{checkpoint_stages, decode_checkpoint, micros};

impl OpCtx<'_> {
    pub(super) async fn record_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<WriteOutcome, StoreError> {
        checkpoint.validate()?;
        let run_id = checkpoint.run_id;
        self.head(run_id).await?;
        // Read inside the transaction: a terminal status written earlier in
        // the same batch counts.
        let row = self
            .query_opt(
                "read run status",
                "SELECT status FROM runs WHERE id = $1",
                &[&run_id],
            )
            .await?
            .ok_or(StoreError::RunNotFound(run_id))?;
        let code: i32 = row.try_get(0).map_err(pg("read run status"))?;
        if let Some(status) = RunStatus::from_code(code.into()).filter(|s| s.is_terminal()) {
            return Err(StoreError::RunEnded { run_id, status });
        }
        // One statement keeps the rule: a row is replaced only by a greater
        // id (validate bounds it to i64, so the compare is exact).
        let id = checkpoint.id as i64;
        let written = self
            .execute(
                "record checkpoint",
                "INSERT INTO checkpoints(run_id, id, taken_at, stages) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (run_id) DO UPDATE SET id = excluded.id, \
                 taken_at = excluded.taken_at, stages = excluded.stages \
                 WHERE checkpoints.id < excluded.id",
                &[
                    &run_id,
                    &id,
                    &micros(checkpoint.taken_at),
                    &checkpoint_stages(checkpoint),
                ],
            )
            .await?;
        if written == 1 {
            return Ok(WriteOutcome::CheckpointRecorded);
        }
        // Nothing written, so a row with an id at least this one's is there.
        let row = self
            .query_opt(
                "read checkpoint id",
                "SELECT id FROM checkpoints WHERE run_id = $1",
                &[&run_id],
            )
            .await?
            .ok_or_else(|| mismatch("record_checkpoint"))?;
        let last: i64 = row.try_get(0).map_err(pg("read checkpoint id"))?;
        Err(StoreError::StaleCheckpoint {
            run_id,
            id: checkpoint.id,
            last: last as u64,
        })
    }
}

/// The run's checkpoint, if it has one (`None` for an unknown run).
pub(super) async fn last_checkpoint(
    client: &Client,
    run_id: Uuid,
) -> Result<Option<Checkpoint>, StoreError> {
    let Some(row) = client
        .query_opt(
            "SELECT id, taken_at, stages FROM checkpoints WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .map_err(pg("read checkpoint"))?
    else {
        return Ok(None);
    };
    decode_row(&row, run_id).map(Some)
}

/// The checkpoints of the runs `run_ids` that have one, in the order the
/// runs are listed (each once): one query.
pub(super) async fn last_checkpoints_for(
    client: &Client,
    run_ids: &[Uuid],
) -> Result<Vec<Checkpoint>, StoreError> {
    let run_ids = crate::store::traits::distinct(run_ids);
    let rows = client
        .query(
            "SELECT c.id, c.taken_at, c.stages, c.run_id \
             FROM unnest($1::uuid[]) WITH ORDINALITY AS r(run_id, n) \
             JOIN checkpoints c ON c.run_id = r.run_id ORDER BY r.n",
            &[&run_ids],
        )
        .await
        .map_err(pg("read checkpoints"))?;
    rows.iter()
        .map(|row| {
            let run_id: Uuid = row.try_get(3).map_err(pg("read checkpoints"))?;
            decode_row(row, run_id)
        })
        .collect()
}

fn decode_row(row: &tokio_postgres::Row, run_id: Uuid) -> Result<Checkpoint, StoreError> {
    let id: i64 = row.try_get(0).map_err(pg("read checkpoint"))?;
    let taken_at: i64 = row.try_get(1).map_err(pg("read checkpoint"))?;
    let stages: &[u8] = row.try_get(2).map_err(pg("read checkpoint"))?;
    // Keyed by its run: the row is named by the id it holds.
    let at = RowRef {
        table: "checkpoints",
        rowid: id,
        run_id: Some(run_id),
    };
    decode_checkpoint(&at, run_id, id, taken_at, stages)
}
