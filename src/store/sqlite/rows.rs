//! Row ↔ record conversions for runs, steps, outputs and failures.

use rusqlite::Row;
use rusqlite::types::Value as Sql;
use uuid::Uuid;

use super::codec::{json, json_bytes, micros, opt_json, time, uuid};
use crate::records::{
    DeadLetter, FailureEntry, InboxEntry, Lease, Memo, Run, RunStatus, RunStep, RunStepStatus,
    Settled, StepOutput, StepRuntime,
};
use crate::records::{RowRef, StoreError};

/// A run's columns that an update writes, in [`run_values`] order.
macro_rules! mutable_run_columns {
    () => {
        "controller_id, goal, owner_session_key, requester_origin, parent_run_id, current_step, \
         state_json, wait_json, status, cancel_requested, revision, created_at, updated_at, \
         ended_at, lease_owner, lease_epoch, lease_expires_at"
    };
}

/// The columns [`decode_run`] reads, in order: the row id, the run id, the
/// mutable columns, then those fixed at insert ([`fixed_run_values`]).
pub(crate) const RUN_COLUMNS: &str = concat!(
    "rid, id, ",
    mutable_run_columns!(),
    ", input_json, run_key, fingerprint, flow_version, continued_from"
);

/// The columns an update of a run writes, in [`run_values`] order.
pub(crate) const MUTABLE_RUN_COLUMNS: &str = mutable_run_columns!();

/// Where [`run_values`] puts the run's `revision`.
pub(crate) const REVISION_VALUE: usize = 10;

/// The run's mutable columns as SQL values, in [`RUN_COLUMNS`] order from `controller_id`.
pub(crate) fn run_values(f: &Run) -> [Sql; 17] {
    let text = |s: &Option<String>| s.clone().map_or(Sql::Null, Sql::Text);
    [
        Sql::Text(f.controller_id.clone()),
        Sql::Text(f.goal.clone()),
        Sql::Text(f.owner_session_key.clone()),
        text(&f.requester_origin),
        f.parent_run_id
            .map_or(Sql::Null, |p| Sql::Blob(p.as_bytes().to_vec())),
        text(&f.current_step),
        Sql::Blob(json_bytes(&f.state_json)),
        f.wait_json
            .as_ref()
            .map_or(Sql::Null, |w| Sql::Blob(json_bytes(w))),
        Sql::Integer(f.status.code()),
        Sql::Integer(i64::from(f.cancel_requested)),
        Sql::Integer(f.revision as i64),
        Sql::Integer(micros(f.created_at)),
        Sql::Integer(micros(f.updated_at)),
        f.ended_at.map_or(Sql::Null, |t| Sql::Integer(micros(t))),
        text(&f.lease.as_ref().map(|l| l.owner.clone())),
        f.lease
            .as_ref()
            .map_or(Sql::Null, |l| Sql::Integer(l.epoch as i64)),
        f.lease
            .as_ref()
            .map_or(Sql::Null, |l| Sql::Integer(micros(l.expires_at))),
    ]
}

/// The run's columns fixed at insert, in [`RUN_COLUMNS`] order after the
/// mutable ones: the input (NULL for `Null`), the key, the definition's
/// fingerprint and version, and the run it continues.
pub(crate) fn fixed_run_values(f: &Run) -> [Sql; 5] {
    [
        if f.input.is_null() {
            Sql::Null
        } else {
            Sql::Blob(json_bytes(&f.input))
        },
        f.key.clone().map_or(Sql::Null, Sql::Text),
        f.fingerprint.clone().map_or(Sql::Null, Sql::Text),
        f.flow_version
            .map_or(Sql::Null, |v| Sql::Integer(i64::from(v))),
        f.continued_from
            .map_or(Sql::Null, |p| Sql::Blob(p.as_bytes().to_vec())),
    ]
}

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> Result<T, StoreError> {
    row.get(i).map_err(StoreError::sqlite("read row"))
}

/// Decodes a row selected with [`RUN_COLUMNS`].
pub(crate) fn decode_run(row: &Row<'_>) -> Result<Run, StoreError> {
    let mut at = RowRef {
        table: "runs",
        rowid: get(row, 0)?,
        run_id: None,
    };
    let id = uuid(&at, "id", &get::<Vec<u8>>(row, 1)?)?;
    at.run_id = Some(id);
    let status_code: i64 = get(row, 10)?;
    let status = RunStatus::from_code(status_code).ok_or_else(|| StoreError::CorruptRow {
        row: at.clone(),
        column: "status",
        value: status_code.to_string(),
    })?;
    let parent: Option<Vec<u8>> = get(row, 6)?;
    let continued_from: Option<Vec<u8>> = get(row, 23)?;
    let lease_owner: Option<String> = get(row, 16)?;
    let lease = match lease_owner {
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
        parent_run_id: parent.map(|p| uuid(&at, "parent_run_id", &p)).transpose()?,
        current_step: get(row, 7)?,
        state_json: json(&at, "state_json", &get::<Vec<u8>>(row, 8)?)?,
        wait_json: opt_json(&at, "wait_json", get(row, 9)?)?,
        status,
        cancel_requested: get::<i64>(row, 11)? != 0,
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
        continued_from: continued_from
            .map(|p| uuid(&at, "continued_from", &p))
            .transpose()?,
    })
}

