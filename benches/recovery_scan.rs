//! The recovery scan's cost against the number of finished runs: a journal
//! holds N finished runs with their terminal event and 10 finished runs
//! without one (what a crash between the status write and the event append
//! leaves); timed: `SqliteStore::open` followed by
//! `list_runs_missing_terminal_event`, which `Runtime::start` runs at every
//! open. The journal grows through 1,000, 10,000 and 100,000 finished runs
//! (or the sizes in `TROUPE_SCAN_RUNS`, comma-separated, increasing); each
//! size is timed 5 times.
//!
//! Run: `cargo bench --bench recovery_scan`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use troupe::records::{EventKind, NewEvent, Run, RunStatus, TerminalEvent, WriteOp};
use troupe::store::{SqliteStore, Store};

/// Runs finished without their terminal event.
const MISSING: usize = 10;

fn finished_run() -> Run {
    let mut run = Run::new("idle", "finished", "bench");
    run.status = RunStatus::Finished;
    run
}

/// Adds `n` finished runs, each with its terminal event, 1,000 per batch.
async fn add_finished(store: &SqliteStore, n: usize) {
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1_000);
        left -= chunk;
        let ops: Vec<WriteOp> = (0..chunk)
            .flat_map(|_| {
                let run = finished_run();
                let outcome = NewEvent::new(
                    run.id,
                    EventKind::Terminal(TerminalEvent::RunCompleted {
                        structured_output: None,
                    }),
                );
                [
                    WriteOp::InsertRun {
                        run: Box::new(run),
                        audit: None,
                    },
                    WriteOp::Append(outcome),
                ]
            })
            .collect();
        for result in store.apply_batch(ops).await.expect("batch") {
            result.expect("write");
        }
    }
}

async fn open_and_scan(path: &Path) -> (Duration, Duration) {
    let started = Instant::now();
    let store = SqliteStore::open(path).await.expect("open");
    let opened = started.elapsed();
    let missing = store
        .list_runs_missing_terminal_event()
        .await
        .expect("scan");
    let total = started.elapsed();
    assert_eq!(missing.len(), MISSING);
    (opened, total - opened)
}

fn main() {
    if support::probing() {
        return;
    }
    let sizes: Vec<usize> = std::env::var("TROUPE_SCAN_RUNS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    rt.block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let ops = (0..MISSING)
            .map(|_| WriteOp::InsertRun {
                run: Box::new(finished_run()),
                audit: None,
            })
            .collect();
        for result in store.apply_batch(ops).await.expect("batch") {
            result.expect("insert run");
        }
        drop(store);
        let mut have = 0;
        for n in sizes {
            let store = SqliteStore::open(&path).await.expect("open");
            add_finished(&store, n.saturating_sub(have)).await;
            drop(store);
            have = have.max(n);
            let mut times = Vec::new();
            for _ in 0..5 {
                times.push(open_and_scan(&path).await);
            }
            let fmt = |f: fn(&(Duration, Duration)) -> Duration| {
                times
                    .iter()
                    .map(|t| format!("{:.2?}", f(t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "recovery scan: {have} finished runs + {MISSING} missing their event: \
                 open {} | scan {}",
                fmt(|t| t.0),
                fmt(|t| t.1),
            );
        }
    });
}
