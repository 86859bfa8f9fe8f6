//! Run records, steps, step outputs and failure-ledger entries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;
use super::json_depth::{check_json_depth, check_opt_json_depth};

/// The step id under which the system (not a user step) records failures in the ledger.
pub const SYSTEM_STEP_ID: &str = "__system__";

/// A new, time-ordered (UUID v7) run id: ids created later sort later, which
/// keeps the store's id index append-mostly.
pub fn new_run_id() -> Uuid {
    Uuid::now_v7()
}

/// Lifecycle status of a run. `Finished`, `Failed`, `Cancelled` and
/// `ContinuedAsNew` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Waiting for an external input.
    Waiting,
    /// Finished successfully (terminal).
    Finished,
    /// Failed (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
    /// Ended by continuing as a new run of its flow, which its terminal
    /// event names ([`TerminalEvent::RunContinuedAsNew`](super::TerminalEvent::RunContinuedAsNew)):
    /// the chain's outcome is its last run's (terminal).
    ContinuedAsNew,
}

impl RunStatus {
    /// Every status, in code order.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Created,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Finished,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::ContinuedAsNew,
    ];

    /// Whether no further change is allowed.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Finished
                | RunStatus::Failed
                | RunStatus::Cancelled
                | RunStatus::ContinuedAsNew
        )
    }

    /// Lower-case name (`"running"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Created => "created",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::ContinuedAsNew => "continued_as_new",
        }
    }

    /// The compact code stored on disk.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The status for a stored code, if any.
    pub fn from_code(code: i64) -> Option<RunStatus> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

/// The id of the run that run `previous` continues as: deterministic (a
/// UUID v5 named by `previous` in its own namespace), so that a second
/// attempt to continue `previous` names the same run, which the store
/// refuses to insert twice. A run continues at most once (its terminal
/// event is unique), so its id alone places the next run in its chain.
pub fn continued_run_id(previous: Uuid) -> Uuid {
    Uuid::new_v5(&previous, b"troupe/continued-as-new")
}

/// Which runs [`Store::list_runs`](crate::store::Store::list_runs) lists:
/// each field set narrows the list; the default lists every run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this flow (their `controller_id`).
    pub controller_id: Option<String>,
    /// Only runs this session owns (their `owner_session_key`).
    pub owner_session_key: Option<String>,
    /// Only runs this run started (their `parent_run_id`).
    pub parent_run_id: Option<Uuid>,
    /// Only runs created at or after this time (SQLite keeps times to the
    /// microsecond).
    pub created_since: Option<DateTime<Utc>>,
}

impl RunFilter {
    /// Whether `run` passes the filter.
    pub fn matches(&self, run: &Run) -> bool {
        self.status.is_none_or(|s| run.status == s)
            && self
                .controller_id
                .as_deref()
                .is_none_or(|c| run.controller_id == c)
            && self
                .owner_session_key
                .as_deref()
                .is_none_or(|o| run.owner_session_key == o)
            && self
                .parent_run_id
                .is_none_or(|p| run.parent_run_id == Some(p))
            && self.created_since.is_none_or(|t| run.created_at >= t)
    }
}

/// An ownership lease on a run (for several processes sharing a store later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds the lease.
    pub owner: String,
    /// Fencing epoch, incremented on every takeover.
    pub epoch: u64,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// The persisted record of one run (managed, mirrored or actor-driven).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Time-ordered run id (UUID v7).
    pub id: Uuid,
    /// The flow definition (controller) driving the run.
    pub controller_id: String,
    /// What the run is for, in the caller's words.
    pub goal: String,
    /// The session that owns the run (used to list a session's runs).
    pub owner_session_key: String,
    /// Where the request came from, if known.
    pub requester_origin: Option<String>,
    /// The run that started this one, if any.
    pub parent_run_id: Option<Uuid>,
    /// The step the run is at, if the controller tracks one.
    pub current_step: Option<String>,
    /// The run's state document.
    pub state_json: Value,
    /// What the run waits for while `Waiting`.
    pub wait_json: Option<Value>,
    /// Lifecycle status; the persisted status is the truth.
    pub status: RunStatus,
    /// Sticky cancellation request.
    pub cancel_requested: bool,
    /// Incremented by every change; compare-and-set updates check it.
    pub revision: u64,
    /// When the run was created.
    pub created_at: DateTime<Utc>,
    /// When the run last changed.
    pub updated_at: DateTime<Utc>,
    /// When the run reached a terminal status.
    pub ended_at: Option<DateTime<Utc>>,
    /// Ownership lease, if one is held.
    pub lease: Option<Lease>,
    /// The run's input, as given to `start` (`Null` when it has none).
    /// Fixed at insert: an update's value is ignored.
    #[serde(default)]
    pub input: Value,
    /// The caller's own id for the run (`RunOptions::id`), if it chose one.
    /// At most one run per flow and key is not ended: a store refuses to
    /// insert a second one with [`StoreError::RunKeyTaken`]. Fixed at
    /// insert: an update's value is ignored.
    #[serde(default)]
    pub key: Option<String>,
    /// The fingerprint of the flow definition the run started with
    /// ([`FlowShape::fingerprint`](super::FlowShape::fingerprint)); `None`
    /// for a run recorded before fingerprints existed, or not started by a
    /// runtime. Fixed at insert: an update's value is ignored.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The version of that definition, if it declared one. Fixed at insert.
    #[serde(default)]
    pub flow_version: Option<u32>,
    /// The run this one continues (the previous run of its chain, which
    /// ended [`RunStatus::ContinuedAsNew`] naming this one); `None` for the
    /// first run of a chain. Fixed at insert: an update's value is ignored.
    #[serde(default)]
    pub continued_from: Option<Uuid>,
}

