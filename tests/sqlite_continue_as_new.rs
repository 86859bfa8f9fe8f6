//! Continue-as-new in the SQLite journal (schema version 11): a version-10
//! journal migrates, keeps its runs and events (a custom kind that had the
//! name `RunContinuedAsNew`, reserved since, keeps its events under a
//! `custom:` prefix), and continues runs from then on; the indexes of
//! terminal statuses know the new one.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::sync::Arc;

use raw_sqlite::{UNDO_V11, run_sql, user_version};
use serde_json::json;
use troupe::records::{EventKind, NewEvent, Run, RunStatus, StoreError, TerminalEvent};
use troupe::runs::RunManager;
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_10_journal_migrates_and_continues_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let mut old = Run::new("tail", "follow", "o");
    old.status = RunStatus::Running;
    old.key = Some("tail-1".into());
    store.insert_run(old.clone(), None).await.expect("insert");
    store
        .append(NewEvent::new(
            old.id,
            EventKind::custom("stand-in", json!({"n": 1})),
        ))
        .await
        .expect("append");
    store.close().await;
    drop(store);
    run_sql(&path, UNDO_V11);
    // As version 10 allowed: a custom kind of the name reserved since.
    run_sql(
        &path,
        "UPDATE event_kinds SET name = 'RunContinuedAsNew' WHERE name = 'stand-in'",
    );
    assert_eq!(user_version(&path), 10);
    let err = SqliteStore::open_read_only(&path)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooOld { found: 10, .. }),
        "{err}"
    );

    let store = Arc::new(SqliteStore::open(&path).await.expect("migrate"));
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 11, "this test undoes v11");
    let read = store.get_run(old.id).await.unwrap().expect("kept");
    assert_eq!(read.continued_from, None);
    let names: Vec<String> = store
        .replay(old.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(names, ["custom:RunContinuedAsNew"]);

    // The migrated journal continues runs: the key moves to the next one.
    let runs = RunManager::new(store.clone());
    let next = runs
        .continue_as_new(old.id, json!(2))
        .await
        .expect("continue");
    assert_eq!(next.key.as_deref(), Some("tail-1"));
    let found = store.find_run_by_key("tail", "tail-1").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(next.id));
    let terminal = store.terminal_event(old.id).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunContinuedAsNew {
            next_run_id: next.id
        })
    );
    assert!(
        store
            .list_runs_missing_terminal_event()
            .await
            .unwrap()
            .is_empty()
    );
    // The status and the outcome read back after a reopen.
    store.close().await;
    let store = SqliteStore::open_read_only(&path).await.expect("read");
    let old = store.get_run(old.id).await.unwrap().unwrap();
    assert_eq!(old.status, RunStatus::ContinuedAsNew);
    let next = store.get_run(next.id).await.unwrap().unwrap();
    assert_eq!((next.continued_from, next.input), (Some(old.id), json!(2)));
}
