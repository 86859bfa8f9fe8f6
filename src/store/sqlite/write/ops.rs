//! One write op inside the writer's transaction ([`OpCtx::apply`]): run
//! inserts and CAS updates, event appends with their per-run sequence,
//! outputs, failures and steps. Changes to per-run heads go to the op's
//! scratch; the writer makes them its cache only once the batch commits.

use std::sync::LazyLock;

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use uuid::Uuid;

use super::buffer::{BufferedEvent, EventBuffer};
use super::{Head, Scratch, sql};
use crate::records::StoreError;
use crate::records::{Appended, Cursor, NewEvent, TerminalAppend};
use crate::records::{DeadLetter, FailureEntry, Memo, Run, RunStep, StepOutput, mismatch};
use crate::records::{RowRef, WriteOp, WriteOutcome, next_revision};
use crate::store::sqlite::codec::{Kinds, MAX_TERMINAL_CODE, json_bytes, micros, payload};
use crate::store::sqlite::fast_hash::IdMap;
use crate::store::sqlite::read::event_by_cursor;
use crate::store::sqlite::rows::{REVISION_VALUE, fixed_run_values, run_values};
use serde_json::Value;

/// Appends an event row.
pub(super) const INSERT_EVENT: &str = "INSERT INTO events(rid, seq, prev, kind, ekey, at, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A run's head (`rid`, last sequence, last cursor) by its id.
pub(super) const SELECT_HEAD: &str = "SELECT h.rid, h.last_seq, h.last_cursor FROM runs r \
     JOIN run_heads h ON h.rid = r.rid WHERE r.id = ?1";

pub(super) struct OpCtx<'a, 'c> {
    pub(super) conn: &'c Connection,
    /// [`INSERT_EVENT`], prepared once per batch.
    pub(super) insert_event: &'a mut CachedStatement<'c>,
    pub(super) committed: &'a IdMap<Head>,
    pub(super) kinds: &'a Kinds,
    /// The batch's changes so far, when the op keeps its own apart (`op`)
    /// until it has succeeded; `None` when `op` is the batch's own (a plain
    /// append: it takes no savepoint, and nothing it leaves there on
    /// failure is wrong, since a clean head is what it read and a kind it
    /// interned stays in the database).
    pub(super) batch: Option<&'a Scratch>,
    /// Where the op records its changes.
    pub(super) op: &'a mut Scratch,
    /// The batch's time (µs since the epoch): every event it appends was
    /// stored by the same commit, so they share one `at`, read once.
    pub(super) now: i64,
    /// Where a plain append (an op of its own, outside any savepoint) queues
    /// its row; `None` for events of every other op, inserted at once.
    pub(super) buffer: Option<&'a mut EventBuffer>,
    /// The largest payload a row may carry (SQLite's length limit, less
    /// room for the row's other columns).
    pub(super) max_payload: usize,
}

static UPDATE_RUN: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = crate::store::sqlite::rows::MUTABLE_RUN_COLUMNS
        .split(',')
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", c.trim(), i + 1))
        .collect();
    format!(
        "UPDATE runs SET {} WHERE rid = ?18 AND revision = ?19",
        sets.join(", ")
    )
});

