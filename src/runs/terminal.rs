//! Terminalization (recording a run's outcome once its terminal status is
//! persisted) and repair (appending the outcome a crash or a failed append
//! left out, derived from the persisted status).

use chrono::Utc;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::records::{
    FailureEntry, Run, RunStatus, SYSTEM_STEP_ID, StepOutput, StoreError, TerminalAppend,
    TerminalEvent,
};
use crate::store::Store;

/// The outcome a caller wants recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalTarget {
    /// `RunCompleted` with this output.
    Completed {
        /// The run's structured output.
        structured_output: Option<Value>,
    },
    /// `RunFailed` with this reason.
    Failed {
        /// Why the run failed.
        reason: String,
    },
    /// `RunCancelled`.
    Cancelled,
}

impl TerminalTarget {
    fn into_event(self) -> TerminalEvent {
        match self {
            TerminalTarget::Completed { structured_output } => {
                TerminalEvent::RunCompleted { structured_output }
            }
            TerminalTarget::Failed { reason } => TerminalEvent::RunFailed { reason },
            TerminalTarget::Cancelled => TerminalEvent::RunCancelled,
        }
    }
}

/// What a terminalization call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalizationOutcome {
    /// The terminal event is recorded.
    Transitioned,
    /// Nothing to do (repair: the run is not terminal, or the event is settled).
    Noop,
}

/// Why a terminalization or repair failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TerminalizationError {
    /// The terminal event could not be appended; the divergence is in the failure ledger.
    #[error("{reason}")]
    AppendFailed {
        /// The run.
        run_id: Uuid,
        /// `terminal run status persisted but <Kind> append failed: <error>`.
        reason: String,
        /// The append error.
        #[source]
        source: StoreError,
    },
    /// The terminal event could not be appended, and neither could the failure-ledger entry.
    #[error("{reason}; the failure-ledger append failed too: {ledger_error}")]
    AppendAndLedgerFailed {
        /// The run.
        run_id: Uuid,
        /// `terminal run status persisted but <Kind> append failed: <error>`.
        reason: String,
        /// The append error.
        #[source]
        source: StoreError,
        /// The ledger append error.
        ledger_error: StoreError,
    },
    /// Repair could not read the run, its recorded outputs or its failure ledger.
    #[error("repair of run {run_id} failed: {source}")]
    Repair {
        /// The run.
        run_id: Uuid,
        /// The store error.
        #[source]
        source: StoreError,
    },
}

/// Records the outcome of a run whose terminal status is already persisted:
/// appends the terminal event built from `target` (it does not re-read the run).
///
/// If the append fails, a failure-ledger entry for the run under
/// [`SYSTEM_STEP_ID`] records `terminal run status persisted but <Kind> append
/// failed: <error>` and that reason is returned in the error (which also says
/// when the ledger append failed too). A terminal event of the same kind that
/// is already present counts as recorded (a retry); one of another kind is a
/// failure. `flow_name` names the flow definition in spans and the ledger entry.
pub async fn record_persisted_terminalization(
    store: &dyn Store,
    run_id: Uuid,
    flow_name: &str,
    target: TerminalTarget,
) -> Result<TerminalizationOutcome, TerminalizationError> {
    let event = target.into_event();
    let kind = event.name();
    let span = tracing::info_span!("terminalize", %run_id, flow_name, kind);
    let _enter = span.enter();
    let error = match store.append_terminal_event_if_absent(run_id, event).await {
        Ok(TerminalAppend::Appended(_)) => return Ok(TerminalizationOutcome::Transitioned),
        Ok(TerminalAppend::AlreadyPresent(existing)) if existing.kind.name() == kind => {
            return Ok(TerminalizationOutcome::Transitioned);
        }
        Ok(TerminalAppend::AlreadyPresent(existing)) => StoreError::TerminalExists {
            run_id,
            existing: existing.kind.name_static(),
            cursor: existing.cursor,
        },
        Err(e) => e,
    };
    Err(ledger_append_failure(store, run_id, flow_name, kind, error).await)
}

/// Records in the failure ledger that run `run_id`'s terminal status is
/// persisted but its `kind` event could not be appended (`error`), and
/// returns the error that says so (and whether the ledger write failed too).
async fn ledger_append_failure(
    store: &dyn Store,
    run_id: Uuid,
    flow_name: &str,
    kind: &str,
    error: StoreError,
) -> TerminalizationError {
    let reason = format!("terminal run status persisted but {kind} append failed: {error}");
    let entry = FailureEntry {
        run_id,
        step_id: SYSTEM_STEP_ID.to_owned(),
        reason: reason.clone(),
        error_json: Some(json!({ "flow_name": flow_name, "error": error.to_string() })),
        at: Utc::now(),
    };
    match store.record_failure(entry).await {
        Ok(()) => {
            tracing::error!(%reason, "terminal event append failed; recorded in the failure ledger");
            TerminalizationError::AppendFailed {
                run_id,
                reason,
                source: error,
            }
        }
        Err(ledger_error) => {
            tracing::error!(%reason, %ledger_error, "terminal event and failure-ledger appends both failed");
            TerminalizationError::AppendAndLedgerFailed {
                run_id,
                reason,
                source: error,
                ledger_error,
            }
        }
    }
}

