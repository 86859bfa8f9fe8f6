//! Bad input at rest: corrupt rows, unknown kinds, a newer schema, a file that
//! is not SQLite. Each gives a typed error naming the row; nothing panics and
//! other rows stay readable.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::path::Path;

use raw_sqlite::{run_sql, user_version};
use serde_json::json;
use troupe::records::{EventKind, NewEvent, Run, StoreError};
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};

async fn two_runs(path: &Path) -> (Run, Run, Vec<u64>) {
    let store = SqliteStore::open(path).await.unwrap();
    let (a, b) = (Run::new("c", "g", "o"), Run::new("c", "g", "o"));
    let mut cursors = Vec::new();
    for run in [&a, &b] {
        store.insert_run(run.clone(), None).await.unwrap();
        for i in 0..3 {
            let ev = NewEvent::new(run.id, EventKind::custom("tick", json!({ "i": i })));
            cursors.push(store.append(ev).await.unwrap().cursor.0);
        }
    }
    (a, b, cursors)
}

#[tokio::test]
async fn corrupt_payload_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, b, cursors) = two_runs(&path).await;
    run_sql(
        &path,
        &format!(
            "UPDATE events SET payload = X'7B7B7B' WHERE cursor = {}",
            cursors[1]
        ),
    );
    let store = SqliteStore::open(&path).await.unwrap();
    let err = store.replay(a.id).await.unwrap_err();
    match &err {
        StoreError::CorruptPayload {
            row,
            column: "payload",
            ..
        } => {
            assert_eq!(
                (row.table, row.rowid, row.run_id),
                ("events", cursors[1] as i64, Some(a.id))
            );
        }
        other => panic!("expected CorruptPayload, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("events row {}", cursors[1])),
        "{err}"
    );
    assert_eq!(
        store.replay(b.id).await.unwrap().len(),
        3,
        "other runs stay readable"
    );
    let tail = store
        .poll(troupe::records::Cursor(cursors[1]), 10)
        .await
        .unwrap();
    assert_eq!(tail.len(), 4);
    // The store keeps accepting writes for the damaged run.
    store
        .append(NewEvent::new(a.id, EventKind::custom("after", json!(null))))
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_event_kind_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, b, cursors) = two_runs(&path).await;
    run_sql(
        &path,
        &format!("UPDATE events SET kind = 999 WHERE cursor = {}", cursors[2]),
    );
    let store = SqliteStore::open(&path).await.unwrap();
    let err = store.list_events(a.id, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownEventKind { row, code: 999 } if row.rowid == cursors[2] as i64 && row.run_id == Some(a.id)),
        "{err:?}"
    );
    assert_eq!(
        store.list_events(a.id, 1).await.unwrap_err().to_string(),
        err.to_string()
    );
    assert_eq!(store.list_events(b.id, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn corrupt_run_row_names_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, b, _) = two_runs(&path).await;
    run_sql(
        &path,
        "UPDATE runs SET status = 42 WHERE rid = 1; UPDATE runs SET state_json = X'00' WHERE rid = 2",
    );
    let store = SqliteStore::open(&path).await.unwrap();
    let err = store.get_run(a.id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptRow { row, column: "status", .. } if row.run_id == Some(a.id)),
        "{err:?}"
    );
    let err = store.get_run(b.id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptPayload { row, column: "state_json", .. } if row.run_id == Some(b.id)),
        "{err:?}"
    );
    assert_eq!(
        store.replay(a.id).await.unwrap().len(),
        3,
        "its events stay readable"
    );
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    two_runs(&path).await;
    run_sql(
        &path,
        &format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1),
    );
    let err = SqliteStore::open(&path)
        .await
        .err()
        .expect("open must fail");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    // Nothing was changed: the file still says the newer version.
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    let err = SqliteStore::open(&path)
        .await
        .err()
        .expect("open must fail");
    assert!(
        matches!(&err, StoreError::NotADatabase { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("these are my notes")
    );
}

#[tokio::test]
async fn reopening_keeps_everything_and_continues_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, _, cursors) = two_runs(&path).await;
    let store = SqliteStore::open(&path).await.unwrap();
    let next = store
        .append(NewEvent::new(a.id, EventKind::custom("tick", json!(3))))
        .await
        .unwrap();
    assert_eq!(next.seq, 4);
    assert!(next.cursor.0 > *cursors.last().unwrap());
    assert_eq!(store.replay(a.id).await.unwrap().len(), 4);
}

