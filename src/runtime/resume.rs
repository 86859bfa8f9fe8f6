//! Resuming unfinished runs (at start, and when their flow is registered
//! later), and how a run that cannot be resumed is reported: one unreadable
//! run does not keep the runtime (or the other runs) from starting.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use uuid::Uuid;

use super::RuntimeError;
use super::root::RootMsg;
use super::spawn::Recovered;
use super::start::Starter;
use super::versions::DefinitionMismatch;
use crate::flow::cell::{RunCell, Sleep};
use crate::flow::{ErasedDefinition, RunHandle};
use crate::journal::JournalHandle;
use crate::records::{Checkpoint, Run, RunStatus, StepOutput, StoreError};
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
    /// Its last checkpoint could not be read: without it, its streaming
    /// stages would start over and their state would count items twice.
    #[error("its last checkpoint could not be read: {0}")]
    CheckpointUnreadable(#[source] StoreError),
    /// Its flow actor could not be started.
    #[error("its flow could not be started: {0}")]
    NotStarted(#[source] Box<RuntimeError>),
    /// It started on a definition that is no longer registered, and the
    /// newest definition of its flow refuses it
    /// ([`ChangePolicy`](crate::flow::ChangePolicy)); the error names what
    /// changed. Registering the definition it started on resumes it.
    #[error(transparent)]
    DefinitionChanged(Box<DefinitionMismatch>),
}

impl ResumeError {
    /// The definition change that refused the run, if that is why.
    pub fn definition_mismatch(&self) -> Option<&DefinitionMismatch> {
        match self {
            ResumeError::DefinitionChanged(mismatch) => Some(mismatch),
            _ => None,
        }
    }
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

/// The last checkpoints of the runs `ids`, by run: one batched read; if
/// that fails, one read per run, so that an unreadable run fails alone.
async fn last_checkpoints(
    journal: &JournalHandle,
    ids: &[Uuid],
) -> HashMap<Uuid, Result<Option<Checkpoint>, StoreError>> {
    if ids.is_empty() {
        return HashMap::new();
    }
    match journal.last_checkpoints_for(ids).await {
        Ok(found) => {
            let mut by_run: HashMap<_, _> = ids.iter().map(|id| (*id, Ok(None))).collect();
            for checkpoint in found {
                by_run.insert(checkpoint.run_id, Ok(Some(checkpoint)));
            }
            by_run
        }
        Err(error) => {
            tracing::warn!(%error, runs = ids.len(),
                "reading the checkpoints of the runs to resume failed; reading them run by run");
            let mut by_run = HashMap::new();
            for id in ids {
                by_run.insert(*id, journal.last_checkpoint(*id).await);
            }
            by_run
        }
    }
}

/// What [`resume_runs`] gave: the cells of the runs resumed (live or
/// hibernated) and those that could not be.
#[derive(Default)]
pub(crate) struct Resumed {
    pub(crate) cells: Vec<Arc<RunCell>>,
    pub(crate) failures: Vec<ResumeFailure>,
}

impl Resumed {
    /// As a report, with a handle per resumed run.
    pub(crate) fn report(self) -> ResumeReport {
        ResumeReport {
            resumed: self.cells.iter().map(RunHandle::new).collect(),
            failures: self.failures,
        }
    }

    fn failed(&mut self, run: Run, error: ResumeError) {
        tracing::error!(run_id = %run.id, flow = %run.controller_id, %error,
            "unfinished run not resumed; left as it is");
        self.failures.push(ResumeFailure { run, error });
    }
}

/// Resumes `runs`, each with the definition of its flow. A run whose record
/// says it may hibernate (`Waiting` for its stages, with a `"wake"`), with
/// no input waiting in its inbox and no cancel requested, hibernates at
/// once, without an actor; the others have their recorded outputs read in
/// one batch and their flow actors asked of the root in one message (it
/// spawns them concurrently), then collected. Only a root that is gone
/// fails the whole call.
pub(crate) async fn resume_runs(
    starter: &Starter,
    runs: Vec<(Run, Arc<dyn ErasedDefinition>)>,
) -> Result<Resumed, RuntimeError> {
    let mut report = Resumed::default();
    let (sleeping, runs) = sleepers(starter, runs).await;
    let ids: Vec<Uuid> = runs.iter().map(|(run, _)| run.id).collect();
    let mut recorded = recorded_outputs(&starter.journal, &ids).await;
    let checkpointing: Vec<Uuid> = runs
        .iter()
        .filter(|(_, definition)| definition.takes_checkpoints())
        .map(|(run, _)| run.id)
        .collect();
    let mut checkpoints = last_checkpoints(&starter.journal, &checkpointing).await;
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
        let checkpoint = match checkpoints.remove(&run.id).unwrap_or(Ok(None)) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                report.failed(run, ResumeError::CheckpointUnreadable(error));
                continue;
            }
        };
        tracing::info!(run_id = %run.id, flow = %run.controller_id,
            checkpoint = checkpoint.as_ref().map(|c| c.id), "resuming unfinished run");
        let recovered = Recovered {
            outputs: &outputs,
            checkpoint: checkpoint.as_ref(),
        };
        let (request, flow) =
            starter.request_flow(run.clone(), &*definition, Some(recovered), false, None);
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
        let cell = flow.cell().clone();
        match starter.collect(flow).await {
            Ok(_) => report.cells.push(cell),
            Err(error) => report.failed(run, ResumeError::NotStarted(Box::new(error))),
        }
    }
    report.cells.extend(hibernate_at_start(starter, sleeping));
    Ok(report)
}

