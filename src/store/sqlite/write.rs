//! The write path: applies a batch of [`WriteOp`]s in one transaction, each
//! op inside its own savepoint so that a failing op is rolled back alone.
//!
//! Per-run counters (`run_heads`) are kept in memory while the batch runs;
//! the in-memory copies become the writer's cache only after the commit
//! succeeds. They reach the disk lazily: the heads changed since the last
//! write-back stay pinned in the cache and are written (with a new mark) in
//! the commit that makes the event tail long enough (see `heads.rs`).

use std::sync::LazyLock;

use chrono::Utc;
use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use uuid::Uuid;

use super::checkpoint::Checkpoints;
use super::codec::{Kinds, MAX_TERMINAL_CODE, json_bytes, micros, payload};
use super::fast_hash::{IdMap, IdSet};
use super::heads::{fold_tail, write_heads, write_mark};
use super::read::event_by_cursor;
use super::rows::run_values;
use crate::store::error::StoreError;
use crate::store::events::{Appended, Cursor, NewEvent, TerminalAppend};
use crate::store::ops::{WriteOp, WriteOutcome};
use crate::store::records::{FailureEntry, Flow, FlowStep, StepOutput};

/// Past this many cached run heads the cache keeps only the unwritten ones
/// and refills the rest on demand.
const HEAD_CACHE_LIMIT: usize = 100_000;
/// Heads are written back once this many runs changed since the last write-back,
/// whatever the tail's length, so that the pinned part of the cache stays bounded.
const MAX_UNWRITTEN_RUNS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Head {
    rid: i64,
    last_seq: u64,
    last_cursor: Option<i64>,
}

/// Changes made by one op (or one batch) that are not committed yet.
#[derive(Default)]
struct Scratch {
    /// Run heads read or changed; `true` when changed.
    heads: IdMap<(Head, bool)>,
    /// Kind names added to the dictionary.
    kinds: Vec<(String, i64)>,
    /// Events appended.
    appended: usize,
}

impl Scratch {
    /// Moves an op's changes into the batch, leaving `op` empty (with its
    /// capacity, for the next op).
    fn absorb(&mut self, op: &mut Scratch) {
        for (id, (head, dirty)) in op.heads.drain() {
            let entry = self.heads.entry(id).or_insert((head, false));
            *entry = (head, entry.1 || dirty);
        }
        self.kinds.append(&mut op.kinds);
        self.appended += std::mem::take(&mut op.appended);
    }

    fn clear(&mut self) {
        self.heads.clear();
        self.kinds.clear();
        self.appended = 0;
    }
}

/// The writer connection and its caches of committed state.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    kinds: Kinds,
    /// Committed run heads, exact.
    heads: IdMap<Head>,
    /// Runs whose head changed since the last write-back: pinned in `heads`,
    /// since their `run_heads` rows are stale.
    unwritten: IdSet,
    /// Events committed since the last write-back (the tail).
    tail: usize,
    /// Write heads back once the tail reaches this many events.
    write_back_events: usize,
    /// The background checkpointer (file databases only).
    checkpoints: Option<Checkpoints>,
}

impl Writer {
    /// Takes over the writer connection; folds the event tail a crash may
    /// have left into `run_heads` first, so that the stored heads are exact.
    pub(crate) fn new(
        conn: Connection,
        checkpoints: Option<Checkpoints>,
        write_back_events: u32,
    ) -> Result<Writer, StoreError> {
        conn.set_prepared_statement_cache_capacity(64);
        let mut kinds = Kinds::default();
        kinds.reload(&conn)?;
        fold_tail(&conn)?;
        Ok(Writer {
            conn,
            kinds,
            heads: IdMap::default(),
            unwritten: IdSet::default(),
            tail: 0,
            write_back_events: write_back_events.max(1) as usize,
            checkpoints,
        })
    }

    fn exec(&self, sql: &'static str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(StoreError::sqlite(sql))
    }

