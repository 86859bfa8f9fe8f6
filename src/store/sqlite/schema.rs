//! Opening a database: pragmas, the integrity check and schema migrations.
//!
//! Layout, chosen for append-mostly writes (see `BENCHMARKS.md`):
//! - `events` is keyed by its global cursor (the rowid), so appends land at
//!   the end of one b-tree. A run's events are chained through `prev` (the
//!   cursor of the run's previous event) instead of a `(run, seq)` index,
//!   which would put every append of interleaved runs on a different page.
//! - `run_heads` is a narrow table of per-run counters (`last_seq`,
//!   `last_cursor`), written back lazily: it is exact for every event up to
//!   the cursor in `heads_mark`, and the events after that cursor (the tail)
//!   are newer than it. The writer keeps the exact heads in memory and writes
//!   them back every few thousand events; opening the database folds the
//!   tail back in (`heads.rs`).
//! - Kind names are interned in `event_kinds`; codes 1-4 are the terminal
//!   kinds (custom kinds take codes from 16), and `kind <= 4` is the
//!   terminal index's condition.
//! - Uniqueness lives in partial indexes that only the rare rows enter: one
//!   terminal event per run, one event per caller-supplied id per run.
//! - `runs.outcome_cursor` is the cursor of the run's terminal event, set in
//!   the transaction (and savepoint) that appends it, NULL while it has none.
//!   The partial index `runs_missing_outcome` holds only the runs whose status
//!   is terminal and whose outcome is not recorded — the runs a crash left
//!   between the status write and the event append — so the recovery scan at
//!   every open reads those rows alone, however many runs have finished.
//!   Its WHERE is [`MISSING_OUTCOME`], which the scan's query repeats and
//!   names the index with `INDEXED BY` (so that a drift is an error, not a
//!   full scan). A CAS update of a run writes its listed columns only, never
//!   `outcome_cursor`.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::SqliteConfig;
use crate::records::StoreError;

/// The newest schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 11;

/// The condition of the `runs_missing_outcome` index: a terminal status
/// (`RunStatus::Finished`, `Failed`, `Cancelled`, `ContinuedAsNew`: codes
/// 3, 4, 5, 6) and no terminal event recorded.
macro_rules! missing_outcome {
    () => {
        "status IN (3, 4, 5, 6) AND outcome_cursor IS NULL"
    };
}

/// Renames the custom kinds (codes above `$code`) named one of `$names`,
/// names reserved for terminal kinds from then on: `custom:NAME`, or
/// `custom:CODE:NAME` if that name is taken too.
macro_rules! rename_custom_kinds {
    ($code:literal, $names:literal) => {
        concat!(
            r#"
UPDATE event_kinds SET name = CASE
        WHEN EXISTS (SELECT 1 FROM event_kinds k WHERE k.name = 'custom:' || event_kinds.name)
        THEN 'custom:' || code || ':' || name
        ELSE 'custom:' || name
    END
    WHERE code > "#,
            $code,
            " AND name IN (",
            $names,
            ");"
        )
    };
}