/// Splits `runs` into those that may hibernate at once (with what they
/// sleep for) and the others. Each candidate's inbox is read: input sent
/// while the process was down needs the run awake to take it.
async fn sleepers(
    starter: &Starter,
    runs: Vec<(Run, Arc<dyn ErasedDefinition>)>,
) -> (
    Vec<(Run, Arc<dyn ErasedDefinition>, Sleep)>,
    Vec<(Run, Arc<dyn ErasedDefinition>)>,
) {
    let mut candidates = Vec::new();
    let mut others = Vec::with_capacity(runs.len());
    let may = starter.hibernate_after.is_some() && starter.host.is_some();
    for (run, definition) in runs {
        let sleep = Sleep::of(&run)
            .filter(|_| may && run.status == RunStatus::Waiting && !run.cancel_requested);
        match sleep {
            Some(sleep) => candidates.push((run, definition, sleep)),
            None => others.push((run, definition)),
        }
    }
    // Input waiting in an inbox wakes its run at once: one read for all.
    let ids: Vec<Uuid> = candidates.iter().map(|(run, _, _)| run.id).collect();
    let awake: std::collections::HashSet<Uuid> =
        match starter.journal.runs_with_unsettled_inbox(&ids).await {
            Ok(found) => found.into_iter().collect(),
            // Unreadable: every candidate starts awake, as a plain resume.
            Err(_) => ids.into_iter().collect(),
        };
    let mut sleeping = Vec::with_capacity(candidates.len());
    for (run, definition, sleep) in candidates {
        if awake.contains(&run.id) {
            others.push((run, definition));
        } else {
            sleeping.push((run, definition, sleep));
        }
    }
    (sleeping, others)
}

/// Hibernates `sleeping` runs without starting them: each is listed first,
/// then put to sleep, so that a parent finds its children listed (a child
/// not here wakes its parent at once, which then reads the store).
fn hibernate_at_start(
    starter: &Starter,
    sleeping: Vec<(Run, Arc<dyn ErasedDefinition>, Sleep)>,
) -> Vec<Arc<RunCell>> {
    let Some(host) = starter.host.as_ref().and_then(|h| h.upgrade()) else {
        return Vec::new();
    };
    let cells: Vec<(Arc<RunCell>, Sleep)> = sleeping
        .into_iter()
        .map(|(run, definition, sleep)| {
            tracing::info!(run_id = %run.id, flow = %run.controller_id,
                "unfinished run hibernates until its wait ends");
            let cell = RunCell::new(
                run.id,
                definition.stage_names(),
                definition.progress_board(),
                starter.host.clone(),
            );
            // Only a `Waiting` run hibernates at start.
            cell.set_waiting(true);
            (cell, sleep)
        })
        .collect();
    {
        let mut runs = starter.runs.lock().unwrap_or_else(PoisonError::into_inner);
        for (cell, _) in &cells {
            runs.push(cell.clone());
        }
    }
    cells
        .into_iter()
        .map(|(cell, sleep)| {
            host.hibernate(&cell, sleep);
            cell
        })
        .collect()
}
