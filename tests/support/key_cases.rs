//! Conformance cases for a run's input and key (the input round-trips and
//! is fixed at insert; at most one run per flow and key has not ended) and
//! for memos (the first result per key stays).

use serde_json::{Value, json};
use troupe::records::{Memo, Run, RunStatus, StoreError};

use super::conformance::{AnyStore, custom, nested, set_status};

fn keyed(flow: &str, key: &str) -> Run {
    let mut run = Run::new(flow, "goal", "o");
    run.key = Some(key.into());
    run
}

pub async fn run_input_round_trips_and_is_fixed(store: AnyStore) {
    let mut run = Run::new("orders", "goal", "o");
    run.input = json!({"order": 42, "lines": [1, 2, {"sku": "x"}], "big": u64::MAX});
    store.insert_run(run.clone(), None).await.unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.input, run.input);
    assert_eq!(stored.key, None);

    // An update's input and key are ignored.
    let mut changed = stored.clone();
    changed.input = json!("other");
    changed.key = Some("sneaky".into());
    changed.status = RunStatus::Running;
    store
        .update_run(changed, 0, custom("started", Value::Null))
        .await
        .unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!(stored.input, run.input);
    assert_eq!(stored.key, None);
    assert!(
        store
            .find_run_by_key("orders", "sneaky")
            .await
            .unwrap()
            .is_none()
    );

    // No input reads back as `Null`.
    let bare = Run::new("orders", "goal", "o");
    store.insert_run(bare.clone(), None).await.unwrap();
    assert_eq!(
        store.get_run(bare.id).await.unwrap().unwrap().input,
        Value::Null
    );

    // Too deep an input is refused, naming the field.
    let mut deep = Run::new("orders", "goal", "o");
    deep.input = nested(200);
    let err = store.insert_run(deep.clone(), None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidInput { field: "input", .. }),
        "{err}"
    );
    assert!(store.get_run(deep.id).await.unwrap().is_none());
}

pub async fn run_key_is_unique_among_runs_not_ended(store: AnyStore) {
    let first = keyed("orders", "order-42");
    store.insert_run(first.clone(), None).await.unwrap();
    let found = store.find_run_by_key("orders", "order-42").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(first.id));
    assert!(
        store
            .find_run_by_key("orders", "order-43")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_run_by_key("refunds", "order-42")
            .await
            .unwrap()
            .is_none()
    );

    // A second run with the key is refused while the first has not ended,
    // naming the holder; nothing of it is stored.
    let second = keyed("orders", "order-42");
    let err = store.insert_run(second.clone(), None).await.unwrap_err();
    match &err {
        StoreError::RunKeyTaken {
            flow,
            key,
            existing,
        } => {
            assert_eq!((flow.as_str(), key.as_str()), ("orders", "order-42"));
            assert_eq!(*existing, first.id);
        }
        other => panic!("expected RunKeyTaken, got {other}"),
    }
    assert!(err.to_string().contains("order-42"), "{err}");
    assert!(store.get_run(second.id).await.unwrap().is_none());

    // Another flow may use the same key.
    store
        .insert_run(keyed("refunds", "order-42"), None)
        .await
        .unwrap();

    // Waiting is not ended either.
    set_status(&store, first.id, RunStatus::Running).await;
    set_status(&store, first.id, RunStatus::Waiting).await;
    assert!(matches!(
        store.insert_run(keyed("orders", "order-42"), None).await,
        Err(StoreError::RunKeyTaken { .. })
    ));

    // Once it has ended, a new run may take the key: it is the one found.
    set_status(&store, first.id, RunStatus::Finished).await;
    store.insert_run(second.clone(), None).await.unwrap();
    let found = store.find_run_by_key("orders", "order-42").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(second.id));
    let old = store.get_run(first.id).await.unwrap().unwrap();
    assert_eq!(old.key.as_deref(), Some("order-42"));
}

pub async fn run_key_refusal_fails_its_op_alone(store: AnyStore) {
    use troupe::records::WriteOp;
    let holder = keyed("orders", "k");
    store.insert_run(holder.clone(), None).await.unwrap();
    let loser = keyed("orders", "k");
    let other = keyed("orders", "j");
    let results = store
        .apply_batch(vec![
            WriteOp::InsertRun {
                run: Box::new(loser.clone()),
                audit: None,
            },
            WriteOp::InsertRun {
                run: Box::new(other.clone()),
                audit: None,
            },
        ])
        .await
        .unwrap();
    assert!(matches!(results[0], Err(StoreError::RunKeyTaken { .. })));
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert!(store.get_run(loser.id).await.unwrap().is_none());
    assert!(store.get_run(other.id).await.unwrap().is_some());

    // Two keyed inserts in one batch: the second sees the first.
    let a = keyed("orders", "same");
    let b = keyed("orders", "same");
    let results = store
        .apply_batch(vec![
            WriteOp::InsertRun {
                run: Box::new(a.clone()),
                audit: None,
            },
            WriteOp::InsertRun {
                run: Box::new(b.clone()),
                audit: None,
            },
        ])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(
        matches!(&results[1], Err(StoreError::RunKeyTaken { existing, .. }) if *existing == a.id)
    );
}

