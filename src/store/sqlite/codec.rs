//! Compact on-disk encodings shared by the read and write paths: times as
//! integer microseconds, ids as 16-byte blobs, kinds as interned codes,
//! payloads as JSON bytes (NULL when empty).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;
use uuid::Uuid;

use super::fast_hash::FastMap;
use crate::records::{Checkpoint, EventKind, TERMINAL_NAMES, TerminalEvent};
use crate::records::{RowRef, StoreError};

/// Highest code reserved for terminal kinds (the partial unique index uses it).
pub(crate) const MAX_TERMINAL_CODE: i64 = 4;

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn time(
    row: &RowRef,
    column: &'static str,
    v: i64,
) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::CorruptRow {
        row: row.clone(),
        column,
        value: v.to_string(),
    })
}

pub(crate) fn uuid(row: &RowRef, column: &'static str, v: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(v).map_err(|_| StoreError::CorruptRow {
        row: row.clone(),
        column,
        value: format!("{} bytes", v.len()),
    })
}

pub(crate) fn json_bytes(v: &Value) -> Vec<u8> {
    // Serialising a `Value` to a Vec cannot fail: it has string keys and no I/O.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn json(row: &RowRef, column: &'static str, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptPayload {
        row: row.clone(),
        column,
        source: Arc::new(e),
    })
}

pub(crate) fn opt_json(
    row: &RowRef,
    column: &'static str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<Value>, StoreError> {
    bytes.map(|b| json(row, column, &b)).transpose()
}

/// The `stages` column of a checkpoint: its stages as JSON (the
/// [`StageCheckpoint`](crate::records::StageCheckpoint)s' own encoding).
pub(crate) fn checkpoint_stages(checkpoint: &Checkpoint) -> Vec<u8> {
    // A map of strings to plain fields and JSON values always encodes.
    serde_json::to_vec(&checkpoint.stages).unwrap_or_default()
}

/// Decodes a stored checkpoint (its `id`, `taken_at` and `stages`
/// columns, in `row`): a damaged column is a typed error naming the row,
/// never a panic, and an id no write could have stored (below 1) is
/// [`StoreError::CorruptRow`]. Shared by the SQLite and PostgreSQL stores.
pub(crate) fn decode_checkpoint(
    row: &RowRef,
    run_id: Uuid,
    id: i64,
    taken_at: i64,
    stages: &[u8],
) -> Result<Checkpoint, StoreError> {
    let id = u64::try_from(id)
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| StoreError::CorruptRow {
            row: row.clone(),
            column: "id",
            value: id.to_string(),
        })?;
    let stages = serde_json::from_slice(stages).map_err(|e| StoreError::CorruptPayload {
        row: row.clone(),
        column: "stages",
        source: Arc::new(e),
    })?;
    Ok(Checkpoint {
        run_id,
        id,
        taken_at: time(row, "taken_at", taken_at)?,
        stages,
    })
}

/// The payload column for an event kind.
pub(crate) fn payload(kind: &EventKind) -> Option<Vec<u8>> {
    match kind {
        EventKind::Terminal(TerminalEvent::RunCompleted { structured_output }) => {
            structured_output.as_ref().map(json_bytes)
        }
        EventKind::Terminal(TerminalEvent::RunFailed { reason }) => {
            Some(json_bytes(&Value::String(reason.clone())))
        }
        EventKind::Terminal(TerminalEvent::RunCancelled) => None,
        EventKind::Terminal(TerminalEvent::RunContinuedAsNew { next_run_id }) => {
            Some(json_bytes(&Value::String(next_run_id.to_string())))
        }
        EventKind::Custom { payload, .. } if payload.is_null() => None,
        EventKind::Custom { payload, .. } => Some(json_bytes(payload)),
    }
}

