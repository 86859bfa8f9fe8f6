//! [`MemoryStore`]: the in-memory backend, for tests and for runtimes that do
//! not need durability. It keeps the same rules as the SQLite backend.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::traits::{Store, distinct};

mod checkpoint;
mod definition;
mod inbox;
mod undo;
use self::undo::Undo;
use crate::records::{Appended, Cursor, NewEvent, RunEvent, TerminalAppend, assigned_event_id};
use crate::records::{
    Checkpoint, DeadLetter, FailureEntry, InboxEntry, Memo, Run, RunStatus, RunStep, StepOutput,
};
use crate::records::{DamagedRun, StoreError};
use crate::records::{WriteOp, WriteOutcome, next_revision};

/// A store held in memory. Each op is atomic: a failing op is undone before
/// the next one runs.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use troupe::store::{Store, MemoryStore};
/// use troupe::records::{EventKind, Run, NewEvent};
///
/// let store = MemoryStore::new();
/// let run = Run::new("orders", "process order 17", "session-1");
/// store.insert_run(run.clone(), Some(EventKind::custom("created", serde_json::Value::Null))).await?;
/// store.append(NewEvent::new(run.id, EventKind::custom("note", serde_json::json!({"n": 1})))).await?;
/// assert_eq!(store.replay(run.id).await?.len(), 2);
/// # Ok::<(), troupe::records::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemState>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock cannot leave a half-applied op: every
        // op is undone on error before the guard is released.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct MemRun {
    flow: Option<Run>,
    events: Vec<usize>,
    keys: HashMap<String, usize>,
    terminal: Option<usize>,
}

type OutputKey = (Uuid, String, Option<String>, Option<u32>);

#[derive(Default)]
struct MemState {
    runs: HashMap<Uuid, MemRun>,
    order: Vec<Uuid>,
    events: Vec<RunEvent>,
    outputs: Vec<StepOutput>,
    output_keys: HashSet<OutputKey>,
    failures: Vec<FailureEntry>,
    dead_letters: Vec<DeadLetter>,
    inbox: Vec<InboxEntry>,
    steps: Vec<RunStep>,
    step_index: HashMap<(Uuid, String), usize>,
    /// The newest run of each (flow, key): the only one of them that may
    /// not have ended, since a keyed run is inserted only when it has.
    keys: HashMap<(String, String), Uuid>,
    memos: Vec<Memo>,
    memo_index: HashMap<(Uuid, String, String), usize>,
    /// Each run's latest checkpoint.
    checkpoints: HashMap<Uuid, Checkpoint>,
    /// Recorded flow definitions, in recording order.
    definitions: Vec<crate::records::DefinitionRecord>,
}

fn output_key(o: &StepOutput) -> OutputKey {
    (o.run_id, o.step_id.clone(), o.loop_id.clone(), o.iteration)
}

impl MemState {
    fn run(&self, id: Uuid) -> Result<&MemRun, StoreError> {
        self.runs
            .get(&id)
            .filter(|r| r.flow.is_some())
            .ok_or(StoreError::RunNotFound(id))
    }

    fn flow(&self, id: Uuid) -> Result<&Run, StoreError> {
        self.run(id)?
            .flow
            .as_ref()
            .ok_or(StoreError::RunNotFound(id))
    }

    fn apply(&mut self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let mut undo = Vec::new();
        let result = self.apply_op(op, &mut undo);
        if result.is_err() {
            self.rollback(undo);
        }
        result
    }