    /// Applies `ops` in one transaction; see [`FlowStore::apply_batch`](crate::store::FlowStore::apply_batch).
    pub(crate) fn apply_batch(
        &mut self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let mut batch = Scratch::default();
        let (results, wrote_back) = match self.run_batch(ops, &mut batch) {
            Ok(done) => done,
            Err(e) => {
                // The transaction may be half-open; nothing of it is durable.
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        if wrote_back {
            self.unwritten.clear();
            self.tail = 0;
        } else {
            self.tail += batch.appended;
        }
        if self.heads.len() > HEAD_CACHE_LIMIT {
            let unwritten = &self.unwritten;
            self.heads.retain(|id, _| unwritten.contains(id));
        }
        for (id, (head, dirty)) in batch.heads {
            if dirty && !wrote_back {
                self.unwritten.insert(id);
            }
            self.heads.insert(id, head);
        }
        for (name, code) in batch.kinds {
            self.kinds.insert(code, &name);
        }
        Ok(results)
    }

    /// Before the commit: writes back every head changed since the last
    /// write-back, and the mark, when the tail has grown long enough.
    /// Returns whether it did.
    fn write_back(&self, batch: &Scratch) -> Result<bool, StoreError> {
        let changed = batch.heads.values().filter(|(_, dirty)| *dirty);
        if self.tail + batch.appended < self.write_back_events
            && self.unwritten.len() + changed.clone().count() < MAX_UNWRITTEN_RUNS
        {
            return Ok(false);
        }
        let earlier = self
            .unwritten
            .iter()
            .filter(|id| !matches!(batch.heads.get(id), Some((_, true))))
            .filter_map(|id| self.heads.get(id));
        let rows: Vec<_> = changed
            .map(|(h, _)| h)
            .chain(earlier)
            .map(|h| (h.rid, h.last_seq, h.last_cursor))
            .collect();
        write_heads(&self.conn, &rows)?;
        write_mark(&self.conn)?;
        Ok(true)
    }

    /// Runs the batch's transaction; also says whether it wrote heads back.
    fn run_batch(
        &mut self,
        ops: Vec<WriteOp>,
        batch: &mut Scratch,
    ) -> Result<(Vec<Result<WriteOutcome, StoreError>>, bool), StoreError> {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.catch_up(&self.conn);
        }
        self.exec("BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(ops.len());
        // One op's scratch, reused: no map allocation per op.
        let mut op_scratch = Scratch::default();
        let mut insert_event = self
            .conn
            .prepare_cached(INSERT_EVENT)
            .map_err(sql("prepare event insert"))?;
        for op in ops {
            // A plain append changes the database in its last statement only
            // (a kind name it interns first is harmless to keep), so it needs
            // no savepoint: a failed INSERT leaves nothing behind.
            let savepoint = !matches!(&op, WriteOp::Append(ev) if ev.event_id.is_none());
            if savepoint {
                self.exec("SAVEPOINT op")?;
            }
            let mut ctx = OpCtx {
                conn: &self.conn,
                insert_event: &mut insert_event,
                committed: &self.heads,
                kinds: &self.kinds,
                batch,
                op: &mut op_scratch,
            };
            let result = ctx.apply(op);
            if result.is_ok() {
                batch.absorb(&mut op_scratch);
            } else {
                op_scratch.clear();
                if savepoint {
                    self.exec("ROLLBACK TO op")?;
                }
            }
            if savepoint {
                self.exec("RELEASE op")?;
            }
            results.push(result);
        }
        drop(insert_event);
        let wrote_back = self.write_back(batch)?;
        self.exec("COMMIT")?;
        Ok((results, wrote_back))
    }
}

/// Appends an event row.
const INSERT_EVENT: &str = "INSERT INTO events(rid, seq, prev, kind, ekey, at, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

struct OpCtx<'a, 'c> {
    conn: &'c Connection,
    /// [`INSERT_EVENT`], prepared once per batch.
    insert_event: &'a mut CachedStatement<'c>,
    committed: &'a IdMap<Head>,
    kinds: &'a Kinds,
    batch: &'a Scratch,
    op: &'a mut Scratch,
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(op)
}

static UPDATE_RUN: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = super::rows::RUN_COLUMNS
        .split(", ")
        .skip(2)
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", c.trim(), i + 1))
        .collect();
    format!(
        "UPDATE runs SET {} WHERE rid = ?18 AND revision = ?19",
        sets.join(", ")
    )
});