/// The terminal kind whose code is `code` (1-4, in `TERMINAL_NAMES`
/// order) with its decoded payload (see [`payload`]); `None` for any other
/// code. Every backend that stores payloads as [`payload`] bytes decodes
/// terminal events with it.
pub(crate) fn terminal_kind(
    row: &RowRef,
    code: i64,
    value: Option<Value>,
) -> Option<Result<EventKind, StoreError>> {
    Some(match code {
        1 => Ok(TerminalEvent::RunCompleted {
            structured_output: value,
        }
        .into()),
        2 => match value {
            Some(Value::String(reason)) => Ok(TerminalEvent::RunFailed { reason }.into()),
            other => Err(StoreError::CorruptRow {
                row: row.clone(),
                column: "payload",
                value: format!("RunFailed reason {other:?}"),
            }),
        },
        3 => Ok(TerminalEvent::RunCancelled.into()),
        4 => match value
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
        {
            Some(next_run_id) => Ok(TerminalEvent::RunContinuedAsNew { next_run_id }.into()),
            None => Err(StoreError::CorruptRow {
                row: row.clone(),
                column: "payload",
                value: format!("RunContinuedAsNew next run id {value:?}"),
            }),
        },
        _ => return None,
    })
}

/// The interned kind dictionary: name ↔ code.
#[derive(Default)]
pub(crate) struct Kinds {
    by_code: FastMap<i64, Arc<str>>,
    by_name: FastMap<Arc<str>, i64>,
}

impl Kinds {
    pub(crate) fn insert(&mut self, code: i64, name: &str) {
        let name: Arc<str> = name.into();
        self.by_code.insert(code, name.clone());
        self.by_name.insert(name, code);
    }

    pub(crate) fn code(&self, name: &str) -> Option<i64> {
        self.by_name.get(name).copied()
    }

    /// Reloads the dictionary from the database.
    pub(crate) fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn
            .prepare_cached("SELECT code, name FROM event_kinds")
            .map_err(StoreError::sqlite("load event kinds"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(StoreError::sqlite("load event kinds"))?;
        for row in rows {
            let (code, name) = row.map_err(StoreError::sqlite("load event kinds"))?;
            self.insert(code, &name);
        }
        Ok(())
    }

    /// The code for `name`, adding it to the dictionary table if it is new.
    /// The caller records a new name in its scratch so that a rolled-back
    /// write does not leave a stale cache entry.
    pub(crate) fn lookup_or_insert(
        &self,
        conn: &Connection,
        name: &str,
    ) -> Result<(i64, bool), StoreError> {
        if let Some(i) = TERMINAL_NAMES.iter().position(|n| *n == name) {
            return Ok((i as i64 + 1, false));
        }
        if let Some(code) = self.code(name) {
            return Ok((code, false));
        }
        let found: Option<i64> = conn
            .prepare_cached("SELECT code FROM event_kinds WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(StoreError::sqlite("look up event kind"))?;
        if let Some(code) = found {
            return Ok((code, true));
        }
        let code: i64 = conn
            .prepare_cached(
                "INSERT INTO event_kinds(code, name) \
                 VALUES ((SELECT max(max(code) + 1, 16) FROM event_kinds), ?1) RETURNING code",
            )
            .and_then(|mut s| s.query_row([name], |r| r.get(0)))
            .map_err(StoreError::sqlite("add event kind"))?;
        Ok((code, true))
    }

    /// Decodes a stored kind code and payload.
    pub(crate) fn decode(
        &mut self,
        conn: &Connection,
        row: &RowRef,
        code: i64,
        payload: Option<Vec<u8>>,
    ) -> Result<EventKind, StoreError> {
        let value = opt_json(row, "payload", payload)?;
        if let Some(terminal) = terminal_kind(row, code, value.clone()) {
            return terminal;
        }
        if !self.by_code.contains_key(&code) {
            self.reload(conn)?;
        }
        let name = self
            .by_code
            .get(&code)
            .ok_or_else(|| StoreError::UnknownEventKind {
                row: row.clone(),
                code,
            })?;
        Ok(EventKind::Custom {
            name: name.to_string(),
            payload: value.unwrap_or(Value::Null),
        })
    }
}
