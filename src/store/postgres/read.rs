//! The read path: queries on a reader connection, never queued behind the
//! writer's transaction (they read committed state).

use super::codec::decode_memo;
use crate::records::Memo;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::codec::{
    EVENT_COLUMNS, OUTPUT_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, damaged_ref, decode_dead_letter,
    decode_event, decode_failure, decode_inbox, decode_output, decode_run, decode_step, pg,
};
use crate::records::StepOutput;
use crate::records::{Cursor, DamagedRun, RunEvent, StoreError};
use crate::records::{DeadLetter, FailureEntry, InboxEntry, Run, RunFilter, RunStatus, RunStep};
use crate::store::sqlite::codec::micros;
use crate::store::traits::distinct;

/// Runs `sql` and decodes every row with `decode`; the first bad row is
/// reported as a typed error naming it.
async fn collect<T>(
    client: &Client,
    op: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = client.query(sql, params).await.map_err(pg(op))?;
    rows.iter().map(decode).collect()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn get_run(client: &Client, id: Uuid) -> Result<Option<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    Ok(collect(client, "get run", &sql, &[&id], decode_run)
        .await?
        .pop())
}

pub(super) async fn find_run_by_key(
    client: &Client,
    flow: &str,
    key: &str,
) -> Result<Option<Run>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE controller_id = $1 AND run_key = $2 \
         AND run_key IS NOT NULL ORDER BY rid DESC LIMIT 1"
    );
    let run = collect(client, "find run by key", &sql, &[&flow, &key], decode_run).await?;
    Ok(run.into_iter().next())
}

pub(super) async fn list_runs_by_owner(
    client: &Client,
    owner: &str,
) -> Result<Vec<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE owner_session_key = $1 ORDER BY rid");
    collect(client, "list runs by owner", &sql, &[&owner], decode_run).await
}

pub(super) async fn list_runs_by_status(
    client: &Client,
    status: RunStatus,
) -> Result<Vec<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = $1 ORDER BY rid");
    let code = status.code() as i32;
    collect(client, "list runs by status", &sql, &[&code], decode_run).await
}

/// The condition of the `runs_missing_outcome` partial index.
const MISSING_OUTCOME: &str = "status IN (3, 4, 5, 6) AND outcome_cursor IS NULL";

pub(super) async fn list_runs_missing_terminal_event(
    client: &Client,
) -> Result<Vec<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE {MISSING_OUTCOME} ORDER BY rid");
    collect(
        client,
        "list runs missing terminal event",
        &sql,
        &[],
        decode_run,
    )
    .await
}

/// The recovery scan: runs whose status is not terminal (a code this
/// version does not know included, reported as damaged) and terminal runs
/// without an outcome, each row decoded on its own.
pub(super) async fn list_runs_to_recover(
    client: &Client,
) -> Result<Vec<Result<Run, DamagedRun>>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status NOT IN (3, 4, 5, 6) \
         UNION ALL SELECT {RUN_COLUMNS} FROM runs WHERE {MISSING_OUTCOME} ORDER BY rid"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(pg("list runs to recover"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(decode_run(row).map_err(|error| DamagedRun {
            row: damaged_ref(row),
            error,
        }));
    }
    Ok(out)
}

/// One page of [`Store::list_runs`](crate::store::Store::list_runs), in one query.
pub(super) async fn list_runs(
    client: &Client,
    filter: &RunFilter,
    before: Option<Uuid>,
    max: usize,
) -> Result<Vec<Run>, StoreError> {
    let op = "list runs";
    let bound: Option<i64> = match before {
        None => None,
        Some(id) => {
            let row = client
                .query_opt("SELECT created_at FROM runs WHERE id = $1", &[&id])
                .await
                .map_err(pg(op))?
                .ok_or(StoreError::RunNotFound(id))?;
            Some(row.try_get(0).map_err(pg(op))?)
        }
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs \
         WHERE ($1::integer IS NULL OR status = $1) AND ($2::text IS NULL OR controller_id = $2) \
         AND ($3::bigint IS NULL OR (created_at, id) < ($3, $4::uuid)) \
         AND ($6::text IS NULL OR owner_session_key = $6) \
         AND ($7::uuid IS NULL OR parent_run_id = $7) \
         AND ($8::bigint IS NULL OR created_at >= $8) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    );
    let status = filter.status.map(|s| s.code() as i32);
    let since = filter.created_since.map(micros);
    let params: [&(dyn ToSql + Sync); 8] = [
        &status,
        &filter.controller_id,
        &bound,
        &before,
        &limit(max),
        &filter.owner_session_key,
        &filter.parent_run_id,
        &since,
    ];
    collect(client, op, &sql, &params, decode_run).await
}