/// Appends the terminal event a run with a persisted terminal status lacks.
///
/// The persisted status wins over `target`: `Finished` → `RunCompleted` with
/// the target's output if it is a `Completed` with one, else one rebuilt as
/// `{"steps": {...}}` from the recorded outputs, or none if there are none
/// (see [`rebuild_structured_output`]); `Failed` →
/// `RunFailed` with the target's reason if it is a `Failed`, else the last
/// failure-ledger reason, else `run already failed`; `Cancelled` →
/// `RunCancelled`; `ContinuedAsNew` → `RunContinuedAsNew` naming
/// [`continued_run_id`](crate::records::continued_run_id). Appends only if the run has no terminal event (repairing
/// twice appends once). Returns `Transitioned` when it appended the event,
/// `Noop` when the run is not terminal or already had one.
///
/// If the append fails, the failure ledger records it as
/// [`record_persisted_terminalization`] does, and the error is
/// [`TerminalizationError::AppendFailed`] (or `AppendAndLedgerFailed`);
/// failing to read the run, its outputs or its ledger is
/// [`TerminalizationError::Repair`].
pub async fn repair_persisted_terminalization(
    store: &dyn Store,
    run_id: Uuid,
    flow_name: &str,
    target: Option<TerminalTarget>,
) -> Result<TerminalizationOutcome, TerminalizationError> {
    let span = tracing::info_span!("repair_terminalization", %run_id, flow_name);
    let _enter = span.enter();
    let failed = |source| TerminalizationError::Repair { run_id, source };
    let run = store
        .get_run(run_id)
        .await
        .map_err(failed)?
        .ok_or(failed(StoreError::RunNotFound(run_id)))?;
    let Some(event) = derive_terminal_event(store, &run, target)
        .await
        .map_err(failed)?
    else {
        return Ok(TerminalizationOutcome::Noop);
    };
    let kind = event.name();
    match store.append_terminal_event_if_absent(run_id, event).await {
        Ok(TerminalAppend::Appended(a)) => {
            tracing::info!(cursor = %a.cursor, "repaired: terminal event appended");
            Ok(TerminalizationOutcome::Transitioned)
        }
        Ok(TerminalAppend::AlreadyPresent(_)) => Ok(TerminalizationOutcome::Noop),
        // The divergence outlives this call in the ledger, as when terminalizing.
        Err(error) => Err(ledger_append_failure(store, run_id, flow_name, kind, error).await),
    }
}

/// The terminal event [`repair_persisted_terminalization`] derives for
/// `run` from its persisted status (see there), reading only; `None` when
/// the status is not terminal. It does not look for a terminal event the
/// run may already have.
pub async fn derive_terminal_event(
    store: &dyn Store,
    run: &Run,
    target: Option<TerminalTarget>,
) -> Result<Option<TerminalEvent>, StoreError> {
    Ok(Some(match run.status {
        RunStatus::Created | RunStatus::Running | RunStatus::Waiting => return Ok(None),
        RunStatus::Finished => {
            let structured_output = match target {
                Some(TerminalTarget::Completed {
                    structured_output: Some(output),
                }) => Some(output),
                _ => rebuild_structured_output(&store.list_step_outputs(run.id).await?),
            };
            TerminalEvent::RunCompleted { structured_output }
        }
        RunStatus::Failed => {
            let reason = match target {
                Some(TerminalTarget::Failed { reason }) => reason,
                _ => store
                    .list_failures(run.id)
                    .await?
                    .pop()
                    .map_or_else(|| "run already failed".to_owned(), |f| f.reason),
            };
            TerminalEvent::RunFailed { reason }
        }
        RunStatus::Cancelled => TerminalEvent::RunCancelled,
        // Written with its outcome in one write: only a damaged log lacks
        // it, and the next run's id follows from this one's.
        RunStatus::ContinuedAsNew => TerminalEvent::RunContinuedAsNew {
            next_run_id: crate::records::continued_run_id(run.id),
        },
    }))
}

/// Rebuilds a run's structured output from its recorded outputs:
/// `{"steps": {step_id: output}}`, or `None` when nothing is recorded.
/// Loop-iteration outputs are flattened into `steps` too: a step's latest
/// iteration (by index) wins, also over its plain output.
pub fn rebuild_structured_output(outputs: &[StepOutput]) -> Option<Value> {
    let (plain, mut iterations): (Vec<&StepOutput>, Vec<&StepOutput>) =
        outputs.iter().partition(|o| o.iteration.is_none());
    // Stable: equal indexes (of different loops) keep their recording order.
    iterations.sort_by_key(|o| o.iteration);
    let steps = plain
        .into_iter()
        .chain(iterations)
        .map(|o| (o.step_id.clone(), o.output.clone()))
        .collect();
    structured_output(steps)
}

/// A run's structured output from its steps' outputs: `{"steps": steps}`,
/// or `None` when no step has one. The one shape both a flow's own
/// completion and repair record.
pub(crate) fn structured_output(steps: Map<String, Value>) -> Option<Value> {
    (!steps.is_empty()).then(|| json!({ "steps": steps }))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn output(step: &str, iteration: Option<u32>, value: Value) -> StepOutput {
        StepOutput {
            run_id: Uuid::nil(),
            step_id: step.into(),
            loop_id: iteration.map(|_| "loop".into()),
            iteration,
            output: value,
            at: Utc::now(),
        }
    }

    #[test]
    fn no_recorded_output_is_no_structured_output() {
        assert_eq!(rebuild_structured_output(&[]), None);
        assert_eq!(structured_output(Map::new()), None);
    }

    #[test]
    fn the_latest_iteration_wins_also_over_a_plain_output() {
        let outputs = [
            output("a", Some(1), json!("a1")),
            output("b", None, json!("plain")),
            output("a", None, json!("plain")),
            output("b", Some(0), json!("b0")),
            output("a", Some(0), json!("a0")),
            output("c", None, json!({"n": 1})),
        ];
        assert_eq!(
            rebuild_structured_output(&outputs),
            Some(json!({"steps": {"a": "a1", "b": "b0", "c": {"n": 1}}}))
        );
    }
}
