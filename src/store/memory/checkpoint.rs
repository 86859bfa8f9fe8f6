//! The memory store's checkpoint op, with the same rules as SQLite's.

use super::{MemState, Undo};
use crate::records::{Checkpoint, StoreError, WriteOutcome};

impl MemState {
    /// Keeps `checkpoint` as its run's latest if its id is greater than the
    /// stored one's, for a run that has not ended.
    pub(super) fn record_checkpoint(
        &mut self,
        checkpoint: Checkpoint,
        undo: &mut Vec<Undo>,
    ) -> Result<WriteOutcome, StoreError> {
        checkpoint.validate()?;
        let run_id = checkpoint.run_id;
        let status = self.flow(run_id)?.status;
        if status.is_terminal() {
            return Err(StoreError::RunEnded { run_id, status });
        }
        if let Some(last) = self.checkpoints.get(&run_id)
            && last.id >= checkpoint.id
        {
            return Err(StoreError::StaleCheckpoint {
                run_id,
                id: checkpoint.id,
                last: last.id,
            });
        }
        let previous = self.checkpoints.insert(run_id, checkpoint);
        undo.push(Undo::RestoreCheckpoint(run_id, previous.map(Box::new)));
        Ok(WriteOutcome::CheckpointRecorded)
    }
}
