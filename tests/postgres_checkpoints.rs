//! Checkpoints in the PostgreSQL store (schema version 3): a version-2
//! schema migrates and takes checkpoints; a damaged checkpoint row is a
//! typed error for its run only, never a panic. (Their rules are the
//! conformance suite's, `tests/support/checkpoint_cases.rs`.)

#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;

use serde_json::json;
use troupe::records::{Checkpoint, Run, StageCheckpoint, StoreError};
use troupe::store::{POSTGRES_SCHEMA_VERSION, PostgresStore, Store};
use uuid::Uuid;

fn checkpoint(run_id: Uuid, id: u64) -> Checkpoint {
    let stages = BTreeMap::from([(
        "read".to_owned(),
        StageCheckpoint {
            finished: false,
            state: Some(json!({"offset": id * 10})),
            items_in: id * 10,
            items_out: id * 10,
        },
    )]);
    Checkpoint::new(run_id, id, stages)
}

async fn new_run(store: &PostgresStore) -> Run {
    let run = Run::new("pipeline", "goal", "o");
    store.insert_run(run.clone(), None).await.unwrap();
    run
}

#[tokio::test]
async fn a_version_2_schema_migrates_and_takes_checkpoints() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = schema.store().await;
    let run = new_run(&store).await;
    drop(store);
    // As version 2 left it: no checkpoints table.
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{s}\".runs DROP COLUMN continued_from; \
             DROP TABLE \"{s}\".lease_takeovers; \
             DROP TABLE \"{s}\".definitions; ALTER TABLE \"{s}\".runs DROP COLUMN fingerprint; \
             ALTER TABLE \"{s}\".runs DROP COLUMN flow_version; \
             DROP TABLE \"{s}\".checkpoints; UPDATE \"{s}\".troupe_schema SET version = 2",
            s = schema.name
        ))
        .await
        .unwrap();

    let store = schema.store().await;
    let version: i64 = client
        .query_one(
            &format!("SELECT max(version) FROM \"{}\".troupe_schema", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((version, POSTGRES_SCHEMA_VERSION), (6, 6));
    assert!(store.get_run(run.id).await.unwrap().is_some());
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), None);
    let first = checkpoint(run.id, 1);
    store.record_checkpoint(first.clone()).await.unwrap();
    drop(store);
    let store = schema.store().await;
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), Some(first));
}

#[tokio::test]
async fn a_damaged_checkpoint_row_is_a_typed_error_for_its_run_only() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = schema.store().await;
    let healthy = new_run(&store).await;
    let written = checkpoint(healthy.id, 1);
    store.record_checkpoint(written.clone()).await.unwrap();
    // (column, new value, the rendered value of a CorruptRow, or None for
    // a CorruptPayload)
    let damage = [
        ("stages", "'\\x7b7b'::bytea", None),
        (
            "stages",
            "convert_to('{\"read\":{\"finished\":1}}', 'UTF8')",
            None,
        ),
        (
            "taken_at",
            "9223372036854775807",
            Some("9223372036854775807"),
        ),
        // Past the CHECK (dropped below): a write never stores it.
        ("id", "0", Some("0")),
    ];
    let mut runs = Vec::new();
    for _ in &damage {
        let run = new_run(&store).await;
        store
            .record_checkpoint(checkpoint(run.id, 3))
            .await
            .unwrap();
        runs.push(run);
    }
    let client = schema.client().await;
    let refused = client
        .batch_execute(&format!(
            "UPDATE \"{}\".checkpoints SET id = 0",
            schema.name
        ))
        .await;
    assert!(refused.is_err(), "the CHECK refuses id 0");
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{}\".checkpoints DROP CONSTRAINT checkpoints_id_check",
            schema.name
        ))
        .await
        .unwrap();
    for ((column, value, _), run) in damage.iter().zip(&runs) {
        client
            .batch_execute(&format!(
                "UPDATE \"{}\".checkpoints SET {column} = {value} WHERE run_id = '{}'",
                schema.name, run.id
            ))
            .await
            .unwrap();
    }
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
    }
    assert_eq!(
        store.last_checkpoint(healthy.id).await.unwrap(),
        Some(written)
    );
    // A newer checkpoint replaces a row whose stages were damaged.
    let newer = checkpoint(runs[0].id, 4);
    store.record_checkpoint(newer.clone()).await.unwrap();
    assert_eq!(
        store.last_checkpoint(runs[0].id).await.unwrap(),
        Some(newer)
    );
}
