//! The run's inbox in a SQLite file: schema v6 on an older file, damaged
//! inbox rows, and entries kept across close and reopen.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::path::Path;

use chrono::{DateTime, Utc};
use raw_sqlite::{UNDO_V6, UNDO_V7, UNDO_V8, UNDO_V9, UNDO_V10, UNDO_V11, run_sql, user_version};
use serde_json::{Value, json};
use troupe::records::{
    DeadLetter, EventKind, InboxEntry, InboxMessage, NewEvent, Run, RunStatus, StoreError,
};
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};
use uuid::Uuid;

const DB: &str = "journal.sqlite";

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("in range")
}

fn entry(run_id: Uuid, stage: &str, message: InboxMessage) -> InboxEntry {
    InboxEntry {
        id: Uuid::now_v7(),
        run_id,
        stage: stage.into(),
        message,
        accepted_at: at(1_700_000_000_654_321),
        settled: None,
    }
}

fn signal(name: &str) -> InboxMessage {
    InboxMessage::Signal {
        name: name.into(),
        payload: json!({"by": "operator"}),
    }
}

async fn new_run(store: &SqliteStore) -> Run {
    let run = Run::new("ctrl", "goal", "inbox");
    store
        .insert_run(run.clone(), Some(EventKind::custom("created", Value::Null)))
        .await
        .expect("insert run");
    run
}

/// The `seq` (rowid) of an entry's row, read straight from the file.
fn seq_of(path: &Path, entry: &InboxEntry) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open raw")
        .query_row(
            "SELECT seq FROM inbox WHERE id = ?1 AND stage = ?2",
            rusqlite::params![entry.id.as_bytes(), entry.stage],
            |r| r.get(0),
        )
        .expect("inbox row")
}

/// A version-5 file (before the inbox) opens as the current version, keeps
/// what it held and takes inbox entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_5_journal_migrates_and_takes_inbox_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let store = SqliteStore::open(&path).await.expect("open");
    let run = new_run(&store).await;
    let ended = new_run(&store).await;
    for i in 0..3 {
        let ev = NewEvent::new(run.id, EventKind::custom("tick", json!({ "i": i })));
        store.append(ev).await.expect("append");
    }
    let mut finished = ended.clone();
    finished.status = RunStatus::Finished;
    store
        .update_run(finished, 0, EventKind::custom("finished", Value::Null))
        .await
        .expect("finish");
    let letter = DeadLetter {
        run_id: run.id,
        stage: "parse".into(),
        position: 3,
        attempts: 2,
        errors: vec!["bad".into(), "worse".into()],
        item: json!({"order": 1}),
        at: at(1_700_000_000_000_001),
    };
    store
        .record_dead_letter(letter.clone())
        .await
        .expect("dead letter");
    let before = (
        store.replay(run.id).await.expect("replay"),
        store.replay(ended.id).await.expect("replay"),
        store.get_run(run.id).await.expect("get"),
        store.get_run(ended.id).await.expect("get"),
    );
    store.close().await;
    drop(store);
    run_sql(&path, UNDO_V11);
    run_sql(&path, UNDO_V10);
    run_sql(&path, UNDO_V9);
    run_sql(&path, UNDO_V8);
    run_sql(&path, UNDO_V7);
    run_sql(&path, UNDO_V6);
    assert_eq!(user_version(&path), 5);

    let store = SqliteStore::open(&path).await.expect("migrate");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(
        SCHEMA_VERSION, 11,
        "this test undoes v11, v10, v9, v8, v7 and v6"
    );
    let after = (
        store.replay(run.id).await.expect("replay"),
        store.replay(ended.id).await.expect("replay"),
        store.get_run(run.id).await.expect("get"),
        store.get_run(ended.id).await.expect("get"),
    );
    assert_eq!(after, before);
    assert_eq!(after.0.len(), 4);
    assert_eq!(
        store.list_dead_letters(run.id).await.expect("dead letters"),
        vec![letter]
    );

    assert_eq!(store.list_inbox(run.id).await.expect("list"), vec![]);
    let accepted = entry(run.id, "parse", signal("pause"));
    store
        .accept_inbox(vec![accepted.clone()])
        .await
        .expect("accept");
    assert_eq!(
        store.list_inbox(run.id).await.expect("list"),
        vec![accepted.clone()]
    );
    // The run's status from before the migration still decides.
    let refused = store
        .accept_inbox(vec![entry(ended.id, "parse", signal("pause"))])
        .await;
    assert!(
        matches!(&refused, Err(StoreError::RunEnded { run_id, status: RunStatus::Finished })
            if *run_id == ended.id),
        "{refused:?}"
    );
    let again = store.accept_inbox(vec![accepted]).await;
    assert!(
        matches!(&again, Err(StoreError::InboxEntryExists { .. })),
        "{again:?}"
    );
}

