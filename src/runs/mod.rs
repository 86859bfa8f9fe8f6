//! Runs: the control plane ([`RunManager`]) and run outcomes.
//!
//! # The control plane
//!
//! Applications drive and observe runs through a [`RunManager`] over any
//! [`Store`](crate::store::Store) (a bare store, or the runtime's
//! [`JournalHandle`](crate::journal::JournalHandle)). The rules:
//!
//! - A new run is `Created` at revision 0 with a `created` audit event. Each
//!   change increments the revision by one and appends exactly one audit event
//!   (see [`AuditKind`]), atomically, with a compare-and-set on the revision.
//! - Legal moves ([`is_legal_move`]): `Created → Running` (`start_running`),
//!   `Running ⇄ Waiting` (`set_waiting`, `resume`),
//!   `Running | Waiting → Finished | Failed | Cancelled`,
//!   `Created → Cancelled | Failed`. Any other move is
//!   [`RunError::InvalidTransition`]; any change to a terminal run is
//!   [`RunError::AlreadyTerminal`].
//! - `request_cancel` sets a sticky flag; from then on `finish` and
//!   `update_state` return [`RunError::CancelPending`], while `cancel` (and
//!   `fail`) still succeed.
//! - State patches merge shallowly ([`merge_state`]): top-level keys of an
//!   object patch replace, any other patch replaces the whole state. `fail`
//!   merges `{"failure": {"reason", "at"}}`; `finish`'s final state, when
//!   given, merges the same way.
//! - `finish`, `fail` and `cancel` also append the run's outcome
//!   (`RunCompleted` with the state the run ends with, `RunFailed { reason }`,
//!   `RunCancelled`) in the same atomic write, so a run's status and outcome
//!   never diverge and the store's one-outcome-per-run rule holds.
//! - A revision conflict (another writer changed the run since it was read)
//!   is retried, re-reading and re-checking the run, up to
//!   [`DEFAULT_MAX_ATTEMPTS`] times; then [`RunError::RevisionMismatch`].
//!
//! A managed run:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use serde_json::json;
//! use troupe::runs::{CreateManagedInput, RunError, RunManager, RunStatus};
//! use troupe::store::SqliteStore;
//!
//! let manager = RunManager::new(Arc::new(SqliteStore::open(":memory:").await?));
//! let run = manager
//!     .create_managed(CreateManagedInput {
//!         controller_id: "orders".into(),
//!         goal: "ship order 17".into(),
//!         owner_session_key: "session-1".into(),
//!         requester_origin: Some("web".into()),
//!         current_step: Some("pick".into()),
//!         state_json: json!({"items": 3}),
//!         input: serde_json::Value::Null,
//!         key: None,
//!         parent_run_id: None,
//!     })
//!     .await?;
//! assert_eq!((run.status, run.revision), (RunStatus::Created, 0));
//!
//! manager.start_running(run.id).await?;
//! manager.set_waiting(run.id, json!({"for": "courier"})).await?;
//! let run = manager.resume(run.id, Some(json!({"courier": "ups"}))).await?;
//! assert_eq!(run.state_json, json!({"items": 3, "courier": "ups"}));
//!
//! manager.request_cancel(run.id).await?;
//! let refused = manager.finish(run.id, None).await;
//! assert!(matches!(refused, Err(RunError::CancelPending { .. })));
//! let run = manager.cancel(run.id).await?;
//! assert_eq!((run.status, run.revision), (RunStatus::Cancelled, 5));
//!
//! let log = manager.list_events(run.id, 10).await?;
//! let kinds: Vec<&str> = log.iter().map(|e| e.kind.name()).collect();
//! assert_eq!(
//!     kinds,
//!     ["created", "started", "waiting", "resumed", "cancel_requested", "cancelled", "RunCancelled"]
//! );
//! # Ok::<(), RunError>(())
//! # }).unwrap();
//! ```
//!
//! A mirrored run, whose work runs elsewhere and is only observed:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use serde_json::json;
//! use troupe::runs::{CreateMirroredInput, RunManager, RunStatus, RunStepStatus, StepObservation};
//! use troupe::store::MemoryStore;
//!
//! let manager = RunManager::new(Arc::new(MemoryStore::new()));
//! let run = manager
//!     .create_mirrored(CreateMirroredInput::new("ci", "build #42", "session-2"))
//!     .await?;
//! assert_eq!((run.status, run.revision), (RunStatus::Running, 1));
//!
//! let seen = StepObservation {
//!     run_id: run.id,
//!     external_run_id: "job-7".into(),
//!     task: "compile".into(),
//!     status: RunStepStatus::Running,
//!     child_session_key: Some("worker-3".into()),
//!     result_json: None,
//! };
//! manager.record_step_observation(seen.clone()).await?;
//! // Same external run id: the same step is updated; the worker is remembered.
//! let done = manager
//!     .record_step_observation(StepObservation {
//!         status: RunStepStatus::Succeeded,
//!         child_session_key: None,
//!         result_json: Some(json!({"artifacts": 2})),
//!         ..seen
//!     })
//!     .await?;
//! assert_eq!(done.child_session_key.as_deref(), Some("worker-3"));
//! assert_eq!(manager.list_steps(run.id).await?, vec![done]);
//!
//! let run = manager.finish(run.id, Some(json!({"artifacts": 2}))).await?;
//! assert_eq!((run.status, run.revision), (RunStatus::Finished, 4));
//! # Ok::<(), troupe::runs::RunError>(())
//! # }).unwrap();
//! ```
//!
//! # Run outcomes
//!
//! Writers that persist a terminal status and its outcome in two steps use
//! [`record_persisted_terminalization`]; [`repair_persisted_terminalization`]
//! and the recovery scan [`recover`] append an outcome a crash left out.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use troupe::runs::{TerminalTarget, TerminalizationOutcome, recover, repair_persisted_terminalization};
//! use troupe::store::{Store, MemoryStore};
//! use troupe::records::{EventKind, Run, RunStatus, TerminalEvent};
//!
//! let store = MemoryStore::new();
//! let mut run = Run::new("orders", "ship", "session-1");
//! store.insert_run(run.clone(), None).await?;
//! run.status = RunStatus::Cancelled;
//! store.update_run(run.clone(), 0, EventKind::custom("cancelled", serde_json::Value::Null)).await?;
//! // The process died before the terminal event was appended; the scan repairs it.
//! let report = recover(&store).await?;
//! assert_eq!(report.repaired, vec![run.id]);
//! let terminal = store.terminal_event(run.id).await?.unwrap();
//! assert_eq!(terminal.kind, EventKind::Terminal(TerminalEvent::RunCancelled));
//! // Repairing again appends nothing.
//! let again = repair_persisted_terminalization(&store, run.id, "orders", Some(TerminalTarget::Cancelled)).await;
//! assert_eq!(again.ok(), Some(TerminalizationOutcome::Noop));
//! # Ok::<(), troupe::records::StoreError>(())
//! # }).unwrap();
//! ```

mod chain;
mod error;
mod input;
mod lifecycle;
mod manager;
mod recovery;
mod terminal;

pub use chain::{MAX_CHAIN_LEN, chain};
pub use error::RunError;
pub use input::{CreateManagedInput, CreateMirroredInput, StepObservation};
pub use lifecycle::{AuditKind, is_legal_move, merge_state};
pub use manager::{DEFAULT_MAX_ATTEMPTS, RunManager, RunObserver};
pub use recovery::{PlannedRepair, RecoveryReport, RepairPlan, plan_repairs, recover};
pub(crate) use terminal::structured_output;
pub use terminal::{
    TerminalTarget, TerminalizationError, TerminalizationOutcome, derive_terminal_event,
    rebuild_structured_output, record_persisted_terminalization, repair_persisted_terminalization,
};

/// The run record types, re-exported from [`crate::store`] where the control plane uses them.
pub use crate::records::{Run, RunStatus, RunStep, RunStepStatus, StepRuntime};
