//! Journal write throughput on PostgreSQL (`synchronous_commit=on`), in one run:
//! (a) raw `tokio-postgres`: the same event rows into the same tables and
//!     indexes, one `INSERT ... SELECT FROM UNNEST(...)` per transaction,
//!     256 runs interleaved, at 1000 and at 256 rows per commit, and at
//!     the mean batch the 256 journal writers formed (`rawsame`);
//! (b) appends through the journal actor over a `PostgresStore` from 16 and
//!     256 concurrent writers, each on its own run awaiting every ack; the
//!     store holds the runs' leases, so batches are fenced (`w256u`: the
//!     same through a store that never held them, unfenced).
//!
//! Each case gets a fresh schema of the database `TROUPE_TEST_POSTGRES_URL`
//! names (`.ci/postgres.sh start` prints one), dropped afterwards.
//!
//! Run: `TROUPE_TEST_POSTGRES_URL=... cargo bench --features postgres --bench journal_postgres`
//! (prints a Markdown table); `-- w256 raw256` runs only the named cases
//! (`raw1000`, `raw256`, `w16`, `w256`, `w256u`, `rawsame`, which needs
//! `w256`);
//! `-- --test` runs a short version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::{Client, NoTls};
use troupe::journal::{JournalConfig, JournalHandle};
use troupe::records::{EventKind, NewEvent, Run, WriteOp};
use troupe::store::{PostgresConfig, PostgresStore, Store};
use uuid::Uuid;

/// Runs interleaved in the raw baseline (like 256 writers).
const RAW_RUNS: usize = 256;

fn payload(i: u64) -> serde_json::Value {
    json!({ "i": i })
}

struct Row {
    name: String,
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// The journal's mean ops per commit (journal rows only).
    mean_batch: Option<usize>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// A store over a fresh schema with `runs` runs; the schema's name and the runs.
async fn prepare(url: &str, runs: usize) -> (PostgresStore, String, Vec<Run>) {
    let schema = format!("bench_{}", Uuid::now_v7().simple());
    let config = PostgresConfig {
        schema: Some(schema.clone()),
        ..PostgresConfig::default()
    };
    let store = PostgresStore::connect_with(url, config)
        .await
        .expect("open store");
    let flows: Vec<Run> = (0..runs).map(|_| Run::new("bench", "g", "o")).collect();
    let ops = flows
        .iter()
        .map(|f| WriteOp::InsertRun {
            run: Box::new(f.clone()),
            audit: None,
        })
        .collect();
    for r in store.apply_batch(ops).await.expect("insert runs") {
        r.expect("insert run");
    }
    (store, schema, flows)
}

async fn drop_schema(url: &str, schema: &str) {
    client(url)
        .await
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}

async fn raw_baseline(url: &str, events: u64, rows_per_commit: usize) -> Row {
    let (store, schema, runs) = prepare(url, RAW_RUNS).await;
    drop(store);
    let client = client(url).await;
    client
        .batch_execute(&format!("SET search_path TO \"{schema}\""))
        .await
        .expect("search_path");
    let insert = client
        .prepare(
            "INSERT INTO events(cursor, run_id, seq, kind, at, payload) \
             SELECT t.c, t.r, t.s, t.k, $5, t.p \
             FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], $6::bytea[]) \
             AS t(c, r, s, k, p)",
        )
        .await
        .expect("prepare");
    let mut seq = vec![0i64; RAW_RUNS];
    let mut cursor = 0i64;
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while i < events {
        let t = Instant::now();
        let n = rows_per_commit.min((events - i) as usize);
        let (mut cursors, mut ids, mut seqs, mut kinds, mut payloads) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let r = (i as usize) % RAW_RUNS;
            seq[r] += 1;
            cursor += 1;
            cursors.push(cursor);
            ids.push(runs[r].id);
            seqs.push(seq[r]);
            kinds.push("tick");
            payloads.push(Some(serde_json::to_vec(&payload(i)).expect("json")));
            i += 1;
        }
        let now = chrono::Utc::now().timestamp_micros();
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .execute(&insert, &[&cursors, &ids, &seqs, &kinds, &now, &payloads])
            .await
            .expect("insert");
        client.batch_execute("COMMIT").await.expect("commit");
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    drop_schema(url, &schema).await;
    Row {
        name: format!(
            "(a) raw tokio-postgres UNNEST, {rows_per_commit} rows/commit, {RAW_RUNS} runs interleaved"
        ),
        events,
        elapsed,
        latencies,
        mean_batch: None,
    }
}

/// `fenced`: the journal's store holds the runs' leases (as a runtime's
/// does), so every batch is fenced by their epochs; otherwise a second
/// store, which never held them, writes unfenced (the fence's cost).
async fn journal_writers(url: &str, writers: usize, per_writer: u64, fenced: bool) -> Row {
    let (mut store, schema, flows) = prepare(url, writers).await;
    if !fenced {
        let config = PostgresConfig {
            schema: Some(schema.clone()),
            ..PostgresConfig::default()
        };
        store = PostgresStore::connect_with(url, config)
            .await
            .expect("open a second store");
    }
    let journal = JournalHandle::spawn(Arc::new(store), JournalConfig::default(), None)
        .await
        .expect("journal");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for flow in flows {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer as usize);
            for i in 0..per_writer {
                let t = Instant::now();
                journal
                    .append(NewEvent::new(
                        flow.id,
                        EventKind::custom("tick", payload(i)),
                    ))
                    .await
                    .expect("append");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("writer"));
    }
    let elapsed = started.elapsed();
    let stats = journal.stats();
    journal.shutdown().await;
    drop_schema(url, &schema).await;
    Row {
        name: format!(
            "(b) journal actor over PostgresStore, {writers} writers{} (mean batch {:.0} ops, mean commit {:.0} µs, max {:.1} ms)",
            if fenced { "" } else { ", unfenced" },
            stats.ops as f64 / stats.commits.max(1) as f64,
            stats.commit_time.as_secs_f64() * 1e6 / stats.commits.max(1) as f64,
            stats.max_commit_time.as_secs_f64() * 1e3,
        ),
        events: writers as u64 * per_writer,
        elapsed,
        latencies,
        mean_batch: Some((stats.ops as f64 / stats.commits.max(1) as f64).round() as usize),
    }
}

