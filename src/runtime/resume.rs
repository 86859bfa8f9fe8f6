//! What resuming the unfinished runs at start reads, and how a run that
//! cannot be resumed is reported: one unreadable run does not keep the
//! runtime (or the other runs) from starting.

use std::collections::HashMap;

use uuid::Uuid;

use super::RuntimeError;
use crate::journal::JournalHandle;
use crate::records::{Run, StepOutput, StoreError};
use crate::store::Store;

/// An unfinished run of a registered flow that could not be resumed at
/// start. Its record is left as it was: the next start tries again (or
/// repair it through [`Runtime::runs`](super::Runtime::runs)).
#[derive(Debug)]
pub struct ResumeFailure {
    /// The run as the recovery scan found it.
    pub run: Run,
    /// Why it was not resumed.
    pub error: ResumeError,
}

/// Why an unfinished run was not resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Its recorded stage outputs could not be read (e.g. a corrupt row):
    /// without them, completed stages would run again.
    #[error("its recorded stage outputs could not be read: {0}")]
    OutputsUnreadable(#[source] StoreError),
    /// Its flow actor could not be started.
    #[error("its flow could not be started: {0}")]
    NotStarted(#[source] Box<RuntimeError>),
}

/// The recorded outputs of the runs `ids`, by run: one batched read; if
/// that fails, one read per run, so that an unreadable run fails alone.
pub(crate) async fn recorded_outputs(
    journal: &JournalHandle,
    ids: &[Uuid],
) -> HashMap<Uuid, Result<Vec<StepOutput>, StoreError>> {
    let mut by_run: HashMap<Uuid, Result<Vec<StepOutput>, StoreError>> = HashMap::new();
    match journal.list_step_outputs_for(ids).await {
        Ok(outputs) => {
            for id in ids {
                by_run.insert(*id, Ok(Vec::new()));
            }
            for output in outputs {
                if let Some(Ok(recorded)) = by_run.get_mut(&output.run_id) {
                    recorded.push(output);
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, runs = ids.len(),
                "reading the recorded outputs of the runs to resume failed; reading them run by run");
            for id in ids {
                by_run.insert(*id, journal.list_step_outputs_for(&[*id]).await);
            }
        }
    }
    by_run
}