impl OpCtx<'_, '_> {
    fn head(&mut self, run_id: Uuid) -> Result<Head, StoreError> {
        if let Some((h, _)) = self.op.heads.get(&run_id).or(self.batch.heads.get(&run_id)) {
            return Ok(*h);
        }
        if let Some(h) = self.committed.get(&run_id) {
            return Ok(*h);
        }
        let head = self
            .conn
            .prepare_cached(
                "SELECT h.rid, h.last_seq, h.last_cursor FROM runs r \
                 JOIN run_heads h ON h.rid = r.rid WHERE r.id = ?1",
            )
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

    fn apply(&mut self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        match op {
            WriteOp::InsertRun { run, audit } => {
                let id = run.id;
                self.insert_run(&run)?;
                let audit = audit
                    .map(|kind| self.append(NewEvent::new(id, kind)))
                    .transpose()?;
                Ok(WriteOutcome::RunInserted { audit })
            }
            WriteOp::UpdateRun {
                run,
                expected_revision,
                audit,
            } => {
                let audit_event = NewEvent::new(run.id, audit);
                audit_event.validate()?;
                let revision = self.update_run(run, expected_revision)?;
                let audit = self.append(audit_event)?;
                Ok(WriteOutcome::RunUpdated { revision, audit })
            }
            WriteOp::Append(ev) => Ok(WriteOutcome::Appended(self.append(ev)?)),
            WriteOp::AppendBatch(evs) => Ok(WriteOutcome::BatchAppended(
                evs.into_iter()
                    .map(|ev| self.append(ev))
                    .collect::<Result<_, _>>()?,
            )),
            WriteOp::AppendTerminalIfAbsent { run_id, event } => {
                let head = self.head(run_id)?;
                if let Some(cursor) = self.terminal_cursor(head.rid)? {
                    let existing =
                        event_by_cursor(self.conn, &mut Kinds::default(), run_id, cursor)?;
                    return Ok(WriteOutcome::Terminal(TerminalAppend::AlreadyPresent(
                        existing,
                    )));
                }
                let appended = self.append(NewEvent::new(run_id, event))?;
                Ok(WriteOutcome::Terminal(TerminalAppend::Appended(appended)))
            }
            WriteOp::RecordStepOutput(o) => self.record_output(o),
            WriteOp::RecordFailure(f) => self.record_failure(f),
            WriteOp::UpsertStep(step) => self.upsert_step(step),
            WriteOp::Atomic(ops) => Ok(WriteOutcome::Atomic(
                ops.into_iter()
                    .map(|op| self.apply(op))
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    fn insert_run(&mut self, run: &Flow) -> Result<(), StoreError> {
        let exists = self.committed.contains_key(&run.id)
            || self
                .conn
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
                .and_then(|mut s| s.exists([run.id.as_bytes()]))
                .map_err(sql("check run id"))?;
        if exists {
            return Err(StoreError::RunExists(run.id));
        }
        let mut values = vec![rusqlite::types::Value::Blob(run.id.as_bytes().to_vec())];
        values.extend(run_values(run));
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO runs({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 ?13, ?14, ?15, ?16, ?17, ?18)",
                &super::rows::RUN_COLUMNS["rid, ".len()..]
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

    fn update_run(&mut self, mut run: Flow, expected: u64) -> Result<u64, StoreError> {
        let head = self.head(run.id)?;
        run.revision = expected + 1;
        let mut values = run_values(&run).to_vec();
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
        Ok(run.revision)
    }

    fn terminal_cursor(&self, rid: i64) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT cursor FROM events WHERE rid = ?1 AND kind <= 3")
            .and_then(|mut s| s.query_row([rid], |r| r.get(0)).optional())
            .map_err(sql("find terminal event"))
    }

    fn append(&mut self, ev: NewEvent) -> Result<Appended, StoreError> {
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
        let seq = head.last_seq + 1;
        self.insert_event
            .execute(params![
                head.rid,
                seq as i64,
                head.last_cursor,
                code,
                ev.event_id,
                micros(Utc::now()),
                payload(&ev.kind),
            ])
            .map_err(sql("insert event"))?;
        let cursor = self.conn.last_insert_rowid();
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

    fn record_output(&mut self, o: StepOutput) -> Result<WriteOutcome, StoreError> {
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

    fn record_failure(&mut self, f: FailureEntry) -> Result<WriteOutcome, StoreError> {
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

    fn upsert_step(&mut self, mut step: FlowStep) -> Result<WriteOutcome, StoreError> {
        let head = self.head(step.flow_id)?;
        let (id, child, created): (Vec<u8>, Option<String>, i64) = self
            .conn
            .prepare_cached(
                "INSERT INTO steps(id, flow_rid, runtime, child_session_key, run_id, task, status, \
                 result_json, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT(flow_rid, run_id) DO UPDATE SET runtime = excluded.runtime, \
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
                        step.run_id,
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
        step.id = Uuid::from_slice(&id).unwrap_or(step.id);
        step.child_session_key = child;
        step.created_at =
            chrono::DateTime::from_timestamp_micros(created).unwrap_or(step.created_at);
        Ok(WriteOutcome::StepUpserted(step))
    }
}
