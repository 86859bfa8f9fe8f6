//! Row ↔ record conversions and error mapping for PostgreSQL. The column
//! encodings are SQLite's (`store::sqlite::codec`): times as integer
//! microseconds, JSON as serde_json bytes (`bytea`, so that a `\u0000` in a
//! string, key order and big numbers all round-trip exactly, which `jsonb`
//! would not), 64-bit counters stored bit for bit in `bigint`.

use crate::records::Memo;
use std::sync::Arc;

use tokio_postgres::Row;
use tokio_postgres::error::Severity;
use uuid::Uuid;

use crate::records::{
    Cursor, DeadLetter, EventKind, FailureEntry, InboxEntry, Lease, NewEvent, Run, RunEvent,
    RunStatus, RunStep, RunStepStatus, Settled, StepOutput, StepRuntime, TERMINAL_NAMES, WriteOp,
    assigned_event_id,
};
use crate::records::{RowRef, StoreError};
use crate::store::sqlite::codec::{json, opt_json, terminal_kind, time};

/// Whether `e` means the connection is gone (or going): the server
/// terminated the session, the socket closed, or the client could not
/// talk to it. Such an error fails the whole batch, never one op.
pub(crate) fn is_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // Not the server's error: an I/O or protocol failure of the client.
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(
                    db.parsed_severity(),
                    Some(Severity::Fatal | Severity::Panic)
                )
        }
    }
}

/// Maps a driver error: [`StoreError::ConnectionLost`] when the connection
/// is gone, else [`StoreError::Postgres`].
pub(crate) fn pg(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        if is_lost(&e) {
            StoreError::ConnectionLost {
                op,
                source: Arc::new(e),
            }
        } else {
            StoreError::Postgres {
                op,
                source: Arc::new(e),
            }
        }
    }
}

/// A message as an error (for failures that are the store's own, not the driver's).
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// [`StoreError::Postgres`] for a failure that is the store's own.
pub(crate) fn own_error(op: &'static str, message: String) -> StoreError {
    StoreError::Postgres {
        op,
        source: Arc::new(Message(message)),
    }
}

/// Refuses a string PostgreSQL `text` cannot hold (one with a NUL).
fn text(run_id: Uuid, field: &'static str, value: &str) -> Result<(), StoreError> {
    if !value.contains('\0') {
        return Ok(());
    }
    Err(StoreError::InvalidInput {
        run_id,
        field,
        value: value.escape_debug().take(64).collect(),
        why: "PostgreSQL text cannot hold a NUL (\\0) character",
    })
}

fn opt_text(run_id: Uuid, field: &'static str, value: Option<&str>) -> Result<(), StoreError> {
    value.map_or(Ok(()), |v| text(run_id, field, v))
}

pub(crate) fn check_run_text(run: &Run) -> Result<(), StoreError> {
    let id = run.id;
    text(id, "controller_id", &run.controller_id)?;
    text(id, "goal", &run.goal)?;
    text(id, "owner_session_key", &run.owner_session_key)?;
    opt_text(id, "requester_origin", run.requester_origin.as_deref())?;
    opt_text(id, "current_step", run.current_step.as_deref())?;
    opt_text(id, "lease", run.lease.as_ref().map(|l| l.owner.as_str()))?;
    opt_text(id, "fingerprint", run.fingerprint.as_deref())
}

pub(crate) fn check_event_text(ev: &NewEvent) -> Result<(), StoreError> {
    opt_text(ev.run_id, "event_id", ev.event_id.as_deref())?;
    text(ev.run_id, "kind", ev.kind.name())
}

