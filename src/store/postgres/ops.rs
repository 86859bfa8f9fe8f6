//! One write op inside the writer's transaction ([`OpCtx::apply`]), with
//! the SQLite store's rules: run inserts and CAS updates, event appends with
//! their per-run sequence (the inbox's ops are in `inbox.rs`; outputs,
//! failures, dead letters and steps in `ledger.rs`). Each op is boxed into a
//! future of its own (`Atomic` recurses).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::codec::{EVENT_COLUMNS, RunParams, check_op_text, decode_event, pg};
use super::lease::LeaseBook;
use super::write::{EventBuffer, Statements};
use crate::records::Run;
use crate::records::{Appended, Cursor, NewEvent, RowRef, TerminalAppend};
use crate::records::{RunEvent, StoreError, WriteOp, WriteOutcome, next_revision};
use crate::store::sqlite::codec::{json_bytes, payload};

/// The largest event payload accepted, in bytes (PostgreSQL's limit for
/// one value is 1 GB; the batch's payloads travel in one array).
pub(super) const MAX_PAYLOAD: usize = 256 << 20;

pub(super) struct OpCtx<'a> {
    pub(super) client: &'a Client,
    pub(super) statements: &'a mut Statements,
    /// Committed run heads.
    pub(super) committed: &'a HashMap<Uuid, u64>,
    /// The batch's heads so far, when the op keeps its own apart (`heads`)
    /// until it has succeeded.
    pub(super) batch: Option<&'a HashMap<Uuid, u64>>,
    /// Where the op records the heads it reads and changes.
    pub(super) heads: &'a mut HashMap<Uuid, u64>,
    pub(super) next_cursor: &'a mut i64,
    /// Where a plain append queues its row; `None` for every other op.
    pub(super) buffer: Option<&'a mut EventBuffer>,
    /// The batch's time (µs since the epoch), shared by its events.
    pub(super) now: i64,
    /// The store's leases: whom a new run is leased to.
    pub(super) lease: &'a LeaseBook,
}

type OpFuture<'f> = Pin<Box<dyn Future<Output = Result<WriteOutcome, StoreError>> + Send + 'f>>;

