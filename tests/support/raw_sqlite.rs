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
pub fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open raw")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}