/// Checks the strings of an op that go into `text` columns (JSON is stored
/// as bytes, where a NUL is escaped: any JSON string is fine). Each op is
/// checked as it is applied, so a refusal fails that op alone.
pub(crate) fn check_op_text(op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::InsertRun { run, audit } => {
            check_run_text(run)?;
            audit
                .as_ref()
                .map_or(Ok(()), |k| text(run.id, "kind", k.name()))
        }
        WriteOp::UpdateRun { run, audit, .. } => {
            check_run_text(run)?;
            text(run.id, "kind", audit.name())
        }
        WriteOp::Append(ev) => check_event_text(ev),
        WriteOp::AppendBatch(evs) => evs.iter().try_for_each(check_event_text),
        // A checkpoint's stage names and states are stored in its JSON.
        WriteOp::AppendTerminalIfAbsent { .. }
        | WriteOp::Atomic(_)
        | WriteOp::RecordCheckpoint(_) => Ok(()),
        // Its own validation refuses a NUL in its text.
        WriteOp::RecordDefinition(_) => Ok(()),
        WriteOp::RecordStepOutput(o) => {
            text(o.run_id, "step_id", &o.step_id)?;
            opt_text(o.run_id, "loop_id", o.loop_id.as_deref())
        }
        WriteOp::RecordFailure(f) => {
            text(f.run_id, "step_id", &f.step_id)?;
            text(f.run_id, "reason", &f.reason)
        }
        WriteOp::RecordDeadLetter(d) => text(d.run_id, "stage", &d.stage),
        WriteOp::RecordMemo(m) => {
            text(m.run_id, "stage", &m.stage)?;
            text(m.run_id, "name", &m.name)
        }
        WriteOp::AcceptInbox(entries) => entries
            .iter()
            .try_for_each(|e| text(e.run_id, "stage", &e.stage)),
        WriteOp::SettleInbox {
            run_id,
            stage,
            undeliverable,
            ..
        } => {
            text(*run_id, "stage", stage)?;
            opt_text(*run_id, "undeliverable", undeliverable.as_deref())
        }
        WriteOp::UpsertStep(s) => {
            text(s.run_id, "external_run_id", &s.external_run_id)?;
            text(s.run_id, "task", &s.task)?;
            opt_text(
                s.run_id,
                "child_session_key",
                s.child_session_key.as_deref(),
            )
        }
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(pg("read row"))
}

/// Whether `name` is one of the terminal kinds (codes 1-4).
fn terminal_code(name: &str) -> Option<i64> {
    TERMINAL_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as i64 + 1)
}

/// The columns [`decode_event`] reads, in order.
pub(crate) const EVENT_COLUMNS: &str = "cursor, run_id, seq, kind, event_id, at, payload";

/// Decodes a row selected with [`EVENT_COLUMNS`].
pub(crate) fn decode_event(row: &Row) -> Result<RunEvent, StoreError> {
    let cursor: i64 = get(row, 0)?;
    let run_id: Uuid = get(row, 1)?;
    let at = RowRef {
        table: "events",
        rowid: cursor,
        run_id: Some(run_id),
    };
    let seq: i64 = get(row, 2)?;
    let name: String = get(row, 3)?;
    let event_id: Option<String> = get(row, 4)?;
    let value = opt_json(&at, "payload", get(row, 6)?)?;
    let kind = match terminal_code(&name).and_then(|code| terminal_kind(&at, code, value.clone())) {
        Some(terminal) => terminal?,
        None => EventKind::Custom {
            name,
            payload: value.unwrap_or_default(),
        },
    };
    Ok(RunEvent {
        cursor: Cursor(cursor as u64),
        run_id,
        seq: seq as u64,
        event_id: event_id.unwrap_or_else(|| assigned_event_id(seq as u64)),
        kind,
        at: time(&at, "at", get(row, 5)?)?,
    })
}

/// The columns [`decode_run`] reads: `rid, id`, the mutable columns, then
/// `input_json, run_key, fingerprint, flow_version, continued_from`.
pub(crate) const RUN_COLUMNS: &str = "rid, id, controller_id, goal, owner_session_key, \
    requester_origin, parent_run_id, current_step, state_json, wait_json, status, \
    cancel_requested, revision, created_at, updated_at, ended_at, lease_owner, lease_epoch, \
    lease_expires_at, input_json, run_key, fingerprint, flow_version, continued_from";

/// A run's values that an update writes (`controller_id` to
/// `lease_expires_at`, in [`RUN_COLUMNS`] order), owned.
pub(crate) struct RunParams {
    bytes: [Option<Vec<u8>>; 2],
    ints: [Option<i64>; 6],
    status: i32,
    lease_owner: Option<String>,
}

impl RunParams {
    pub(crate) fn new(run: &Run, revision: u64) -> RunParams {
        use crate::store::sqlite::codec::{json_bytes, micros};
        RunParams {
            bytes: [
                Some(json_bytes(&run.state_json)),
                run.wait_json.as_ref().map(json_bytes),
            ],
            ints: [
                Some(revision as i64),
                Some(micros(run.created_at)),
                Some(micros(run.updated_at)),
                run.ended_at.map(micros),
                run.lease.as_ref().map(|l| l.epoch as i64),
                run.lease.as_ref().map(|l| micros(l.expires_at)),
            ],
            status: run.status.code() as i32,
            lease_owner: run.lease.as_ref().map(|l| l.owner.clone()),
        }
    }

