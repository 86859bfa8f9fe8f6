//! Every write an actor-driven run makes to its run record, in one place.
//!
//! The flow actor is the only writer of its run while it runs, so it keeps
//! the record in memory and writes compare-and-set on its revision; a
//! conflict (someone else changed the run, e.g. requested a cancel through
//! the control plane) reloads the run and retries a bounded number of times.
//! Outcomes go through [`record_persisted_terminalization`]: the terminal
//! status is persisted first, then the terminal event, exactly once.
//!
//! The status-changing writes take the store as `Arc<dyn FlowStore>` so
//! that they can move onto the control plane (`FlowManager`) without their
//! callers changing.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::runs::{TerminalTarget, TerminalizationError, record_persisted_terminalization};
use crate::store::{EventKind, FailureEntry, Flow, FlowStatus, FlowStore, StepOutput, StoreError};

/// How often a conflicting write is retried after reloading the run.
const MAX_CONFLICT_RETRIES: usize = 3;

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
    /// The run is already terminal (changed by another writer); nothing was written.
    #[error("run {run_id} is already {status:?}; the change was not written")]
    AlreadyTerminal {
        /// The run.
        run_id: Uuid,
        /// Its persisted status.
        status: FlowStatus,
    },
    /// The terminal status is persisted but its terminal event is not (see the failure ledger).
    #[error(transparent)]
    Terminalization(#[from] TerminalizationError),
}

/// Who starts a run and why: the fields of a new run record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// What the run is for (defaults to the flow's name).
    pub goal: Option<String>,
    /// The session that owns the run (defaults to `"troupe"`).
    pub owner_session_key: Option<String>,
    /// Where the request came from.
    pub requester_origin: Option<String>,
}

/// Creates the `Created` run record of a new run of `controller_id`.
pub(crate) async fn create(
    store: &Arc<dyn FlowStore>,
    controller_id: &str,
    options: RunOptions,
) -> Result<Flow, RecordError> {
    let goal = options.goal.unwrap_or_else(|| controller_id.to_owned());
    let owner = options
        .owner_session_key
        .unwrap_or_else(|| "troupe".to_owned());
    let mut run = Flow::new(controller_id, goal, owner);
    run.requester_origin = options.requester_origin;
    let audit = EventKind::custom("created", Value::Null);
    store
        .insert_run(run.clone(), Some(audit))
        .await
        .map_err(|source| RecordError::Store {
            run_id: run.id,
            source,
        })?;
    Ok(run)
}

/// Applies `change` to the run and writes it with the audit event `audit`.
async fn update(
    store: &Arc<dyn FlowStore>,
    run: &mut Flow,
    audit: EventKind,
    change: impl Fn(&mut Flow),
) -> Result<(), RecordError> {
    let run_id = run.id;
    let failed = |source| RecordError::Store { run_id, source };
    let mut conflict = None;
    for _ in 0..=MAX_CONFLICT_RETRIES {
        let mut next = run.clone();
        change(&mut next);
        next.updated_at = Utc::now();
        match store
            .update_run(next.clone(), run.revision, audit.clone())
            .await
        {
            Ok(revision) => {
                next.revision = revision;
                *run = next;
                return Ok(());
            }
            Err(mismatch @ StoreError::RevisionMismatch { .. }) => {
                conflict = Some(mismatch);
                let stored = store.get_run(run.id).await.map_err(failed)?;
                let stored = stored.ok_or(failed(StoreError::RunNotFound(run_id)))?;
                if stored.status.is_terminal() {
                    return Err(RecordError::AlreadyTerminal {
                        run_id,
                        status: stored.status,
                    });
                }
                *run = stored;
            }
            Err(source) => return Err(failed(source)),
        }
    }
    Err(RecordError::Store {
        run_id,
        source: conflict.unwrap_or(StoreError::RunNotFound(run_id)),
    })
}

/// Moves a non-terminal run to `status` (`Running`, `Waiting`) with an audit event.
pub(crate) async fn set_status(
    store: &Arc<dyn FlowStore>,
    run: &mut Flow,
    status: FlowStatus,
    audit: &str,
) -> Result<(), RecordError> {
    update(store, run, EventKind::custom(audit, Value::Null), |r| {
        r.status = status;
    })
    .await
}

/// Sets the sticky `cancel_requested` flag.
pub(crate) async fn request_cancel(
    store: &Arc<dyn FlowStore>,
    run: &mut Flow,
    reason: &str,
) -> Result<(), RecordError> {
    let audit = EventKind::custom("cancel_requested", json!({ "reason": reason }));
    update(store, run, audit, |r| r.cancel_requested = true).await
}

/// Appends a user signal to the run's event log.
pub(crate) async fn signal(
    store: &dyn FlowStore,
    run_id: Uuid,
    name: &str,
    payload: Value,
) -> Result<(), RecordError> {
    let event = crate::store::NewEvent::new(
        run_id,
        EventKind::custom("signal", json!({ "name": name, "payload": payload })),
    );
    store
        .append(event)
        .await
        .map(drop)
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Records a stage's completion output; `false` if one was already recorded.
pub(crate) async fn stage_output(
    store: &dyn FlowStore,
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
    store
        .record_step_output(output)
        .await
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Records a stage failure in the failure ledger (restarted or not).
pub(crate) async fn stage_failure(
    store: &dyn FlowStore,
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
    store
        .record_failure(entry)
        .await
        .map_err(|source| RecordError::Store { run_id, source })
}

/// Persists the terminal status `target` implies, then its terminal event.
pub(crate) async fn terminate(
    store: &Arc<dyn FlowStore>,
    run: &mut Flow,
    target: TerminalTarget,
) -> Result<(), RecordError> {
    let (status, audit) = match &target {
        TerminalTarget::Completed { .. } => (FlowStatus::Finished, "finished"),
        TerminalTarget::Failed { .. } => (FlowStatus::Failed, "failed"),
        TerminalTarget::Canceled => (FlowStatus::Cancelled, "cancelled"),
    };
    let payload = match &target {
        TerminalTarget::Failed { reason } => json!({ "reason": reason }),
        _ => Value::Null,
    };
    let now = Utc::now();
    update(store, run, EventKind::custom(audit, payload), |r| {
        r.status = status;
        r.ended_at = Some(now);
        if let TerminalTarget::Failed { reason } = &target {
            r.state_json = merge_failure(&r.state_json, reason);
        }
    })
    .await?;
    record_persisted_terminalization(&**store, run.id, &run.controller_id, target).await?;
    Ok(())
}

/// Fails a run whose flow actor died without recording an outcome.
pub(crate) async fn fail_orphaned(
    store: &Arc<dyn FlowStore>,
    run_id: Uuid,
    reason: String,
) -> Result<(), RecordError> {
    let failed = |source| RecordError::Store { run_id, source };
    let mut run = store
        .get_run(run_id)
        .await
        .map_err(failed)?
        .ok_or(failed(StoreError::RunNotFound(run_id)))?;
    if run.status.is_terminal() {
        return Ok(());
    }
    terminate(store, &mut run, TerminalTarget::Failed { reason }).await
}

/// The run state with `{"failure": {"reason", "at"}}` set, as the control plane records failures.
fn merge_failure(state: &Value, reason: &str) -> Value {
    let mut state = match state {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    state.insert(
        "failure".to_owned(),
        json!({ "reason": reason, "at": Utc::now() }),
    );
    Value::Object(state)
}
