//! The read path: queries that run on a read-only connection (or on the
//! writer's, for an in-memory database), never queued behind writes.

use crate::records::Memo;
use crate::store::sqlite::rows::decode_memo;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::codec::{Kinds, time, uuid};
use super::rows::{
    RUN_COLUMNS, STEP_COLUMNS, decode_dead_letter, decode_failure, decode_inbox, decode_output,
    decode_run, decode_step,
};
use super::schema::MISSING_OUTCOME;
use crate::records::{Cursor, RunEvent, assigned_event_id};
use crate::records::{DamagedRun, RowRef, StoreError};
use crate::records::{DeadLetter, FailureEntry, InboxEntry, Run, RunStatus, RunStep, StepOutput};
use crate::store::traits::distinct;

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(op)
}

/// Runs `sql` with `params` and decodes every row with `decode`; the first
/// bad row is reported as a typed error naming it.
pub(super) fn collect<T>(
    conn: &Connection,
    op: &'static str,
    query: &str,
    params: impl rusqlite::Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(query).map_err(sql(op))?;
    let mut rows = stmt.query(params).map_err(sql(op))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(op))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Decodes `cursor, seq, kind, ekey, at, payload` (and the run id at index 6
/// when `run_id` is `None`).
fn decode_event(
    conn: &Connection,
    kinds: &mut Kinds,
    run_id: Option<Uuid>,
    row: &Row<'_>,
) -> Result<RunEvent, StoreError> {
    let get =
        |i| -> Result<rusqlite::types::Value, StoreError> { row.get(i).map_err(sql("read event")) };
    let cursor: i64 = row.get(0).map_err(sql("read event"))?;
    let mut at = RowRef {
        table: "events",
        rowid: cursor,
        run_id,
    };
    let run_id = match run_id {
        Some(id) => id,
        None => {
            let bytes: Vec<u8> = row.get(6).map_err(sql("read event"))?;
            let id = uuid(&at, "run id", &bytes)?;
            at.run_id = Some(id);
            id
        }
    };
    let seq: i64 = row.get(1).map_err(sql("read event"))?;
    let code: i64 = row.get(2).map_err(sql("read event"))?;
    let ekey: Option<String> = row.get(3).map_err(sql("read event"))?;
    let when: i64 = row.get(4).map_err(sql("read event"))?;
    let payload = match get(5)? {
        rusqlite::types::Value::Null => None,
        rusqlite::types::Value::Blob(b) => Some(b),
        rusqlite::types::Value::Text(t) => Some(t.into_bytes()),
        other => {
            return Err(StoreError::CorruptRow {
                row: at,
                column: "payload",
                value: format!("{other:?}"),
            });
        }
    };
    Ok(RunEvent {
        cursor: Cursor(cursor as u64),
        run_id,
        seq: seq as u64,
        event_id: ekey.unwrap_or_else(|| assigned_event_id(seq as u64)),
        kind: kinds.decode(conn, &at, code, payload)?,
        at: time(&at, "at", when)?,
    })
}

/// The event at `cursor`, which belongs to `run_id`.
pub(crate) fn event_by_cursor(
    conn: &Connection,
    kinds: &mut Kinds,
    run_id: Uuid,
    cursor: i64,
) -> Result<RunEvent, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT cursor, seq, kind, ekey, at, payload FROM events WHERE cursor = ?1")
        .map_err(sql("read event"))?;
    let mut rows = stmt.query([cursor]).map_err(sql("read event"))?;
    match rows.next().map_err(sql("read event"))? {
        Some(row) => decode_event(conn, kinds, Some(run_id), row),
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

pub(crate) fn get_run(conn: &Connection, id: Uuid) -> Result<Option<Run>, StoreError> {
    let query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    Ok(collect(conn, "get run", &query, [id.as_bytes()], decode_run)?.pop())
}

pub(crate) fn find_run_by_key(
    conn: &Connection,
    flow: &str,
    key: &str,
) -> Result<Option<Run>, StoreError> {
    let query = format!(
        "SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_by_key \
         WHERE controller_id = ?1 AND run_key = ?2 AND run_key IS NOT NULL \
         ORDER BY rid DESC LIMIT 1"
    );
    Ok(collect(conn, "find run by key", &query, [flow, key], decode_run)?.pop())
}

pub(crate) fn list_runs_by_owner(conn: &Connection, owner: &str) -> Result<Vec<Run>, StoreError> {
    let query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE owner_session_key = ?1 ORDER BY rid");
    collect(conn, "list runs by owner", &query, [owner], decode_run)
}

pub(crate) fn list_runs_by_status(
    conn: &Connection,
    status: RunStatus,
) -> Result<Vec<Run>, StoreError> {
    let query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1 ORDER BY rid");
    collect(
        conn,
        "list runs by status",
        &query,
        [status.code()],
        decode_run,
    )
}

/// Reads the `runs_missing_outcome` partial index: the runs it returns, not
/// every finished run.
pub(crate) fn list_runs_missing_terminal_event(conn: &Connection) -> Result<Vec<Run>, StoreError> {
    collect(
        conn,
        "list runs missing terminal event",
        &missing_terminal_query(),
        [],
        decode_run,
    )
}

/// `INDEXED BY`: without statistics SQLite prefers `runs_by_status`, which
/// holds every finished run; naming the index also makes a WHERE that no
/// longer implies the index's an error ("no query solution") rather than a
/// silent full scan.
fn missing_terminal_query() -> String {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_missing_outcome \
         WHERE {MISSING_OUTCOME} ORDER BY rid"
    )
}

/// The recovery scan's rows (see
/// [`Store::list_runs_to_recover`](crate::store::Store::list_runs_to_recover)):
/// the runs whose status is not terminal (`runs_by_status`; a code this
/// version does not know sorts outside 3..=6 too, so it is listed and
/// reported) and the partial index of terminal runs without an outcome.
/// Each row decodes on its own.
pub(crate) fn list_runs_to_recover(
    conn: &Connection,
) -> Result<Vec<Result<Run, DamagedRun>>, StoreError> {
    let op = "list runs to recover";
    let query = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status < 3 OR status > 6 \
         UNION ALL SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_missing_outcome \
         WHERE {MISSING_OUTCOME} ORDER BY rid"
    );
    let mut stmt = conn.prepare_cached(&query).map_err(sql(op))?;
    let mut rows = stmt.query([]).map_err(sql(op))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(op))? {
        out.push(decode_run(row).map_err(|error| {
            let rowid: i64 = row.get(0).unwrap_or(0);
            let run_id = row
                .get::<_, Vec<u8>>(1)
                .ok()
                .and_then(|bytes| Uuid::from_slice(&bytes).ok());
            DamagedRun {
                row: RowRef {
                    table: "runs",
                    rowid,
                    run_id,
                },
                error,
            }
        }));
    }
    Ok(out)
}

