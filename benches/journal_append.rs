//! Journal write throughput, ack latency and bytes per event, fsync on
//! (`synchronous=FULL`), in one run:
//! (a) raw rusqlite: the same event rows and indexes, inserted in batched transactions;
//! (b) appends through the journal actor from 1, 16 and 256 concurrent writers,
//!     each writer appending to its own run and awaiting every ack.
//!
//! The raw baseline runs twice: with 1000 rows per commit (the issue's
//! figure) and with 256 rows per commit, the largest batch 256 closed-loop
//! writers can form (one event per writer); ratios are given against both.
//!
//! Run: `cargo bench --bench journal_append` (prints a Markdown table);
//! `cargo bench --bench journal_append -- w256` runs only the cases whose
//! key (`raw1000`, `raw256`, `w1`, `w16`, `w256`) equals one of the arguments.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use troupe::journal::{JournalConfig, JournalHandle};
use troupe::records::{EventKind, NewEvent, Run};
use troupe::store::{SqliteStore, Store};

/// Runs interleaved in the raw baseline (like 256 writers).
const RAW_RUNS: usize = 256;
/// Rows per transaction in the raw baseline.
const RAW_BATCH: usize = 1000;

fn payload(i: u64) -> serde_json::Value {
    json!({ "i": i })
}

fn db_bytes(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).expect("open for size");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    let pages: u64 = conn
        .pragma_query_value(None, "page_count", |r| r.get::<_, i64>(0))
        .expect("page_count") as u64;
    let size: u64 = conn
        .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
        .expect("page_size") as u64;
    pages * size
}

/// Creates a journal file with `runs` runs; returns their ids.
async fn prepare(path: &Path, runs: usize) -> Vec<Run> {
    let store = SqliteStore::open(path).await.expect("open");
    let flows: Vec<Run> = (0..runs).map(|_| Run::new("bench", "g", "o")).collect();
    let ops = flows
        .iter()
        .map(|f| troupe::records::WriteOp::InsertRun {
            run: Box::new(f.clone()),
            audit: None,
        })
        .collect();
    for r in store.apply_batch(ops).await.expect("insert runs") {
        r.expect("insert run");
    }
    flows
}

struct Row {
    name: String,
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    bytes_per_event: f64,
    payload_bytes: f64,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn raw_baseline(dir: &Path, events: u64, rows_per_commit: usize) -> Row {
    let path = dir.join(format!("raw-{rows_per_commit}.sqlite"));
    prepare(&path, RAW_RUNS).await;
    let before = db_bytes(&path);
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    let kind: i64 = 16;
    conn.execute(
        "INSERT INTO event_kinds(code, name) VALUES (16, 'tick')",
        [],
    )
    .expect("kind");
    let mut seq = vec![0i64; RAW_RUNS];
    let mut prev: Vec<Option<i64>> = vec![None; RAW_RUNS];
    let mut payload_total = 0u64;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0u64;
    while i < events {
        let t = Instant::now();
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events(rid, seq, prev, kind, ekey, at, payload) VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)",
                )
                .expect("prepare");
            for _ in 0..rows_per_commit.min((events - i) as usize) {
                let r = (i as usize) % RAW_RUNS;
                seq[r] += 1;
                let body = serde_json::to_vec(&payload(i)).expect("json");
                payload_total += body.len() as u64;
                let now = chrono::Utc::now().timestamp_micros();
                stmt.execute(rusqlite::params![
                    r as i64 + 1,
                    seq[r],
                    prev[r],
                    kind,
                    now,
                    body
                ])
                .expect("insert");
                prev[r] = Some(tx.last_insert_rowid());
                i += 1;
            }
        }
        tx.commit().expect("commit");
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    drop(conn);
    let after = db_bytes(&path);
    Row {
        name: format!(
            "(a) raw rusqlite, {rows_per_commit} rows/commit, {RAW_RUNS} runs interleaved"
        ),
        events,
        elapsed,
        latencies,
        bytes_per_event: (after - before) as f64 / events as f64,
        payload_bytes: payload_total as f64 / events as f64,
    }
}

