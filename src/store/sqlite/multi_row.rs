//! Multi-row statements: `INSERT ... VALUES (..), (..), ...` for any number
//! of rows, as a few statements of fixed sizes (so each is prepared once and
//! cached). One statement per row pays SQLite's per-statement work (cursor
//! set-up, halt, reset) for every row; a 64-row statement pays it once.
//!
//! ```ignore
//! static HEADS: LazyLock<MultiRow> = LazyLock::new(|| {
//!     MultiRow::new("INSERT INTO t(a, b) VALUES", "(?, ?)", "")
//! });
//! HEADS.run(&conn, &rows, "insert t", |stmt, first, &(a, b)| {
//!     stmt.raw_bind_parameter(first, a)?;
//!     stmt.raw_bind_parameter(first + 1, b)
//! })?;
//! ```

use rusqlite::{Connection, Statement};

use crate::records::StoreError;

/// Rows per statement, largest first; any count is a sum of these.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The statements of one multi-row write, one per chunk size.
pub(crate) struct MultiRow {
    sql: [String; 4],
    /// Parameters per row.
    per_row: usize,
}

impl MultiRow {
    /// `head VALUES row, row, ... tail`, where `row` is a parenthesised
    /// list of anonymous (`?`) parameters.
    pub(crate) fn new(head: &str, row: &str, tail: &str) -> MultiRow {
        MultiRow {
            sql: CHUNKS.map(|rows| {
                let values = vec![row; rows].join(", ");
                format!("{head} {values} {tail}")
            }),
            per_row: row.matches('?').count(),
        }
    }

    /// Writes `rows`, largest chunks first. `bind` binds one row's values
    /// from the 1-based parameter index it is given. The caller's transaction
    /// makes the whole write atomic.
    pub(crate) fn run<R>(
        &self,
        conn: &Connection,
        rows: &[R],
        op: &'static str,
        mut bind: impl FnMut(&mut Statement<'_>, usize, &R) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let mut rest = rows;
        for (size, sql) in CHUNKS.iter().zip(&self.sql) {
            if rest.len() < *size {
                continue;
            }
            let mut stmt = conn.prepare_cached(sql).map_err(StoreError::sqlite(op))?;
            while rest.len() >= *size {
                let (chunk, tail) = rest.split_at(*size);
                let mut write = || {
                    for (i, row) in chunk.iter().enumerate() {
                        bind(&mut stmt, 1 + i * self.per_row, row)?;
                    }
                    stmt.raw_execute()
                };
                write().map_err(StoreError::sqlite(op))?;
                rest = tail;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_is_written_exactly_once_in_order() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, label TEXT)")
            .unwrap();
        let write = MultiRow::new("INSERT INTO t(n, label) VALUES", "(?, ?)", "");
        let mut next = 0i64;
        for count in [0usize, 1, 3, 4, 5, 21, 64, 85, 150] {
            let rows: Vec<(i64, String)> = (next..next + count as i64)
                .map(|n| (n, format!("row {n}")))
                .collect();
            next += count as i64;
            write
                .run(&conn, &rows, "insert", |stmt, first, (n, label)| {
                    stmt.raw_bind_parameter(first, n)?;
                    stmt.raw_bind_parameter(first + 1, label)
                })
                .unwrap();
        }
        let stored: Vec<(i64, String)> = conn
            .prepare("SELECT n, label FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored.len() as i64, next);
        assert!(
            stored
                .iter()
                .enumerate()
                .all(|(i, (n, label))| *n == i as i64 && *label == format!("row {n}"))
        );
    }

    #[test]
    fn a_failing_chunk_is_reported_with_the_op() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let write = MultiRow::new("INSERT INTO t(n) VALUES", "(?)", "");
        let err = write
            .run(&conn, &[1i64, 1], "insert t", |stmt, first, n| {
                stmt.raw_bind_parameter(first, n)
            })
            .unwrap_err();
        assert!(err.to_string().contains("insert t"), "{err}");
    }
}
