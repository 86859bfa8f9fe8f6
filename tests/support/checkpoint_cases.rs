//! Conformance cases for checkpoints: a run keeps its latest one, replaced
//! only by a greater id; an unknown or ended run, a bad id, stage name or
//! state is refused and changes nothing; in an atomic op it stands or falls
//! with the others.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use troupe::records::{
    Checkpoint, EventKind, MAX_JSON_DEPTH, NewEvent, Run, RunStatus, StageCheckpoint, StoreError,
    WriteOp, WriteOutcome,
};
use uuid::Uuid;

use super::conformance::{AnyStore, custom, nested, new_run, set_status};

/// 2026-01-01T00:00:00.123456Z plus `secs` seconds (microseconds, as stores keep them).
fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_767_225_600_123_456).expect("time") + TimeDelta::seconds(secs)
}

fn stage(finished: bool, state: Option<Value>, items_in: u64, items_out: u64) -> StageCheckpoint {
    StageCheckpoint {
        finished,
        state,
        items_in,
        items_out,
    }
}

/// Checkpoint `id` of `run_id`: a source, a transform and a sink.
fn checkpoint(run_id: Uuid, id: u64) -> Checkpoint {
    let mut stages = BTreeMap::new();
    stages.insert(
        "read".to_owned(),
        stage(
            id > 2,
            Some(json!({"offset": id * 100})),
            id * 100,
            id * 100,
        ),
    );
    stages.insert("parse".to_owned(), stage(false, None, id * 100, id * 90));
    stages.insert(
        "sum ✓".to_owned(),
        stage(
            false,
            Some(json!({"total": id, "seen": [1, 2]})),
            id * 90,
            0,
        ),
    );
    Checkpoint {
        run_id,
        id,
        taken_at: at(id as i64),
        stages,
    }
}

fn is_stale(result: &Result<(), StoreError>, run: Uuid, refused: u64, kept: u64) -> bool {
    matches!(result, Err(StoreError::StaleCheckpoint { run_id, id, last })
        if *run_id == run && *id == refused && *last == kept)
}

pub async fn checkpoints_keep_the_greatest_id(store: AnyStore) {
    let run = new_run(&store, "ckpt").await;
    let other = new_run(&store, "ckpt").await;
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), None);
    assert_eq!(store.last_checkpoint(Uuid::now_v7()).await.unwrap(), None);

    let first = checkpoint(run.id, 1);
    store.record_checkpoint(first.clone()).await.unwrap();
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), Some(first));
    assert_eq!(store.last_checkpoint(other.id).await.unwrap(), None);

    // A greater id replaces it, even past a gap.
    let third = checkpoint(run.id, 3);
    store.record_checkpoint(third.clone()).await.unwrap();
    assert_eq!(
        store.last_checkpoint(run.id).await.unwrap(),
        Some(third.clone())
    );

    // The same id again (even with other contents) or a smaller one is
    // refused, naming both ids, and changes nothing.
    let mut again = checkpoint(run.id, 3);
    again.stages.clear();
    let result = store.record_checkpoint(again).await;
    assert!(is_stale(&result, run.id, 3, 3), "{result:?}");
    let result = store.record_checkpoint(checkpoint(run.id, 2)).await;
    assert!(is_stale(&result, run.id, 2, 3), "{result:?}");
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("checkpoint 2") && message.contains("checkpoint 3"),
        "{message}"
    );
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), Some(third));

    // Runs are apart: another run starts from 1.
    let theirs = checkpoint(other.id, 1);
    store.record_checkpoint(theirs.clone()).await.unwrap();
    assert_eq!(store.last_checkpoint(other.id).await.unwrap(), Some(theirs));
    assert_eq!(store.last_checkpoint(run.id).await.unwrap().unwrap().id, 3);
}