/// Each kind of damage to an inbox row is a typed error naming the row for
/// its run's inbox; other runs' inboxes still read and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_inbox_row_is_a_typed_error_for_its_run_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let store = SqliteStore::open(&path).await.expect("open");
    let mut runs = Vec::new();
    for _ in 0..6 {
        let run = new_run(&store).await;
        // Two entries each, the first one damaged below.
        let first = entry(run.id, "parse", signal("pause"));
        let second = entry(
            run.id,
            "ship",
            InboxMessage::Item {
                payload: json!([1, 2]),
            },
        );
        store
            .accept_inbox(vec![first.clone(), second.clone()])
            .await
            .expect("accept");
        assert!(
            store
                .settle_inbox(run.id, first.id, "parse".into(), Some("gone".into()))
                .await
                .expect("settle")
        );
        runs.push((run, first, second));
    }
    store.close().await;
    drop(store);

    // (column, new value, the rendered value of a CorruptRow, or None for
    // a CorruptPayload)
    let damage = [
        ("message", "X'7B7B7B'", None),
        // Valid JSON, but no message this version knows.
        (
            "message",
            "CAST('{\"type\":\"shout\",\"payload\":1}' AS BLOB)",
            None,
        ),
        ("id", "X'0102'", Some("2 bytes")),
        (
            "settled_at",
            "9223372036854775807",
            Some("9223372036854775807"),
        ),
        (
            "accepted_at",
            "-9223372036854775808",
            Some("-9223372036854775808"),
        ),
    ];
    let mut seqs = Vec::new();
    for ((column, value, _), (_, first, _)) in damage.iter().zip(&runs) {
        let seq = seq_of(&path, first);
        run_sql(
            &path,
            &format!("UPDATE inbox SET {column} = {value} WHERE seq = {seq}"),
        );
        seqs.push(seq);
    }

    let store = SqliteStore::open(&path).await.expect("reopen");
    for (((column, _, rendered), (run, _, _)), seq) in damage.iter().zip(&runs).zip(seqs) {
        let err = store.list_inbox(run.id).await.unwrap_err();
        let row = match (&err, rendered) {
            (StoreError::CorruptPayload { row, column: c, .. }, None) if c == column => row,
            (
                StoreError::CorruptRow {
                    row,
                    column: c,
                    value,
                },
                Some(rendered),
            ) if c == column && value == rendered => row,
            _ => panic!("{column}: expected {rendered:?}, got {err:?}"),
        };
        assert_eq!(
            (row.table, row.rowid, row.run_id),
            ("inbox", seq, Some(run.id)),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("inbox row {seq}")),
            "{err}"
        );
    }

    // The sixth run was not touched.
    let (intact, first, second) = &runs[5];
    let listed = store.list_inbox(intact.id).await.expect("intact run");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0].settled.as_ref().map(|s| s.undeliverable.clone()),
        Some(Some("gone".into()))
    );
    let mut unsettled = listed[0].clone();
    unsettled.settled = None;
    assert_eq!((&unsettled, &listed[1]), (first, second));

    // The store still writes the damaged runs' inboxes.
    let (hurt, _, second) = &runs[0];
    assert!(
        store
            .settle_inbox(hurt.id, second.id, "ship".into(), None)
            .await
            .expect("settle")
    );
    store
        .accept_inbox(vec![entry(hurt.id, "parse", signal("resume"))])
        .await
        .expect("accept");
}

/// Entries, settled or not, read back the same after the store is closed
/// and the file reopened, and the stored keys still refuse duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_entries_survive_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let store = SqliteStore::open(&path).await.expect("open");
    let run = new_run(&store).await;
    let other = new_run(&store).await;
    let handled = entry(run.id, "parse", signal("drain"));
    let refused = entry(
        run.id,
        "ship",
        InboxMessage::Event {
            payload: json!({"Reroute": "dock 9"}),
        },
    );
    let waiting = entry(run.id, "ship", InboxMessage::Item { payload: json!(42) });
    let elsewhere = entry(other.id, "parse", signal("drain"));
    store
        .accept_inbox(vec![
            handled.clone(),
            refused.clone(),
            waiting.clone(),
            elsewhere.clone(),
        ])
        .await
        .expect("accept");
    let settle = |e: &InboxEntry, why: Option<&str>| {
        store.settle_inbox(e.run_id, e.id, e.stage.clone(), why.map(Into::into))
    };
    assert!(settle(&handled, None).await.expect("settle"));
    assert!(
        settle(&refused, Some("no such event"))
            .await
            .expect("settle")
    );
    let before = (
        store.list_inbox(run.id).await.expect("list"),
        store.list_inbox(other.id).await.expect("list"),
    );
    assert_eq!(before.1, vec![elsewhere.clone()]);
    assert_eq!(
        before
            .0
            .iter()
            .map(|e| e.settled.as_ref().map(|s| s.undeliverable.as_deref()))
            .collect::<Vec<_>>(),
        [Some(None), Some(Some("no such event")), None]
    );
    let mut finished = other.clone();
    finished.status = RunStatus::Cancelled;
    store
        .update_run(finished, 0, EventKind::custom("cancelled", Value::Null))
        .await
        .expect("cancel");
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.expect("reopen");
    let after = (
        store.list_inbox(run.id).await.expect("list"),
        store.list_inbox(other.id).await.expect("list"),
    );
    assert_eq!(after, before);
    let settle = |e: &InboxEntry| store.settle_inbox(e.run_id, e.id, e.stage.clone(), None);
    assert!(!settle(&handled).await.expect("settled before"));
    assert!(settle(&waiting).await.expect("still waiting"));
    assert!(settle(&elsewhere).await.expect("ended run settles"));
    let dup = store.accept_inbox(vec![refused.clone()]).await;
    assert!(
        matches!(&dup, Err(StoreError::InboxEntryExists { id, .. }) if *id == refused.id),
        "{dup:?}"
    );
    let ended = store
        .accept_inbox(vec![entry(other.id, "parse", signal("late"))])
        .await;
    assert!(
        matches!(
            &ended,
            Err(StoreError::RunEnded {
                status: RunStatus::Cancelled,
                ..
            })
        ),
        "{ended:?}"
    );
}
