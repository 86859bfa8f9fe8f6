//! The `troupe` command on a big journal and on a live one (issue 20), each
//! beside a baseline doing the same work in the same run:
//!
//! - **`runs list`, first page (50 runs), on a journal of 1,000,000 runs**
//!   (goal ≤ 100 ms): the real binary, a process per call, as a shell user
//!   runs it; also with `--status` and `--flow` filters. Baselines: the
//!   binary's floor (`troupe --version`: a process start) and the page's
//!   query on a fresh raw SQLite connection in this process.
//! - **`runs events ID --follow`, commit to print** (goal ≤ 50 ms): a
//!   runtime in this process owns the journal and appends an event to a
//!   run every ~40 ms; the command, following the run, prints each; timed
//!   from the append's acknowledgement (after its commit) to its line on
//!   the command's stdout. Baseline: a poller in this process reading the
//!   same journal read-only at the command's interval (25 ms), the same
//!   events.
//!
//! The 1M-run journal is made once with raw SQL (copies of one run a store
//! wrote, spread over 20 flows, 10% running) and cached in
//! `$TROUPE_BENCH_DIR` (default: the system temp dir, `troupe-bench-cli/`).
//! `TROUPE_LIST_RUNS` sets the size, `TROUPE_BENCH_SAMPLES` the calls
//! timed per case (default 20).
//!
//! Run: `cargo bench -p troupe-cli --bench cli_commands`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use troupe::records::{EventKind, NewEvent, Run, RunStatus, TerminalEvent, WriteOp};
use troupe::runs::CreateManagedInput;
use troupe::runtime::Runtime;
use troupe::store::{SqliteStore, Store};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median, 90th percentile and max, in ms.
fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:7.2} ms  p90 {:7.2} ms  max {:7.2} ms  ({} samples)",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

/// Times `f` `n` times.
fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect()
}