pub async fn checkpoint_states_round_trip(store: AnyStore) {
    let run = new_run(&store, "ckpt").await;
    let mut c = checkpoint(run.id, 1);
    // No state and a `null` state are apart; the deepest state accepted,
    // big counters, odd names and strings read back exactly.
    c.stages
        .insert("null".into(), stage(true, Some(Value::Null), u64::MAX, 0));
    c.stages.insert(
        "deep".into(),
        stage(false, Some(nested(MAX_JSON_DEPTH)), 1, 1),
    );
    c.stages.insert(
        "odd \u{0} \"name\"".into(),
        stage(
            false,
            Some(json!({"s": "nul \u{0} ✓", "big": u64::MAX, "neg": i64::MIN, "f": 0.5})),
            0,
            0,
        ),
    );
    store.record_checkpoint(c.clone()).await.unwrap();
    let stored = store.last_checkpoint(run.id).await.unwrap().unwrap();
    assert_eq!(stored, c);
    assert_eq!(stored.stages["null"].state, Some(Value::Null));
    assert_eq!(stored.stages["parse"].state, None);

    // A checkpoint of no stages, and the greatest id a store keeps.
    let empty = Checkpoint {
        run_id: run.id,
        id: i64::MAX as u64,
        taken_at: at(-86_400 * 365 * 60),
        stages: BTreeMap::new(),
    };
    store.record_checkpoint(empty.clone()).await.unwrap();
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), Some(empty));
}

pub async fn checkpoints_refuse_unknown_and_ended_runs(store: AnyStore) {
    let unknown = checkpoint(Uuid::now_v7(), 1);
    let result = store.record_checkpoint(unknown.clone()).await;
    assert!(
        matches!(result, Err(StoreError::RunNotFound(id)) if id == unknown.run_id),
        "{result:?}"
    );
    assert_eq!(store.last_checkpoint(unknown.run_id).await.unwrap(), None);

    for status in RunStatus::ALL {
        let run = new_run(&store, "ckpt").await;
        store
            .record_checkpoint(checkpoint(run.id, 1))
            .await
            .unwrap();
        if status != RunStatus::Created {
            set_status(&store, run.id, status).await;
        }
        let result = store.record_checkpoint(checkpoint(run.id, 2)).await;
        if status.is_terminal() {
            assert!(
                matches!(&result, Err(StoreError::RunEnded { run_id, status: s })
                    if *run_id == run.id && *s == status),
                "{status:?}: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "{status:?}: {result:?}");
        }
        // An ended run's last checkpoint still reads.
        let kept = if status.is_terminal() { 1 } else { 2 };
        assert_eq!(
            store.last_checkpoint(run.id).await.unwrap(),
            Some(checkpoint(run.id, kept)),
            "{status:?}"
        );
    }

    // Ended earlier in the same batch: refused.
    let run = new_run(&store, "ckpt").await;
    let mut ended = store.get_run(run.id).await.unwrap().unwrap();
    ended.status = RunStatus::Cancelled;
    let results = store
        .apply_batch(vec![
            WriteOp::UpdateRun {
                run: Box::new(ended),
                expected_revision: run.revision,
                audit: custom("cancelled", Value::Null),
            },
            WriteOp::RecordCheckpoint(Box::new(checkpoint(run.id, 1))),
        ])
        .await
        .unwrap();
    assert!(
        matches!(
            &results[..],
            [
                Ok(WriteOutcome::RunUpdated { .. }),
                Err(StoreError::RunEnded {
                    status: RunStatus::Cancelled,
                    ..
                })
            ]
        ),
        "{results:?}"
    );
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), None);
}

pub async fn checkpoints_refuse_bad_input(store: AnyStore) {
    let run = new_run(&store, "ckpt").await;
    let invalid = |field: &'static str| move |result: &Result<(), StoreError>| matches!(result, Err(StoreError::InvalidInput { field: f, .. }) if *f == field);
    let mut bad = Vec::new();
    for id in [0, i64::MAX as u64 + 1, u64::MAX] {
        bad.push(("id", checkpoint(run.id, 1)));
        bad.last_mut().unwrap().1.id = id;
    }
    let mut unnamed = checkpoint(run.id, 1);
    unnamed
        .stages
        .insert(String::new(), stage(false, None, 0, 0));
    bad.push(("stage", unnamed));
    let mut deep = checkpoint(run.id, 1);
    deep.stages.insert(
        "sink".into(),
        stage(false, Some(nested(MAX_JSON_DEPTH + 1)), 0, 0),
    );
    bad.push(("state", deep));
    for (field, c) in bad {
        let result = store.record_checkpoint(c.clone()).await;
        assert!(invalid(field)(&result), "{field}: {result:?}");
    }
    assert_eq!(store.last_checkpoint(run.id).await.unwrap(), None);
}