/// The columns [`decode_step`] reads, in order.
pub(crate) const STEP_COLUMNS: &str = "s.sid, s.id, r.id, s.runtime, s.child_session_key, \
    s.external_run_id, s.task, s.status, s.result_json, s.created_at, s.updated_at";

/// Decodes a row selected with [`STEP_COLUMNS`].
pub(crate) fn decode_step(row: &Row<'_>) -> Result<RunStep, StoreError> {
    let mut at = RowRef {
        table: "steps",
        rowid: get(row, 0)?,
        run_id: None,
    };
    let run_id = uuid(&at, "run_rid", &get::<Vec<u8>>(row, 2)?)?;
    at.run_id = Some(run_id);
    let runtime: i64 = get(row, 3)?;
    let status: i64 = get(row, 7)?;
    let bad = |column, value: i64| StoreError::CorruptRow {
        row: at.clone(),
        column,
        value: value.to_string(),
    };
    Ok(RunStep {
        id: uuid(&at, "id", &get::<Vec<u8>>(row, 1)?)?,
        run_id,
        runtime: StepRuntime::from_code(runtime).ok_or_else(|| bad("runtime", runtime))?,
        child_session_key: get(row, 4)?,
        external_run_id: get(row, 5)?,
        task: get(row, 6)?,
        status: RunStepStatus::from_code(status).ok_or_else(|| bad("status", status))?,
        result_json: opt_json(&at, "result_json", get(row, 8)?)?,
        created_at: time(&at, "created_at", get(row, 9)?)?,
        updated_at: time(&at, "updated_at", get(row, 10)?)?,
    })
}

/// Decodes `id, step_id, loop_id, iteration, at, output` of `step_outputs`.
pub(crate) fn decode_output(run_id: Uuid, row: &Row<'_>) -> Result<StepOutput, StoreError> {
    let at = RowRef {
        table: "step_outputs",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let iteration: Option<i64> = get(row, 3)?;
    Ok(StepOutput {
        run_id,
        step_id: get(row, 1)?,
        loop_id: get(row, 2)?,
        iteration: iteration
            .map(|i| {
                u32::try_from(i).map_err(|_| StoreError::CorruptRow {
                    row: at.clone(),
                    column: "iteration",
                    value: i.to_string(),
                })
            })
            .transpose()?,
        at: time(&at, "at", get(row, 4)?)?,
        output: json(&at, "output", &get::<Vec<u8>>(row, 5)?)?,
    })
}

/// Decodes `id, step_id, reason, error_json, at` of `failures`.
pub(crate) fn decode_failure(run_id: Uuid, row: &Row<'_>) -> Result<FailureEntry, StoreError> {
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
pub(crate) fn decode_dead_letter(run_id: Uuid, row: &Row<'_>) -> Result<DeadLetter, StoreError> {
    let at = RowRef {
        table: "dead_letters",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let errors = serde_json::from_slice(&get::<Vec<u8>>(row, 4)?).map_err(|e| {
        StoreError::CorruptPayload {
            row: at.clone(),
            column: "errors",
            source: std::sync::Arc::new(e),
        }
    })?;
    Ok(DeadLetter {
        run_id,
        stage: get(row, 1)?,
        position: get::<i64>(row, 2)? as u64,
        attempts: get(row, 3)?,
        errors,
        item: json(&at, "item", &get::<Vec<u8>>(row, 5)?)?,
        at: time(&at, "at", get(row, 6)?)?,
    })
}

/// Decodes `id, stage, name, ok, result, at` of `memos`.
pub(crate) fn decode_memo(run_id: Uuid, row: &Row<'_>) -> Result<Memo, StoreError> {
    let at = RowRef {
        table: "memos",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let value = json(&at, "result", &get::<Vec<u8>>(row, 4)?)?;
    let result = if get::<i64>(row, 3)? != 0 {
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
pub(crate) fn decode_inbox(run_id: Uuid, row: &Row<'_>) -> Result<InboxEntry, StoreError> {
    let at = RowRef {
        table: "inbox",
        rowid: get(row, 0)?,
        run_id: Some(run_id),
    };
    let message = serde_json::from_slice(&get::<Vec<u8>>(row, 3)?).map_err(|e| {
        StoreError::CorruptPayload {
            row: at.clone(),
            column: "message",
            source: std::sync::Arc::new(e),
        }
    })?;
    let settled = match get::<Option<i64>>(row, 5)? {
        Some(micros) => Some(Settled {
            at: time(&at, "settled_at", micros)?,
            undeliverable: get(row, 6)?,
        }),
        None => None,
    };
    Ok(InboxEntry {
        id: uuid(&at, "id", &get::<Vec<u8>>(row, 1)?)?,
        run_id,
        stage: get(row, 2)?,
        message,
        accepted_at: time(&at, "accepted_at", get(row, 4)?)?,
        settled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_value_points_at_the_revision_column() {
        let columns: Vec<&str> = MUTABLE_RUN_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(columns[REVISION_VALUE], "revision");
        assert_eq!(columns.len(), run_values(&sample()).len());
        let all: Vec<&str> = RUN_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(all[2..2 + columns.len()], columns[..]);
        assert_eq!(
            all.len(),
            2 + columns.len() + fixed_run_values(&sample()).len()
        );
    }

    fn sample() -> Run {
        Run::new("controller", "goal", "owner")
    }
}
