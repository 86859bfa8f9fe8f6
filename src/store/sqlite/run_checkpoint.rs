//! Reading a run's latest checkpoint of its stream (the records of
//! `troupe::records::Checkpoint`; not the WAL checkpoints of `checkpoint.rs`).

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::codec::decode_checkpoint;
use crate::records::{Checkpoint, RowRef, StoreError};

/// The run's checkpoint, if it has one (`None` for an unknown run).
pub(crate) fn last_checkpoint(
    conn: &Connection,
    run_id: Uuid,
) -> Result<Option<Checkpoint>, StoreError> {
    let found: Option<(i64, i64, i64, Sql)> = conn
        .prepare_cached(
            "SELECT c.rid, c.id, c.taken_at, c.stages FROM checkpoints c \
             JOIN runs r ON r.rid = c.rid WHERE r.id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([run_id.as_bytes()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(StoreError::sqlite("read checkpoint"))?;
    let Some((rid, id, taken_at, stages)) = found else {
        return Ok(None);
    };
    let row = RowRef {
        table: "checkpoints",
        rowid: rid,
        run_id: Some(run_id),
    };
    let stages = match stages {
        Sql::Blob(bytes) => bytes,
        Sql::Text(text) => text.into_bytes(),
        other => {
            return Err(StoreError::CorruptRow {
                row,
                column: "stages",
                value: format!("{other:?}"),
            });
        }
    };
    decode_checkpoint(&row, run_id, id, taken_at, &stages).map(Some)
}
