//! The per-run counters (`run_heads`) on disk.
//!
//! Invariant: `run_heads` is exact for the events up to the cursor stored in
//! `heads_mark`; every event after it (the tail) is newer than the stored
//! head of its run. The writer keeps the exact heads in memory and writes
//! the changed ones back, with a new mark, in the same transaction as a
//! commit once the tail is long enough ([`write_heads`], [`write_mark`]): a
//! few multi-row upserts every few thousand events instead of a row per run
//! per commit. A crash loses no head: [`fold_tail`] rebuilds them from the
//! tail when the database is opened, and readers fold the tail in themselves.

use std::sync::LazyLock;

use rusqlite::Connection;

use super::multi_row::MultiRow;

use crate::records::StoreError;

/// What every write of `run_heads` does with a run that already has a row.
const ON_CONFLICT: &str = "ON CONFLICT(rid) DO UPDATE SET last_seq = excluded.last_seq, \
     last_cursor = excluded.last_cursor";

static UPSERT: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO run_heads(rid, last_seq, last_cursor) VALUES",
        "(?, ?, ?)",
        ON_CONFLICT,
    )
});

/// Stores `(rid, last_seq, last_cursor)` for each run.
pub(crate) fn write_heads(
    conn: &Connection,
    heads: &[(i64, u64, Option<i64>)],
) -> Result<(), StoreError> {
    UPSERT.run(
        conn,
        heads,
        "update run heads",
        |stmt, first, &(rid, seq, cursor)| {
            stmt.raw_bind_parameter(first, rid)?;
            stmt.raw_bind_parameter(first + 1, seq as i64)?;
            stmt.raw_bind_parameter(first + 2, cursor)
        },
    )
}

/// Makes the stored heads exact again: folds the events after the mark into
/// `run_heads` and moves the mark to the last event, in one transaction.
/// Runs when the writer opens the database (after a crash, the tail can be
/// up to one write-back interval long).
pub(crate) fn fold_tail(conn: &Connection) -> Result<(), StoreError> {
    let fold = || -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // seq and cursor both grow along a run, so their maxima are its head.
        // (`WHERE` before `ON CONFLICT` keeps SQLite's upsert parse unambiguous.)
        conn.execute(
            &format!(
                "INSERT INTO run_heads(rid, last_seq, last_cursor) \
                 SELECT rid, max(seq), max(cursor) FROM events \
                 WHERE cursor > (SELECT cursor FROM heads_mark) GROUP BY rid {ON_CONFLICT}"
            ),
            [],
        )?;
        conn.execute(MARK_SQL, [])?;
        conn.execute_batch("COMMIT")
    };
    fold().map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::sqlite("fold event tail into run heads")(e)
    })
}

const MARK_SQL: &str = "UPDATE heads_mark SET cursor = (SELECT ifnull(max(cursor), 0) FROM events)";

/// Moves the mark to the last event: called after [`write_heads`] stored
/// every head changed since the previous mark.
pub(crate) fn write_mark(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(MARK_SQL)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(StoreError::sqlite("move run heads mark"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_is_written_exactly() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE run_heads (rid INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, last_cursor INTEGER)",
        )
        .unwrap();
        for n in [0usize, 1, 3, 4, 5, 21, 64, 85, 150] {
            let heads: Vec<_> = (0..n as i64)
                .map(|rid| (rid, n as u64, (rid % 2 == 0).then_some(rid * 10)))
                .collect();
            write_heads(&conn, &heads).unwrap();
            let stored: Vec<(i64, u64, Option<i64>)> = conn
                .prepare("SELECT rid, last_seq, last_cursor FROM run_heads WHERE last_seq = ?1 ORDER BY rid")
                .unwrap()
                .query_map([n as i64], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(stored, heads, "{n} heads");
        }
    }
}
