//! Checkpoints in the SQLite journal (schema version 9): a version-8
//! journal (`tests/fixtures/journal-v8.sqlite`, see `tests/fixtures/README.md`)
//! migrates, keeps what it held and takes checkpoints; a damaged checkpoint
//! row is a typed error for its run only, never a panic.
//!
//! The committed file is never opened in place: each test works on a copy.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use raw_sqlite::{run_sql, user_version};
use serde_json::json;
use troupe::records::{
    Checkpoint, InboxMessage, Run, RunStatus, StageCheckpoint, StoreError, TerminalEvent,
};
use troupe::store::{IntegrityCheck, SCHEMA_VERSION, SqliteConfig, SqliteStore, Store};
use uuid::Uuid;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/journal-v8.sqlite"
);

/// The generator's ids: run `n` is `id(n)`, its inbox entry `id(0x100 + n)`.
fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x019a_0000_0000_7000_8000_0000_0000_0000 | n)
}

/// The generator's clock: 2026-01-01T00:00:00.123456Z plus `secs` seconds.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_767_225_600_123_456).expect("time") + TimeDelta::seconds(secs)
}

/// Copies the fixture into `dir` and checks it is the version-8 file.
fn copy_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("journal.sqlite");
    std::fs::copy(FIXTURE, &path).expect("copy fixture");
    assert_eq!(user_version(&path), 8, "the fixture is a version-8 journal");
    path
}

/// Checkpoint `n` of `run_id`: a source's offset and a sink's total.
fn checkpoint(run_id: Uuid, n: u64) -> Checkpoint {
    let stages = BTreeMap::from([
        (
            "read".to_owned(),
            StageCheckpoint {
                finished: false,
                state: Some(json!({"offset": n * 10})),
                items_in: n * 10,
                items_out: n * 10,
            },
        ),
        (
            "sink".to_owned(),
            StageCheckpoint {
                finished: false,
                state: Some(json!({"total": n})),
                items_in: n * 10,
                items_out: 0,
            },
        ),
    ]);
    Checkpoint {
        run_id,
        id: n,
        taken_at: t(100 + n as i64),
        stages,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_8_journal_migrates_and_takes_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = copy_fixture(dir.path());

    // A reader cannot migrate: it says what to do.
    let err = SqliteStore::open_read_only(&path)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooOld { found: 8, .. }),
        "{err}"
    );

    let store = SqliteStore::open(&path).await.expect("migrate");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(
        SCHEMA_VERSION, 11,
        "this test migrates a version-8 file to the current version"
    );

    // What version 8 wrote reads back.
    let running = store.get_run(id(1)).await.expect("get").expect("run 1");
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.key.as_deref(), Some("batch-1"));
    assert_eq!(running.input, json!({"batch": 1}));
    let memos = store.list_memos(id(1), "enrich").await.expect("memos");
    assert_eq!(memos.len(), 1);
    assert_eq!(memos[0].result, Ok(json!({"rows": 3})));
    assert_eq!(memos[0].at, t(12));
    let inbox = store.list_inbox(id(1)).await.expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert_eq!((inbox[0].id, inbox[0].settled.as_ref()), (id(0x101), None));
    assert!(matches!(&inbox[0].message, InboxMessage::Signal { name, .. } if name == "flush"));
    let letters = store.list_dead_letters(id(1)).await.expect("letters");
    assert_eq!(
        (letters.len(), letters[0].position, letters[0].at),
        (1, 41, t(14))
    );
    let names: Vec<String> = (store.replay(id(1)).await.expect("replay").iter())
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(names, ["created", "running", "read"]);
    let ended = store.get_run(id(2)).await.expect("get").expect("run 2");
    assert_eq!(ended.status, RunStatus::Finished);
    let outcome = store.terminal_event(id(2)).await.expect("terminal");
    assert_eq!(
        outcome.and_then(|e| e.kind.as_terminal().cloned()),
        Some(TerminalEvent::RunCompleted {
            structured_output: Some(json!({"total": 200}))
        })
    );

    // No run has a checkpoint yet; the live one takes them, the ended one not.
    for n in [1, 2, 3] {
        assert_eq!(store.last_checkpoint(id(n)).await.expect("read"), None);
    }
    store
        .record_checkpoint(checkpoint(id(1), 1))
        .await
        .expect("record");
    store
        .record_checkpoint(checkpoint(id(1), 2))
        .await
        .expect("record");
    let err = store.record_checkpoint(checkpoint(id(2), 1)).await;
    assert!(
        matches!(
            err,
            Err(StoreError::RunEnded {
                status: RunStatus::Finished,
                ..
            })
        ),
        "{err:?}"
    );
    store.close().await;
    drop(store);

    // Reopening does not migrate again; the checkpoint is durable, and a
    // read-only open (which never migrates) reads it too.
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(
        store.last_checkpoint(id(1)).await.expect("read"),
        Some(checkpoint(id(1), 2))
    );
    let stale = store.record_checkpoint(checkpoint(id(1), 2)).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::StaleCheckpoint { id: 2, last: 2, .. })
        ),
        "{stale:?}"
    );
    store.close().await;
    drop(store);
    let reader = SqliteStore::open_read_only(&path).await.expect("read-only");
    assert_eq!(
        reader.last_checkpoint(id(1)).await.expect("read"),
        Some(checkpoint(id(1), 2))
    );
    drop(reader);

    // A journal newer than this build is refused, as before.
    run_sql(
        &path,
        &format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1),
    );
    let err = SqliteStore::open(&path).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
}