impl OpCtx<'_> {
    pub(super) async fn execute(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let statement = self.statements.get(self.client, sql).await?;
        self.client
            .execute(&statement, params)
            .await
            .map_err(pg(op))
    }

    pub(super) async fn query_opt(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let statement = self.statements.get(self.client, sql).await?;
        self.client
            .query_opt(&statement, params)
            .await
            .map_err(pg(op))
    }

    /// The run's last sequence number; [`StoreError::RunNotFound`] if it
    /// has no row.
    pub(super) async fn head(&mut self, run_id: Uuid) -> Result<u64, StoreError> {
        let seen = (self.heads.get(&run_id))
            .or_else(|| self.batch.and_then(|b| b.get(&run_id)))
            .or_else(|| self.committed.get(&run_id));
        if let Some(seq) = seen {
            return Ok(*seq);
        }
        let row = self
            .query_opt(
                "look up run",
                "SELECT (SELECT coalesce(max(seq), 0) FROM events WHERE run_id = $1) \
                 FROM runs WHERE id = $1",
                &[&run_id],
            )
            .await?
            .ok_or(StoreError::RunNotFound(run_id))?;
        let last: i64 = row.try_get(0).map_err(pg("look up run"))?;
        self.heads.insert(run_id, last as u64);
        Ok(last as u64)
    }

    /// Applies `op`, only reading it.
    pub(super) fn apply<'f>(&'f mut self, op: &'f WriteOp) -> OpFuture<'f> {
        Box::pin(async move {
            check_op_text(op)?;
            match op {
                WriteOp::InsertRun { run, audit } => {
                    run.validate()?;
                    self.insert_run(run).await?;
                    let audit = match audit {
                        Some(kind) => {
                            Some(self.append(&NewEvent::new(run.id, kind.clone())).await?)
                        }
                        None => None,
                    };
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
                    let revision = self.update_run(run, *expected_revision).await?;
                    self.ring_watchers(run).await?;
                    let audit = self.append(&audit_event).await?;
                    Ok(WriteOutcome::RunUpdated { revision, audit })
                }
                WriteOp::Append(ev) => Ok(WriteOutcome::Appended(self.append(ev).await?)),
                WriteOp::AppendBatch(evs) => {
                    let mut appended = Vec::with_capacity(evs.len());
                    for ev in evs {
                        appended.push(self.append(ev).await?);
                    }
                    Ok(WriteOutcome::BatchAppended(appended))
                }
                WriteOp::AppendTerminalIfAbsent { run_id, event } => {
                    self.head(*run_id).await?;
                    if let Some(cursor) = self.terminal_cursor(*run_id).await? {
                        let existing = self.event_by_cursor(*run_id, cursor).await?;
                        return Ok(WriteOutcome::Terminal(TerminalAppend::AlreadyPresent(
                            existing,
                        )));
                    }
                    let ev = NewEvent::new(*run_id, event.clone());
                    let appended = self.append(&ev).await?;
                    Ok(WriteOutcome::Terminal(TerminalAppend::Appended(appended)))
                }
                WriteOp::RecordStepOutput(o) => self.record_output(o).await,
                WriteOp::RecordFailure(f) => self.record_failure(f).await,
                WriteOp::RecordDeadLetter(d) => self.record_dead_letter(d).await,
                WriteOp::RecordMemo(m) => self.record_memo(m).await,
                WriteOp::RecordCheckpoint(c) => self.record_checkpoint(c).await,
                WriteOp::RecordDefinition(d) => self.record_definition(d).await,
                WriteOp::AcceptInbox(entries) => self.accept_inbox(entries).await,
                WriteOp::SettleInbox {
                    run_id,
                    id,
                    stage,
                    undeliverable,
                } => {
                    self.settle_inbox(*run_id, *id, stage, undeliverable.as_deref())
                        .await
                }
                WriteOp::UpsertStep(step) => self.upsert_step(step).await,
                WriteOp::Atomic(ops) => {
                    let mut outcomes = Vec::with_capacity(ops.len());
                    for op in ops {
                        outcomes.push(self.apply(op).await?);
                    }
                    Ok(WriteOutcome::Atomic(outcomes))
                }
            }
        })
    }

    async fn insert_run(&mut self, run: &Run) -> Result<(), StoreError> {
        let exists = self.committed.contains_key(&run.id)
            || self
                .query_opt(
                    "check run id",
                    "SELECT 1 FROM runs WHERE id = $1",
                    &[&run.id],
                )
                .await?
                .is_some();
        if exists {
            return Err(StoreError::RunExists(run.id));
        }
        if let Some(key) = &run.key {
            self.check_key_free(&run.controller_id, key).await?;
        }
        // The lease is the store's to give: the new run is this worker's.
        let mut params = RunParams::new(run, run.revision);
        params.lease_to(&self.lease.worker, self.lease.lease_micros());
        let input = (!run.input.is_null()).then(|| json_bytes(&run.input));
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&run.id];
        values.extend(params.values(run));
        values.push(&input);
        values.push(&run.key);
        values.push(&run.fingerprint);
        let version = run.flow_version.map(i64::from);
        values.push(&version);
        values.push(&run.continued_from);
        self.execute(
            "insert run",
            "INSERT INTO runs(id, controller_id, goal, owner_session_key, requester_origin, \
             parent_run_id, current_step, state_json, wait_json, status, cancel_requested, \
             revision, created_at, updated_at, ended_at, lease_owner, lease_epoch, \
             lease_expires_at, input_json, run_key, fingerprint, flow_version, continued_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, (extract(epoch from clock_timestamp()) * 1000000)::bigint + $18, $19, $20, \
             $21, $22, $23)",
            &values,
        )
        .await?;
        self.heads.insert(run.id, 0);
        Ok(())
    }

    /// Refuses a key a run of `flow` holds that has not ended (the partial
    /// unique index `runs_live_key` would too, with a less useful error).
    async fn check_key_free(&mut self, flow: &str, key: &str) -> Result<(), StoreError> {
        let existing = self
            .query_opt(
                "check run key",
                "SELECT id FROM runs WHERE controller_id = $1 AND run_key = $2 \
                 AND run_key IS NOT NULL AND status NOT IN (3, 4, 5, 6)",
                &[&flow, &key],
            )
            .await?;
        match existing {
            None => Ok(()),
            Some(row) => Err(StoreError::RunKeyTaken {
                flow: flow.to_owned(),
                key: key.to_owned(),
                existing: row.try_get(0).map_err(pg("check run key"))?,
            }),
        }
    }

    async fn update_run(&mut self, run: &Run, expected: u64) -> Result<u64, StoreError> {
        let revision = next_revision(run.id, expected)?;
        let params = RunParams::new(run, revision);
        let expected_param = expected as i64;
        // The lease columns are left alone: leases are the store's
        // (`lease.rs`), not a field a caller's update may overwrite.
        let mut values: Vec<&(dyn ToSql + Sync)> = params.values(run)[..14].to_vec();
        values.push(&run.id);
        values.push(&expected_param);
        let changed = self
            .execute(
                "update run",
                "UPDATE runs SET controller_id = $1, goal = $2, owner_session_key = $3, \
                 requester_origin = $4, parent_run_id = $5, current_step = $6, state_json = $7, \
                 wait_json = $8, status = $9, cancel_requested = $10, revision = $11, \
                 created_at = $12, updated_at = $13, ended_at = $14 \
                 WHERE id = $15 AND revision = $16",
                &values,
            )
            .await?;
        if changed == 0 {
            let row = self
                .query_opt(
                    "read revision",
                    "SELECT revision FROM runs WHERE id = $1",
                    &[&run.id],
                )
                .await?
                .ok_or(StoreError::RunNotFound(run.id))?;
            let actual: i64 = row.try_get(0).map_err(pg("read revision"))?;
            return Err(StoreError::RevisionMismatch {
                run_id: run.id,
                expected,
                actual: actual as u64,
            });
        }
        Ok(revision)
    }

    async fn terminal_cursor(&mut self, run_id: Uuid) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "SELECT cursor FROM events WHERE run_id = $1 \
             AND kind IN ('RunCompleted', 'RunFailed', 'RunCancelled', 'RunContinuedAsNew')";
        let row = self
            .query_opt("find terminal event", SQL, &[&run_id])
            .await?;
        row.map(|r| r.try_get(0))
            .transpose()
            .map_err(pg("find terminal event"))
    }

    async fn event_by_cursor(&mut self, run_id: Uuid, cursor: i64) -> Result<RunEvent, StoreError> {
        let sql: &'static str = event_by_cursor_sql();
        let row = self.query_opt("read event", sql, &[&cursor]).await?;
        match row {
            Some(row) => decode_event(&row),
            None => Err(StoreError::CorruptRow {
                row: RowRef {
                    table: "events",
                    rowid: cursor,
                    run_id: Some(run_id),
                },
                column: "cursor",
                value: "missing".into(),
            }),
        }
    }

    async fn append(&mut self, ev: &NewEvent) -> Result<Appended, StoreError> {
        ev.validate()?;
        let last_seq = self.head(ev.run_id).await?;
        if let Some(key) = &ev.event_id {
            let existing = self
                .query_opt(
                    "find event id",
                    "SELECT cursor, seq FROM events WHERE run_id = $1 AND event_id = $2",
                    &[&ev.run_id, key],
                )
                .await?;
            if let Some(row) = existing {
                let cursor: i64 = row.try_get(0).map_err(pg("find event id"))?;
                let seq: i64 = row.try_get(1).map_err(pg("find event id"))?;
                return Ok(Appended {
                    cursor: Cursor(cursor as u64),
                    seq: seq as u64,
                    duplicate: true,
                });
            }
        }
        let terminal = ev.kind.as_terminal().is_some();
        if terminal && let Some(cursor) = self.terminal_cursor(ev.run_id).await? {
            let existing = self.event_by_cursor(ev.run_id, cursor).await?;
            return Err(StoreError::TerminalExists {
                run_id: ev.run_id,
                existing: existing.kind.name_static(),
                cursor: existing.cursor,
            });
        }
        let seq = last_seq
            .checked_add(1)
            .filter(|seq| i64::try_from(*seq).is_ok())
            .ok_or_else(|| StoreError::CorruptRow {
                row: RowRef {
                    table: "events",
                    rowid: 0,
                    run_id: Some(ev.run_id),
                },
                column: "seq",
                value: last_seq.to_string(),
            })?;
        let payload = payload(&ev.kind);
        if let Some(bytes) = &payload
            && bytes.len() > MAX_PAYLOAD
        {
            return Err(StoreError::InvalidInput {
                run_id: ev.run_id,
                field: "payload",
                value: format!("{} bytes of JSON", bytes.len()),
                why: "larger than the store's length limit (256 MiB)",
            });
        }
        let cursor = *self.next_cursor;
        let seq_param = seq as i64;
        match self.buffer.as_deref_mut() {
            Some(buffer) => buffer.push(cursor, ev.run_id, seq_param, ev.kind.name(), payload),
            None => {
                let name = ev.kind.name();
                let now = self.now;
                self.execute(
                    "insert event",
                    "INSERT INTO events(cursor, run_id, seq, kind, event_id, at, payload) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &cursor,
                        &ev.run_id,
                        &seq_param,
                        &name,
                        &ev.event_id,
                        &now,
                        &payload,
                    ],
                )
                .await?;
            }
        }
        *self.next_cursor += 1;
        if terminal {
            // Takes the run out of `runs_missing_outcome`, in the event's savepoint.
            self.execute(
                "record run outcome",
                "UPDATE runs SET outcome_cursor = $1 WHERE id = $2",
                &[&cursor, &ev.run_id],
            )
            .await?;
        }
        self.heads.insert(ev.run_id, seq);
        Ok(Appended {
            cursor: Cursor(cursor as u64),
            seq,
            duplicate: false,
        })
    }
}

/// `SELECT {EVENT_COLUMNS} FROM events WHERE cursor = $1`, built once.
fn event_by_cursor_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE cursor = $1")
    });
    SQL.as_str()
}