/// Points the `prev` of the event at `cursor` at `target`: file damage
/// that `integrity_check` cannot see.
fn damage_prev(path: &Path, cursor: u64, target: u64) {
    run_sql(
        path,
        &format!("UPDATE events SET prev = {target} WHERE cursor = {cursor}"),
    );
}

#[tokio::test]
async fn a_chain_into_another_run_is_a_corrupt_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, b, cursors) = two_runs(&path).await;
    // b's second event now points back at a's second one.
    damage_prev(&path, cursors[4], cursors[1]);
    let store = SqliteStore::open(&path).await.unwrap();
    for limit in [10, usize::MAX] {
        let err = store.list_events(b.id, limit).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::CorruptRow { row, column: "prev", .. }
                if row.table == "events" && row.rowid == cursors[4] as i64 && row.run_id == Some(b.id)),
            "{err:?}"
        );
    }
    // Above the damage the chain is sound, and a's is untouched.
    assert_eq!(store.list_events(b.id, 2).await.unwrap().len(), 2);
    assert_eq!(store.replay(a.id).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_chain_that_does_not_move_back_is_a_corrupt_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, b, cursors) = two_runs(&path).await;
    // a's newest event points at itself; b's at a later event of its own run
    // is impossible, so at its newest (a loop of two).
    damage_prev(&path, cursors[2], cursors[2]);
    damage_prev(&path, cursors[4], cursors[5]);
    let store = SqliteStore::open(&path).await.unwrap();
    for (run, damaged) in [(a.id, cursors[2]), (b.id, cursors[4])] {
        for limit in [5, usize::MAX] {
            let err = store.list_events(run, limit).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::CorruptRow { row, column: "prev", .. }
                    if row.rowid == damaged as i64 && row.run_id == Some(run)),
                "{err:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_head_in_another_run_is_a_corrupt_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let (a, _b, cursors) = two_runs(&path).await;
    // Heads are written back lazily: write them, then move a's to b's events.
    run_sql(
        &path,
        &format!(
            "UPDATE run_heads SET last_cursor = {} WHERE rid = 1; \
             UPDATE heads_mark SET cursor = (SELECT max(cursor) FROM events);",
            cursors[5]
        ),
    );
    let store = SqliteStore::open(&path).await.unwrap();
    let err = store.list_events(a.id, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptRow { row, .. } if row.run_id == Some(a.id)),
        "{err:?}"
    );
}

/// A compare-and-set on `u64::MAX` used to overflow on the writer thread:
/// every write committed with it was lost (`AckDropped`) and the journal
/// refused all later ones (`JournalClosed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_overflow_fails_only_its_own_write() {
    use std::sync::Arc;
    use troupe::journal::{JournalConfig, JournalHandle};
    use troupe::records::RunStatus;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("j.sqlite"))
            .await
            .unwrap(),
    );
    let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
        .await
        .unwrap();
    let run = Run::new("c", "g", "o");
    journal.insert_run(run.clone(), None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let journal = journal.clone();
        let mut next = run.clone();
        next.status = RunStatus::Running;
        tasks.push(tokio::spawn(async move {
            if i == 16 {
                journal
                    .update_run(next, u64::MAX, EventKind::custom("started", json!(null)))
                    .await
                    .map(|_| ())
            } else {
                journal
                    .append(NewEvent::new(next.id, EventKind::custom("tick", json!(i))))
                    .await
                    .map(|_| ())
            }
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        if i == 16 {
            assert!(
                matches!(
                    result,
                    Err(StoreError::InvalidInput {
                        field: "expected_revision",
                        ..
                    })
                ),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "write {i}: {result:?}");
        }
    }
    // Later writes still commit.
    let mut next = run.clone();
    next.status = RunStatus::Running;
    journal
        .update_run(next, 0, EventKind::custom("started", json!(null)))
        .await
        .unwrap();
    assert_eq!(journal.replay(run.id).await.unwrap().len(), 32);
    journal.shutdown().await;
}
