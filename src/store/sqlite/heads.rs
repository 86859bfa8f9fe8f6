//! Writing the per-run counters (`run_heads`) a batch changed: a few
//! multi-row upserts instead of one `UPDATE` per run, so a commit touching a
//! hundred runs runs a handful of statements.

use std::sync::LazyLock;

use rusqlite::Connection;
use rusqlite::types::Value;

use crate::store::error::StoreError;

/// Rows per statement, largest first; any count is a sum of these.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// One upsert statement per chunk size.
static UPSERTS: LazyLock<[String; 4]> = LazyLock::new(|| CHUNKS.map(upsert_sql));

fn upsert_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO run_heads(rid, last_seq, last_cursor) VALUES {values} \
         ON CONFLICT(rid) DO UPDATE SET last_seq = excluded.last_seq, \
         last_cursor = excluded.last_cursor"
    )
}

/// Stores `(rid, last_seq, last_cursor)` for each run.
pub(crate) fn write_heads(
    conn: &Connection,
    heads: &[(i64, u64, Option<i64>)],
) -> Result<(), StoreError> {
    let mut rest = heads;
    for (size, sql) in CHUNKS.iter().zip(UPSERTS.iter()) {
        if rest.len() < *size {
            continue;
        }
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(StoreError::sqlite("prepare run heads upsert"))?;
        while rest.len() >= *size {
            let (chunk, tail) = rest.split_at(*size);
            let params = chunk.iter().flat_map(|&(rid, seq, cursor)| {
                [
                    Value::Integer(rid),
                    Value::Integer(seq as i64),
                    cursor.map_or(Value::Null, Value::Integer),
                ]
            });
            stmt.execute(rusqlite::params_from_iter(params))
                .map_err(StoreError::sqlite("update run heads"))?;
            rest = tail;
        }
    }
    Ok(())
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
