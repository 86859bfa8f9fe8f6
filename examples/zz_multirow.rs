use rusqlite::{Connection, params_from_iter, types::Value};
fn main() {
    let k: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let path = "/work/main/target/tmp/mr.db";
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(format!("{path}-wal"));
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
CREATE TABLE events (cursor INTEGER PRIMARY KEY, rid INTEGER NOT NULL, seq INTEGER NOT NULL, prev INTEGER, kind INTEGER NOT NULL, ekey TEXT, at INTEGER NOT NULL, payload BLOB);
CREATE UNIQUE INDEX events_one_terminal ON events(rid) WHERE kind <= 3;
CREATE UNIQUE INDEX events_by_key ON events(rid, ekey) WHERE ekey IS NOT NULL;").unwrap();
    let values = vec!["(?, ?, ?, ?, ?, NULL, ?, ?)"; k].join(", ");
    let sql = format!(
        "INSERT INTO events(cursor, rid, seq, prev, kind, ekey, at, payload) VALUES {values}"
    );
    let mut cursor = 0i64;
    let mut seq = vec![0i64; 256];
    let mut prev: Vec<Option<i64>> = vec![None; 256];
    let t = std::time::Instant::now();
    let n = 20480usize;
    let body = br#"{"i":12345}"#.to_vec();
    for _commit in 0..(n / 128) {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached(&sql).unwrap();
            let mut vals: Vec<Value> = Vec::with_capacity(7 * k);
            for _ in 0..(128 / k) {
                vals.clear();
                for _ in 0..k {
                    cursor += 1;
                    let r = (cursor as usize) % 256;
                    seq[r] += 1;
                    vals.extend([
                        Value::Integer(cursor),
                        Value::Integer(r as i64 + 1),
                        Value::Integer(seq[r]),
                        prev[r].map_or(Value::Null, Value::Integer),
                        Value::Integer(16),
                        Value::Integer(1_700_000_000_000_000),
                        Value::Blob(body.clone()),
                    ]);
                    prev[r] = Some(cursor);
                }
                stmt.execute(params_from_iter(vals.iter())).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    eprintln!(
        "k={k} {:?} {:.0}/s",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
}
