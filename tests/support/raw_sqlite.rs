//! Raw SQLite access to a store's file, for tests that rewrite what the store
//! wrote (to fake an older schema, a crash, or corruption) or check it.

use std::path::Path;

/// Runs `sql` (one or more statements) on the database at `path`, through a
/// connection of its own that is closed before this returns.
pub fn run_sql(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .expect("open raw")
        .execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The database's `user_version`: the store's schema version.
#[allow(dead_code)] // not every test that includes this module reads it
pub fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open raw")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

/// Undoes schema version 11 (continue-as-new: the `RunContinuedAsNew`
/// kind, status 6 in the indexes of terminal statuses, `continued_from`):
/// prefix it to a script that fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V11: &str = "DELETE FROM event_kinds WHERE code = 4; \
    DROP INDEX events_one_terminal; \
    CREATE UNIQUE INDEX events_one_terminal ON events(rid) WHERE kind <= 3; \
    DROP INDEX runs_live_key; \
    CREATE UNIQUE INDEX runs_live_key ON runs(controller_id, run_key) \
        WHERE run_key IS NOT NULL AND status NOT IN (3, 4, 5); \
    DROP INDEX runs_missing_outcome; \
    CREATE INDEX runs_missing_outcome ON runs(rid) \
        WHERE status IN (3, 4, 5) AND outcome_cursor IS NULL; \
    ALTER TABLE runs DROP COLUMN continued_from; PRAGMA user_version = 10;";

/// Undoes schema version 10 (flow definitions, a run's fingerprint and
/// version): prefix it to a script that fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V10: &str = "DROP TABLE definitions; ALTER TABLE runs DROP COLUMN flow_version; \
    ALTER TABLE runs DROP COLUMN fingerprint; PRAGMA user_version = 9;";

/// Undoes schema version 9 (checkpoints): prefix it to a script that
/// fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V9: &str = "DROP TABLE checkpoints; PRAGMA user_version = 8;";

/// Undoes schema version 8 (memos): prefix it to a script that fakes an
/// older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V8: &str = "DROP TABLE memos; PRAGMA user_version = 7;";

/// Undoes schema version 7 (a run's input and key, the listing index):
/// prefix it to a script that fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V7: &str = "DROP INDEX runs_newest; DROP INDEX runs_by_key; \
    DROP INDEX runs_live_key; ALTER TABLE runs DROP COLUMN run_key; \
    ALTER TABLE runs DROP COLUMN input_json; PRAGMA user_version = 6;";

/// Undoes schema version 6 (the `inbox` table): prefix it to a script
/// that fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V6: &str = "DROP TABLE inbox; PRAGMA user_version = 5;";

/// Undoes schema version 5 (the `dead_letters` table): prefix it to a
/// script that fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V5: &str = "DROP TABLE dead_letters; PRAGMA user_version = 4;";

/// Undoes schema version 4 (the one vocabulary: `Run*` terminal kinds, the
/// steps' `run_rid` and `external_run_id` columns): prefix it to a script
/// that fakes an older version.
#[allow(dead_code)] // not every test that includes this module fakes an old file
pub const UNDO_V4: &str = "ALTER TABLE steps RENAME COLUMN external_run_id TO run_id; \
    ALTER TABLE runs RENAME COLUMN parent_run_id TO parent_id; \
    ALTER TABLE steps RENAME COLUMN run_rid TO flow_rid; \
    UPDATE event_kinds SET name = 'FlowCompleted' WHERE code = 1; \
    UPDATE event_kinds SET name = 'FlowFailed' WHERE code = 2; \
    UPDATE event_kinds SET name = 'FlowCanceled' WHERE code = 3; \
    PRAGMA user_version = 3;";
