//! Resuming unfinished runs (at start, and when their flow is registered
//! later), and how a run that cannot be resumed is reported: one unreadable
//! run does not keep the runtime (or the other runs) from starting.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::RuntimeError;
use super::root::RootMsg;
use super::start::Starter;
use crate::flow::{ErasedDefinition, RunHandle};
use crate::journal::JournalHandle;
use crate::records::{Run, StepOutput, StoreError};
use crate::store::Store;

/// What resuming a set of unfinished runs gave: the runs now live again and
/// those that could not be resumed (left as they were).
#[derive(Debug, Default)]
pub struct ResumeReport {
    /// Handles of the resumed runs.
    pub resumed: Vec<RunHandle>,
    /// The runs that could not be resumed, with why.
    pub failures: Vec<ResumeFailure>,
}

/// An unfinished run of a registered flow that could not be resumed. Its record is left as it was: the next start tries again (or
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

/// Resumes `runs`, each with the definition of its flow: reads their
/// recorded outputs in one batch, asks the root for every flow actor in one
/// message (it spawns them concurrently), then collects them. Only a root
/// that is gone fails the whole call.
pub(crate) async fn resume_runs(
    starter: &Starter,
    runs: Vec<(Run, Arc<dyn ErasedDefinition>)>,
) -> Result<ResumeReport, RuntimeError> {
    let mut report = ResumeReport::default();
    let ids: Vec<Uuid> = runs.iter().map(|(run, _)| run.id).collect();
    let mut recorded = recorded_outputs(&starter.journal, &ids).await;
    let mut pending = Vec::with_capacity(runs.len());
    let mut requests = Vec::with_capacity(runs.len());
    for (run, definition) in runs {
        let outputs = match recorded.remove(&run.id).unwrap_or(Ok(Vec::new())) {
            Ok(outputs) => outputs,
            Err(error) => {
                report.failed(run, ResumeError::OutputsUnreadable(error));
                continue;
            }
        };
        tracing::info!(run_id = %run.id, flow = %run.controller_id, "resuming unfinished run");
        let (request, flow) =
            starter.request_flow(run.clone(), &*definition, Some(&outputs), false, None);
        requests.push(request);
        pending.push((run, flow));
    }
    if !requests.is_empty() {
        starter
            .root
            .send_message(RootMsg::StartFlows(requests))
            .map_err(|_| RuntimeError::ShuttingDown)?;
    }
    for (run, flow) in pending {
        match starter.collect(flow).await {
            Ok(handle) => report.resumed.push(handle),
            Err(error) => report.failed(run, ResumeError::NotStarted(Box::new(error))),
        }
    }
    Ok(report)
}

impl ResumeReport {
    fn failed(&mut self, run: Run, error: ResumeError) {
        tracing::error!(run_id = %run.id, flow = %run.controller_id, %error,
            "unfinished run not resumed; left as it is");
        self.failures.push(ResumeFailure { run, error });
    }
}