fn rid_of(conn: &Connection, id: Uuid) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT rid FROM runs WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_bytes()], |r| r.get(0)).optional())
        .map_err(sql("look up run"))
}

/// Walks the run's `prev` chain back from its head: `limit` point lookups on
/// the events primary key, no per-run index needed. The head is the run's
/// newest event after the `run_heads` mark if it has one there (a backward
/// scan of that short tail), else its stored `run_heads` row.
///
/// The walk follows a link only if the row is the run's and its `prev` is
/// older than itself, so a damaged chain (a `prev` into another run, onto
/// itself or forward: damage `integrity_check` cannot see) ends the walk
/// at once, and the row that broke it is reported as
/// [`StoreError::CorruptRow`] instead of another run's events or a loop.
pub(crate) fn list_events(
    conn: &Connection,
    kinds: &mut Kinds,
    run_id: Uuid,
    limit: usize,
) -> Result<Vec<RunEvent>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut links = Vec::new();
    let mut events = collect(
        conn,
        "list events",
        // `head` is materialized: flattened into `chain`, SQLite would
        // evaluate the tail scan twice (once per use of `c`). `via` is the
        // row whose `prev` led to `c` (NULL for the head).
        "WITH RECURSIVE head(c) AS MATERIALIZED (SELECT coalesce( \
             (SELECT cursor FROM events WHERE cursor > (SELECT cursor FROM heads_mark) \
              AND rid = ?1 ORDER BY cursor DESC LIMIT 1), \
             (SELECT last_cursor FROM run_heads WHERE rid = ?1))), \
         chain(c, n, via) AS ( \
           SELECT c, 1, NULL FROM head WHERE c IS NOT NULL AND ?2 > 0 \
           UNION ALL \
           SELECT e.prev, chain.n + 1, e.cursor FROM events e JOIN chain ON e.cursor = chain.c \
           WHERE e.prev IS NOT NULL AND chain.n < ?2 AND e.rid = ?1 AND e.prev < e.cursor) \
         SELECT e.cursor, e.seq, e.kind, e.ekey, e.at, e.payload, e.rid, e.prev, chain.via \
         FROM chain JOIN events e ON e.cursor = chain.c ORDER BY e.cursor",
        params![rid, limit],
        |row| {
            let link: (i64, i64, Option<i64>, Option<i64>) = (
                row.get(0).map_err(sql("read event"))?,
                row.get(6).map_err(sql("read event"))?,
                row.get(7).map_err(sql("read event"))?,
                row.get(8).map_err(sql("read event"))?,
            );
            links.push(link);
            // Another run's row is reported below, not decoded.
            if link.1 != rid {
                return Ok(None);
            }
            decode_event(conn, kinds, Some(run_id), row).map(Some)
        },
    )?;
    check_chain(rid, run_id, &links)?;
    // Sound chain: every row was the run's, so every event decoded.
    Ok(events.drain(..).flatten().collect())
}