/// Runs `troupe --journal PATH ARGS`, expecting success; its stdout.
fn troupe(path: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(TROUPE)
        .arg("--journal")
        .arg(path)
        .args(args)
        .output()
        .expect("run troupe");
    assert!(
        out.status.success(),
        "troupe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn runs_in(path: &Path) -> usize {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

/// A journal of `n` runs, made once and cached.
async fn big_journal(n: usize) -> PathBuf {
    let dir = std::env::var_os("TROUPE_BENCH_DIR").map_or_else(
        || std::env::temp_dir().join("troupe-bench-cli"),
        PathBuf::from,
    );
    let path = dir.join(format!("runs-{n}.sqlite"));
    if path.exists() && runs_in(&path) == n {
        return path;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    // One run as the store writes it, finished with its outcome.
    let store = SqliteStore::open(&path).await.expect("create the journal");
    let mut run = Run::new("flow-0", "bench", "bench");
    run.status = RunStatus::Finished;
    let outcome = NewEvent::new(
        run.id,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: None,
        }),
    );
    let ops = vec![
        WriteOp::InsertRun {
            run: Box::new(run),
            audit: None,
        },
        WriteOp::Append(outcome),
    ];
    for result in store.apply_batch(ops).await.expect("batch") {
        result.expect("write");
    }
    drop(store);
    // Its copies, in one transaction: new ids, 20 flows, every tenth
    // running (no outcome), a millisecond apart.
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('runs')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("columns");
    let columns: Vec<String> = columns.into_iter().filter(|c| c != "rid").collect();
    let value = |column: &str| match column {
        "id" => "randomblob(16)".to_owned(),
        "controller_id" => "'flow-' || (i.n % 20)".to_owned(),
        "status" => "CASE WHEN i.n % 10 = 0 THEN 1 ELSE 3 END".to_owned(),
        "created_at" | "updated_at" => format!("t.{column} + i.n * 1000"),
        "ended_at" => "CASE WHEN i.n % 10 = 0 THEN NULL ELSE t.ended_at + i.n * 1000 END".into(),
        "outcome_cursor" => "CASE WHEN i.n % 10 = 0 THEN NULL ELSE t.outcome_cursor END".into(),
        "run_key" => "NULL".to_owned(),
        other => format!("t.{other}"),
    };
    let values: Vec<String> = columns.iter().map(|c| value(c)).collect();
    let sql = format!(
        "BEGIN; WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < {}) \
         INSERT INTO runs ({}) SELECT {} FROM i, (SELECT * FROM runs LIMIT 1) t; COMMIT;",
        n - 1,
        columns.join(", "),
        values.join(", ")
    );
    conn.execute_batch(&sql).expect("insert the copies");
    drop(conn);
    assert_eq!(runs_in(&path), n);
    println!(
        "made {} ({n} runs) in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    path
}

fn list_bench(path: &Path, samples: usize) {
    println!("\n== runs list, first page, {} runs", runs_in(path));
    let floor = time(samples, || {
        Command::new(TROUPE).arg("--version").output().expect("run");
    });
    println!(
        "{:<44}{}",
        "floor: troupe --version (process start)",
        stats(floor)
    );
    let raw = time(samples, || {
        let conn = rusqlite::Connection::open(path).expect("open");
        let mut stmt = conn
            .prepare("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT 50")
            .expect("prepare");
        let rows = stmt.query_map([], |_| Ok(())).expect("query").count();
        assert_eq!(rows, 50);
    });
    println!(
        "{:<44}{}",
        "baseline: the page's query, raw, in-process",
        stats(raw)
    );
    for (label, args) in [
        ("troupe runs list", &["runs", "list"][..]),
        ("troupe runs list --json", &["runs", "list", "--json"][..]),
        (
            "troupe runs list --status running",
            &["runs", "list", "--status", "running"][..],
        ),
        (
            "troupe runs list --flow flow-7",
            &["runs", "list", "--flow", "flow-7"][..],
        ),
    ] {
        let mut lines = 0;
        let timed = time(samples, || lines = troupe(path, args).len());
        assert!(lines > 0);
        println!("{label:<44}{}", stats(timed));
    }
}

/// Reads `troupe ... --follow --json`'s lines; sends each `tick`'s number
/// with when its line was read.
fn read_ticks(stdout: impl std::io::Read, seen: mpsc::Sender<(u64, Instant)>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        let event: Value = serde_json::from_str(&line).expect("a JSON line");
        if let Some(i) = event["kind"]["Custom"]["payload"]["tick"].as_u64() {
            let _ = seen.send((i, Instant::now()));
        }
    }
}

async fn follow_bench(samples: usize) {
    println!("\n== runs events --follow: commit to print, {samples} events");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.sqlite");
    let runtime = Runtime::builder()
        .sqlite(&path)
        .start()
        .await
        .expect("runtime");
    let runs = runtime.runs();
    let run = runs
        .create_managed(CreateManagedInput::new("ticker", "bench", "bench"))
        .await
        .expect("run");
    runs.start_running(run.id).await.expect("running");
    let mut child = Command::new(TROUPE)
        .arg("--journal")
        .arg(&path)
        .args(["runs", "events", &run.id.to_string(), "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn troupe");
    let (printed_tx, printed) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || read_ticks(stdout, printed_tx));
    // The baseline: the same polling in this process.
    let (polled_tx, polled) = mpsc::channel();
    let reader_store = SqliteStore::open_read_only(&path).await.expect("read-only");
    let id = run.id;
    let poller = tokio::spawn(async move {
        let mut after = reader_store.latest_cursor().await.expect("cursor");
        loop {
            let page = reader_store.poll(after, 1_000).await.expect("poll");
            if page.is_empty() {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            for event in page {
                after = event.cursor;
                if event.run_id != id {
                    continue;
                }
                if let EventKind::Custom { payload, .. } = &event.kind
                    && let Some(i) = payload["tick"].as_u64()
                {
                    let _ = polled_tx.send((i, Instant::now()));
                }
                if event.kind.as_terminal().is_some() {
                    return;
                }
            }
        }
    });
    // The command has started following once it printed the first tick.
    let (mut to_print, mut to_poll) = (Vec::new(), Vec::new());
    for i in 0..=samples as u64 {
        let tick = NewEvent::new(id, EventKind::custom("tick", json!({ "tick": i })));
        runtime.journal().append(tick).await.expect("append");
        let committed = Instant::now();
        let (n, at) = printed.recv().expect("printed");
        assert_eq!(n, i);
        let (n, polled_at) = polled.recv().expect("polled");
        assert_eq!(n, i);
        if i > 0 {
            to_print.push(at.saturating_duration_since(committed));
            to_poll.push(polled_at.saturating_duration_since(committed));
        }
        // Commits land at any point of the poll interval.
        tokio::time::sleep(Duration::from_millis(40 + (i * 7) % 13)).await;
    }
    runs.finish(id, None).await.expect("finish");
    let status = child.wait().expect("troupe exits");
    assert!(status.success(), "follow ended with {status}");
    reader.join().expect("reader");
    poller.await.expect("poller");
    runtime.shutdown().await;
    println!(
        "{:<44}{}",
        "baseline: in-process poll every 25 ms",
        stats(to_poll)
    );
    println!(
        "{:<44}{}",
        "troupe runs events --follow --json",
        stats(to_print)
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter picks one part.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wants = |part: &str| filter.as_deref().is_none_or(|f| part.contains(f));
    let samples = env_usize("TROUPE_BENCH_SAMPLES", 20);
    if wants("list") {
        let path = big_journal(env_usize("TROUPE_LIST_RUNS", 1_000_000)).await;
        list_bench(&path, samples);
    }
    if wants("follow") {
        follow_bench(samples.max(20)).await;
    }
}