pub(super) async fn list_events(
    client: &Client,
    run_id: Uuid,
    max: usize,
) -> Result<Vec<RunEvent>, StoreError> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE run_id = $1 ORDER BY seq DESC LIMIT $2");
    let mut events = collect(
        client,
        "list events",
        &sql,
        &[&run_id, &limit(max)],
        decode_event,
    )
    .await?;
    events.reverse();
    Ok(events)
}

pub(super) async fn poll(
    client: &Client,
    after: Cursor,
    max: usize,
) -> Result<Vec<RunEvent>, StoreError> {
    let after = i64::try_from(after.0).unwrap_or(i64::MAX);
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE cursor > $1 ORDER BY cursor LIMIT $2");
    collect(
        client,
        "poll events",
        &sql,
        &[&after, &limit(max)],
        decode_event,
    )
    .await
}

pub(super) async fn latest_cursor(client: &Client) -> Result<Cursor, StoreError> {
    let row = client
        .query_one("SELECT coalesce(max(cursor), 0) FROM events", &[])
        .await
        .map_err(pg("latest cursor"))?;
    let cursor: i64 = row.try_get(0).map_err(pg("latest cursor"))?;
    Ok(Cursor(cursor as u64))
}

pub(super) async fn terminal_event(
    client: &Client,
    run_id: Uuid,
) -> Result<Option<RunEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE run_id = $1 \
         AND kind IN ('RunCompleted', 'RunFailed', 'RunCancelled', 'RunContinuedAsNew')"
    );
    let mut events = collect(
        client,
        "find terminal event",
        &sql,
        &[&run_id],
        decode_event,
    )
    .await?;
    Ok(events.pop())
}

pub(super) async fn list_step_outputs_for(
    client: &Client,
    run_ids: &[Uuid],
) -> Result<Vec<StepOutput>, StoreError> {
    let ids = distinct(run_ids);
    let columns: String = OUTPUT_COLUMNS
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM unnest($1::uuid[]) WITH ORDINALITY AS j(run_id, n) \
         JOIN step_outputs o ON o.run_id = j.run_id ORDER BY j.n, o.id"
    );
    collect(client, "list step outputs", &sql, &[&ids], decode_output).await
}

pub(super) async fn list_failures(
    client: &Client,
    run_id: Uuid,
) -> Result<Vec<FailureEntry>, StoreError> {
    collect(
        client,
        "list failures",
        "SELECT id, step_id, reason, error_json, at FROM failures WHERE run_id = $1 ORDER BY id",
        &[&run_id],
        |row| decode_failure(run_id, row),
    )
    .await
}

pub(super) async fn list_dead_letters(
    client: &Client,
    run_id: Uuid,
) -> Result<Vec<DeadLetter>, StoreError> {
    collect(
        client,
        "list dead letters",
        "SELECT id, stage, position, attempts, errors, item, at FROM dead_letters \
         WHERE run_id = $1 ORDER BY id",
        &[&run_id],
        |row| decode_dead_letter(run_id, row),
    )
    .await
}

pub(super) async fn list_memos(
    client: &Client,
    run_id: Uuid,
    stage: &str,
) -> Result<Vec<Memo>, StoreError> {
    collect(
        client,
        "list memos",
        "SELECT id, stage, name, ok, result, at FROM memos \
         WHERE run_id = $1 AND stage = $2 ORDER BY id",
        &[&run_id, &stage],
        |row| decode_memo(run_id, row),
    )
    .await
}

pub(super) async fn list_inbox(
    client: &Client,
    run_id: Uuid,
) -> Result<Vec<InboxEntry>, StoreError> {
    collect(
        client,
        "list inbox",
        "SELECT seq, id, stage, message, accepted_at, settled_at, undeliverable FROM inbox \
         WHERE run_id = $1 ORDER BY seq",
        &[&run_id],
        |row| decode_inbox(run_id, row),
    )
    .await
}

pub(super) async fn list_steps(client: &Client, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE run_id = $1 ORDER BY sid");
    collect(client, "list steps", &sql, &[&run_id], decode_step).await
}