    /// Leases the run to `worker` at epoch 1 for `lease_micros` (the
    /// insert adds the database's clock to it).
    pub(crate) fn lease_to(&mut self, worker: &str, lease_micros: i64) {
        self.lease_owner = Some(worker.to_owned());
        self.ints[4] = Some(1);
        self.ints[5] = Some(lease_micros);
    }

    /// The values, borrowing `run` for its strings.
    pub(crate) fn values<'a>(
        &'a self,
        run: &'a Run,
    ) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 17] {
        [
            &run.controller_id,
            &run.goal,
            &run.owner_session_key,
            &run.requester_origin,
            &run.parent_run_id,
            &run.current_step,
            &self.bytes[0],
            &self.bytes[1],
            &self.status,
            &run.cancel_requested,
            &self.ints[0],
            &self.ints[1],
            &self.ints[2],
            &self.ints[3],
            &self.lease_owner,
            &self.ints[4],
            &self.ints[5],
        ]
    }
}

/// Decodes a row selected with [`RUN_COLUMNS`].
pub(crate) fn decode_run(row: &Row) -> Result<Run, StoreError> {
    let mut at = RowRef {
        table: "runs",
        rowid: get(row, 0)?,
        run_id: None,
    };
    let id: Uuid = get(row, 1)?;
    at.run_id = Some(id);
    let status_code: i32 = get(row, 10)?;
    let status =
        RunStatus::from_code(i64::from(status_code)).ok_or_else(|| StoreError::CorruptRow {
            row: at.clone(),
            column: "status",
            value: status_code.to_string(),
        })?;
    let lease = match get::<Option<String>>(row, 16)? {
        Some(owner) => Some(Lease {
            owner,
            epoch: get::<Option<i64>>(row, 17)?.unwrap_or(0) as u64,
            expires_at: time(
                &at,
                "lease_expires_at",
                get::<Option<i64>>(row, 18)?.unwrap_or(0),
            )?,
        }),
        None => None,
    };
    Ok(Run {
        id,
        controller_id: get(row, 2)?,
        goal: get(row, 3)?,
        owner_session_key: get(row, 4)?,
        requester_origin: get(row, 5)?,
        parent_run_id: get(row, 6)?,
        current_step: get(row, 7)?,
        state_json: json(&at, "state_json", get::<&[u8]>(row, 8)?)?,
        wait_json: opt_json(&at, "wait_json", get(row, 9)?)?,
        status,
        cancel_requested: get(row, 11)?,
        revision: get::<i64>(row, 12)? as u64,
        created_at: time(&at, "created_at", get(row, 13)?)?,
        updated_at: time(&at, "updated_at", get(row, 14)?)?,
        ended_at: get::<Option<i64>>(row, 15)?
            .map(|t| time(&at, "ended_at", t))
            .transpose()?,
        lease,
        input: opt_json(&at, "input_json", get(row, 19)?)?.unwrap_or_default(),
        key: get(row, 20)?,
        fingerprint: get(row, 21)?,
        flow_version: get::<Option<i64>>(row, 22)?
            .map(|v| {
                u32::try_from(v).map_err(|_| StoreError::CorruptRow {
                    row: at.clone(),
                    column: "flow_version",
                    value: v.to_string(),
                })
            })
            .transpose()?,
        continued_from: get(row, 23)?,
    })
}

/// The run id and row id of a run row that did not decode, as far as they read.
pub(crate) fn damaged_ref(row: &Row) -> RowRef {
    RowRef {
        table: "runs",
        rowid: row.try_get(0).unwrap_or(0),
        run_id: row.try_get(1).ok(),
    }
}

/// The columns [`decode_step`] reads, in order.
pub(crate) const STEP_COLUMNS: &str = "sid, id, run_id, runtime, child_session_key, \
    external_run_id, task, status, result_json, created_at, updated_at";

