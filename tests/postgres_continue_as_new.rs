//! Continue-as-new in the PostgreSQL store (schema version 6): a version-5
//! schema migrates, keeps its runs and events (a custom kind that had the
//! name `RunContinuedAsNew`, reserved since, keeps its events under a
//! `custom:` prefix), and continues runs from then on. (The store's rules
//! are the conformance suite's, `tests/support/chain_cases.rs`.)

#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres;

use std::sync::Arc;

use serde_json::json;
use troupe::records::{EventKind, NewEvent, Run, RunStatus, TerminalEvent};
use troupe::runs::RunManager;
use troupe::store::{POSTGRES_SCHEMA_VERSION, Store};

#[tokio::test]
async fn a_version_5_schema_migrates_and_continues_runs() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = schema.store().await;
    let mut old = Run::new("tail", "follow", "o");
    old.status = RunStatus::Running;
    old.key = Some("tail-1".into());
    store.insert_run(old.clone(), None).await.unwrap();
    store
        .append(NewEvent::new(
            old.id,
            EventKind::custom("stand-in", json!({"n": 1})),
        ))
        .await
        .unwrap();
    drop(store);
    // As version 5 left it, with a custom kind of the name reserved since.
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "SET search_path TO \"{s}\"; \
             UPDATE events SET kind = 'RunContinuedAsNew' WHERE kind = 'stand-in'; \
             DROP INDEX events_one_terminal; \
             CREATE UNIQUE INDEX events_one_terminal ON events(run_id) \
                 WHERE kind IN ('RunCompleted', 'RunFailed', 'RunCancelled'); \
             DROP INDEX runs_live_key; \
             CREATE UNIQUE INDEX runs_live_key ON runs(controller_id, run_key) \
                 WHERE run_key IS NOT NULL AND status NOT IN (3, 4, 5); \
             DROP INDEX runs_missing_outcome; \
             CREATE INDEX runs_missing_outcome ON runs(rid) \
                 WHERE status IN (3, 4, 5) AND outcome_cursor IS NULL; \
             ALTER TABLE runs DROP COLUMN continued_from; \
             UPDATE troupe_schema SET version = 5",
            s = schema.name
        ))
        .await
        .unwrap();

    let store = Arc::new(schema.store().await);
    let version: i64 = client
        .query_one(
            &format!("SELECT max(version) FROM \"{}\".troupe_schema", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((version, POSTGRES_SCHEMA_VERSION), (6, 6));
    let read = store.get_run(old.id).await.unwrap().expect("kept");
    assert_eq!(read.continued_from, None);
    let names: Vec<String> = (store.replay(old.id).await.unwrap().iter())
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(names, ["custom:RunContinuedAsNew"]);

    let runs = RunManager::new(store.clone());
    let next = runs.continue_as_new(old.id, json!(2)).await.unwrap();
    let found = store.find_run_by_key("tail", "tail-1").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(next.id));
    let terminal = store.terminal_event(old.id).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunContinuedAsNew {
            next_run_id: next.id
        })
    );
    let stored = store.get_run(next.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.continued_from, stored.input),
        (Some(old.id), json!(2))
    );
    assert!(
        store
            .list_runs_missing_terminal_event()
            .await
            .unwrap()
            .is_empty()
    );
}
