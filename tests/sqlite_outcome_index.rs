//! Schema version 3 records each run's outcome on its row
//! (`runs.outcome_cursor`) so that the recovery scan reads only the runs
//! missing theirs. These tests check that a version-2 journal migrates with
//! the outcomes it already holds, and that the scan lists exactly the runs
//! with a terminal status and no terminal event, before and after repair.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::path::Path;

use raw_sqlite::{
    UNDO_V4, UNDO_V5, UNDO_V6, UNDO_V7, UNDO_V8, UNDO_V9, UNDO_V10, UNDO_V11, run_sql, user_version,
};
use serde_json::Value;
use troupe::records::{EventKind, NewEvent, Run, RunStatus, TerminalEvent};
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};
use uuid::Uuid;

const DB: &str = "journal.sqlite";

fn completed() -> EventKind {
    EventKind::Terminal(TerminalEvent::RunCompleted {
        structured_output: None,
    })
}

/// Inserts a run with `status`, and its terminal event when `outcome`.
async fn run(store: &SqliteStore, status: RunStatus, outcome: bool) -> Uuid {
    let mut run = Run::new("ctrl", "goal", "o");
    run.status = status;
    let id = run.id;
    store
        .insert_run(run, Some(EventKind::custom("created", Value::Null)))
        .await
        .expect("insert run");
    if outcome {
        store
            .append(NewEvent::new(id, completed()))
            .await
            .expect("terminal event");
    }
    id
}

async fn missing(store: &SqliteStore) -> Vec<Uuid> {
    store
        .list_runs_missing_terminal_event()
        .await
        .expect("scan")
        .iter()
        .map(|f| f.id)
        .collect()
}

/// Each run's `outcome_cursor` against the cursor of its terminal event.
fn outcomes_and_events(path: &Path) -> Vec<(Option<i64>, Option<i64>)> {
    let conn = rusqlite::Connection::open(path).expect("open raw");
    let mut stmt = conn
        .prepare(
            "SELECT r.outcome_cursor, \
             (SELECT e.cursor FROM events e WHERE e.rid = r.rid AND e.kind <= 3) \
             FROM runs r ORDER BY r.rid",
        )
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// A version-2 journal (no `outcome_cursor`, no `runs_missing_outcome`)
/// opens as version 3 with every recorded outcome filled in: the scan lists
/// the finished runs without a terminal event and nothing else, and each
/// leaves the list once repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_journal_migrates_with_its_outcomes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let store = SqliteStore::open(&path).await.expect("open");
    let settled = run(&store, RunStatus::Finished, true).await;
    let broken = run(&store, RunStatus::Failed, false).await;
    let _running = run(&store, RunStatus::Running, false).await;
    let _ahead = run(&store, RunStatus::Running, true).await;
    let cancelled = run(&store, RunStatus::Cancelled, false).await;
    let _also_settled = run(&store, RunStatus::Cancelled, true).await;
    assert_eq!(missing(&store).await, vec![broken, cancelled]);
    drop(store);
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
             PRAGMA user_version = 2;",
        );
    }

    let store = SqliteStore::open(&path).await.expect("migrate");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let rows = outcomes_and_events(&path);
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter().all(|(outcome, event)| outcome == event),
        "each outcome is its terminal event's cursor: {rows:?}"
    );
    assert_eq!(rows.iter().filter(|(o, _)| o.is_some()).count(), 3);
    assert_eq!(missing(&store).await, vec![broken, cancelled]);

    for id in [broken, cancelled] {
        store
            .append_terminal_event_if_absent(id, TerminalEvent::RunCancelled)
            .await
            .expect("repair");
    }
    assert!(missing(&store).await.is_empty());
    assert!(store.terminal_event(settled).await.expect("read").is_some());
    drop(store);
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert!(missing(&store).await.is_empty());
    assert!(
        outcomes_and_events(&path)
            .iter()
            .all(|(outcome, event)| outcome == event)
    );
}
