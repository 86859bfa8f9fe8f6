//! The SQLite store writes per-run counters (`run_heads`) back lazily: they
//! are exact up to a mark, and the events after it are folded in by readers
//! and at open. These tests check that each run's log (seq numbers and the
//! `prev` chain that `list_events` walks) stays exact across write-backs,
//! reopens, and a database left as a crash would leave it.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::path::Path;

use raw_sqlite::{
    UNDO_V4, UNDO_V5, UNDO_V6, UNDO_V7, UNDO_V8, UNDO_V9, UNDO_V10, UNDO_V11, run_sql, user_version,
};
use serde_json::json;
use troupe::records::{Cursor, EventKind, NewEvent, Run, RunEvent, WriteOp};
use troupe::store::{SqliteConfig, SqliteStore, Store};
use uuid::Uuid;

/// Writes heads back every 5 events, so a few dozen appends cross several
/// write-backs and leave a tail behind.
fn config() -> SqliteConfig {
    SqliteConfig {
        heads_write_back_events: 5,
        ..SqliteConfig::default()
    }
}

fn tick(run: Uuid, i: usize) -> NewEvent {
    NewEvent::new(run, EventKind::custom("tick", json!({ "i": i })))
}

async fn new_runs(store: &SqliteStore, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let run = Run::new("heads", "g", "o");
        store
            .insert_run(run.clone(), None)
            .await
            .expect("insert run");
        ids.push(run.id);
    }
    ids
}

/// Appends `rounds` events to every run, alternating single appends and
/// multi-op batches so that runs interleave within commits.
async fn append_interleaved(store: &SqliteStore, runs: &[Uuid], rounds: usize) {
    for i in 0..rounds {
        if i % 2 == 0 {
            for run in runs {
                store.append(tick(*run, i)).await.expect("append");
            }
        } else {
            let ops = runs.iter().map(|r| WriteOp::Append(tick(*r, i))).collect();
            for r in store.apply_batch(ops).await.expect("batch") {
                r.expect("append in batch");
            }
        }
    }
}

/// Every run's `list_events` equals its events in the global log, numbered 1..n.
async fn assert_logs_exact(store: &SqliteStore, runs: &[Uuid], per_run: usize) {
    let all = store.poll(Cursor(0), usize::MAX).await.expect("poll");
    for run in runs {
        let from_log: Vec<RunEvent> = all.iter().filter(|e| e.run_id == *run).cloned().collect();
        let listed = store.list_events(*run, usize::MAX).await.expect("list");
        assert_eq!(listed, from_log, "run {run}");
        let seqs: Vec<u64> = listed.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=per_run as u64).collect::<Vec<_>>(), "run {run}");
        let newest = store.list_events(*run, 2).await.expect("list newest");
        assert_eq!(
            newest,
            from_log[from_log.len().saturating_sub(2)..],
            "run {run}"
        );
    }
}

fn mark_and_last_cursor(path: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).expect("open raw");
    conn.query_row(
        "SELECT (SELECT cursor FROM heads_mark), (SELECT ifnull(max(cursor), 0) FROM events)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("read mark")
}

const DB: &str = "heads.sqlite";

/// A database in a fresh directory with `runs` runs of `rounds` events each,
/// still open.
async fn written(runs: usize, rounds: usize) -> (tempfile::TempDir, SqliteStore, Vec<Uuid>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_with(dir.path().join(DB), config())
        .await
        .expect("open");
    let ids = new_runs(&store, runs).await;
    append_interleaved(&store, &ids, rounds).await;
    (dir, store, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stay_exact_across_write_backs_and_reopens() {
    let (dir, store, runs) = written(3, 7).await;
    let path = dir.path().join(DB);
    assert_logs_exact(&store, &runs, 7).await;
    drop(store);
    let (mark, last) = mark_and_last_cursor(&path);
    assert!(mark > 0, "heads were never written back");
    assert!(
        mark < last,
        "no tail left to fold at open ({mark} / {last})"
    );

    let store = SqliteStore::open_with(&path, config())
        .await
        .expect("reopen");
    assert_logs_exact(&store, &runs, 7).await;
    append_interleaved(&store, &runs, 4).await;
    assert_logs_exact(&store, &runs, 11).await;
}

/// A crash can leave the stored heads any number of events behind the log
/// (up to one write-back interval); here they are rolled all the way back,
/// as if no write-back had ever happened, and reopening repairs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rebuilds_heads_from_the_tail_after_a_crash() {
    let (dir, store, runs) = written(4, 6).await;
    let path = dir.path().join(DB);
    drop(store);
    {
        run_sql(
            &path,
            "UPDATE run_heads SET last_seq = 0, last_cursor = NULL; \
             UPDATE heads_mark SET cursor = 0;",
        );
    }
    let store = SqliteStore::open_with(&path, config())
        .await
        .expect("reopen");
    let (mark, last) = mark_and_last_cursor(&path);
    assert_eq!(mark, last, "open folds the whole tail");
    assert_logs_exact(&store, &runs, 6).await;
    append_interleaved(&store, &runs, 3).await;
    assert_logs_exact(&store, &runs, 9).await;
}

/// A version-1 database (exact `run_heads`, no `heads_mark`) opens as
/// version 2 with a mark (the migration adds it, the fold at open keeps it
/// exact), and every run's log continues where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_migrates_with_its_heads_exact() {
    let (dir, store, runs) = written(3, 5).await;
    let path = dir.path().join(DB);
    drop(store);
    // Reopening folds the tail, so the heads are exact as version 1 kept them.
    drop(SqliteStore::open_with(&path, config()).await.expect("fold"));
    {
        run_sql(&path, UNDO_V11);
        run_sql(&path, UNDO_V10);
        run_sql(&path, UNDO_V9);
        run_sql(&path, UNDO_V8);
        run_sql(&path, UNDO_V7);
        run_sql(&path, UNDO_V6);
        run_sql(&path, UNDO_V5);
        run_sql(&path, UNDO_V4);
        run_sql(
            &path,
            "DROP INDEX runs_missing_outcome; ALTER TABLE runs DROP COLUMN outcome_cursor; \
             DROP TABLE heads_mark; PRAGMA user_version = 1;",
        );
    }
    let store = SqliteStore::open_with(&path, config())
        .await
        .expect("migrate");
    assert_eq!(user_version(&path), troupe::store::SCHEMA_VERSION);
    let (mark, last) = mark_and_last_cursor(&path);
    assert_eq!(mark, last, "every event is folded after the migration");
    assert_logs_exact(&store, &runs, 5).await;
    append_interleaved(&store, &runs, 4).await;
    assert_logs_exact(&store, &runs, 9).await;
}