/// Decodes a row selected with [`STEP_COLUMNS`].
pub(crate) fn decode_step(row: &Row) -> Result<RunStep, StoreError> {
    let run_id: Uuid = get(row, 2)?;
    let at = RowRef {
        table: "steps",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let runtime: i32 = get(row, 3)?;
    let status: i32 = get(row, 7)?;
    let bad = |column, value: i32| StoreError::CorruptRow {
        row: at.clone(),
        column,
        value: value.to_string(),
    };
    Ok(RunStep {
        id: get(row, 1)?,
        run_id,
        runtime: StepRuntime::from_code(runtime.into()).ok_or_else(|| bad("runtime", runtime))?,
        child_session_key: get(row, 4)?,
        external_run_id: get(row, 5)?,
        task: get(row, 6)?,
        status: RunStepStatus::from_code(status.into()).ok_or_else(|| bad("status", status))?,
        result_json: opt_json(&at, "result_json", get(row, 8)?)?,
        created_at: time(&at, "created_at", get(row, 9)?)?,
        updated_at: time(&at, "updated_at", get(row, 10)?)?,
    })
}

/// The columns [`decode_output`] reads, in order.
pub(crate) const OUTPUT_COLUMNS: &str = "id, run_id, step_id, loop_id, iteration, at, output";

/// Decodes a row selected with [`OUTPUT_COLUMNS`].
pub(crate) fn decode_output(row: &Row) -> Result<StepOutput, StoreError> {
    let run_id: Uuid = get(row, 1)?;
    let at = RowRef {
        table: "step_outputs",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let iteration: Option<i64> = get(row, 4)?;
    Ok(StepOutput {
        run_id,
        step_id: get(row, 2)?,
        loop_id: get(row, 3)?,
        iteration: iteration
            .map(|i| {
                u32::try_from(i).map_err(|_| StoreError::CorruptRow {
                    row: at.clone(),
                    column: "iteration",
                    value: i.to_string(),
                })
            })
            .transpose()?,
        at: time(&at, "at", get(row, 5)?)?,
        output: json(&at, "output", get::<&[u8]>(row, 6)?)?,
    })
}

/// Decodes `id, step_id, reason, error_json, at` of `failures`.
pub(crate) fn decode_failure(run_id: Uuid, row: &Row) -> Result<FailureEntry, StoreError> {
    let at = RowRef {
        table: "failures",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    Ok(FailureEntry {
        run_id,
        step_id: get(row, 1)?,
        reason: get(row, 2)?,
        error_json: opt_json(&at, "error_json", get(row, 3)?)?,
        at: time(&at, "at", get(row, 4)?)?,
    })
}

/// Decodes `id, stage, position, attempts, errors, item, at` of `dead_letters`.
pub(crate) fn decode_dead_letter(run_id: Uuid, row: &Row) -> Result<DeadLetter, StoreError> {
    let at = RowRef {
        table: "dead_letters",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let errors =
        serde_json::from_slice(get::<&[u8]>(row, 4)?).map_err(|e| StoreError::CorruptPayload {
            row: at.clone(),
            column: "errors",
            source: Arc::new(e),
        })?;
    let attempts: i64 = get(row, 3)?;
    Ok(DeadLetter {
        run_id,
        stage: get(row, 1)?,
        position: get::<i64>(row, 2)? as u64,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::CorruptRow {
            row: at.clone(),
            column: "attempts",
            value: attempts.to_string(),
        })?,
        errors,
        item: json(&at, "item", get::<&[u8]>(row, 5)?)?,
        at: time(&at, "at", get(row, 6)?)?,
    })
}

/// Decodes `id, stage, name, ok, result, at` of `memos`.
pub(crate) fn decode_memo(run_id: Uuid, row: &Row) -> Result<Memo, StoreError> {
    let at = RowRef {
        table: "memos",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let value = json(&at, "result", get::<&[u8]>(row, 4)?)?;
    let result = if get::<bool>(row, 3)? {
        Ok(value)
    } else {
        match value {
            serde_json::Value::String(message) => Err(message),
            other => {
                return Err(StoreError::CorruptRow {
                    row: at,
                    column: "result",
                    value: format!("a failed memo's message must be a string, found {other}"),
                });
            }
        }
    };
    Ok(Memo {
        run_id,
        stage: get(row, 1)?,
        name: get(row, 2)?,
        result,
        at: time(&at, "at", get(row, 5)?)?,
    })
}

/// Decodes `seq, id, stage, message, accepted_at, settled_at, undeliverable` of `inbox`.
pub(crate) fn decode_inbox(run_id: Uuid, row: &Row) -> Result<InboxEntry, StoreError> {
    let at = RowRef {
        table: "inbox",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let message =
        serde_json::from_slice(get::<&[u8]>(row, 3)?).map_err(|e| StoreError::CorruptPayload {
            row: at.clone(),
            column: "message",
            source: Arc::new(e),
        })?;
    let settled = match get::<Option<i64>>(row, 5)? {
        Some(micros) => Some(Settled {
            at: time(&at, "settled_at", micros)?,
            undeliverable: get(row, 6)?,
        }),
        None => None,
    };
    Ok(InboxEntry {
        id: get(row, 1)?,
        run_id,
        stage: get(row, 2)?,
        message,
        accepted_at: time(&at, "accepted_at", get(row, 4)?)?,
        settled,
    })
}