impl Run {
    /// A `Created` run at revision 0 with a fresh v7 id, empty object state and
    /// no optional fields set.
    pub fn new(
        controller_id: impl Into<String>,
        goal: impl Into<String>,
        owner_session_key: impl Into<String>,
    ) -> Run {
        let now = Utc::now();
        Run {
            id: new_run_id(),
            controller_id: controller_id.into(),
            goal: goal.into(),
            owner_session_key: owner_session_key.into(),
            requester_origin: None,
            parent_run_id: None,
            current_step: None,
            state_json: Value::Object(Default::default()),
            wait_json: None,
            status: RunStatus::Created,
            cancel_requested: false,
            revision: 0,
            created_at: now,
            updated_at: now,
            ended_at: None,
            lease: None,
            input: Value::Null,
            key: None,
            fingerprint: None,
            flow_version: None,
            continued_from: None,
        }
    }
}

impl Run {
    /// Checks what a store must be able to read back: the nesting of
    /// `state_json` and `wait_json` ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_json_depth(self.id, "state_json", &self.state_json)?;
        check_json_depth(self.id, "input", &self.input)?;
        if let Some(key) = &self.key {
            check_run_key(self.id, key)?;
        }
        check_opt_json_depth(self.id, "wait_json", self.wait_json.as_ref())
    }
}

/// The longest run key a store accepts, in bytes.
pub const MAX_RUN_KEY_LEN: usize = 512;

/// Refuses a run key that is empty, longer than [`MAX_RUN_KEY_LEN`] or
/// holds a control character (keys are typed in shells and printed in
/// tables).
pub(crate) fn check_run_key(run_id: Uuid, key: &str) -> Result<(), StoreError> {
    let why = if key.is_empty() {
        "a run key may not be empty"
    } else if key.len() > MAX_RUN_KEY_LEN {
        "a run key may be at most MAX_RUN_KEY_LEN (512) bytes long"
    } else if key.chars().any(char::is_control) {
        "a run key may not hold control characters"
    } else {
        return Ok(());
    };
    let mut value: String = key.chars().take(64).collect();
    if value.len() < key.len() {
        value.push('…');
    }
    Err(StoreError::InvalidInput {
        run_id,
        field: "key",
        value,
        why,
    })
}

/// Where a step's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepRuntime {
    /// Executed by troupe.
    Managed,
    /// Executed elsewhere and only observed.
    Mirrored,
}

impl StepRuntime {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepRuntime::Managed => "managed",
            StepRuntime::Mirrored => "mirrored",
        }
    }

    /// The compact code stored on disk.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The runtime for a stored code, if any.
    pub fn from_code(code: i64) -> Option<StepRuntime> {
        match code {
            0 => Some(StepRuntime::Managed),
            1 => Some(StepRuntime::Mirrored),
            _ => None,
        }
    }
}

/// Status of one step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStepStatus {
    /// Not started.
    Pending,
    /// In progress.
    Running,
    /// Done.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl RunStepStatus {
    const ALL: [RunStepStatus; 5] = [
        RunStepStatus::Pending,
        RunStepStatus::Running,
        RunStepStatus::Succeeded,
        RunStepStatus::Failed,
        RunStepStatus::Cancelled,
    ];

    /// Lower-case name (`"succeeded"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStepStatus::Pending => "pending",
            RunStepStatus::Running => "running",
            RunStepStatus::Succeeded => "succeeded",
            RunStepStatus::Failed => "failed",
            RunStepStatus::Cancelled => "cancelled",
        }
    }

    /// The compact code stored on disk.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The status for a stored code, if any.
    pub fn from_code(code: i64) -> Option<RunStepStatus> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

/// One step of a run; for mirrored runs, the latest observation of work done elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    /// The step's own id.
    pub id: Uuid,
    /// The run the step belongs to.
    pub run_id: Uuid,
    /// Where the step runs.
    pub runtime: StepRuntime,
    /// The session executing the step, if known.
    pub child_session_key: Option<String>,
    /// The step's key in the system it mirrors (unique within the run;
    /// upserts key on it).
    pub external_run_id: String,
    /// What the step does.
    pub task: String,
    /// Step status.
    pub status: RunStepStatus,
    /// The step's result, if any.
    pub result_json: Option<Value>,
    /// When the step was first recorded.
    pub created_at: DateTime<Utc>,
    /// When the step last changed.
    pub updated_at: DateTime<Utc>,
}

impl RunStep {
    /// Checks the nesting of `result_json` ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_opt_json_depth(self.run_id, "result_json", self.result_json.as_ref())
    }
}

/// The recorded output of one step, or of one iteration of a step inside a loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    /// The run.
    pub run_id: Uuid,
    /// The step.
    pub step_id: String,
    /// The loop the step ran in, for loop-iteration outputs.
    pub loop_id: Option<String>,
    /// The iteration index, for loop-iteration outputs.
    pub iteration: Option<u32>,
    /// The output.
    pub output: Value,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

impl StepOutput {
    /// Checks the nesting of `output` ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_json_depth(self.run_id, "output", &self.output)
    }
}

/// One entry of the failure ledger: a failure that must not be lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEntry {
    /// The run.
    pub run_id: Uuid,
    /// The failing step, or [`SYSTEM_STEP_ID`].
    pub step_id: String,
    /// Why it failed.
    pub reason: String,
    /// Structured error details, if any.
    pub error_json: Option<Value>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

impl FailureEntry {
    /// Checks the nesting of `error_json` ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        check_opt_json_depth(self.run_id, "error_json", self.error_json.as_ref())
    }
}
