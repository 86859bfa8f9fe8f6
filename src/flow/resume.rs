//! What a resumed run takes over from before the restart, besides its
//! recorded outputs (the plan has those) and its inbox (see `inbox`): the
//! items its stages dead-lettered.

use super::context::FlowCtx;
use super::definition::DeadLetterPolicy;
use super::record::RecordError;
use crate::store::Store;

impl FlowCtx {
    /// Counts the dead letters each stage recorded before the restart, so
    /// the outcome reports them all; under [`DeadLetterPolicy::FailRun`]
    /// one of them means the run must fail (the process stopped before it
    /// could): why, if so.
    pub(crate) async fn take_over_dead_letters(&mut self) -> Result<Option<String>, RecordError> {
        let run_id = self.run.id;
        let letters = self
            .journal()
            .list_dead_letters(run_id)
            .await
            .map_err(|source| RecordError::Store { run_id, source })?;
        for letter in &letters {
            if let Some(stage) = self.stages.iter_mut().find(|s| s.name == letter.stage) {
                stage.dead_letters += 1;
            }
        }
        for stage in &self.stages {
            stage.counters.set_dead_letters(stage.dead_letters);
        }
        let first = letters.first();
        Ok(first
            .filter(|_| self.dead_letter_policy() == DeadLetterPolicy::FailRun)
            .map(|d| {
                let last = d.errors.last().map_or("", String::as_str);
                format!(
                    "stage `{}` dead-lettered item {} after {} attempt(s) before a restart: {last}",
                    d.stage, d.position, d.attempts
                )
            }))
    }
}