/// Each kind of damage to a checkpoint row is a typed error naming the row
/// for its run; other runs' checkpoints still read, and a newer checkpoint
/// replaces the damaged row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_row_is_a_typed_error_for_its_run_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let healthy = Run::new("pipeline", "goal", "o");
    store
        .insert_run(healthy.clone(), None)
        .await
        .expect("insert");
    store
        .record_checkpoint(checkpoint(healthy.id, 1))
        .await
        .expect("record");
    // (column, new value, the rendered value of a CorruptRow, or None for
    // a CorruptPayload)
    let damage = [
        ("stages", "X'7B7B7B'", None),
        // Valid JSON, but not stages this version knows.
        (
            "stages",
            "CAST('{\"read\":{\"finished\":1}}' AS BLOB)",
            None,
        ),
        ("stages", "42", Some("Integer(42)")),
        (
            "taken_at",
            "9223372036854775807",
            Some("9223372036854775807"),
        ),
        // Past the CHECK: a write never stores it, damage might.
        ("id", "0", Some("0")),
        ("id", "-5", Some("-5")),
    ];
    let mut runs = Vec::new();
    for _ in &damage {
        let run = Run::new("pipeline", "goal", "o");
        store.insert_run(run.clone(), None).await.expect("insert");
        store
            .record_checkpoint(checkpoint(run.id, 3))
            .await
            .expect("record");
        runs.push(run);
    }
    store.close().await;
    drop(store);

    // The table's CHECK refuses an id below 1 from any writer.
    let refused = rusqlite::Connection::open(&path)
        .expect("open raw")
        .execute_batch("UPDATE checkpoints SET id = 0");
    assert!(refused.is_err(), "the CHECK refuses id 0");
    for ((column, value, _), run) in damage.iter().zip(&runs) {
        run_sql(
            &path,
            &format!(
                "PRAGMA ignore_check_constraints = ON; UPDATE checkpoints SET {column} = {value} \
                 WHERE rid = (SELECT rid FROM runs WHERE id = X'{}')",
                run.id.simple()
            ),
        );
    }

    // The open's quick check sees the rows that break the CHECK...
    let err = SqliteStore::open(&path).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, StoreError::IntegrityCheckFailed { report, .. }
            if report.contains("CHECK constraint failed in checkpoints")),
        "{err}"
    );
    // ... and without it, reading them is an error all the same.
    let config = SqliteConfig {
        integrity_check: IntegrityCheck::Off,
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open_with(&path, config).await.expect("reopen");
    for ((column, _, rendered), run) in damage.iter().zip(&runs) {
        let err = store.last_checkpoint(run.id).await.unwrap_err();
        let row = match (&err, rendered) {
            (StoreError::CorruptPayload { row, column: c, .. }, None) if c == column => row,
            (
                StoreError::CorruptRow {
                    row,
                    column: c,
                    value,
                },
                Some(v),
            ) if c == column && value == v => row,
            _ => panic!("{column} = {rendered:?}: {err}"),
        };
        assert_eq!((row.table, row.run_id), ("checkpoints", Some(run.id)));
        assert!(err.to_string().contains(&run.id.to_string()), "{err}");
    }
    assert_eq!(
        store.last_checkpoint(healthy.id).await.expect("read"),
        Some(checkpoint(healthy.id, 1))
    );
    // A newer checkpoint replaces a row whose stages were damaged.
    store
        .record_checkpoint(checkpoint(runs[0].id, 4))
        .await
        .expect("record over damage");
    assert_eq!(
        store.last_checkpoint(runs[0].id).await.expect("read"),
        Some(checkpoint(runs[0].id, 4))
    );
}
