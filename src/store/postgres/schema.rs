//! Connecting, the schema and its migrations.
//!
//! Layout (the SQLite store's, adapted; see `store/sqlite/schema.rs`):
//! - `events` is keyed by its global cursor, which the writer assigns (one
//!   writer at a time holds the schema's write lock, so the cursor it reads
//!   at the start of its transaction is the last one). `(run_id, seq)` is
//!   unique and serves replay and `list_events`.
//! - Uniqueness the store promises lives in partial unique indexes that only
//!   the rare rows enter: one terminal event per run (`events_one_terminal`),
//!   one event per caller id per run (`events_by_key`), one run per flow and
//!   key that has not ended (`runs_live_key`).
//! - `runs.outcome_cursor` is the cursor of the run's terminal event, set in
//!   the savepoint that appends it; `runs_missing_outcome` holds only the
//!   runs with a terminal status and no terminal event, which the recovery
//!   scan reads.
//! - JSON is `bytea` holding serde_json's bytes; times are `bigint`
//!   microseconds since the epoch; 64-bit counters are stored bit for bit.
//!
//! `troupe_schema` holds the version. Opening migrates under a
//! transaction-scoped advisory lock, so that two processes opening the same
//! schema at once migrate it once; a version newer than this build's is
//! refused with [`StoreError::PostgresSchemaTooNew`].

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

use super::codec::{own_error, pg};
use crate::records::StoreError;

/// The newest schema version this build writes and reads.
pub const POSTGRES_SCHEMA_VERSION: i64 = 6;

/// Advisory lock class of the migration lock (the second key is the schema's).
const MIGRATE_LOCK: i32 = 0x7472_6f75; // "trou"
/// Advisory lock class of the write lock held by each batch's transaction.
pub(crate) const WRITE_LOCK: i32 = 0x7065_7772; // "pewr"

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    rid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    controller_id text NOT NULL,
    goal text NOT NULL,
    owner_session_key text NOT NULL,
    requester_origin text,
    parent_run_id uuid,
    current_step text,
    state_json bytea NOT NULL,
    wait_json bytea,
    status integer NOT NULL,
    cancel_requested boolean NOT NULL,
    revision bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    ended_at bigint,
    lease_owner text,
    lease_epoch bigint,
    lease_expires_at bigint,
    input_json bytea,
    run_key text,
    outcome_cursor bigint
);
CREATE INDEX runs_by_owner ON runs(owner_session_key, rid);
CREATE INDEX runs_by_status ON runs(status, rid);
CREATE INDEX runs_newest ON runs(created_at, id);
CREATE UNIQUE INDEX runs_live_key ON runs(controller_id, run_key)
    WHERE run_key IS NOT NULL AND status NOT IN (3, 4, 5);
CREATE INDEX runs_by_key ON runs(controller_id, run_key, rid) WHERE run_key IS NOT NULL;
CREATE INDEX runs_missing_outcome ON runs(rid)
    WHERE status IN (3, 4, 5) AND outcome_cursor IS NULL;
CREATE TABLE events (
    cursor bigint PRIMARY KEY,
    run_id uuid NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    event_id text,
    at bigint NOT NULL,
    payload bytea
);
CREATE UNIQUE INDEX events_by_run ON events(run_id, seq);
CREATE UNIQUE INDEX events_one_terminal ON events(run_id)
    WHERE kind IN ('RunCompleted', 'RunFailed', 'RunCancelled');
CREATE UNIQUE INDEX events_by_key ON events(run_id, event_id) WHERE event_id IS NOT NULL;
CREATE TABLE step_outputs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    step_id text NOT NULL,
    loop_id text,
    iteration bigint,
    at bigint NOT NULL,
    output bytea NOT NULL
);
CREATE UNIQUE INDEX step_outputs_key
    ON step_outputs(run_id, step_id, coalesce(loop_id, ''), coalesce(iteration, -1));
CREATE INDEX step_outputs_by_run ON step_outputs(run_id, id);
CREATE TABLE failures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    step_id text NOT NULL,
    reason text NOT NULL,
    error_json bytea,
    at bigint NOT NULL
);
CREATE INDEX failures_by_run ON failures(run_id, id);
CREATE TABLE steps (
    sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL,
    run_id uuid NOT NULL,
    runtime integer NOT NULL,
    child_session_key text,
    external_run_id text NOT NULL,
    task text NOT NULL,
    status integer NOT NULL,
    result_json bytea,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    UNIQUE (run_id, external_run_id)
);
CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    stage text NOT NULL,
    position bigint NOT NULL,
    attempts bigint NOT NULL,
    errors bytea NOT NULL,
    item bytea NOT NULL,
    at bigint NOT NULL
);
CREATE INDEX dead_letters_by_run ON dead_letters(run_id, id);
CREATE TABLE inbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    id uuid NOT NULL,
    stage text NOT NULL,
    message bytea NOT NULL,
    accepted_at bigint NOT NULL,
    settled_at bigint,
    undeliverable text,
    UNIQUE (run_id, id, stage)
);
"#,
    // v2: memos, the results of memoized side effects (`ok` says whether
    // `result` is the value's JSON or the error's message as a JSON string).
    r#"
CREATE TABLE memos (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    stage text NOT NULL,
    name text NOT NULL,
    ok boolean NOT NULL,
    result bytea NOT NULL,
    at bigint NOT NULL,
    UNIQUE (run_id, stage, name)
);
"#,
    // v3: each streaming run's latest checkpoint, one row per run (`stages`
    // is the JSON of its stages).
    r#"
