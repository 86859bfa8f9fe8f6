//! Writes as data: every durable change is a [`WriteOp`], so that a journal
//! actor can queue, batch and group-commit them, and every backend applies
//! the same set.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::checkpoint::Checkpoint;
use super::dead_letter::DeadLetter;
use super::definition::DefinitionRecord;
use super::error::StoreError;
use super::events::{Appended, EventKind, NewEvent, TerminalAppend, TerminalEvent};
use super::inbox::InboxEntry;
use super::memo::Memo;
use super::run::{FailureEntry, Run, RunStep, StepOutput};

/// One atomic write. A backend applies each op all-or-nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert a new run (its `revision` is stored as given, normally 0), and
    /// optionally its first audit event, atomically.
    InsertRun {
        /// The run (boxed, like every large field of an op, so that ops,
        /// which the journal moves several times each, stay small).
        run: Box<Run>,
        /// An audit event (e.g. `created`) appended to the run in the same write.
        audit: Option<EventKind>,
    },
    /// Compare-and-set: replace the run's fields if its stored revision is
    /// `expected_revision`, store revision `expected_revision + 1`, and append
    /// the audit event, atomically. A mismatch is [`StoreError::RevisionMismatch`];
    /// `expected_revision == u64::MAX` (no next revision) is
    /// [`StoreError::InvalidInput`].
    UpdateRun {
        /// The new field values (its `revision` field is ignored).
        run: Box<Run>,
        /// The revision the change is based on.
        expected_revision: u64,
        /// The audit event describing the change.
        audit: EventKind,
    },
    /// Append one event.
    Append(NewEvent),
    /// Append several events atomically (all or none).
    AppendBatch(Vec<NewEvent>),
    /// Append a terminal event unless the run already has one.
    AppendTerminalIfAbsent {
        /// The run.
        run_id: Uuid,
        /// The outcome.
        event: TerminalEvent,
    },
    /// Record a step's (or loop iteration's) output; the first record for a key wins.
    RecordStepOutput(StepOutput),
    /// Append a failure-ledger entry.
    RecordFailure(FailureEntry),
    /// Record an item a stage gave up on.
    RecordDeadLetter(Box<DeadLetter>),
    /// Record a memoized side effect's result unless one is recorded for
    /// its `(run_id, stage, name)`; [`WriteOutcome::MemoRecorded`] carries
    /// the one stored. Refused with [`StoreError::RunNotFound`] for an
    /// unknown run.
    RecordMemo(Box<Memo>),
    /// Record a run's checkpoint, replacing the one stored for the run if
    /// this one's `id` is greater ([`WriteOutcome::CheckpointRecorded`]).
    /// Refused with [`StoreError::StaleCheckpoint`] (changing nothing) when
    /// its `id` is not greater than the stored one's,
    /// [`StoreError::RunNotFound`] for an unknown run,
    /// [`StoreError::RunEnded`] for a run whose status is terminal, and
    /// [`StoreError::InvalidInput`] for an id of 0 (or past `i64::MAX`), an
    /// empty stage name or a state nested too deep.
    RecordCheckpoint(Box<Checkpoint>),
    /// Accept messages into runs' inboxes, all or none. Refused with
    /// [`StoreError::RunNotFound`] for an unknown run,
    /// [`StoreError::RunEnded`] for a run whose status is terminal, and
    /// [`StoreError::InboxEntryExists`] for an entry whose `(run_id, id,
    /// stage)` is already stored. Entries are stored unsettled.
    AcceptInbox(Vec<InboxEntry>),
    /// Settle an inbox entry: its stage handled it (`undeliverable` is
    /// `None`) or it could not be handed over (why). Settling an entry that
    /// is already settled, or unknown, changes nothing
    /// ([`WriteOutcome::InboxSettled`] says whether it did): a message
    /// re-delivered after a crash may be handled, and settled, twice.
    SettleInbox {
        /// The run.
        run_id: Uuid,
        /// The entry's id.
        id: Uuid,
        /// The stage it was for.
        stage: String,
        /// `None`: handled; `Some(why)`: undeliverable.
        undeliverable: Option<String>,
    },
    /// Insert or update a step keyed by `(run_id, external_run_id)`; an update keeps the
    /// stored `id`, `created_at` and, when the new one is absent, `child_session_key`.
    UpsertStep(Box<RunStep>),
    /// Record a registered flow definition unless one with its `name` and
    /// `fingerprint` is recorded ([`WriteOutcome::DefinitionRecorded`]
    /// says whether this write stored it; the first record keeps its
    /// `registered_at`). Refused with [`StoreError::InvalidDefinition`]
    /// for an empty name, a fingerprint that is not 64 hex digits, or text
    /// too long or holding a NUL.
    RecordDefinition(Box<DefinitionRecord>),
    /// Apply several ops atomically (all or none).
    Atomic(Vec<WriteOp>),
}

