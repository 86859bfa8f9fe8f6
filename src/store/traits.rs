//! The store trait every backend (and the journal actor's handle) implements.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::lease::{Fence, Ownership, Renewal};

use crate::records::{
    Appended, Cursor, EventKind, NewEvent, RunEvent, TerminalAppend, TerminalEvent,
};
use crate::records::{
    Checkpoint, DeadLetter, DefinitionRecord, FailureEntry, InboxEntry, Memo, Run, RunFilter,
    RunStatus, RunStep, StepOutput,
};
use crate::records::{DamagedRun, StoreError};
use crate::records::{WriteOp, WriteOutcome, appended, mismatch};

/// What [`Store::apply_batch`] returns: the commit's outcome, then one
/// result per op.
pub type BatchResult = Result<Vec<Result<WriteOutcome, StoreError>>, StoreError>;

/// A job for a store's writer thread (see [`Store::run_on_writer`]): it
/// gets a synchronous `apply_batch` on that thread. That `apply_batch` only
/// reads the ops, so the job decides where they are dropped (the journal
/// drops them off the writer thread, its critical path).
pub type WriterJob = Box<dyn FnOnce(&mut dyn FnMut(&[WriteOp]) -> BatchResult) + Send>;

/// A durable store of runs, their event logs, step outputs, steps and failure
/// ledger. Object safe: the control plane and runtime hold `Arc<dyn Store>`.
///
/// Every write is a [`WriteOp`] applied by [`apply_batch`](Store::apply_batch);
/// the typed write methods are conveniences over it. A write returns only
/// after it is durable.
///
/// What a store acknowledges it can read back. Every JSON value a store
/// keeps (event payloads and terminal structured outputs, a run's
/// `state_json` and `wait_json`, step `result_json`, step outputs, failure
/// `error_json`, checkpoint states) may nest arrays and objects at most
/// [`MAX_JSON_DEPTH`](crate::records::MAX_JSON_DEPTH) levels deep: a deeper
/// one is refused at write time with [`StoreError::InvalidInput`] naming the
/// field, by every backend alike, and the refused op fails alone.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` in one durable commit. Each op is atomic on its own and
    /// gets its own result: a failing op does not fail its neighbours. The
    /// outer error means the commit itself failed and none of the ops is
    /// durable: the storage refused the transaction or its commit (SQLite
    /// also reports so when it refuses the batch's plain appends, which it
    /// inserts together, e.g. for lack of disk space).
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError>;

    /// [`apply_batch`](Store::apply_batch), with the lease epochs some of
    /// the ops were written under ([`Fence`]): a store that leases runs
    /// refuses a fenced op with [`StoreError::LeaseLost`] unless it holds
    /// the op's run at the fence's epoch (the op fails alone). The default,
    /// for a single owner, has nothing to fence and applies the batch.
    async fn apply_fenced_batch(&self, ops: Vec<WriteOp>, fences: Vec<Fence>) -> BatchResult {
        let _ = fences;
        self.apply_batch(ops).await
    }

    /// Runs `job` on the store's own writer thread, if it has one, handing it
    /// a synchronous [`apply_batch`](Store::apply_batch): a caller that
    /// commits batch after batch (the journal) then commits and acknowledges
    /// on that thread, without a thread hop per commit. Jobs run in the order
    /// they are posted. `Err(job)` (the default) means the store has no such
    /// thread and the caller uses `apply_batch`. A posted job is dropped
    /// without running if the thread has stopped.
    fn run_on_writer(&self, job: WriterJob) -> Result<(), WriterJob> {
        Err(job)
    }

    /// How this store's runs are owned ([`Ownership`]): a single owner,
    /// unless the store leases runs to the processes sharing it.
    fn ownership(&self) -> Ownership {
        Ownership::Single
    }

    /// Claims up to `limit` unfinished runs of the flows named in `flows`
    /// whose lease is free or has lapsed (and is not this store's, unless
    /// it released it), but none in `skip`, oldest first, atomically (two
    /// processes never claim one run): each comes back leased to this
    /// store under a new epoch. A single owner claims nothing: its runs are
    /// all its own already.
    async fn claim_runs(
        &self,
        flows: &[String],
        skip: &[Uuid],
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        let _ = (flows, skip, limit);
        Ok(Vec::new())
    }

    /// Renews every lease this store holds, in one write, and reports the
    /// leases lost since the last call (see [`Renewal`]).
    async fn renew_leases(&self) -> Result<Renewal, StoreError> {
        Ok(Renewal::default())
    }

    /// Lets the leases of `runs` lapse now (a runtime shutting down), so
    /// that another process may claim them at once.
    async fn release_leases(&self, runs: &[Uuid]) -> Result<(), StoreError> {
        let _ = runs;
        Ok(())
    }

    /// Notified when a fenced write finds one of this store's leases lost,
    /// so that the run stops at once rather than at the next renewal.
    fn lease_lost(&self) -> Option<Arc<Notify>> {
        None
    }

    /// The ids of runs that another process accepted input for (a shared
    /// journal's doorbell: the owner hands it over at once); `None` for a
    /// single owner, whose input all comes through itself. [`Uuid::nil`]
    /// means some may have been missed (a lost connection): look at every
    /// run held, as a receiver that lagged must too. Call inside a tokio
    /// runtime (the first subscriber starts the listener).
    fn inbox_doorbell(&self) -> Option<broadcast::Receiver<Uuid>> {
        None
    }

    /// Applies one op durably.
    async fn apply(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let name = op.name();
        let mut results = self.apply_batch(vec![op]).await?;
        results.pop().unwrap_or(Err(mismatch(name)))
    }

    /// The run, if it exists.
    async fn get_run(&self, id: Uuid) -> Result<Option<Run>, StoreError>;

    /// The newest run of `flow` whose [`key`](Run::key) is `key`, if any:
    /// the one that may not have ended (see [`StoreError::RunKeyTaken`]).
    async fn find_run_by_key(&self, flow: &str, key: &str) -> Result<Option<Run>, StoreError>;

    /// Runs owned by a session, oldest first.
    async fn list_runs_by_owner(&self, owner_session_key: &str) -> Result<Vec<Run>, StoreError>;

    /// Runs with a status, oldest first.
    async fn list_runs_by_status(&self, status: RunStatus) -> Result<Vec<Run>, StoreError>;

    /// One page of the runs `filter` passes, newest first: by `created_at`,
    /// then id, descending. `before` is the last run of the previous page
    /// (`None` for the first page); a page holds at most `limit` runs, and
    /// one shorter than `limit` is the last. A `before` that names no run is
    /// [`StoreError::RunNotFound`]. The default reads the runs of each
    /// status the filter allows and sorts them; SQLite answers in one query.
    async fn list_runs(
        &self,
        filter: &RunFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        let bound = match before {
            Some(id) => {
                let run = self.get_run(id).await?.ok_or(StoreError::RunNotFound(id))?;
                Some((run.created_at, run.id))
            }
            None => None,
        };
        let statuses = match filter.status {
            Some(status) => vec![status],
            None => RunStatus::ALL.to_vec(),
        };
        let mut runs = Vec::new();
        for status in statuses {
            let listed = self.list_runs_by_status(status).await?;
            runs.extend(listed.into_iter().filter(|run| {
                filter.matches(run) && bound.is_none_or(|b| (run.created_at, run.id) < b)
            }));
        }
        runs.sort_unstable_by_key(|run| std::cmp::Reverse((run.created_at, run.id)));
        runs.truncate(limit);
        Ok(runs)
    }

    /// Runs whose persisted status is terminal but that have no terminal event
    /// (a terminalization that was interrupted), oldest first.
    async fn list_runs_missing_terminal_event(&self) -> Result<Vec<Run>, StoreError>;

    /// The runs the recovery scan at start reads, oldest first: every run
    /// whose status is not terminal, every run with a terminal status but
    /// no terminal event (as [`list_runs_missing_terminal_event`](Store::list_runs_missing_terminal_event)),
    /// and (SQLite) every row whose status code this version does not know.
    /// Row by row: a row that cannot be decoded is returned in its place as
    /// a [`DamagedRun`] instead of failing the whole list, so one damaged
    /// run does not keep the others from being recovered. The outer error
    /// means the scan itself failed.
    async fn list_runs_to_recover(&self) -> Result<Vec<Result<Run, DamagedRun>>, StoreError>;

    /// The run's most recent `limit` events, in log order.
    async fn list_events(&self, run_id: Uuid, limit: usize) -> Result<Vec<RunEvent>, StoreError>;

    /// All of the run's events, in log order.
    async fn replay(&self, run_id: Uuid) -> Result<Vec<RunEvent>, StoreError> {
        self.list_events(run_id, usize::MAX).await
    }

    /// Up to `limit` events of any run with a cursor after `after`, in cursor order.
    async fn poll(&self, after: Cursor, limit: usize) -> Result<Vec<RunEvent>, StoreError>;

    /// The cursor of the newest event (`Cursor(0)` when the log is empty).
    async fn latest_cursor(&self) -> Result<Cursor, StoreError>;

    /// The run's terminal event, if it has one.
    async fn terminal_event(&self, run_id: Uuid) -> Result<Option<RunEvent>, StoreError>;

    /// The run's recorded step and loop-iteration outputs, in recording order.
    async fn list_step_outputs(&self, run_id: Uuid) -> Result<Vec<StepOutput>, StoreError>;

    /// The recorded step and loop-iteration outputs of every run in
    /// `run_ids`, grouped by run in the order the runs are listed (a run
    /// listed twice counts once; an unknown run has none), each run's in
    /// recording order: one read for many runs, as recovery needs. The
    /// default asks run by run; the stores override it with one query.
    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        let mut outputs = Vec::new();
        for run_id in distinct(run_ids) {
            outputs.extend(self.list_step_outputs(run_id).await?);
        }
        Ok(outputs)
    }

    /// The run's failure-ledger entries, oldest first.
    async fn list_failures(&self, run_id: Uuid) -> Result<Vec<FailureEntry>, StoreError>;

    /// The run's dead letters, oldest first (none for an unknown run).
    async fn list_dead_letters(&self, run_id: Uuid) -> Result<Vec<DeadLetter>, StoreError>;

    /// The memos stage `stage` of the run recorded, in recording order
    /// (none for an unknown run).
    async fn list_memos(&self, run_id: Uuid, stage: &str) -> Result<Vec<Memo>, StoreError>;

    /// The run's latest checkpoint (see [`WriteOp::RecordCheckpoint`]):
    /// the one with the greatest id recorded; `None` when it has none, or
    /// for an unknown run.
    async fn last_checkpoint(&self, run_id: Uuid) -> Result<Option<Checkpoint>, StoreError>;

    /// The runs in `run_ids` whose inbox holds an unsettled entry, in the
    /// order listed (each once): one read for many runs, as recovery needs.
    /// The default asks run by run; SQLite answers in one reader job.
    async fn runs_with_unsettled_inbox(&self, run_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut found = Vec::new();
        for run_id in distinct(run_ids) {
            let inbox = self.list_inbox(run_id).await?;
            if inbox.iter().any(|e| e.settled.is_none()) {
                found.push(run_id);
            }
        }
        Ok(found)
    }

    /// The latest checkpoints of the runs in `run_ids` that have one, in
    /// the order the runs are listed (a run listed twice counts once): one
    /// read for many runs, as recovery needs. The default asks run by run;
    /// SQLite answers in one job on its reader.
    async fn last_checkpoints_for(&self, run_ids: &[Uuid]) -> Result<Vec<Checkpoint>, StoreError> {
        let mut found = Vec::new();
        for run_id in distinct(run_ids) {
            found.extend(self.last_checkpoint(run_id).await?);
        }
        Ok(found)
    }

    /// The run's inbox entries, settled or not, in the order they were
    /// accepted (none for an unknown run).
    async fn list_inbox(&self, run_id: Uuid) -> Result<Vec<InboxEntry>, StoreError>;

    /// The recorded flow definitions (see [`WriteOp::RecordDefinition`]),
    /// those named `name` only when it is given: by name, then in the order
    /// they were first recorded.
    async fn list_definitions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<DefinitionRecord>, StoreError>;

    /// The run's steps, oldest first.
    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, StoreError>;

    /// Inserts a new run with an optional audit event.
    async fn insert_run(&self, run: Run, audit: Option<EventKind>) -> Result<(), StoreError> {
        match self
            .apply(WriteOp::InsertRun {
                run: Box::new(run),
                audit,
            })
            .await?
        {
            WriteOutcome::RunInserted { .. } => Ok(()),
            _ => Err(mismatch("insert_run")),
        }
    }

    /// Compare-and-set update of a run with its audit event; returns the new revision.
    async fn update_run(
        &self,
        run: Run,
        expected_revision: u64,
        audit: EventKind,
    ) -> Result<u64, StoreError> {
        let op = WriteOp::UpdateRun {
            run: Box::new(run),
            expected_revision,
            audit,
        };
        match self.apply(op).await? {
            WriteOutcome::RunUpdated { revision, .. } => Ok(revision),
            _ => Err(mismatch("update_run")),
        }
    }

    /// Appends one event.
    async fn append(&self, event: NewEvent) -> Result<Appended, StoreError> {
        appended(self.apply(WriteOp::Append(event)).await?)
    }

    /// Appends events atomically.
    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        match self.apply(WriteOp::AppendBatch(events)).await? {
            WriteOutcome::BatchAppended(a) => Ok(a),
            _ => Err(mismatch("append_batch")),
        }
    }

    /// Appends a terminal event unless the run has one.
    async fn append_terminal_event_if_absent(
        &self,
        run_id: Uuid,
        event: TerminalEvent,
    ) -> Result<TerminalAppend, StoreError> {
        match self
            .apply(WriteOp::AppendTerminalIfAbsent { run_id, event })
            .await?
        {
            WriteOutcome::Terminal(t) => Ok(t),
            _ => Err(mismatch("append_terminal_if_absent")),
        }
    }

    /// Records a step output; `false` when one was already stored for its key.
    async fn record_step_output(&self, output: StepOutput) -> Result<bool, StoreError> {
        match self.apply(WriteOp::RecordStepOutput(output)).await? {
            WriteOutcome::StepOutputRecorded { inserted } => Ok(inserted),
            _ => Err(mismatch("record_step_output")),
        }
    }

    /// Appends a failure-ledger entry.
    async fn record_failure(&self, entry: FailureEntry) -> Result<(), StoreError> {
        match self.apply(WriteOp::RecordFailure(entry)).await? {
            WriteOutcome::FailureRecorded => Ok(()),
            _ => Err(mismatch("record_failure")),
        }
    }

    /// Records a dead letter.
    async fn record_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        match self
            .apply(WriteOp::RecordDeadLetter(Box::new(letter)))
            .await?
        {
            WriteOutcome::DeadLetterRecorded => Ok(()),
            _ => Err(mismatch("record_dead_letter")),
        }
    }

    /// Records a memo unless one is recorded for its key (see
    /// [`WriteOp::RecordMemo`]); the memo stored, and whether this call
    /// stored it.
    async fn record_memo(&self, memo: Memo) -> Result<(Memo, bool), StoreError> {
        match self.apply(WriteOp::RecordMemo(Box::new(memo))).await? {
            WriteOutcome::MemoRecorded { stored, inserted } => Ok((*stored, inserted)),
            _ => Err(mismatch("record_memo")),
        }
    }

    /// Records a run's checkpoint, replacing its stored one (see
    /// [`WriteOp::RecordCheckpoint`]: one whose id is not greater is
    /// refused with [`StoreError::StaleCheckpoint`]).
    async fn record_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), StoreError> {
        match self
            .apply(WriteOp::RecordCheckpoint(Box::new(checkpoint)))
            .await?
        {
            WriteOutcome::CheckpointRecorded => Ok(()),
            _ => Err(mismatch("record_checkpoint")),
        }
    }

    /// Accepts messages into runs' inboxes, all or none (see
    /// [`WriteOp::AcceptInbox`]).
    async fn accept_inbox(&self, entries: Vec<InboxEntry>) -> Result<(), StoreError> {
        match self.apply(WriteOp::AcceptInbox(entries)).await? {
            WriteOutcome::InboxAccepted => Ok(()),
            _ => Err(mismatch("accept_inbox")),
        }
    }

    /// Settles an inbox entry (see [`WriteOp::SettleInbox`]); whether an
    /// unsettled entry was settled.
    async fn settle_inbox(
        &self,
        run_id: Uuid,
        id: Uuid,
        stage: String,
        undeliverable: Option<String>,
    ) -> Result<bool, StoreError> {
        let op = WriteOp::SettleInbox {
            run_id,
            id,
            stage,
            undeliverable,
        };
        match self.apply(op).await? {
            WriteOutcome::InboxSettled { settled } => Ok(settled),
            _ => Err(mismatch("settle_inbox")),
        }
    }

    /// Records a flow definition unless one with its name and fingerprint
    /// is (see [`WriteOp::RecordDefinition`]); whether this call stored it.
    async fn record_definition(&self, definition: DefinitionRecord) -> Result<bool, StoreError> {
        match self
            .apply(WriteOp::RecordDefinition(Box::new(definition)))
            .await?
        {
            WriteOutcome::DefinitionRecorded { inserted } => Ok(inserted),
            _ => Err(mismatch("record_definition")),
        }
    }

    /// Inserts or updates a step keyed by `(run_id, external_run_id)`; returns it as stored.
    async fn upsert_step(&self, step: RunStep) -> Result<RunStep, StoreError> {
        match self.apply(WriteOp::UpsertStep(Box::new(step))).await? {
            WriteOutcome::StepUpserted(s) => Ok(s),
            _ => Err(mismatch("upsert_step")),
        }
    }
}

/// `run_ids` without repeats, in first-listed order.
pub(crate) fn distinct(run_ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = std::collections::HashSet::with_capacity(run_ids.len());
    run_ids
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect()
}
