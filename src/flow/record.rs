//! Every write an actor-driven run makes to its run record, in one place.
//!
//! Lifecycle changes go through the control plane ([`RunManager`]), so an
//! actor-driven run follows the same rules and leaves the same audit trail
//! as a managed one (revision checks with bounded retry, one audit event per
//! change, terminal status and outcome in one atomic write); stage outputs,
//! stage failures, dead letters and inbox entries are plain journal writes.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::RunOutcome;
use super::options::RunOptions;
use crate::journal::JournalHandle;
use crate::records::{
    DeadLetter, EventKind, FailureEntry, InboxEntry, NewEvent, Run, RunStatus, StepOutput,
    StoreError, TerminalEvent, WriteOp,
};
use crate::runs::{CreateManagedInput, RunManager, TerminalTarget};
use crate::store::Store;

/// Why a run-record write failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store refused or failed the write.
    #[error("run {run_id}: {source}")]
    Store {
        /// The run.
        run_id: Uuid,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The control plane refused or failed the change.
    #[error(transparent)]
    Control(#[from] crate::runs::RunError),
}

impl RecordError {
    /// Whether the store refused the write because this process lost the
    /// run's lease (anywhere in the error's chain).
    pub(crate) fn is_lease_lost(&self) -> bool {
        let mut error: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = error {
            if matches!(
                e.downcast_ref::<StoreError>(),
                Some(StoreError::LeaseLost { .. })
            ) {
                return true;
            }
            error = e.source();
        }
        false
    }
}

/// Creates the `Created` run record of a new run of `definition`, which
/// records its fingerprint and version.
pub(crate) async fn create(
    journal: &JournalHandle,
    definition: &dyn super::ErasedDefinition,
    options: RunOptions,
) -> Result<Run, RecordError> {
    let controller_id = definition.name();
    let input = CreateManagedInput {
        controller_id: controller_id.to_owned(),
        goal: options.goal.unwrap_or_else(|| controller_id.to_owned()),
        owner_session_key: options
            .owner_session_key
            .unwrap_or_else(|| "troupe".to_owned()),
        requester_origin: options.requester_origin,
        current_step: None,
        state_json: json!({}),
        input: options.input,
        key: options.id,
        parent_run_id: options.parent,
    };
    let fingerprint = definition.fingerprint().to_owned();
    let version = definition.version();
    Ok(manager(journal)
        .create_managed_on(input, fingerprint, version)
        .await?)
}

/// Moves a non-terminal run to `status` through the control plane: `started`
/// (Created → Running), `waiting` (Running → Waiting), `resumed` (Waiting →
/// Running); `recovered` starts a `Created` run, resumes a `Waiting` one and
/// only logs an event for a `Running` one.
pub(crate) async fn set_status(
    journal: &JournalHandle,
    run: &mut Run,
    status: RunStatus,
    audit: &str,
) -> Result<(), RecordError> {
    let manager = manager(journal);
    let changed = match (run.status, status, audit) {
        (RunStatus::Created, RunStatus::Running, _) => manager.start_running(run.id).await?,
        (RunStatus::Running, RunStatus::Waiting, _) => {
            manager
                .set_waiting(run.id, json!({ "for": "resume" }))
                .await?
        }
        (RunStatus::Waiting, RunStatus::Running, _) => manager.resume(run.id, None).await?,
        // Paused while its stages wait: the pause takes the record over.
        (RunStatus::Waiting, RunStatus::Waiting, _) => {
            manager
                .set_waiting(run.id, json!({ "for": "resume" }))
                .await?
        }
        (RunStatus::Running, RunStatus::Running, "recovered") => {
            return log(journal, run.id, "recovered", Value::Null).await;
        }
        (from, to, _) => {
            return Err(RecordError::Control(
                crate::runs::RunError::InvalidTransition { from, to },
            ));
        }
    };
    *run = changed;
    Ok(())
}

/// `Running → Waiting` with `wait` as the run's `wait_json`.
pub(crate) async fn set_waiting(
    journal: &JournalHandle,
    run: &mut Run,
    wait: Value,
) -> Result<(), RecordError> {
    *run = manager(journal).set_waiting(run.id, wait).await?;
    Ok(())
}

/// `Waiting → Running`.
pub(crate) async fn resume(journal: &JournalHandle, run: &mut Run) -> Result<(), RecordError> {
    *run = manager(journal).resume(run.id, None).await?;
    Ok(())
}

/// Sets the sticky `cancel_requested` flag (the reason goes in its own event).
pub(crate) async fn request_cancel(
    journal: &JournalHandle,
    run: &mut Run,
    reason: &str,
) -> Result<(), RecordError> {
    log(
        journal,
        run.id,
        "cancel_reason",
        json!({ "reason": reason }),
    )
    .await?;
    *run = manager(journal).request_cancel(run.id).await?;
    Ok(())
}

/// Accepts `entries` into the run's inbox, with an audit event of the run's
/// log in the same write (all or none).
pub(crate) async fn accept_inbox(
    journal: &JournalHandle,
    run_id: Uuid,
    entries: Vec<InboxEntry>,
    audit: (&str, Value),
) -> Result<(), RecordError> {
    let audit = NewEvent::new(run_id, EventKind::custom(audit.0, audit.1));
    let op = WriteOp::Atomic(vec![WriteOp::AcceptInbox(entries), WriteOp::Append(audit)]);
    journal
        .apply(op)
        .await
        .map(drop)
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Turns the run-wide inbox entry `id` (stage `every`) into `entries`, one
/// per stage, settling it, in one write.
pub(crate) async fn spread_inbox(
    journal: &JournalHandle,
    run_id: Uuid,
    id: Uuid,
    every: &str,
    entries: Vec<InboxEntry>,
) -> Result<(), RecordError> {
    let settle = WriteOp::SettleInbox {
        run_id,
        id,
        stage: every.to_owned(),
        undeliverable: None,
    };
    journal
        .apply(WriteOp::Atomic(vec![WriteOp::AcceptInbox(entries), settle]))
        .await
        .map(drop)
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Settles an inbox entry of stage `stage`; one that could not be handed
/// over (`undeliverable`) also goes into the failure ledger, once: only the
/// write that settled it adds the ledger entry (an entry settled twice, as
/// a re-delivered one may be, is not ledgered twice). A crash between the
/// two leaves the reason in the entry itself.
pub(crate) async fn settle_inbox(
    journal: &JournalHandle,
    run_id: Uuid,
    id: Uuid,
    stage: &str,
    undeliverable: Option<String>,
) -> Result<(), RecordError> {
    let store = |source| RecordError::Store { run_id, source };
    let why = undeliverable.clone();
    let settled = journal
        .settle_inbox(run_id, id, stage.to_owned(), undeliverable)
        .await
        .map_err(store)?;
    let (true, Some(why)) = (settled, why) else {
        return Ok(());
    };
    let entry = FailureEntry {
        run_id,
        step_id: stage.to_owned(),
        reason: format!("inbox entry {id} not handled: {why}"),
        error_json: Some(json!({ "inbox_entry": id.to_string() })),
        at: Utc::now(),
    };
    journal.record_failure(entry).await.map_err(store)
}

/// Appends a custom event to the run's log.
async fn log(
    journal: &JournalHandle,
    run_id: Uuid,
    name: &str,
    payload: Value,
) -> Result<(), RecordError> {
    let event = NewEvent::new(run_id, EventKind::custom(name, payload));
    journal
        .append(event)
        .await
        .map(drop)
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Records a stage's completion output; `false` if one was already recorded.
pub(crate) async fn stage_output(
    journal: &JournalHandle,
    run_id: Uuid,
    stage: &str,
    output: Value,
) -> Result<bool, RecordError> {
    let output = StepOutput {
        run_id,
        step_id: stage.to_owned(),
        loop_id: None,
        iteration: None,
        output,
        at: Utc::now(),
    };
    journal
        .record_step_output(output)
        .await
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Records a stage failure in the failure ledger (restarted or not).
pub(crate) async fn stage_failure(
    journal: &JournalHandle,
    run_id: Uuid,
    stage: &str,
    reason: &str,
    restarted: bool,
) -> Result<(), RecordError> {
    let entry = FailureEntry {
        run_id,
        step_id: stage.to_owned(),
        reason: reason.to_owned(),
        error_json: Some(json!({ "restarted": restarted })),
        at: Utc::now(),
    };
    journal
        .record_failure(entry)
        .await
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Records an item a stage gave up on.
pub(crate) async fn dead_letter(
    journal: &JournalHandle,
    letter: DeadLetter,
) -> Result<(), RecordError> {
    let run_id = letter.run_id;
    journal
        .record_dead_letter(letter)
        .await
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Ends the run through the control plane, which persists the terminal
/// status and its terminal event in one atomic write.
pub(crate) async fn terminate(
    journal: &JournalHandle,
    run: &mut Run,
    target: TerminalTarget,
) -> Result<(), RecordError> {
    let manager = manager(journal);
    *run = match target {
        TerminalTarget::Completed { structured_output } => {
            manager.finish(run.id, structured_output).await?
        }
        TerminalTarget::Failed { reason } => manager.fail(run.id, reason).await?,
        TerminalTarget::Cancelled => manager.cancel(run.id).await?,
    };
    Ok(())
}

/// How [`fail_orphaned`] left a run.
#[derive(Debug)]
pub(crate) enum Orphaned {
    /// It is now failed with the reason given.
    Failed,
    /// It had already ended (its flow recorded an outcome whose ack was
    /// lost, or it was ended through the control plane), so it was left as
    /// it was; this is the outcome the journal holds.
    AlreadyEnded(RunOutcome),
}

/// Fails a run left without a flow to end it: its flow actor died without
/// publishing an outcome, or could not be started at all. A run already
/// terminal is left as it is, and its recorded outcome is returned, so that
/// what is published is what the journal holds.
pub(crate) async fn fail_orphaned(
    journal: &JournalHandle,
    run_id: Uuid,
    reason: String,
) -> Result<Orphaned, RecordError> {
    match manager(journal).fail(run_id, reason).await {
        Ok(_) => Ok(Orphaned::Failed),
        Err(crate::runs::RunError::AlreadyTerminal { status, .. }) => {
            recorded_outcome(journal, run_id, status)
                .await
                .map(Orphaned::AlreadyEnded)
        }
        Err(error) => Err(error.into()),
    }
}

/// The outcome of run `run_id`, which the journal holds as `status`: read
/// from its terminal event (written in the same atomic write as the status).
pub(crate) async fn recorded_outcome(
    journal: &JournalHandle,
    run_id: Uuid,
    status: RunStatus,
) -> Result<RunOutcome, RecordError> {
    let event = journal
        .terminal_event(run_id)
        .await
        .map_err(|source| RecordError::Store { run_id, source })?;
    let mut next_run_id = None;
    let (structured_output, reason) = match event.map(|e| e.kind) {
        Some(EventKind::Terminal(TerminalEvent::RunCompleted { structured_output })) => {
            (structured_output, None)
        }
        Some(EventKind::Terminal(TerminalEvent::RunFailed { reason })) => (None, Some(reason)),
        Some(EventKind::Terminal(TerminalEvent::RunContinuedAsNew { next_run_id: next })) => {
            next_run_id = Some(next);
            (None, None)
        }
        _ => (None, None),
    };
    Ok(RunOutcome {
        run_id,
        status,
        structured_output,
        reason,
        recorded: true,
        next_run_id,
    })
}

/// The control plane over the journal: lifecycle changes are the manager's
/// rules, written through the one writer.
fn manager(journal: &JournalHandle) -> RunManager {
    RunManager::new(Arc::new(journal.clone()))
}
