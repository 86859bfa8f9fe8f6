//! The moves a caller can make on a run and a small reference model of what
//! each should do, written from the control plane's rules (not from its code).

use serde_json::{Value, json};
use troupe::runs::{RunError, RunManager, RunStatus, RunStepStatus, StepObservation};
use uuid::Uuid;

/// One [`RunManager`] call on an existing run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Start,
    Wait,
    Resume,
    Finish,
    Fail,
    RequestCancel,
    Cancel,
    UpdateState,
    Observe,
    ContinueAsNew,
}

impl Move {
    pub const ALL: [Move; 10] = [
        Move::Start,
        Move::Wait,
        Move::Resume,
        Move::Finish,
        Move::Fail,
        Move::RequestCancel,
        Move::Cancel,
        Move::UpdateState,
        Move::Observe,
        Move::ContinueAsNew,
    ];

    pub fn audit_kind(self) -> &'static str {
        match self {
            Move::Start => "started",
            Move::Wait => "waiting",
            Move::Resume => "resumed",
            Move::Finish => "finished",
            Move::Fail => "failed",
            Move::RequestCancel => "cancel_requested",
            Move::Cancel => "cancelled",
            Move::UpdateState => "state_updated",
            Move::Observe => "step_observed",
            Move::ContinueAsNew => "continued_as_new",
        }
    }

    /// The patch, final state or wait document move number `n` carries.
    pub fn data(self, n: u64) -> Value {
        match self {
            Move::UpdateState if n % 4 == 3 => json!(n),
            Move::UpdateState => json!({ format!("k{}", n % 3): n }),
            Move::Resume => json!({ "r": n }),
            Move::Finish => json!({ "final": n }),
            Move::Wait => json!({ "for": n }),
            _ => Value::Null,
        }
    }

    /// Makes the call (its `n`-th variant of data).
    pub async fn apply(self, m: &RunManager, id: Uuid, n: u64) -> Result<(), RunError> {
        let data = self.data(n);
        match self {
            Move::Start => m.start_running(id).await.map(drop),
            Move::Wait => m.set_waiting(id, data).await.map(drop),
            Move::Resume => m.resume(id, Some(data)).await.map(drop),
            Move::Finish => m.finish(id, (n % 2 == 1).then_some(data)).await.map(drop),
            Move::Fail => m.fail(id, format!("reason {n}")).await.map(drop),
            Move::RequestCancel => m.request_cancel(id).await.map(drop),
            Move::Cancel => m.cancel(id).await.map(drop),
            Move::UpdateState => m
                .update_state(id, data, Some(format!("step-{n}")))
                .await
                .map(drop),
            Move::Observe => m
                .record_step_observation(StepObservation {
                    run_id: id,
                    external_run_id: format!("child-{}", n % 2),
                    task: "work".into(),
                    status: RunStepStatus::Running,
                    child_session_key: None,
                    result_json: None,
                })
                .await
                .map(drop),
            Move::ContinueAsNew => m.continue_as_new(id, json!(n)).await.map(drop),
        }
    }
}

/// How the model says a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AlreadyTerminal(RunStatus),
    CancelPending,
    InvalidTransition(RunStatus, RunStatus),
}

impl Refusal {
    /// Whether `error` is this refusal.
    pub fn matches(self, error: &RunError) -> bool {
        match (self, error) {
            (Refusal::AlreadyTerminal(s), RunError::AlreadyTerminal { status, .. }) => s == *status,
            (Refusal::CancelPending, RunError::CancelPending { .. }) => true,
            (Refusal::InvalidTransition(f, t), RunError::InvalidTransition { from, to }) => {
                (f, t) == (*from, *to)
            }
            _ => false,
        }
    }
}

/// What a run should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub status: RunStatus,
    pub cancel_requested: bool,
    pub revision: u64,
    /// The state, with a failure's `at` left out.
    pub state: Value,
    pub current_step: Option<String>,
    /// Audit events written so far (`created` included).
    pub audit_events: usize,
    /// The terminal event's kind, once recorded.
    pub outcome: Option<&'static str>,
}

impl Model {
    pub fn created(state: Value) -> Model {
        Model {
            status: RunStatus::Created,
            cancel_requested: false,
            revision: 0,
            state,
            current_step: None,
            audit_events: 1,
            outcome: None,
        }
    }

    /// Applies move `n`; a refusal changes nothing.
    pub fn step(&mut self, mv: Move, n: u64) -> Result<(), Refusal> {
        use RunStatus::*;
        let from = self.status;
        if from.is_terminal() && mv == Move::Observe {
            // The step is recorded; the run record is left as it is.
            return Ok(());
        }
        if from.is_terminal() {
            return Err(Refusal::AlreadyTerminal(from));
        }
        if self.cancel_requested
            && matches!(mv, Move::Finish | Move::UpdateState | Move::ContinueAsNew)
        {
            return Err(Refusal::CancelPending);
        }
        let to = match (mv, from) {
            (Move::Start, Created) | (Move::Resume, Waiting) => Running,
            (Move::Start | Move::Resume, _) => {
                return Err(Refusal::InvalidTransition(from, Running));
            }
            (Move::Wait, Running | Waiting) => Waiting,
            (Move::Wait, _) => return Err(Refusal::InvalidTransition(from, Waiting)),
            (Move::Finish, Running | Waiting) => Finished,
            (Move::Finish, _) => return Err(Refusal::InvalidTransition(from, Finished)),
            (Move::Fail, _) => Failed,
            (Move::Cancel, _) => Cancelled,
            (Move::ContinueAsNew, Running | Waiting) => ContinuedAsNew,
            (Move::ContinueAsNew, _) => {
                return Err(Refusal::InvalidTransition(from, ContinuedAsNew));
            }
            (Move::RequestCancel | Move::UpdateState | Move::Observe, _) => from,
        };
        if mv == Move::RequestCancel && self.cancel_requested {
            return Ok(());
        }
        let data = mv.data(n);
        match mv {
            Move::Resume | Move::UpdateState => merge(&mut self.state, data),
            Move::Finish if n % 2 == 1 => merge(&mut self.state, data),
            Move::Fail => merge(
                &mut self.state,
                json!({"failure": {"reason": format!("reason {n}")}}),
            ),
            Move::RequestCancel => self.cancel_requested = true,
            _ => {}
        }
        if mv == Move::UpdateState {
            self.current_step = Some(format!("step-{n}"));
        }
        self.outcome = match to {
            Finished => Some("RunCompleted"),
            Failed => Some("RunFailed"),
            Cancelled => Some("RunCancelled"),
            ContinuedAsNew => Some("RunContinuedAsNew"),
            _ => None,
        };
        self.status = to;
        self.revision += 1;
        self.audit_events += 1;
        Ok(())
    }
}

/// The shallow merge, restated: object keys replace, anything else replaces all.
fn merge(state: &mut Value, patch: Value) {
    if let (Some(current), Value::Object(keys)) = (state.as_object_mut(), &patch) {
        for (k, v) in keys {
            current.insert(k.clone(), v.clone());
        }
    } else {
        *state = patch;
    }
}

/// `state` with the failure's timestamp left out, to compare with a [`Model`].
pub fn without_failure_time(state: &Value) -> Value {
    let mut state = state.clone();
    if let Some(failure) = state.get_mut("failure").and_then(Value::as_object_mut) {
        failure.remove("at");
    }
    state
}