/// Checks the links `list_events` followed: `(cursor, rid, prev, via)` per
/// row, where `via` is the row whose `prev` named it.
fn check_chain(
    rid: i64,
    run_id: Uuid,
    links: &[(i64, i64, Option<i64>, Option<i64>)],
) -> Result<(), StoreError> {
    let bad = |table, rowid, column, value: String| StoreError::CorruptRow {
        row: RowRef {
            table,
            rowid,
            run_id: Some(run_id),
        },
        column,
        value,
    };
    for &(cursor, owner, prev, via) in links {
        if owner != rid {
            return Err(match via {
                Some(via) => bad(
                    "events",
                    via,
                    "prev",
                    format!("{cursor} (an event of another run)"),
                ),
                None => bad(
                    "run_heads",
                    rid,
                    "last_cursor",
                    format!("{cursor} (an event of another run)"),
                ),
            });
        }
        if let Some(prev) = prev.filter(|prev| *prev >= cursor) {
            return Err(bad(
                "events",
                cursor,
                "prev",
                format!("{prev} (not before the event's own cursor)"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn poll(
    conn: &Connection,
    kinds: &mut Kinds,
    after: Cursor,
    limit: usize,
) -> Result<Vec<RunEvent>, StoreError> {
    let after = i64::try_from(after.0).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    collect(
        conn,
        "poll events",
        "SELECT e.cursor, e.seq, e.kind, e.ekey, e.at, e.payload, r.id FROM events e \
         JOIN runs r ON r.rid = e.rid WHERE e.cursor > ?1 ORDER BY e.cursor LIMIT ?2",
        params![after, limit],
        |row| decode_event(conn, kinds, None, row),
    )
}

pub(crate) fn latest_cursor(conn: &Connection) -> Result<Cursor, StoreError> {
    conn.prepare_cached("SELECT ifnull(max(cursor), 0) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(|c| Cursor(c as u64))
        .map_err(sql("latest cursor"))
}

pub(crate) fn terminal_event(
    conn: &Connection,
    kinds: &mut Kinds,
    run_id: Uuid,
) -> Result<Option<RunEvent>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(None);
    };
    collect(
        conn,
        "find terminal event",
        "SELECT cursor, seq, kind, ekey, at, payload FROM events WHERE rid = ?1 AND kind <= 4",
        [rid],
        |row| decode_event(conn, kinds, Some(run_id), row),
    )
    .map(|mut v| v.pop())
}

pub(crate) fn list_step_outputs(
    conn: &Connection,
    run_id: Uuid,
) -> Result<Vec<StepOutput>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(Vec::new());
    };
    collect(
        conn,
        "list step outputs",
        "SELECT id, step_id, loop_id, iteration, at, output FROM step_outputs WHERE rid = ?1 ORDER BY id",
        [rid],
        |row| decode_output(run_id, row),
    )
}

/// One query for the outputs of many runs: the ids go in as a JSON array of
/// hex strings, walked in order (`CROSS JOIN` keeps that loop outermost),
/// each a point lookup on `runs(id)` and a range on `step_outputs_key`.
pub(crate) fn list_step_outputs_for(
    conn: &Connection,
    run_ids: &[Uuid],
) -> Result<Vec<StepOutput>, StoreError> {
    let ids: Vec<String> = distinct(run_ids)
        .iter()
        .map(|id| id.simple().to_string())
        .collect();
    let ids = serde_json::Value::from(ids).to_string();
    collect(
        conn,
        "list step outputs of runs",
        "SELECT o.id, o.step_id, o.loop_id, o.iteration, o.at, o.output, r.rid, r.id \
         FROM json_each(?1) AS j CROSS JOIN runs r ON r.id = unhex(j.value) \
         CROSS JOIN step_outputs o ON o.rid = r.rid ORDER BY j.key, o.id",
        [ids],
        |row| {
            let rid: i64 = row.get(6).map_err(sql("read step output"))?;
            let bytes: Vec<u8> = row.get(7).map_err(sql("read step output"))?;
            let at = RowRef {
                table: "runs",
                rowid: rid,
                run_id: None,
            };
            decode_output(uuid(&at, "id", &bytes)?, row)
        },
    )
}

pub(crate) fn list_failures(
    conn: &Connection,
    run_id: Uuid,
) -> Result<Vec<FailureEntry>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(Vec::new());
    };
    collect(
        conn,
        "list failures",
        "SELECT id, step_id, reason, error_json, at FROM failures WHERE rid = ?1 ORDER BY id",
        [rid],
        |row| decode_failure(run_id, row),
    )
}

pub(crate) fn list_memos(
    conn: &Connection,
    run_id: Uuid,
    stage: &str,
) -> Result<Vec<Memo>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(Vec::new());
    };
    collect(
        conn,
        "list memos",
        "SELECT id, stage, name, ok, result, at FROM memos WHERE rid = ?1 AND stage = ?2 ORDER BY id",
        params![rid, stage],
        |row| decode_memo(run_id, row),
    )
}

