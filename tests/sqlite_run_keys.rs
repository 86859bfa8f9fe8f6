//! A run's input and key in a SQLite file: schema v7 on an older file, the
//! key index across close and reopen, and a read-only open of an older file.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use raw_sqlite::{UNDO_V7, UNDO_V8, UNDO_V9, UNDO_V10, UNDO_V11, run_sql, user_version};
use serde_json::{Value, json};
use troupe::records::{Run, RunStatus, StoreError};
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};

fn keyed(key: &str, input: Value) -> Run {
    let mut run = Run::new("orders", "goal", "o");
    run.key = Some(key.into());
    run.input = input;
    run
}

#[tokio::test]
async fn an_older_file_gains_input_and_key_and_keeps_its_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let old = Run::new("orders", "goal", "o");
    store.insert_run(old.clone(), None).await.expect("insert");
    let before = store.get_run(old.id).await.expect("get");
    store.close().await;
    drop(store);
    run_sql(&path, UNDO_V11);
    run_sql(&path, UNDO_V10);
    run_sql(&path, UNDO_V9);
    run_sql(&path, UNDO_V8);
    run_sql(&path, UNDO_V7);
    assert_eq!(user_version(&path), 6);

    // A reader cannot migrate: it says what to do.
    let err = SqliteStore::open_read_only(&path)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooOld { found: 6, .. }),
        "{err}"
    );

    let store = SqliteStore::open(&path).await.expect("migrate");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(
        SCHEMA_VERSION, 11,
        "this test undoes v11, v10, v9, v8 and v7"
    );
    let read = store.get_run(old.id).await.expect("get").expect("kept");
    assert_eq!(Some(&read), before.as_ref());
    assert_eq!((read.input, read.key), (Value::Null, None));

    let first = keyed("order-42", json!({"order": 42}));
    store.insert_run(first.clone(), None).await.expect("keyed");
    assert!(matches!(
        store.insert_run(keyed("order-42", Value::Null), None).await,
        Err(StoreError::RunKeyTaken { existing, .. }) if existing == first.id
    ));
    store.close().await;
}

#[tokio::test]
async fn the_key_holds_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let first = keyed("k", json!([1, 2, 3]));
    store.insert_run(first.clone(), None).await.expect("insert");
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.expect("reopen");
    let found = store.find_run_by_key("orders", "k").await.expect("find");
    assert_eq!(found.as_ref().map(|r| &r.input), Some(&json!([1, 2, 3])));
    assert!(matches!(
        store.insert_run(keyed("k", Value::Null), None).await,
        Err(StoreError::RunKeyTaken { .. })
    ));
    let mut ended = found.expect("found");
    ended.status = RunStatus::Cancelled;
    let revision = ended.revision;
    store
        .update_run(
            ended,
            revision,
            troupe::records::EventKind::custom("x", Value::Null),
        )
        .await
        .expect("end");
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.expect("reopen");
    let second = keyed("k", Value::Null);
    store.insert_run(second.clone(), None).await.expect("reuse");
    let found = store.find_run_by_key("orders", "k").await.expect("find");
    assert_eq!(found.map(|r| r.id), Some(second.id));
    store.close().await;
}