async fn journal_writers(dir: &Path, writers: usize, per_writer: u64) -> Row {
    let path = dir.join(format!("journal-{writers}.sqlite"));
    let flows = prepare(&path, writers).await;
    let before = db_bytes(&path);
    let store = Arc::new(SqliteStore::open(&path).await.expect("open"));
    let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
        .await
        .expect("journal");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for flow in flows {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer as usize);
            let mut payload_total = 0u64;
            for i in 0..per_writer {
                let p = payload(i);
                payload_total += serde_json::to_vec(&p).map(|v| v.len() as u64).unwrap_or(0);
                let t = Instant::now();
                journal
                    .append(NewEvent::new(flow.id, EventKind::custom("tick", p)))
                    .await
                    .expect("append");
                lat.push(t.elapsed());
            }
            (lat, payload_total)
        }));
    }
    let mut latencies = Vec::new();
    let mut payload_total = 0;
    for t in tasks {
        let (lat, p) = t.await.expect("writer");
        latencies.extend(lat);
        payload_total += p;
    }
    let elapsed = started.elapsed();
    let stats = journal.stats();
    journal.shutdown().await;
    let events = writers as u64 * per_writer;
    let after = db_bytes(&path);
    Row {
        name: format!(
            "(b) journal actor, {writers} writer(s) (mean batch {:.0} ops, mean commit {:.0} µs, max {:.1} ms)",
            stats.ops as f64 / stats.commits.max(1) as f64,
            stats.commit_time.as_secs_f64() * 1e6 / stats.commits.max(1) as f64,
            stats.max_commit_time.as_secs_f64() * 1e3,
        ),
        events,
        elapsed,
        latencies,
        bytes_per_event: after.saturating_sub(before) as f64 / events as f64,
        payload_bytes: payload_total as f64 / events as f64,
    }
}

/// The raw baselines' rates, for the ratio columns (`None` when not run).
fn rate_of(rows: &[(&str, Row)], key: &str) -> Option<f64> {
    rows.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, r)| r.events as f64 / r.elapsed.as_secs_f64())
}

fn ratio(rate: f64, base: Option<f64>) -> String {
    base.map_or_else(|| "—".to_owned(), |b| format!("{:.0}%", 100.0 * rate / b))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--test");
    let filters: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |key: &str| filters.is_empty() || filters.contains(&key);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix("journal-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("bench dir");
    let scale = if quick { 20 } else { 1 };
    let rows = rt.block_on(async {
        let mut rows = Vec::new();
        for (key, per_commit) in [("raw1000", RAW_BATCH), ("raw256", RAW_RUNS)] {
            if wanted(key) {
                rows.push((
                    key,
                    raw_baseline(dir.path(), 200_000 / scale, per_commit).await,
                ));
            }
        }
        for (key, writers, per_writer) in [("w1", 1, 2_000), ("w16", 16, 2_000), ("w256", 256, 800)]
        {
            if wanted(key) {
                rows.push((
                    key,
                    journal_writers(dir.path(), writers, per_writer / scale).await,
                ));
            }
        }
        rows
    });
    let raw1000 = rate_of(&rows, "raw1000");
    let raw256 = rate_of(&rows, "raw256");
    println!(
        "| case | events | events/s | vs (a) 1000 rows/commit | vs (a) 256 rows/commit | p50 ack | p99 ack | bytes/event on disk | of which payload |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (_, mut row) in rows {
        row.latencies.sort();
        let rate = row.events as f64 / row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {:.0} | {} | {} | {:.3} ms | {:.3} ms | {:.1} | {:.1} |",
            row.name,
            row.events,
            rate,
            ratio(rate, raw1000),
            ratio(rate, raw256),
            pct(&row.latencies, 0.50).as_secs_f64() * 1e3,
            pct(&row.latencies, 0.99).as_secs_f64() * 1e3,
            row.bytes_per_event,
            row.payload_bytes,
        );
    }
    println!("(raw baseline latencies are per commit)");
}