pub async fn checkpoint_batches_are_all_or_none(store: AnyStore) {
    let run = new_run(&store, "ckpt").await;
    store
        .record_checkpoint(checkpoint(run.id, 2))
        .await
        .unwrap();
    let events = store.replay(run.id).await.unwrap().len();

    // In a batch, a refused checkpoint fails alone.
    let results = store
        .apply_batch(vec![
            WriteOp::RecordCheckpoint(Box::new(checkpoint(run.id, 1))),
            WriteOp::Append(NewEvent::new(run.id, EventKind::custom("tick", json!(1)))),
        ])
        .await
        .unwrap();
    assert!(
        matches!(
            &results[..],
            [
                Err(StoreError::StaleCheckpoint { id: 1, last: 2, .. }),
                Ok(WriteOutcome::Appended(_))
            ]
        ),
        "{results:?}"
    );
    assert_eq!(store.replay(run.id).await.unwrap().len(), events + 1);

    // In an atomic op, it fails the whole op: the event before it and the
    // checkpoint it would have replaced are as they were.
    let atomic = |ops| store.apply(WriteOp::Atomic(ops));
    let result = atomic(vec![
        WriteOp::Append(NewEvent::new(run.id, EventKind::custom("tick", json!(2)))),
        WriteOp::RecordCheckpoint(Box::new(checkpoint(run.id, 3))),
        WriteOp::RecordCheckpoint(Box::new(checkpoint(run.id, 3))),
    ])
    .await;
    assert!(
        matches!(
            result,
            Err(StoreError::StaleCheckpoint { id: 3, last: 3, .. })
        ),
        "{result:?}"
    );
    assert_eq!(store.replay(run.id).await.unwrap().len(), events + 1);
    assert_eq!(
        store.last_checkpoint(run.id).await.unwrap(),
        Some(checkpoint(run.id, 2))
    );

    // A checkpoint recorded with the stage outputs of its cut, atomically.
    let result = atomic(vec![
        WriteOp::RecordCheckpoint(Box::new(checkpoint(run.id, 3))),
        WriteOp::Append(NewEvent::new(
            run.id,
            EventKind::custom("checkpointed", json!(3)),
        )),
    ])
    .await;
    assert!(
        matches!(&result, Ok(WriteOutcome::Atomic(outcomes))
            if matches!(outcomes[0], WriteOutcome::CheckpointRecorded)),
        "{result:?}"
    );
    assert_eq!(
        store.last_checkpoint(run.id).await.unwrap(),
        Some(checkpoint(run.id, 3))
    );
    assert_eq!(store.replay(run.id).await.unwrap().len(), events + 2);

    // A new run and its first checkpoint in one atomic op.
    let fresh = Run::new("ctrl", "goal", "ckpt");
    atomic(vec![
        WriteOp::InsertRun {
            run: Box::new(fresh.clone()),
            audit: None,
        },
        WriteOp::RecordCheckpoint(Box::new(checkpoint(fresh.id, 1))),
    ])
    .await
    .unwrap();
    assert_eq!(
        store.last_checkpoint(fresh.id).await.unwrap(),
        Some(checkpoint(fresh.id, 1))
    );
}

pub async fn checkpoints_of_many_runs_read_in_one_call(store: AnyStore) {
    let with = new_run(&store, "ckpt").await;
    let without = new_run(&store, "ckpt").await;
    let also = new_run(&store, "ckpt").await;
    for (run, id) in [(with.id, 3), (also.id, 1)] {
        store.record_checkpoint(checkpoint(run, id)).await.unwrap();
    }
    let unknown = Uuid::now_v7();
    // In the order listed, once each; runs without one (or unknown) are absent.
    let found = store
        .last_checkpoints_for(&[also.id, without.id, with.id, also.id, unknown])
        .await
        .unwrap();
    assert_eq!(found, vec![checkpoint(also.id, 1), checkpoint(with.id, 3)]);
    assert!(store.last_checkpoints_for(&[]).await.unwrap().is_empty());
}
