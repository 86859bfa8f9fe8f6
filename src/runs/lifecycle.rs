//! The pure rules of a run's lifecycle: which moves a status allows, what each
//! change does to the run record, and the shallow state merge. No IO: the
//! manager reads the run, asks [`plan`] for the next record, and writes it
//! with a compare-and-set; on a conflict it reads again and plans again.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use super::error::RunError;
use crate::records::{EventKind, Run, RunStatus, RunStepStatus, TerminalEvent};

/// The kind of an audit event the manager writes, one per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// The run was created (revision 0).
    Created,
    /// `Created → Running`.
    Started,
    /// `Running → Waiting`.
    Waiting,
    /// `Waiting → Running`.
    Resumed,
    /// `→ Finished`.
    Finished,
    /// `→ Failed`.
    Failed,
    /// The sticky cancellation request was set.
    CancelRequested,
    /// `→ Cancelled`.
    Cancelled,
    /// The state (and maybe the current step) changed.
    StateUpdated,
    /// A step observation was recorded.
    StepObserved,
    /// `→ ContinuedAsNew`: the run ended, continuing as a new run.
    ContinuedAsNew,
}

impl AuditKind {
    /// Every kind, in code order.
    pub const ALL: [AuditKind; 11] = [
        AuditKind::Created,
        AuditKind::Started,
        AuditKind::Waiting,
        AuditKind::Resumed,
        AuditKind::Finished,
        AuditKind::Failed,
        AuditKind::CancelRequested,
        AuditKind::Cancelled,
        AuditKind::StateUpdated,
        AuditKind::StepObserved,
        AuditKind::ContinuedAsNew,
    ];

    /// The event kind name stored in the log (`"created"`, `"cancel_requested"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Created => "created",
            AuditKind::Started => "started",
            AuditKind::Waiting => "waiting",
            AuditKind::Resumed => "resumed",
            AuditKind::Finished => "finished",
            AuditKind::Failed => "failed",
            AuditKind::CancelRequested => "cancel_requested",
            AuditKind::Cancelled => "cancelled",
            AuditKind::StateUpdated => "state_updated",
            AuditKind::StepObserved => "step_observed",
            AuditKind::ContinuedAsNew => "continued_as_new",
        }
    }

    /// The kind with this stored name, if it is one.
    pub fn parse(name: &str) -> Option<AuditKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Whether a run may move from `from` to `to`: `Created → Running`,
/// `Running ⇄ Waiting`, `Running | Waiting → Finished | Failed | Cancelled |
/// ContinuedAsNew`, `Created → Cancelled | Failed`. Nothing leaves a
/// terminal status.
pub fn is_legal_move(from: RunStatus, to: RunStatus) -> bool {
    use RunStatus::*;
    matches!(
        (from, to),
        (Created, Running)
            | (Running, Waiting)
            | (Waiting, Running)
            | (
                Running | Waiting,
                Finished | Failed | Cancelled | ContinuedAsNew
            )
            | (Created, Cancelled | Failed)
    )
}

/// Merges `patch` into `state` shallowly: each top-level key of an object
/// patch replaces the state's key (a `null` value is stored, not a removal);
/// any other patch, or an object patch over a non-object state, replaces the
/// whole state.
pub fn merge_state(state: &mut Value, patch: Value) {
    match (state, patch) {
        (Value::Object(current), Value::Object(keys)) => current.extend(keys),
        (state, patch) => *state = patch,
    }
}

/// The current time at the precision stores keep (microseconds), so that a
/// run the manager returns equals the run read back from any store.
pub(crate) fn stored_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// One change the manager can make to a run, with its data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Start,
    Wait {
        wait_json: Value,
    },
    Resume {
        patch: Option<Value>,
    },
    Finish {
        final_state: Option<Value>,
    },
    Fail {
        reason: String,
    },
    RequestCancel,
    Cancel,
    UpdateState {
        patch: Value,
        next_step: Option<String>,
    },
    ObserveStep {
        external_run_id: String,
        status: RunStepStatus,
    },
    ContinueAsNew {
        next_run_id: uuid::Uuid,
    },
}

impl Change {
    pub(crate) fn audit_kind(&self) -> AuditKind {
        match self {
            Change::Start => AuditKind::Started,
            Change::Wait { .. } => AuditKind::Waiting,
            Change::Resume { .. } => AuditKind::Resumed,
            Change::Finish { .. } => AuditKind::Finished,
            Change::Fail { .. } => AuditKind::Failed,
            Change::RequestCancel => AuditKind::CancelRequested,
            Change::Cancel => AuditKind::Cancelled,
            Change::UpdateState { .. } => AuditKind::StateUpdated,
            Change::ObserveStep { .. } => AuditKind::StepObserved,
            Change::ContinueAsNew { .. } => AuditKind::ContinuedAsNew,
        }
    }

    /// The status the change moves the run to, for status moves.
    fn target(&self) -> Option<RunStatus> {
        match self {
            Change::Start | Change::Resume { .. } => Some(RunStatus::Running),
            Change::Wait { .. } => Some(RunStatus::Waiting),
            Change::Finish { .. } => Some(RunStatus::Finished),
            Change::Fail { .. } => Some(RunStatus::Failed),
            Change::Cancel => Some(RunStatus::Cancelled),
            Change::ContinueAsNew { .. } => Some(RunStatus::ContinuedAsNew),
            Change::RequestCancel | Change::UpdateState { .. } | Change::ObserveStep { .. } => None,
        }
    }

