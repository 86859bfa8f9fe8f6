//! Flow definitions in the SQLite journal (schema version 10): a version-9
//! journal migrates, keeps its runs (without a fingerprint: they resume as
//! before) and records definitions and fingerprints from then on; a damaged
//! definition row is a typed error, never a panic.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use raw_sqlite::{UNDO_V10, UNDO_V11, run_sql, user_version};
use serde_json::json;
use troupe::flow::FlowDefinition;
use troupe::records::{Run, RunStatus, StoreError};
use troupe::runtime::Runtime;
use troupe::stage::step_fn;
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};

fn orders() -> FlowDefinition<()> {
    FlowDefinition::builder("orders")
        .version(3)
        .step("charge", |_| step_fn(|_| async { Ok(json!("charged")) }))
        .step("ship", |_| step_fn(|_| async { Ok(json!("shipped")) }))
        .pipeline(["charge", "ship"])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_9_journal_migrates_and_its_unfinished_run_resumes_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let mut old = Run::new("orders", "old work", "o");
    old.status = RunStatus::Running;
    store.insert_run(old.clone(), None).await.expect("insert");
    store.close().await;
    drop(store);
    run_sql(&path, UNDO_V11);
    run_sql(&path, UNDO_V10);
    assert_eq!(user_version(&path), 9);
    let err = SqliteStore::open_read_only(&path)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooOld { found: 9, .. }),
        "{err}"
    );

    let runtime = Runtime::builder()
        .sqlite(&path)
        .register(orders())
        .unwrap()
        .start()
        .await
        .expect("migrate and start");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 11, "this test undoes v11, v10");
    assert!(runtime.resume_failures().is_empty());
    let [resumed] = &runtime.resumed()[..] else {
        panic!("the old run resumes");
    };
    assert_eq!(resumed.run_id(), old.id);
    assert_eq!(resumed.wait().await.unwrap().status, RunStatus::Finished);
    let fresh = runtime.start("orders").await.unwrap();
    fresh.wait().await.unwrap();
    runtime.shutdown().await;

    let store = SqliteStore::open_read_only(&path).await.expect("read");
    let old = store.get_run(old.id).await.unwrap().unwrap();
    assert_eq!((old.fingerprint, old.flow_version), (None, None));
    let fresh = store.get_run(fresh.run_id()).await.unwrap().unwrap();
    assert_eq!(fresh.fingerprint.as_deref(), Some(orders().fingerprint()));
    assert_eq!(fresh.flow_version, Some(3));
    let [recorded] = &store.list_definitions(None).await.unwrap()[..] else {
        panic!("one definition recorded");
    };
    assert_eq!(
        (recorded.name.as_str(), recorded.version),
        ("orders", Some(3))
    );
    assert_eq!(&recorded.shape, orders().shape());
}

#[tokio::test]
async fn a_damaged_definition_row_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    store.record_definition(orders().record()).await.unwrap();
    store.close().await;
    drop(store);
    run_sql(&path, "UPDATE definitions SET shape = x'7b7b'");
    let store = SqliteStore::open_read_only(&path).await.expect("read");
    let err = store.list_definitions(Some("orders")).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::CorruptPayload {
                column: "shape",
                ..
            }
        ),
        "{err}"
    );
    run_sql(
        &path,
        "UPDATE definitions SET shape = x'7b7d', version = -1",
    );
    let err = store.list_definitions(None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::CorruptRow {
                column: "version",
                ..
            }
        ),
        "{err}"
    );
}