/// The WHERE of the `runs_missing_outcome` partial index, for queries that
/// must use it.
pub(crate) const MISSING_OUTCOME: &str = missing_outcome!();

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    rid INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    controller_id TEXT NOT NULL,
    goal TEXT NOT NULL,
    owner_session_key TEXT NOT NULL,
    requester_origin TEXT,
    parent_id BLOB,
    current_step TEXT,
    state_json BLOB NOT NULL,
    wait_json BLOB,
    status INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    ended_at INTEGER,
    lease_owner TEXT,
    lease_epoch INTEGER,
    lease_expires_at INTEGER
);
CREATE INDEX runs_by_owner ON runs(owner_session_key);
CREATE INDEX runs_by_status ON runs(status);
CREATE TABLE run_heads (
    rid INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_cursor INTEGER
);
CREATE TABLE event_kinds (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO event_kinds(code, name) VALUES (1, 'FlowCompleted'), (2, 'FlowFailed'), (3, 'FlowCanceled');
CREATE TABLE events (
    cursor INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    prev INTEGER,
    kind INTEGER NOT NULL,
    ekey TEXT,
    at INTEGER NOT NULL,
    payload BLOB
);
CREATE UNIQUE INDEX events_one_terminal ON events(rid) WHERE kind <= 3;
CREATE UNIQUE INDEX events_by_key ON events(rid, ekey) WHERE ekey IS NOT NULL;
CREATE TABLE step_outputs (
    id INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    loop_id TEXT,
    iteration INTEGER,
    at INTEGER NOT NULL,
    output BLOB NOT NULL
);
CREATE UNIQUE INDEX step_outputs_key
    ON step_outputs(rid, step_id, ifnull(loop_id, ''), ifnull(iteration, -1));
CREATE TABLE failures (
    id INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    error_json BLOB,
    at INTEGER NOT NULL
);
CREATE INDEX failures_by_run ON failures(rid);
CREATE TABLE steps (
    sid INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    flow_rid INTEGER NOT NULL,
    runtime INTEGER NOT NULL,
    child_session_key TEXT,
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    status INTEGER NOT NULL,
    result_json BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (flow_rid, run_id)
);
"#,
    r#"
CREATE TABLE heads_mark (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cursor INTEGER NOT NULL
);
INSERT INTO heads_mark(id, cursor) SELECT 1, ifnull(max(cursor), 0) FROM events;
"#,
    r#"
ALTER TABLE runs ADD COLUMN outcome_cursor INTEGER;
UPDATE runs SET outcome_cursor = e.cursor FROM events e WHERE e.kind <= 3 AND e.rid = runs.rid;
CREATE INDEX runs_missing_outcome ON runs(rid)
    WHERE status IN (3, 4, 5) AND outcome_cursor IS NULL;
"#,
    // v4: one vocabulary (a flow is a definition, a run one execution of
    // it). Terminal kinds are `Run*` and spelled "cancelled"; a custom kind
    // that already had one of the new names keeps its events under a
    // `custom:` prefix (with its code too if that name is taken), since
    // terminal names are reserved. Columns holding a run's id say `run`; a
    // mirrored step's key elsewhere is `external_run_id`.
    concat!(
        rename_custom_kinds!("3", "'RunCompleted', 'RunFailed', 'RunCancelled'"),
        r#"
UPDATE event_kinds SET name = 'RunCompleted' WHERE code = 1;
UPDATE event_kinds SET name = 'RunFailed' WHERE code = 2;
UPDATE event_kinds SET name = 'RunCancelled' WHERE code = 3;
ALTER TABLE steps RENAME COLUMN flow_rid TO run_rid;
ALTER TABLE steps RENAME COLUMN run_id TO external_run_id;
ALTER TABLE runs RENAME COLUMN parent_id TO parent_run_id;
"#
    ),
    // v5: dead letters, items a stage gave up on (`errors` is a JSON array).
    r#"
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    stage TEXT NOT NULL,
    position INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    errors BLOB NOT NULL,
    item BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_run ON dead_letters(rid);
"#,
    // v6: the inbox, operator input kept until its stage handled it
    // (`message` is the JSON of an `InboxMessage`; `seq` keeps accept order).
    r#"
CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    id BLOB NOT NULL,
    stage TEXT NOT NULL,
    message BLOB NOT NULL,
    accepted_at INTEGER NOT NULL,
    settled_at INTEGER,
    undeliverable TEXT,
    UNIQUE (rid, id, stage)
);
"#,
    // v7: a run's input and the caller's key for it (at most one run per
    // flow and key has not ended: `runs_live_key`, which only keyed runs
    // that have not ended enter), and the order `list_runs` pages in.
    r#"
ALTER TABLE runs ADD COLUMN input_json BLOB;
ALTER TABLE runs ADD COLUMN run_key TEXT;
CREATE UNIQUE INDEX runs_live_key ON runs(controller_id, run_key)
    WHERE run_key IS NOT NULL AND status NOT IN (3, 4, 5);
CREATE INDEX runs_by_key ON runs(controller_id, run_key, rid) WHERE run_key IS NOT NULL;
CREATE INDEX runs_newest ON runs(created_at, id);
"#,
    // v8: memos, the results of memoized side effects (`ok` says whether
    // `result` is the value's JSON or the error's message as a JSON string).
    r#"
CREATE TABLE memos (
    id INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    stage TEXT NOT NULL,
    name TEXT NOT NULL,
    ok INTEGER NOT NULL,
    result BLOB NOT NULL,
    at INTEGER NOT NULL,
    UNIQUE (rid, stage, name)
);
"#,
    // v9: each streaming run's latest checkpoint, one row per run keyed by
    // its `rid` (`stages` is the JSON of its stages; times in µs).
    r#"
CREATE TABLE checkpoints (
    rid INTEGER PRIMARY KEY,
    id INTEGER NOT NULL CHECK (id >= 1),
    taken_at INTEGER NOT NULL,
    stages BLOB NOT NULL
);
"#,
    // v10: registered flow definitions, one row per (name, fingerprint)
    // (`shape` is the JSON of its stages and edges; times in µs), and the
    // fingerprint and version each run started with (NULL before v10).
    r#"
CREATE TABLE definitions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER,
    fingerprint TEXT NOT NULL,
    shape BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    UNIQUE (name, fingerprint)
);
ALTER TABLE runs ADD COLUMN fingerprint TEXT;
ALTER TABLE runs ADD COLUMN flow_version INTEGER;
"#,
    // v11: continue-as-new. A fourth terminal kind, `RunContinuedAsNew`
    // (code 4: custom kinds took codes from 16, so it is free; a custom kind
    // of that name keeps its events under a `custom:` prefix, as in v4), a
    // fourth terminal status (6) in the indexes that list terminal statuses,
    // and the run a run continues (`continued_from`, NULL for a chain's
    // first run).
    concat!(
        rename_custom_kinds!("4", "'RunContinuedAsNew'"),
        r#"
INSERT INTO event_kinds(code, name) VALUES (4, 'RunContinuedAsNew');
DROP INDEX events_one_terminal;
CREATE UNIQUE INDEX events_one_terminal ON events(rid) WHERE kind <= 4;
DROP INDEX runs_live_key;
CREATE UNIQUE INDEX runs_live_key ON runs(controller_id, run_key)
    WHERE run_key IS NOT NULL AND status NOT IN (3, 4, 5, 6);
DROP INDEX runs_missing_outcome;
CREATE INDEX runs_missing_outcome ON runs(rid) WHERE "#,
        missing_outcome!(),
        r#";
ALTER TABLE runs ADD COLUMN continued_from BLOB;
"#
    ),
];