    /// Whether this move may start from `from`. Starting and resuming both
    /// lead to `Running` but from one status each, so that the audit log
    /// says which of the two happened.
    fn allowed_from(&self, from: RunStatus) -> bool {
        match (self, self.target()) {
            (Change::Start, _) => from == RunStatus::Created,
            (Change::Resume { .. }, _) => from == RunStatus::Waiting,
            // A waiting run may wait for something else: one write, one
            // audit event, never a `Running` in between.
            (Change::Wait { .. }, _) => matches!(from, RunStatus::Running | RunStatus::Waiting),
            (_, Some(to)) => is_legal_move(from, to),
            (_, None) => !from.is_terminal(),
        }
    }

    /// `finish`, `update_state` and `continue_as_new` wait for the requested
    /// cancellation instead.
    fn blocked_by_cancel_request(&self) -> bool {
        matches!(
            self,
            Change::Finish { .. } | Change::UpdateState { .. } | Change::ContinueAsNew { .. }
        )
    }
}

/// What to write for one change: the next run record, its audit event and,
/// for terminal moves, the run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    /// The run after the change, with its revision already incremented.
    pub(crate) run: Run,
    pub(crate) audit: EventKind,
    pub(crate) outcome: Option<TerminalEvent>,
}

/// Plans `change` on `run` (as last read), or refuses it. `Ok(None)` means
/// there is nothing to write to the run record: a repeated cancellation
/// request, or a step observed on a terminal run (the step is still
/// recorded, but an ended run's record and audit log do not change).
///
/// Checks in order: a terminal run is [`RunError::AlreadyTerminal`]; a
/// pending cancellation refuses `finish` and `update_state` with
/// [`RunError::CancelPending`]; a move the status does not allow is
/// [`RunError::InvalidTransition`].
pub(crate) fn plan(
    run: &Run,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Option<Planned>, RunError> {
    let from = run.status;
    if from.is_terminal() && matches!(change, Change::ObserveStep { .. }) {
        // Mirrored work can report after its run ended.
        return Ok(None);
    }
    if from.is_terminal() {
        return Err(RunError::AlreadyTerminal {
            id: run.id,
            status: from,
        });
    }
    if run.cancel_requested && change.blocked_by_cancel_request() {
        return Err(RunError::CancelPending { id: run.id });
    }
    if !change.allowed_from(from) {
        return Err(RunError::InvalidTransition {
            from,
            to: change.target().unwrap_or(from),
        });
    }
    if *change == Change::RequestCancel && run.cancel_requested {
        return Ok(None);
    }

    let mut next = run.clone();
    next.revision = run
        .revision
        .checked_add(1)
        .ok_or(RunError::RevisionExhausted {
            id: run.id,
            revision: run.revision,
        })?;
    next.updated_at = now;
    let mut details = Map::new();
    let mut outcome = None;
    match change.clone() {
        Change::Start => {}
        Change::Cancel => outcome = Some(TerminalEvent::RunCancelled),
        Change::Wait { wait_json } => {
            details.insert("wait".into(), wait_json.clone());
            next.wait_json = Some(wait_json);
        }
        Change::Resume { patch } => {
            details.insert("patch".into(), patch.clone().unwrap_or(Value::Null));
            if let Some(patch) = patch {
                merge_state(&mut next.state_json, patch);
            }
        }
        Change::Finish { final_state } => {
            if let Some(state) = final_state {
                merge_state(&mut next.state_json, state);
            }
            outcome = Some(TerminalEvent::RunCompleted {
                structured_output: Some(next.state_json.clone()),
            });
        }
        Change::Fail { reason } => {
            let failure = json!({ "failure": { "reason": reason, "at": now } });
            merge_state(&mut next.state_json, failure);
            details.insert("reason".into(), Value::String(reason.clone()));
            outcome = Some(TerminalEvent::RunFailed { reason });
        }
        Change::RequestCancel => next.cancel_requested = true,
        Change::ContinueAsNew { next_run_id } => {
            details.insert("next_run_id".into(), json!(next_run_id));
            outcome = Some(TerminalEvent::RunContinuedAsNew { next_run_id });
        }
        Change::UpdateState { patch, next_step } => {
            details.insert("patch".into(), patch.clone());
            details.insert("next_step".into(), json!(next_step));
            merge_state(&mut next.state_json, patch);
            if next_step.is_some() {
                next.current_step = next_step;
            }
        }
        Change::ObserveStep {
            external_run_id,
            status,
        } => {
            details.insert("external_run_id".into(), Value::String(external_run_id));
            details.insert("step_status".into(), json!(status.as_str()));
        }
    }
    if let Some(to) = change.target() {
        next.status = to;
        details.insert("from".into(), json!(from.as_str()));
        if to != RunStatus::Waiting {
            // `wait_json` describes what a waiting run waits for, nothing else.
            next.wait_json = None;
        }
        if to.is_terminal() {
            next.ended_at = Some(now);
        }
    }
    details.insert("status".into(), json!(next.status.as_str()));
    details.insert("revision".into(), json!(next.revision));
    Ok(Some(Planned {
        audit: EventKind::custom(change.audit_kind().as_str(), Value::Object(details)),
        run: next,
        outcome,
    }))
}

/// The audit event of a new run.
pub(crate) fn created_audit(run: &Run, runtime: &'static str) -> EventKind {
    EventKind::custom(
        AuditKind::Created.as_str(),
        json!({ "status": run.status.as_str(), "revision": run.revision, "runtime": runtime }),
    )
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