/// The memo of `(rid, stage, name)`, if one is recorded.
pub(crate) fn memo(
    conn: &Connection,
    rid: i64,
    run_id: Uuid,
    stage: &str,
    name: &str,
) -> Result<Option<Memo>, StoreError> {
    Ok(collect(
        conn,
        "read memo",
        "SELECT id, stage, name, ok, result, at FROM memos WHERE rid = ?1 AND stage = ?2 AND name = ?3",
        params![rid, stage, name],
        |row| decode_memo(run_id, row),
    )?
    .pop())
}

pub(crate) fn list_dead_letters(
    conn: &Connection,
    run_id: Uuid,
) -> Result<Vec<DeadLetter>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(Vec::new());
    };
    collect(
        conn,
        "list dead letters",
        "SELECT id, stage, position, attempts, errors, item, at FROM dead_letters \
         WHERE rid = ?1 ORDER BY id",
        [rid],
        |row| decode_dead_letter(run_id, row),
    )
}

pub(crate) fn list_inbox(conn: &Connection, run_id: Uuid) -> Result<Vec<InboxEntry>, StoreError> {
    let Some(rid) = rid_of(conn, run_id)? else {
        return Ok(Vec::new());
    };
    collect(
        conn,
        "list inbox",
        "SELECT seq, id, stage, message, accepted_at, settled_at, undeliverable FROM inbox \
         WHERE rid = ?1 ORDER BY seq",
        [rid],
        |row| decode_inbox(run_id, row),
    )
}

pub(crate) fn list_steps(conn: &Connection, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
    let query = format!(
        "SELECT {STEP_COLUMNS} FROM steps s JOIN runs r ON r.rid = s.run_rid WHERE r.id = ?1 ORDER BY s.sid"
    );
    collect(conn, "list steps", &query, [run_id.as_bytes()], decode_step)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::sqlite::{SqliteConfig, schema};

    /// The scan reads the partial index, not the table: its cost follows the
    /// runs it returns. A query whose WHERE drifted from the index's would
    /// fall back to a scan of `runs` (or of `runs_by_status`).
    #[test]
    fn the_recovery_scan_reads_only_its_partial_index() {
        let conn =
            schema::open_writer(Path::new(":memory:"), &SqliteConfig::default()).expect("open");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", missing_terminal_query()))
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(3))?
                    .collect::<Result<_, _>>()
            })
            .expect("plan");
        assert_eq!(
            plan,
            ["SCAN runs USING INDEX runs_missing_outcome"],
            "{plan:?}"
        );
    }

    /// The index's status codes are the terminal statuses'.
    #[test]
    fn the_index_condition_names_every_terminal_status() {
        let terminal: Vec<String> = RunStatus::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.code().to_string())
            .collect();
        let condition = format!(
            "status IN ({}) AND outcome_cursor IS NULL",
            terminal.join(", ")
        );
        assert_eq!(MISSING_OUTCOME, condition);
    }
}