/// The database's schema version, refused if this build cannot read it.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(classify(path, "read schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// Maps an SQLite error, recognising "this file is not a database".
pub(crate) fn classify(
    path: &Path,
    op: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path,
            source: e.into(),
        },
        _ => StoreError::sqlite(op)(e),
    }
}

pub(crate) fn in_memory(path: &Path) -> bool {
    path.as_os_str() == ":memory:"
}

/// Opens the writer connection: opens or creates the file, sets WAL and the sync
/// level, checks integrity and migrates the schema to [`SCHEMA_VERSION`].
pub(crate) fn open_writer(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    // The caller has created the directory (with the journal's lock).
    let conn = if in_memory(path) {
        Connection::open_in_memory()
    } else {
        Connection::open(path)
    }
    .map_err(classify(path, "open"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(classify(path, "busy_timeout"))?;
    stable_plans(&conn, path)?;
    let version = schema_version(&conn, path)?;
    if !in_memory(path) {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(classify(path, "journal_mode=WAL"))?;
    }
    conn.pragma_update(None, "synchronous", config.synchronous.as_pragma())
        .map_err(classify(path, "synchronous"))?;
    check_integrity(&conn, path, config.integrity_check)?;
    migrate(&conn, path, version)?;
    Ok(conn)
}

/// Opens the checkpointer's connection to a database the writer has opened;
/// checkpoints sync the database file as hard as commits sync the WAL.
pub(crate) fn open_checkpointer(
    path: &Path,
    config: &SqliteConfig,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(classify(path, "open checkpointer"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(classify(path, "busy_timeout"))?;
    conn.pragma_update(None, "synchronous", config.synchronous.as_pragma())
        .map_err(classify(path, "synchronous"))?;
    Ok(conn)
}

/// Opens a read-only connection to a database the writer has already opened.
pub(crate) fn open_reader(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify(path, "open reader"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(classify(path, "busy_timeout"))?;
    stable_plans(&conn, path)?;
    Ok(conn)
}

/// Opens an existing journal for reads only: never creates the file and
/// never migrates it, so its schema must be the current one.
pub(crate) fn open_read_only(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    let not_found = || StoreError::NotFound {
        path: path.to_owned(),
    };
    if in_memory(path) {
        // A new, empty database: there is no journal to read.
        return Err(not_found());
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                op: "open journal read-only",
                source: e.into(),
            });
        }
        Ok(_) => {}
    }
    // Without SQLITE_OPEN_CREATE, a file removed meanwhile is an error too.
    let conn = open_reader(path, config).map_err(|e| match e {
        StoreError::Sqlite { ref source, .. }
            if source.sqlite_error_code() == Some(ErrorCode::CannotOpen) && !path.exists() =>
        {
            not_found()
        }
        e => e,
    })?;
    let version = schema_version(&conn, path)?;
    if version < SCHEMA_VERSION {
        return Err(StoreError::SchemaTooOld {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    check_integrity(&conn, path, config.integrity_check)?;
    Ok(conn)
}

/// Turns on SQLite's query planner stability guarantee, so that bound values
/// never shape plans: otherwise SQLite recompiles the writer's run-head
/// look-up whenever it is re-bound to another run (BENCHMARKS.md, "The first
/// look-up of each run"). Every query here is a key look-up, whose plan no
/// value would change.
fn stable_plans(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
        .map_err(classify(
            path,
            "enable the query planner stability guarantee",
        ))
}

fn check_integrity(
    conn: &Connection,
    path: &Path,
    level: super::IntegrityCheck,
) -> Result<(), StoreError> {
    let pragma = match level {
        super::IntegrityCheck::Off => return Ok(()),
        super::IntegrityCheck::Quick => "PRAGMA quick_check",
        super::IntegrityCheck::Full => "PRAGMA integrity_check",
    };
    let mut stmt = conn
        .prepare(pragma)
        .map_err(classify(path, "integrity check"))?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(classify(path, "integrity check"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(classify(path, "integrity check"))?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::IntegrityCheckFailed {
        path: path.to_owned(),
        report: lines.join("\n"),
    })
}

fn migrate(conn: &Connection, path: &Path, from: i64) -> Result<(), StoreError> {
    let start = usize::try_from(from).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        let to = i as i64 + 1;
        let script = format!("BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {to};\nCOMMIT;");
        if let Err(e) = conn.execute_batch(&script) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(classify(path, "migrate schema")(e));
        }
        tracing::info!(path = %path.display(), version = to, "journal schema migrated");
    }
    Ok(())
}