fn rate_of(rows: &[(&str, Row)], key: &str) -> Option<f64> {
    rows.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, r)| r.events as f64 / r.elapsed.as_secs_f64())
}

fn ratio(rate: f64, base: Option<f64>) -> String {
    base.map_or_else(|| "—".to_owned(), |b| format!("{:.0}%", 100.0 * rate / b))
}

fn main() {
    let Ok(url) = std::env::var("TROUPE_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: journal_postgres bench: TROUPE_TEST_POSTGRES_URL not set");
        return;
    };
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
    let scale = if quick { 20 } else { 1 };
    let rows = rt.block_on(async {
        let mut rows = Vec::new();
        for (key, per_commit) in [("raw1000", 1000), ("raw256", RAW_RUNS)] {
            if wanted(key) {
                let row = raw_baseline(&url, 200_000 / scale, per_commit).await;
                rows.push((key, row));
            }
        }
        let cases = [
            ("w16", 16, 2_000, true),
            ("w256", 256, 800, true),
            ("w256u", 256, 800, false),
        ];
        for (key, writers, per_writer, fenced) in cases {
            if wanted(key) {
                let row = journal_writers(&url, writers, per_writer / scale, fenced).await;
                rows.push((key, row));
            }
        }
        // The same rows at the batch size the 256 writers formed.
        let same = rows
            .iter()
            .find(|(k, _)| *k == "w256")
            .and_then(|(_, r)| r.mean_batch);
        if let Some(batch) = same.filter(|_| wanted("rawsame")) {
            let row = raw_baseline(&url, 200_000 / scale, batch.max(1)).await;
            rows.push(("rawsame", row));
        }
        rows
    });
    let raw1000 = rate_of(&rows, "raw1000");
    let raw256 = rate_of(&rows, "raw256");
    let same = rate_of(&rows, "rawsame");
    println!(
        "| case | events | events/s | vs (a) 1000 rows/commit | vs (a) 256 rows/commit | vs (a) the journal's batch size | p50 ack | p99 ack |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (_, mut row) in rows {
        row.latencies.sort();
        let rate = row.events as f64 / row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {:.3} ms | {:.3} ms |",
            row.name,
            row.events,
            rate,
            ratio(rate, raw1000),
            ratio(rate, raw256),
            ratio(rate, same),
            pct(&row.latencies, 0.50).as_secs_f64() * 1e3,
            pct(&row.latencies, 0.99).as_secs_f64() * 1e3,
        );
    }
    println!("(raw baseline latencies are per commit)");
}
