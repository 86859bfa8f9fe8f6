//! [`Store::list_runs`](crate::store::Store::list_runs) in one query: the
//! filter, the page bound and the order are SQLite's, so a page reads and
//! decodes only its own rows.

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::codec::micros;
use super::read::collect;
use super::rows::{RUN_COLUMNS, decode_run};
use crate::records::{Run, RunFilter, StoreError};

/// One page of the runs `filter` passes, newest first (`created_at`, then
/// id, descending: the id blob compares as [`Uuid`] does), after the run
/// `before`.
pub(crate) fn list_runs(
    conn: &Connection,
    filter: &RunFilter,
    before: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Run>, StoreError> {
    let op = "list runs";
    let bound = match before {
        None => None,
        Some(id) => {
            let mut stmt = conn
                .prepare_cached("SELECT created_at FROM runs WHERE id = ?1")
                .map_err(StoreError::sqlite(op))?;
            let created: Option<i64> = stmt
                .query_row([id.as_bytes()], |row| row.get(0))
                .optional()
                .map_err(StoreError::sqlite(op))?;
            Some((created.ok_or(StoreError::RunNotFound(id))?, id))
        }
    };
    let query = format!(
        "SELECT {RUN_COLUMNS} FROM runs \
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR controller_id = ?2) \
         AND (?3 IS NULL OR (created_at, id) < (?3, ?4)) \
         AND (?6 IS NULL OR owner_session_key = ?6) AND (?7 IS NULL OR parent_run_id = ?7) \
         AND (?8 IS NULL OR created_at >= ?8) \
         ORDER BY created_at DESC, id DESC LIMIT ?5"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let params = params![
        filter.status.map(|s| s.code()),
        filter.controller_id.as_deref(),
        bound.map(|(created, _)| created),
        bound.map(|(_, id)| id.as_bytes().to_vec()),
        limit,
        filter.owner_session_key.as_deref(),
        filter.parent_run_id.map(|p| p.as_bytes().to_vec()),
        filter.created_since.map(micros),
    ];
    collect(conn, op, &query, params, decode_run)
}