CREATE TABLE checkpoints (
    run_id uuid PRIMARY KEY,
    id bigint NOT NULL CHECK (id >= 1),
    taken_at bigint NOT NULL,
    stages bytea NOT NULL
);
"#,
    // v4: registered flow definitions, one row per (name, fingerprint)
    // (`shape` is the JSON of its stages and edges), and the fingerprint
    // and version each run started with (NULL before v4).
    r#"
CREATE TABLE definitions (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    version bigint,
    fingerprint text NOT NULL,
    shape bytea NOT NULL,
    registered_at bigint NOT NULL,
    UNIQUE (name, fingerprint)
);
ALTER TABLE runs ADD COLUMN fingerprint text;
ALTER TABLE runs ADD COLUMN flow_version bigint;
"#,
    // v5: how many runs claims have taken from each worker (see
    // `lease.rs`): a batch checks its worker's count, not every run.
    r#"
CREATE TABLE lease_takeovers (
    worker text PRIMARY KEY,
    taken bigint NOT NULL
);
"#,
    // v6: continue-as-new. A fourth terminal kind, `RunContinuedAsNew` (a
    // custom kind of that name keeps its events under a `custom:` prefix,
    // as SQLite's v4 did), a fourth terminal status (6) in the indexes that
    // list terminal statuses, and the run a run continues
    // (`continued_from`, NULL for a chain's first run).
    r#"
UPDATE events SET kind = 'custom:' || kind WHERE kind = 'RunContinuedAsNew';
DROP INDEX events_one_terminal;
CREATE UNIQUE INDEX events_one_terminal ON events(run_id)
    WHERE kind IN ('RunCompleted', 'RunFailed', 'RunCancelled', 'RunContinuedAsNew');
DROP INDEX runs_live_key;
CREATE UNIQUE INDEX runs_live_key ON runs(controller_id, run_key)
    WHERE run_key IS NOT NULL AND status NOT IN (3, 4, 5, 6);
DROP INDEX runs_missing_outcome;
CREATE INDEX runs_missing_outcome ON runs(rid)
    WHERE status IN (3, 4, 5, 6) AND outcome_cursor IS NULL;
ALTER TABLE runs ADD COLUMN continued_from uuid;
"#,
];

/// A PostgreSQL identifier, quoted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The second key of the schema's advisory locks: a stable hash of its name
/// (FNV-1a), so that stores of different schemas do not wait on each other.
pub(crate) fn lock_key(schema: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in schema.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// Opens a connection (its driver task spawned on the current tokio
/// runtime) with `search_path` set to `schema`, within `timeout`.
pub(crate) async fn connect(
    config: &Config,
    schema: Option<&str>,
    application_name: &str,
    timeout: Duration,
) -> Result<Client, StoreError> {
    let mut config = config.clone();
    config.application_name(application_name);
    config.connect_timeout(timeout);
    let connecting = config.connect(NoTls);
    let (client, connection) = match tokio::time::timeout(timeout, connecting).await {
        // Never `ConnectionLost`: there was nothing to lose yet.
        Ok(connected) => connected.map_err(|e| StoreError::Postgres {
            op: "connect",
            source: std::sync::Arc::new(e),
        })?,
        Err(_) => {
            return Err(own_error(
                "connect",
                format!("no connection within {timeout:?}"),
            ));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    if let Some(schema) = schema {
        client
            .batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
            .await
            .map_err(pg("set search_path"))?;
    }
    Ok(client)
}

/// Creates the schema (when one is named), then its tables, or migrates
/// them to [`POSTGRES_SCHEMA_VERSION`]; refuses a newer version.
pub(crate) async fn migrate(client: &Client, schema: Option<&str>) -> Result<(), StoreError> {
    let name = match schema {
        Some(schema) => schema.to_owned(),
        None => current_schema(client).await?,
    };
    let mut script = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({MIGRATE_LOCK}, {});",
        lock_key(&name)
    );
    if let Some(schema) = schema {
        script.push_str(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};",
            quote_ident(schema)
        ));
    }
    script.push_str("CREATE TABLE IF NOT EXISTS troupe_schema (version bigint NOT NULL);");
    client
        .batch_execute(&script)
        .await
        .map_err(pg("lock the schema for migration"))?;
    let result = migrate_locked(client, &name).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client
        .batch_execute(end)
        .await
        .map_err(pg("migrate schema"));
    result.and(ended)
}

async fn migrate_locked(client: &Client, schema: &str) -> Result<(), StoreError> {
    let found: Option<i64> = client
        .query_opt("SELECT max(version) FROM troupe_schema", &[])
        .await
        .map_err(pg("read schema version"))?
        .and_then(|row| row.get(0));
    let from = found.unwrap_or(0);
    if from > POSTGRES_SCHEMA_VERSION {
        return Err(StoreError::PostgresSchemaTooNew {
            schema: schema.to_owned(),
            found: from,
            supported: POSTGRES_SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(from).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        client
            .batch_execute(sql)
            .await
            .map_err(pg("migrate schema"))?;
        let to = i as i64 + 1;
        client
            .batch_execute(&format!(
                "DELETE FROM troupe_schema; INSERT INTO troupe_schema(version) VALUES ({to})"
            ))
            .await
            .map_err(pg("record schema version"))?;
        tracing::info!(schema, version = to, "postgres schema migrated");
    }
    Ok(())
}

/// The schema unqualified names resolve to (the first of `search_path`).
pub(crate) async fn current_schema(client: &Client) -> Result<String, StoreError> {
    let row = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(pg("read current schema"))?;
    row.try_get::<_, Option<String>>(0)
        .map_err(pg("read current schema"))?
        .ok_or_else(|| {
            own_error(
                "read current schema",
                "search_path names no existing schema".into(),
            )
        })
}