pub async fn bad_run_keys_are_refused(store: AnyStore) {
    let long = "k".repeat(troupe::records::MAX_RUN_KEY_LEN + 1);
    for key in ["", "line\nbreak", "nul\0", long.as_str()] {
        let run = keyed("orders", key);
        let err = store.insert_run(run.clone(), None).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "key", .. }),
            "{key:?}: {err}"
        );
        assert!(store.get_run(run.id).await.unwrap().is_none());
    }
    // Unicode and the longest allowed key are fine.
    let max = "é".repeat(troupe::records::MAX_RUN_KEY_LEN / 2);
    for key in ["заказ-42", max.as_str(), "a b/c:d"] {
        store.insert_run(keyed("orders", key), None).await.unwrap();
        assert!(
            store
                .find_run_by_key("orders", key)
                .await
                .unwrap()
                .is_some()
        );
    }
}

fn memo(run_id: uuid::Uuid, stage: &str, name: &str, result: Result<Value, String>) -> Memo {
    Memo {
        run_id,
        stage: stage.into(),
        name: name.into(),
        result,
        at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
    }
}

pub async fn memos_keep_the_first_result_per_key(store: AnyStore) {
    let run = Run::new("orders", "goal", "o");
    store.insert_run(run.clone(), None).await.unwrap();
    assert!(store.list_memos(run.id, "charge").await.unwrap().is_empty());

    let first = memo(
        run.id,
        "charge",
        "card",
        Ok(json!({"receipt": "r-1", "cents": u64::MAX})),
    );
    let (stored, inserted) = store.record_memo(first.clone()).await.unwrap();
    assert!(inserted);
    assert_eq!(stored, first);
    // A second result for the key is not stored: the first is returned.
    let second = memo(run.id, "charge", "card", Ok(json!("other")));
    let (stored, inserted) = store.record_memo(second).await.unwrap();
    assert!(!inserted);
    assert_eq!(stored, first);

    // A failure, another name and another stage are memos of their own.
    let failed = memo(
        run.id,
        "charge",
        "refund",
        Err("declined \u{0}\n\"quoted\"".into()),
    );
    assert!(store.record_memo(failed.clone()).await.unwrap().1);
    let other_stage = memo(run.id, "ship", "card", Ok(Value::Null));
    assert!(store.record_memo(other_stage.clone()).await.unwrap().1);
    assert_eq!(
        store.list_memos(run.id, "charge").await.unwrap(),
        vec![first, failed]
    );
    assert_eq!(
        store.list_memos(run.id, "ship").await.unwrap(),
        vec![other_stage]
    );
    assert!(store.list_memos(run.id, "none").await.unwrap().is_empty());
}

pub async fn memos_refuse_bad_input(store: AnyStore) {
    let unknown = memo(uuid::Uuid::now_v7(), "s", "n", Ok(Value::Null));
    assert!(matches!(
        store.record_memo(unknown.clone()).await,
        Err(StoreError::RunNotFound(id)) if id == unknown.run_id
    ));
    let run = Run::new("orders", "goal", "o");
    store.insert_run(run.clone(), None).await.unwrap();
    let unnamed = memo(run.id, "s", "", Ok(Value::Null));
    assert!(matches!(
        store.record_memo(unnamed).await,
        Err(StoreError::InvalidInput { field: "name", .. })
    ));
    let deep = memo(run.id, "s", "deep", Ok(nested(200)));
    assert!(matches!(
        store.record_memo(deep).await,
        Err(StoreError::InvalidInput { field: "memo", .. })
    ));
    assert!(store.list_memos(run.id, "s").await.unwrap().is_empty());
    // Refused in a batch, it fails alone.
    let good = memo(run.id, "s", "good", Ok(json!(1)));
    let results = store
        .apply_batch(vec![
            troupe::records::WriteOp::RecordMemo(Box::new(memo(run.id, "s", "", Ok(Value::Null)))),
            troupe::records::WriteOp::RecordMemo(Box::new(good.clone())),
        ])
        .await
        .unwrap();
    assert!(results[0].is_err() && results[1].is_ok());
    assert_eq!(store.list_memos(run.id, "s").await.unwrap(), vec![good]);
}
