//! What callers hand the [`RunManager`](super::RunManager): a new run's
//! fields and a step observation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::RunError;
use super::lifecycle::stored_now;
use crate::records::{Run, RunStep, RunStepStatus, StepRuntime, new_run_id};

/// The fields of a new run (see [`RunManager::create_managed`](super::RunManager::create_managed)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateManagedInput {
    /// The flow definition (controller) driving the run; must not be empty.
    pub controller_id: String,
    /// What the run is for, in the caller's words.
    pub goal: String,
    /// The session that owns the run; must not be empty.
    pub owner_session_key: String,
    /// Where the request came from, if known.
    pub requester_origin: Option<String>,
    /// The step the run starts at, if the controller tracks one.
    pub current_step: Option<String>,
    /// The run's initial state document.
    pub state_json: Value,
    /// The run's input (`Null` for none).
    pub input: Value,
    /// The caller's own id for the run, unique per flow among runs that
    /// have not ended (see [`Run::key`]).
    pub key: Option<String>,
    /// The run that started this one as its child, if any (see
    /// [`Run::parent_run_id`]).
    #[serde(default)]
    pub parent_run_id: Option<Uuid>,
}

/// The fields of a new mirrored run (see [`RunManager::create_mirrored`](super::RunManager::create_mirrored)):
/// the same as a managed run's.
pub type CreateMirroredInput = CreateManagedInput;

impl CreateManagedInput {
    /// A run of `controller_id` for `goal`, owned by `owner_session_key`, with
    /// an empty object state and no optional field set.
    pub fn new(
        controller_id: impl Into<String>,
        goal: impl Into<String>,
        owner_session_key: impl Into<String>,
    ) -> CreateManagedInput {
        CreateManagedInput {
            controller_id: controller_id.into(),
            goal: goal.into(),
            owner_session_key: owner_session_key.into(),
            requester_origin: None,
            current_step: None,
            state_json: Value::Object(Default::default()),
            input: Value::Null,
            key: None,
            parent_run_id: None,
        }
    }

    /// The `Created` run at revision 0 these fields describe.
    pub(crate) fn into_run(self) -> Result<Run, RunError> {
        require_non_empty("controller_id", &self.controller_id)?;
        require_non_empty("owner_session_key", &self.owner_session_key)?;
        let mut run = Run::new(self.controller_id, self.goal, self.owner_session_key);
        run.requester_origin = self.requester_origin;
        run.current_step = self.current_step;
        run.state_json = self.state_json;
        run.input = self.input;
        run.key = self.key;
        run.parent_run_id = self.parent_run_id;
        run.created_at = stored_now();
        run.updated_at = run.created_at;
        Ok(run)
    }
}

/// What was seen of one step of work running elsewhere (see
/// [`RunManager::record_step_observation`](super::RunManager::record_step_observation)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepObservation {
    /// The run the step belongs to.
    pub run_id: Uuid,
    /// The step's key in the system it mirrors (unique within the run;
    /// observations with the same one update the same step); must not be empty.
    pub external_run_id: String,
    /// What the step does.
    pub task: String,
    /// The step's status as observed.
    pub status: RunStepStatus,
    /// The session executing the step, if known (an absent one keeps the
    /// one observed earlier).
    pub child_session_key: Option<String>,
    /// The step's result, if any.
    pub result_json: Option<Value>,
}

impl StepObservation {
    /// The step row to upsert: observed work is never executed by troupe, so
    /// its runtime is [`StepRuntime::Mirrored`].
    pub(crate) fn into_step(self, now: DateTime<Utc>) -> Result<RunStep, RunError> {
        require_non_empty("external_run_id", &self.external_run_id)?;
        Ok(RunStep {
            id: new_run_id(),
            run_id: self.run_id,
            runtime: StepRuntime::Mirrored,
            child_session_key: self.child_session_key,
            external_run_id: self.external_run_id,
            task: self.task,
            status: self.status,
            result_json: self.result_json,
            created_at: now,
            updated_at: now,
        })
    }
}

fn require_non_empty(field: &str, value: &str) -> Result<(), RunError> {
    if value.trim().is_empty() {
        return Err(RunError::InvalidData(format!("{field} must not be empty")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_keys_are_invalid_data() {
        let mut input = CreateManagedInput::new("ctrl", "goal", " ");
        assert!(
            matches!(input.clone().into_run(), Err(RunError::InvalidData(m)) if m.contains("owner_session_key"))
        );
        input.owner_session_key = "o".into();
        input.controller_id = String::new();
        assert!(
            matches!(input.into_run(), Err(RunError::InvalidData(m)) if m.contains("controller_id"))
        );
        let obs = StepObservation {
            run_id: new_run_id(),
            external_run_id: String::new(),
            task: "t".into(),
            status: RunStepStatus::Running,
            child_session_key: None,
            result_json: None,
        };
        assert!(
            matches!(obs.into_step(Utc::now()), Err(RunError::InvalidData(m)) if m.contains("external_run_id"))
        );
    }

    #[test]
    fn input_fields_reach_the_run() {
        let input = CreateManagedInput {
            requester_origin: Some("cli".into()),
            current_step: Some("plan".into()),
            state_json: serde_json::json!({"n": 1}),
            ..CreateManagedInput::new("ctrl", "goal", "owner")
        };
        let run = input.into_run().unwrap();
        assert_eq!(run.revision, 0);
        assert_eq!(run.requester_origin.as_deref(), Some("cli"));
        assert_eq!(run.current_step.as_deref(), Some("plan"));
        assert_eq!(run.state_json, serde_json::json!({"n": 1}));
    }
}
