//! Records: the plain data that every layer above passes around and the
//! journal stores. A [`Run`] with its [`RunStatus`], the events of its log
//! ([`NewEvent`] in, [`RunEvent`] out, [`TerminalEvent`] for its one
//! outcome), mirrored [`RunStep`]s, [`StepOutput`]s and the failure ledger's
//! [`FailureEntry`]s, the [`DeadLetter`]s of items a stage gave up on and
//! the [`Memo`]s of memoized side effects, the [`DefinitionRecord`]s of
//! registered flow definitions (their [`FlowShape`] and fingerprint), the [`Checkpoint`] of a streaming
//! run (one [`StageCheckpoint`] per stage); every durable change as a [`WriteOp`] with its
//! [`WriteOutcome`], and the [`StoreError`] a write or read can fail with.
//!
//! No IO and no actors here: `store` (the backends), `journal` (the single
//! writer), `runs` (the control plane) and the actors all build on it.
//!
//! ```
//! use serde_json::json;
//! use troupe::records::{EventKind, NewEvent, Run, RunStatus, WriteOp};
//!
//! let run = Run::new("orders", "ship order 17", "session-1");
//! assert_eq!(run.status, RunStatus::Created);
//! let picked = NewEvent::with_id(run.id, "pick-1", EventKind::custom("picked", json!({"sku": 7})));
//! let op = WriteOp::Append(picked);
//! assert_eq!(op.name(), "append");
//! ```

mod checkpoint;
mod dead_letter;
mod definition;
mod error;
mod events;
mod inbox;
mod json_depth;
mod memo;
mod ops;
mod run;

pub use checkpoint::{Checkpoint, StageCheckpoint};
pub use dead_letter::{DeadLetter, MAX_DEAD_LETTER_ERRORS};
pub use definition::{
    DefinedEdge, DefinedStage, DefinitionChange, DefinitionRecord, FlowShape, MAX_DEFINITION_TEXT,
    changes_between, short_fingerprint,
};
pub use error::{DamagedRun, LockHolder, RowRef, StoreError};
pub use events::{Appended, Cursor, EventKind, NewEvent, RunEvent, TerminalAppend, TerminalEvent};
pub(crate) use events::{TERMINAL_NAMES, assigned_event_id};
pub(crate) use inbox::EVERY_STAGE;
pub use inbox::{InboxEntry, InboxMessage, Settled};
pub use json_depth::MAX_JSON_DEPTH;
pub(crate) use json_depth::check_json_depth;
pub use memo::Memo;
pub use ops::{WriteOp, WriteOutcome};
pub(crate) use ops::{appended, mismatch, next_revision};
pub(crate) use run::check_run_key;
pub use run::{
    FailureEntry, Lease, MAX_RUN_KEY_LEN, Run, RunFilter, RunStatus, RunStep, RunStepStatus,
    SYSTEM_STEP_ID, StepOutput, StepRuntime, continued_run_id, new_run_id,
};