impl OpCtx<'_, '_> {
    pub(super) fn head(&mut self, run_id: Uuid) -> Result<Head, StoreError> {
        let seen = (self.op.heads.get(&run_id))
            .or_else(|| self.batch.and_then(|batch| batch.heads.get(&run_id)));
        if let Some((h, _)) = seen {
            return Ok(*h);
        }
        if let Some(h) = self.committed.get(&run_id) {
            return Ok(*h);
        }
        let head = self
            .conn
            .prepare_cached(SELECT_HEAD)
            .and_then(|mut s| {
                s.query_row([run_id.as_bytes()], |r| {
                    Ok(Head {
                        rid: r.get(0)?,
                        last_seq: r.get::<_, i64>(1)? as u64,
                        last_cursor: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(sql("look up run"))?
            .ok_or(StoreError::RunNotFound(run_id))?;
        self.op.heads.insert(run_id, (head, false));
        Ok(head)
    }

    fn kind_code(&mut self, name: &str) -> Result<i64, StoreError> {
        let (code, added) = self.kinds.lookup_or_insert(self.conn, name)?;
        if added {
            self.op.kinds.push((name.to_owned(), code));
        }
        Ok(code)
    }

    /// Applies `op`, only reading it: the caller drops the batch's ops
    /// where it likes (the journal does so off the writer thread).
    pub(super) fn apply(&mut self, op: &WriteOp) -> Result<WriteOutcome, StoreError> {
        match op {
            WriteOp::InsertRun { run, audit } => {
                run.validate()?;
                self.insert_run(run)?;
                let audit = audit
                    .as_ref()
                    .map(|kind| self.append(&NewEvent::new(run.id, kind.clone())))
                    .transpose()?;
                Ok(WriteOutcome::RunInserted { audit })
            }
            WriteOp::UpdateRun {
                run,
                expected_revision,
                audit,
            } => {
                run.validate()?;
                let audit_event = NewEvent::new(run.id, audit.clone());
                audit_event.validate()?;
                let revision = self.update_run(run, *expected_revision)?;
                let audit = self.append(&audit_event)?;
                Ok(WriteOutcome::RunUpdated { revision, audit })
            }
            WriteOp::Append(ev) => Ok(WriteOutcome::Appended(self.append(ev)?)),
            WriteOp::AppendBatch(evs) => Ok(WriteOutcome::BatchAppended(
                evs.iter()
                    .map(|ev| self.append(ev))
                    .collect::<Result<_, _>>()?,
            )),
            WriteOp::AppendTerminalIfAbsent { run_id, event } => {
                let run_id = *run_id;
                let head = self.head(run_id)?;
                if let Some(cursor) = self.terminal_cursor(head.rid)? {
                    let existing =
                        event_by_cursor(self.conn, &mut Kinds::default(), run_id, cursor)?;
                    return Ok(WriteOutcome::Terminal(TerminalAppend::AlreadyPresent(
                        existing,
                    )));
                }
                let appended = self.append(&NewEvent::new(run_id, event.clone()))?;
                Ok(WriteOutcome::Terminal(TerminalAppend::Appended(appended)))
            }
            WriteOp::RecordStepOutput(o) => self.record_output(o),
            WriteOp::RecordFailure(f) => self.record_failure(f),
            WriteOp::RecordDeadLetter(d) => self.record_dead_letter(d),
            WriteOp::RecordMemo(m) => self.record_memo(m),
            WriteOp::RecordCheckpoint(c) => self.record_checkpoint(c),
            WriteOp::RecordDefinition(d) => self.record_definition(d),
            WriteOp::AcceptInbox(entries) => self.accept_inbox(entries),
            WriteOp::SettleInbox {
                run_id,
                id,
                stage,
                undeliverable,
            } => self.settle_inbox(*run_id, *id, stage, undeliverable.as_deref()),
            WriteOp::UpsertStep(step) => self.upsert_step(step),
            WriteOp::Atomic(ops) => Ok(WriteOutcome::Atomic(
                ops.iter()
                    .map(|op| self.apply(op))
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    fn insert_run(&mut self, run: &Run) -> Result<(), StoreError> {
        let exists = self.committed.contains_key(&run.id)
            || self
                .conn
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
                .and_then(|mut s| s.exists([run.id.as_bytes()]))
                .map_err(sql("check run id"))?;
        if exists {
            return Err(StoreError::RunExists(run.id));
        }
        if let Some(key) = &run.key {
            self.check_key_free(&run.controller_id, key)?;
        }
        let mut values = vec![rusqlite::types::Value::Blob(run.id.as_bytes().to_vec())];
        values.extend(run_values(run));
        values.extend(fixed_run_values(run));
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO runs({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
                &crate::store::sqlite::rows::RUN_COLUMNS["rid, ".len()..]
            ))
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
            .map_err(sql("insert run"))?;
        let rid = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(
                "INSERT INTO run_heads(rid, last_seq, last_cursor) VALUES (?1, 0, NULL)",
            )
            .and_then(|mut s| s.execute([rid]))
            .map_err(sql("insert run head"))?;
        let head = Head {
            rid,
            last_seq: 0,
            last_cursor: None,
        };
        self.op.heads.insert(run.id, (head, false));
        Ok(())
    }

    /// Refuses a key a run of `flow` holds that has not ended (the partial
    /// unique index `runs_live_key` would too, with a less useful error).
    fn check_key_free(&mut self, flow: &str, key: &str) -> Result<(), StoreError> {
        let existing: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT id FROM runs INDEXED BY runs_live_key \
                 WHERE controller_id = ?1 AND run_key = ?2 AND run_key IS NOT NULL \
                 AND status NOT IN (3, 4, 5, 6)",
            )
            .and_then(|mut s| s.query_row([flow, key], |r| r.get(0)).optional())
            .map_err(sql("check run key"))?;
        match existing {
            None => Ok(()),
            Some(id) => Err(match Uuid::from_slice(&id) {
                Ok(existing) => StoreError::RunKeyTaken {
                    flow: flow.to_owned(),
                    key: key.to_owned(),
                    existing,
                },
                Err(_) => StoreError::CorruptRow {
                    row: RowRef {
                        table: "runs",
                        rowid: 0,
                        run_id: None,
                    },
                    column: "id",
                    value: format!("{} bytes holding the run of key {key:?}", id.len()),
                },
            }),
        }
    }

    fn update_run(&mut self, run: &Run, expected: u64) -> Result<u64, StoreError> {
        let revision = next_revision(run.id, expected)?;
        let head = self.head(run.id)?;
        let mut values = run_values(run).to_vec();
        values[REVISION_VALUE] = (revision as i64).into();
        values.push(head.rid.into());
        values.push((expected as i64).into());
        let changed = self
            .conn
            .prepare_cached(&UPDATE_RUN)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
            .map_err(sql("update run"))?;
        if changed == 0 {
            let actual: i64 = self
                .conn
                .prepare_cached("SELECT revision FROM runs WHERE rid = ?1")
                .and_then(|mut s| s.query_row([head.rid], |r| r.get(0)))
                .map_err(sql("read revision"))?;
            return Err(StoreError::RevisionMismatch {
                run_id: run.id,
                expected,
                actual: actual as u64,
            });
        }
        Ok(revision)
    }

    fn terminal_cursor(&self, rid: i64) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT cursor FROM events WHERE rid = ?1 AND kind <= 4")
            .and_then(|mut s| s.query_row([rid], |r| r.get(0)).optional())
            .map_err(sql("find terminal event"))
    }

    /// Marks the run's outcome as recorded, which takes it out of the
    /// `runs_missing_outcome` index (see `schema.rs`); in the terminal
    /// event's savepoint, so the two are never apart.
    fn record_outcome(&self, rid: i64, cursor: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE runs SET outcome_cursor = ?1 WHERE rid = ?2")
            .and_then(|mut s| s.execute([cursor, rid]))
            .map(|_| ())
            .map_err(sql("record run outcome"))
    }

    fn append(&mut self, ev: &NewEvent) -> Result<Appended, StoreError> {
        ev.validate()?;
        let mut head = self.head(ev.run_id)?;
        if let Some(key) = &ev.event_id {
            let existing: Option<(i64, i64)> = self
                .conn
                .prepare_cached("SELECT cursor, seq FROM events WHERE rid = ?1 AND ekey = ?2")
                .and_then(|mut s| {
                    s.query_row(params![head.rid, key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(sql("find event id"))?;
            if let Some((cursor, seq)) = existing {
                return Ok(Appended {
                    cursor: Cursor(cursor as u64),
                    seq: seq as u64,
                    duplicate: true,
                });
            }
        }
        let code = self.kind_code(ev.kind.name())?;
        if code <= MAX_TERMINAL_CODE
            && let Some(cursor) = self.terminal_cursor(head.rid)?
        {
            let existing = event_by_cursor(self.conn, &mut Kinds::default(), ev.run_id, cursor)?;
            return Err(StoreError::TerminalExists {
                run_id: ev.run_id,
                existing: existing.kind.name_static(),
                cursor: existing.cursor,
            });
        }
        // A damaged `run_heads` row can hold any number: past i64::MAX the
        // sequence could not be stored, so it is a corrupt row, not a panic.
        let seq = head
            .last_seq
            .checked_add(1)
            .filter(|seq| i64::try_from(*seq).is_ok())
            .ok_or_else(|| StoreError::CorruptRow {
                row: RowRef {
                    table: "run_heads",
                    rowid: head.rid,
                    run_id: Some(ev.run_id),
                },
                column: "last_seq",
                value: head.last_seq.to_string(),
            })?;
        let payload = payload(&ev.kind);
        if let Some(bytes) = &payload
            && bytes.len() > self.max_payload
        {
            return Err(StoreError::InvalidInput {
                run_id: ev.run_id,
                field: "payload",
                value: format!("{} bytes of JSON", bytes.len()),
                why: "larger than the store's length limit",
            });
        }
        let cursor = match self.buffer.as_deref_mut() {
            Some(buffer) => buffer.push(
                self.conn,
                BufferedEvent {
                    rid: head.rid,
                    seq: seq as i64,
                    prev: head.last_cursor,
                    kind: code,
                    payload,
                },
            )?,
            None => {
                self.insert_event
                    .execute(params![
                        head.rid,
                        seq as i64,
                        head.last_cursor,
                        code,
                        ev.event_id,
                        self.now,
                        payload,
                    ])
                    .map_err(sql("insert event"))?;
                self.conn.last_insert_rowid()
            }
        };
        if code <= MAX_TERMINAL_CODE {
            self.record_outcome(head.rid, cursor)?;
        }
        head.last_seq = seq;
        head.last_cursor = Some(cursor);
        self.op.heads.insert(ev.run_id, (head, true));
        self.op.appended += 1;
        Ok(Appended {
            cursor: Cursor(cursor as u64),
            seq,
            duplicate: false,
        })
    }

    fn record_output(&mut self, o: &StepOutput) -> Result<WriteOutcome, StoreError> {
        o.validate()?;
        let head = self.head(o.run_id)?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO step_outputs(rid, step_id, loop_id, iteration, at, output) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    head.rid,
                    o.step_id,
                    o.loop_id,
                    o.iteration,
                    micros(o.at),
                    json_bytes(&o.output)
                ])
            })
            .map_err(sql("record step output"))?;
        Ok(WriteOutcome::StepOutputRecorded {
            inserted: inserted == 1,
        })
    }

    fn record_failure(&mut self, f: &FailureEntry) -> Result<WriteOutcome, StoreError> {
        f.validate()?;
        let head = self.head(f.run_id)?;
        self.conn
            .prepare_cached(
                "INSERT INTO failures(rid, step_id, reason, error_json, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    head.rid,
                    f.step_id,
                    f.reason,
                    f.error_json.as_ref().map(json_bytes),
                    micros(f.at)
                ])
            })
            .map_err(sql("record failure"))?;
        Ok(WriteOutcome::FailureRecorded)
    }

    fn record_dead_letter(&mut self, d: &DeadLetter) -> Result<WriteOutcome, StoreError> {
        d.validate()?;
        let head = self.head(d.run_id)?;
        let errors = serde_json::to_vec(&d.errors).map_err(|e| StoreError::InvalidInput {
            run_id: d.run_id,
            field: "errors",
            value: e.to_string(),
            why: "a dead letter's errors must encode as JSON",
        })?;
        self.conn
            .prepare_cached(
                "INSERT INTO dead_letters(rid, stage, position, attempts, errors, item, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    head.rid,
                    d.stage,
                    // Stored bit for bit, as revisions are; read back `as u64`.
                    d.position as i64,
                    d.attempts,
                    errors,
                    json_bytes(&d.item),
                    micros(d.at)
                ])
            })
            .map_err(sql("record dead letter"))?;
        Ok(WriteOutcome::DeadLetterRecorded)
    }

    fn record_memo(&mut self, m: &Memo) -> Result<WriteOutcome, StoreError> {
        m.validate()?;
        let head = self.head(m.run_id)?;
        let (ok, result) = match &m.result {
            Ok(value) => (true, json_bytes(value)),
            Err(message) => (false, json_bytes(&Value::String(message.clone()))),
        };
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO memos(rid, stage, name, ok, result, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(rid, stage, name) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![head.rid, m.stage, m.name, ok, result, micros(m.at)]))
            .map_err(sql("record memo"))?
            == 1;
        let stored = if inserted {
            m.clone()
        } else {
            crate::store::sqlite::read::memo(self.conn, head.rid, m.run_id, &m.stage, &m.name)?
                .ok_or_else(|| mismatch("record_memo"))?
        };
        Ok(WriteOutcome::MemoRecorded {
            stored: Box::new(stored),
            inserted,
        })
    }

    fn upsert_step(&mut self, step: &RunStep) -> Result<WriteOutcome, StoreError> {
        step.validate()?;
        let head = self.head(step.run_id)?;
        let (id, child, created): (Vec<u8>, Option<String>, i64) = self
            .conn
            .prepare_cached(
                "INSERT INTO steps(id, run_rid, runtime, child_session_key, external_run_id, task, status, \
                 result_json, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT(run_rid, external_run_id) DO UPDATE SET runtime = excluded.runtime, \
                 child_session_key = coalesce(excluded.child_session_key, steps.child_session_key), \
                 task = excluded.task, status = excluded.status, result_json = excluded.result_json, \
                 updated_at = excluded.updated_at \
                 RETURNING id, child_session_key, created_at",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        step.id.as_bytes(),
                        head.rid,
                        step.runtime.code(),
                        step.child_session_key,
                        step.external_run_id,
                        step.task,
                        step.status.code(),
                        step.result_json.as_ref().map(json_bytes),
                        micros(step.created_at),
                        micros(step.updated_at)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .map_err(sql("upsert step"))?;
        let mut step = step.clone();
        step.id = Uuid::from_slice(&id).unwrap_or(step.id);
        step.child_session_key = child;
        step.created_at =
            chrono::DateTime::from_timestamp_micros(created).unwrap_or(step.created_at);
        Ok(WriteOutcome::StepUpserted(step))
    }
}
