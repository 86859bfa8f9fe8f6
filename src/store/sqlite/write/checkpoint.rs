//! A run's checkpoint inside the writer's transaction: kept as the run's
//! latest if its id is greater than the stored one's, for a run that has
//! not ended.

use rusqlite::{OptionalExtension, params};

use super::ops::OpCtx;
use super::sql;
use crate::records::{Checkpoint, RunStatus, StoreError, WriteOutcome, mismatch};
use crate::store::sqlite::codec::{checkpoint_stages, micros};

impl OpCtx<'_, '_> {
    pub(super) fn record_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<WriteOutcome, StoreError> {
        checkpoint.validate()?;
        let run_id = checkpoint.run_id;
        let head = self.head(run_id)?;
        // Read inside the transaction: a terminal status written earlier in
        // the same batch counts.
        let code: i64 = self
            .conn
            .prepare_cached("SELECT status FROM runs WHERE rid = ?1")
            .and_then(|mut s| s.query_row([head.rid], |r| r.get(0)))
            .map_err(sql("read run status"))?;
        if let Some(status) = RunStatus::from_code(code).filter(|s| s.is_terminal()) {
            return Err(StoreError::RunEnded { run_id, status });
        }
        // The store keeps the rule itself: a row is replaced only by a
        // greater id (validate bounds it to i64, so the compare is exact).
        let written = self
            .conn
            .prepare_cached(
                "INSERT INTO checkpoints(rid, id, taken_at, stages) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(rid) DO UPDATE SET id = excluded.id, taken_at = excluded.taken_at, \
                 stages = excluded.stages WHERE checkpoints.id < excluded.id",
            )
            .and_then(|mut s| {
                s.execute(params![
                    head.rid,
                    checkpoint.id as i64,
                    micros(checkpoint.taken_at),
                    checkpoint_stages(checkpoint)
                ])
            })
            .map_err(sql("record checkpoint"))?;
        if written == 1 {
            return Ok(WriteOutcome::CheckpointRecorded);
        }
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM checkpoints WHERE rid = ?1")
            .and_then(|mut s| s.query_row([head.rid], |r| r.get(0)).optional())
            .map_err(sql("read checkpoint id"))?;
        // Nothing written, so a row with an id at least this one's is there.
        let last = last.ok_or_else(|| mismatch("record_checkpoint"))?;
        Err(StoreError::StaleCheckpoint {
            run_id,
            id: checkpoint.id,
            last: last as u64,
        })
    }
}