impl WriteOp {
    /// The runs whose owner this op writes for, pushed onto `out`: the
    /// writes a leased store fences by the run's lease epoch. A new run
    /// (`InsertRun`) is not yet anyone's, and input accepted into an
    /// inbox (`AcceptInbox`) may come from any process.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn owner_runs(&self, out: &mut Vec<Uuid>) {
        match self {
            // A definition is the journal's, not a run's.
            WriteOp::InsertRun { .. } | WriteOp::AcceptInbox(_) | WriteOp::RecordDefinition(_) => {}
            WriteOp::UpdateRun { run, .. } => out.push(run.id),
            WriteOp::Append(event) => out.push(event.run_id),
            WriteOp::AppendBatch(events) => out.extend(events.iter().map(|e| e.run_id)),
            WriteOp::AppendTerminalIfAbsent { run_id, .. }
            | WriteOp::SettleInbox { run_id, .. } => out.push(*run_id),
            WriteOp::RecordStepOutput(output) => out.push(output.run_id),
            WriteOp::RecordFailure(entry) => out.push(entry.run_id),
            WriteOp::RecordDeadLetter(letter) => out.push(letter.run_id),
            WriteOp::RecordMemo(memo) => out.push(memo.run_id),
            WriteOp::RecordCheckpoint(checkpoint) => out.push(checkpoint.run_id),
            WriteOp::UpsertStep(step) => out.push(step.run_id),
            WriteOp::Atomic(ops) => ops.iter().for_each(|op| op.owner_runs(out)),
        }
    }

    /// A short stable name for tracing and fault injection.
    pub fn name(&self) -> &'static str {
        match self {
            WriteOp::InsertRun { .. } => "insert_run",
            WriteOp::UpdateRun { .. } => "update_run",
            WriteOp::Append(_) => "append",
            WriteOp::AppendBatch(_) => "append_batch",
            WriteOp::AppendTerminalIfAbsent { .. } => "append_terminal_if_absent",
            WriteOp::RecordStepOutput(_) => "record_step_output",
            WriteOp::RecordFailure(_) => "record_failure",
            WriteOp::RecordDeadLetter(_) => "record_dead_letter",
            WriteOp::RecordMemo(_) => "record_memo",
            WriteOp::RecordCheckpoint(_) => "record_checkpoint",
            WriteOp::AcceptInbox(_) => "accept_inbox",
            WriteOp::SettleInbox { .. } => "settle_inbox",
            WriteOp::UpsertStep(_) => "upsert_step",
            WriteOp::RecordDefinition(_) => "record_definition",
            WriteOp::Atomic(_) => "atomic",
        }
    }
}

/// What a [`WriteOp`] did; the variant matches the op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// For [`WriteOp::InsertRun`].
    RunInserted {
        /// The audit event, if one was given.
        audit: Option<Appended>,
    },
    /// For [`WriteOp::UpdateRun`].
    RunUpdated {
        /// The run's new revision.
        revision: u64,
        /// The audit event.
        audit: Appended,
    },
    /// For [`WriteOp::Append`].
    Appended(Appended),
    /// For [`WriteOp::AppendBatch`], one entry per event in order.
    BatchAppended(Vec<Appended>),
    /// For [`WriteOp::AppendTerminalIfAbsent`].
    Terminal(TerminalAppend),
    /// For [`WriteOp::RecordStepOutput`]: `false` when an output was already stored for the key.
    StepOutputRecorded {
        /// Whether this output was stored.
        inserted: bool,
    },
    /// For [`WriteOp::RecordFailure`].
    FailureRecorded,
    /// For [`WriteOp::RecordDeadLetter`].
    DeadLetterRecorded,
    /// For [`WriteOp::RecordMemo`]: the memo stored for the key (the one
    /// written, or the one found), and whether this write stored it.
    MemoRecorded {
        /// The stored memo.
        stored: Box<Memo>,
        /// `false`: one was already recorded for the key.
        inserted: bool,
    },
    /// For [`WriteOp::RecordCheckpoint`]: the checkpoint is the run's latest.
    CheckpointRecorded,
    /// For [`WriteOp::AcceptInbox`].
    InboxAccepted,
    /// For [`WriteOp::SettleInbox`]: whether an unsettled entry was settled.
    InboxSettled {
        /// `false`: no such entry, or it was already settled.
        settled: bool,
    },
    /// For [`WriteOp::UpsertStep`]: the step as stored.
    StepUpserted(RunStep),
    /// For [`WriteOp::RecordDefinition`].
    DefinitionRecorded {
        /// `false`: one with its name and fingerprint was already recorded.
        inserted: bool,
    },
    /// For [`WriteOp::Atomic`], one outcome per op in order.
    Atomic(Vec<WriteOutcome>),
}

/// The revision a compare-and-set based on `expected` stores: refused,
/// not overflowed, when `expected` is the last one (every backend checks
/// this before the compare, so that they agree).
pub(crate) fn next_revision(run_id: Uuid, expected: u64) -> Result<u64, StoreError> {
    expected
        .checked_add(1)
        .ok_or_else(|| StoreError::InvalidInput {
            run_id,
            field: "expected_revision",
            value: expected.to_string(),
            why: "no revision follows u64::MAX",
        })
}

/// A backend returned an outcome that does not match the op: a backend bug,
/// reported instead of panicking.
pub(crate) fn mismatch(op: &'static str) -> StoreError {
    StoreError::OutcomeMismatch { op }
}

/// The outcome of a [`WriteOp::Append`].
pub(crate) fn appended(outcome: WriteOutcome) -> Result<Appended, StoreError> {
    match outcome {
        WriteOutcome::Appended(a) => Ok(a),
        _ => Err(mismatch("append")),
    }
}