    fn apply_op(&mut self, op: WriteOp, undo: &mut Vec<Undo>) -> Result<WriteOutcome, StoreError> {
        match op {
            WriteOp::InsertRun { run, audit } => {
                run.validate()?;
                if self.runs.contains_key(&run.id) {
                    return Err(StoreError::RunExists(run.id));
                }
                if let Some(key) = &run.key {
                    let key = (run.controller_id.clone(), key.clone());
                    let previous = self.keys.get(&key).copied();
                    if let Some(existing) = previous
                        && self.flow(existing).is_ok_and(|r| !r.status.is_terminal())
                    {
                        return Err(StoreError::RunKeyTaken {
                            flow: key.0,
                            key: key.1,
                            existing,
                        });
                    }
                    self.keys.insert(key.clone(), run.id);
                    undo.push(Undo::RestoreKey(key, previous));
                }
                let id = run.id;
                self.runs.insert(
                    id,
                    MemRun {
                        flow: Some(*run),
                        ..MemRun::default()
                    },
                );
                self.order.push(id);
                undo.push(Undo::InsertRun(id));
                let audit = match audit {
                    Some(kind) => Some(self.append(NewEvent::new(id, kind), undo)?),
                    None => None,
                };
                Ok(WriteOutcome::RunInserted { audit })
            }
            WriteOp::UpdateRun {
                mut run,
                expected_revision,
                audit,
            } => {
                run.validate()?;
                let revision = next_revision(run.id, expected_revision)?;
                let stored = self.flow(run.id)?;
                if stored.revision != expected_revision {
                    return Err(StoreError::RevisionMismatch {
                        run_id: run.id,
                        expected: expected_revision,
                        actual: stored.revision,
                    });
                }
                let audit_event = NewEvent::new(run.id, audit);
                audit_event.validate()?;
                run.revision = revision;
                // Fixed at insert.
                run.input = stored.input.clone();
                run.key = stored.key.clone();
                run.fingerprint = stored.fingerprint.clone();
                run.flow_version = stored.flow_version;
                run.continued_from = stored.continued_from;
                let id = run.id;
                let slot = self.runs.get_mut(&id).ok_or(StoreError::RunNotFound(id))?;
                let old = slot.flow.replace(*run).ok_or(StoreError::RunNotFound(id))?;
                undo.push(Undo::RestoreFlow(Box::new(old)));
                let audit = self.append(audit_event, undo)?;
                Ok(WriteOutcome::RunUpdated { revision, audit })
            }
            WriteOp::Append(ev) => Ok(WriteOutcome::Appended(self.append(ev, undo)?)),
            WriteOp::AppendBatch(evs) => {
                let mut out = Vec::with_capacity(evs.len());
                for ev in evs {
                    out.push(self.append(ev, undo)?);
                }
                Ok(WriteOutcome::BatchAppended(out))
            }
            WriteOp::AppendTerminalIfAbsent { run_id, event } => {
                let run = self.run(run_id)?;
                if let Some(i) = run.terminal {
                    return Ok(WriteOutcome::Terminal(TerminalAppend::AlreadyPresent(
                        self.events[i].clone(),
                    )));
                }
                let appended = self.append(NewEvent::new(run_id, event), undo)?;
                Ok(WriteOutcome::Terminal(TerminalAppend::Appended(appended)))
            }
            WriteOp::RecordStepOutput(o) => {
                o.validate()?;
                self.run(o.run_id)?;
                if !self.output_keys.insert(output_key(&o)) {
                    return Ok(WriteOutcome::StepOutputRecorded { inserted: false });
                }
                self.outputs.push(o);
                undo.push(Undo::PushOutput);
                Ok(WriteOutcome::StepOutputRecorded { inserted: true })
            }
            WriteOp::RecordFailure(f) => {
                f.validate()?;
                self.run(f.run_id)?;
                self.failures.push(f);
                undo.push(Undo::PushFailure);
                Ok(WriteOutcome::FailureRecorded)
            }
            WriteOp::RecordDeadLetter(d) => {
                d.validate()?;
                self.run(d.run_id)?;
                self.dead_letters.push(*d);
                undo.push(Undo::PushDeadLetter);
                Ok(WriteOutcome::DeadLetterRecorded)
            }
            WriteOp::RecordMemo(memo) => {
                memo.validate()?;
                self.run(memo.run_id)?;
                let key = (memo.run_id, memo.stage.clone(), memo.name.clone());
                if let Some(&i) = self.memo_index.get(&key) {
                    return Ok(WriteOutcome::MemoRecorded {
                        stored: Box::new(self.memos[i].clone()),
                        inserted: false,
                    });
                }
                self.memo_index.insert(key, self.memos.len());
                self.memos.push((*memo).clone());
                undo.push(Undo::PushMemo);
                Ok(WriteOutcome::MemoRecorded {
                    stored: memo,
                    inserted: true,
                })
            }
            WriteOp::RecordCheckpoint(checkpoint) => self.record_checkpoint(*checkpoint, undo),
            WriteOp::RecordDefinition(definition) => self.record_definition(*definition, undo),
            WriteOp::AcceptInbox(entries) => self.accept_inbox(entries, undo),
            WriteOp::SettleInbox {
                run_id,
                id,
                stage,
                undeliverable,
            } => Ok(self.settle_inbox(run_id, id, &stage, undeliverable, undo)),
            WriteOp::UpsertStep(step) => {
                let mut step = *step;
                step.validate()?;
                self.run(step.run_id)?;
                let key = (step.run_id, step.external_run_id.clone());
                if let Some(&i) = self.step_index.get(&key) {
                    let old = self.steps[i].clone();
                    step.id = old.id;
                    step.created_at = old.created_at;
                    if step.child_session_key.is_none() {
                        step.child_session_key = old.child_session_key.clone();
                    }
                    self.steps[i] = step.clone();
                    undo.push(Undo::RestoreStep(i, Box::new(old)));
                } else {
                    self.step_index.insert(key, self.steps.len());
                    self.steps.push(step.clone());
                    undo.push(Undo::InsertStep);
                }
                Ok(WriteOutcome::StepUpserted(step))
            }
            WriteOp::Atomic(ops) => {
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    out.push(self.apply_op(op, undo)?);
                }
                Ok(WriteOutcome::Atomic(out))
            }
        }
    }

    fn append(&mut self, ev: NewEvent, undo: &mut Vec<Undo>) -> Result<Appended, StoreError> {
        ev.validate()?;
        let run = self.run(ev.run_id)?;
        if let Some(key) = &ev.event_id
            && let Some(&i) = run.keys.get(key)
        {
            let stored = &self.events[i];
            return Ok(Appended {
                cursor: stored.cursor,
                seq: stored.seq,
                duplicate: true,
            });
        }
        if let (Some(_), Some(i)) = (ev.kind.as_terminal(), run.terminal) {
            return Err(StoreError::TerminalExists {
                run_id: ev.run_id,
                existing: self.events[i].kind.name_static(),
                cursor: self.events[i].cursor,
            });
        }
        let seq = run.events.len() as u64 + 1;
        let cursor = Cursor(self.events.len() as u64 + 1);
        let index = self.events.len();
        let event_id = ev.event_id.unwrap_or_else(|| assigned_event_id(seq));
        let run = self
            .runs
            .get_mut(&ev.run_id)
            .ok_or(StoreError::RunNotFound(ev.run_id))?;
        run.events.push(index);
        run.keys.insert(event_id.clone(), index);
        if ev.kind.as_terminal().is_some() {
            run.terminal = Some(index);
        }
        self.events.push(RunEvent {
            cursor,
            run_id: ev.run_id,
            seq,
            event_id,
            kind: ev.kind,
            at: Utc::now(),
        });
        undo.push(Undo::PushEvent);
        Ok(Appended {
            cursor,
            seq,
            duplicate: false,
        })
    }

    fn runs_where(&self, keep: impl Fn(&Run) -> bool) -> Vec<Run> {
        self.order
            .iter()
            .filter_map(|id| self.runs.get(id)?.flow.as_ref())
            .filter(|f| keep(f))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let mut state = self.lock();
        Ok(ops.into_iter().map(|op| state.apply(op)).collect())
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<Run>, StoreError> {
        Ok(self.lock().runs.get(&id).and_then(|r| r.flow.clone()))
    }

    async fn find_run_by_key(&self, flow: &str, key: &str) -> Result<Option<Run>, StoreError> {
        let state = self.lock();
        let id = state.keys.get(&(flow.to_owned(), key.to_owned()));
        Ok(id
            .and_then(|id| state.runs.get(id))
            .and_then(|r| r.flow.clone()))
    }

    async fn list_runs_by_owner(&self, owner_session_key: &str) -> Result<Vec<Run>, StoreError> {
        Ok(self
            .lock()
            .runs_where(|f| f.owner_session_key == owner_session_key))
    }

    async fn list_runs_by_status(&self, status: RunStatus) -> Result<Vec<Run>, StoreError> {
        Ok(self.lock().runs_where(|f| f.status == status))
    }

    async fn list_runs_missing_terminal_event(&self) -> Result<Vec<Run>, StoreError> {
        let state = self.lock();
        Ok(state.runs_where(|f| {
            f.status.is_terminal() && state.runs.get(&f.id).is_some_and(|r| r.terminal.is_none())
        }))
    }

    async fn list_runs_to_recover(&self) -> Result<Vec<Result<Run, DamagedRun>>, StoreError> {
        let state = self.lock();
        // Nothing in memory is damaged: every row reads.
        Ok(state
            .runs_where(|f| {
                !f.status.is_terminal()
                    || state.runs.get(&f.id).is_some_and(|r| r.terminal.is_none())
            })
            .into_iter()
            .map(Ok)
            .collect())
    }

    async fn list_events(&self, run_id: Uuid, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        let state = self.lock();
        let Some(run) = state.runs.get(&run_id) else {
            return Ok(Vec::new());
        };
        let skip = run.events.len().saturating_sub(limit);
        Ok(run.events[skip..]
            .iter()
            .map(|&i| state.events[i].clone())
            .collect())
    }

    async fn poll(&self, after: Cursor, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        let state = self.lock();
        // Cursors are 1-based positions in `events`.
        let start = usize::try_from(after.0).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn latest_cursor(&self) -> Result<Cursor, StoreError> {
        Ok(Cursor(self.lock().events.len() as u64))
    }

    async fn terminal_event(&self, run_id: Uuid) -> Result<Option<RunEvent>, StoreError> {
        let state = self.lock();
        Ok(state
            .runs
            .get(&run_id)
            .and_then(|r| r.terminal)
            .map(|i| state.events[i].clone()))
    }

    async fn list_step_outputs(&self, run_id: Uuid) -> Result<Vec<StepOutput>, StoreError> {
        Ok(self
            .lock()
            .outputs
            .iter()
            .filter(|o| o.run_id == run_id)
            .cloned()
            .collect())
    }

    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        let order: HashMap<Uuid, usize> = distinct(run_ids)
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut outputs: Vec<(usize, StepOutput)> = self
            .lock()
            .outputs
            .iter()
            .filter_map(|o| order.get(&o.run_id).map(|&i| (i, o.clone())))
            .collect();
        // Stable: each run's outputs keep their recording order.
        outputs.sort_by_key(|(i, _)| *i);
        Ok(outputs.into_iter().map(|(_, o)| o).collect())
    }

    async fn list_failures(&self, run_id: Uuid) -> Result<Vec<FailureEntry>, StoreError> {
        Ok(self
            .lock()
            .failures
            .iter()
            .filter(|f| f.run_id == run_id)
            .cloned()
            .collect())
    }

    async fn list_memos(&self, run_id: Uuid, stage: &str) -> Result<Vec<Memo>, StoreError> {
        Ok(self
            .lock()
            .memos
            .iter()
            .filter(|m| m.run_id == run_id && m.stage == stage)
            .cloned()
            .collect())
    }

    async fn last_checkpoint(&self, run_id: Uuid) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.lock().checkpoints.get(&run_id).cloned())
    }

    async fn list_definitions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<crate::records::DefinitionRecord>, StoreError> {
        Ok(self.lock().definitions_named(name))
    }

    async fn list_dead_letters(&self, run_id: Uuid) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self
            .lock()
            .dead_letters
            .iter()
            .filter(|d| d.run_id == run_id)
            .cloned()
            .collect())
    }

    async fn list_inbox(&self, run_id: Uuid) -> Result<Vec<InboxEntry>, StoreError> {
        Ok(self
            .lock()
            .inbox
            .iter()
            .filter(|e| e.run_id == run_id)
            .cloned()
            .collect())
    }

    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
        Ok(self
            .lock()
            .steps
            .iter()
            .filter(|s| s.run_id == run_id)
            .cloned()
            .collect())
    }
}
