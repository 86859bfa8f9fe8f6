//! Conformance cases for continue-as-new: a run's `ContinuedAsNew` status,
//! its `RunContinuedAsNew` outcome and the next run are one atomic write
//! (all or none); a run continues once (a second terminal and a second next
//! run are refused); the next run records the run it continues, and takes
//! over its key; a continued run is terminal to every index.

use serde_json::{Value, json};
use troupe::records::{
    EventKind, NewEvent, Run, RunFilter, RunStatus, StoreError, TerminalAppend, TerminalEvent,
    WriteOp, continued_run_id,
};

use super::conformance::{AnyStore, custom, set_status};

/// The one write that continues `old` (as stored) as `next`.
fn continue_write(old: &Run, next: &Run) -> WriteOp {
    let mut ended = old.clone();
    ended.status = RunStatus::ContinuedAsNew;
    ended.ended_at = Some(chrono::Utc::now());
    WriteOp::Atomic(vec![
        WriteOp::UpdateRun {
            run: Box::new(ended),
            expected_revision: old.revision,
            audit: custom("continued_as_new", Value::Null),
        },
        WriteOp::Append(NewEvent::new(
            old.id,
            TerminalEvent::RunContinuedAsNew {
                next_run_id: next.id,
            },
        )),
        WriteOp::InsertRun {
            run: Box::new(next.clone()),
            audit: Some(custom("created", Value::Null)),
        },
    ])
}

/// A keyed `Running` run of flow `tail`.
async fn running(store: &AnyStore, key: &str) -> Run {
    let mut run = Run::new("tail", "goal", "o");
    run.key = Some(key.into());
    store.insert_run(run.clone(), None).await.unwrap();
    set_status(store, run.id, RunStatus::Running).await
}

fn next_of(old: &Run, input: Value) -> Run {
    let mut next = Run::new("tail", "goal", "o");
    next.id = continued_run_id(old.id);
    next.key = old.key.clone();
    next.input = input;
    next.continued_from = Some(old.id);
    next
}

pub async fn continue_as_new_is_one_write(store: AnyStore) {
    let old = running(&store, "tail-1").await;
    let next = next_of(&old, json!({"offset": 42}));
    store.apply(continue_write(&old, &next)).await.unwrap();

    let ended = store.get_run(old.id).await.unwrap().unwrap();
    assert_eq!(ended.status, RunStatus::ContinuedAsNew);
    assert_eq!(ended.continued_from, None);
    let terminal = store.terminal_event(old.id).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunContinuedAsNew {
            next_run_id: next.id
        })
    );
    let stored = store.get_run(next.id).await.unwrap().unwrap();
    assert_eq!(stored.continued_from, Some(old.id));
    assert_eq!(stored.input, json!({"offset": 42}));
    assert_eq!(stored.status, RunStatus::Created);
    // An update's `continued_from` is ignored: fixed at insert.
    let mut changed = stored.clone();
    changed.continued_from = None;
    store
        .update_run(changed, 0, custom("noted", Value::Null))
        .await
        .unwrap();
    let stored = store.get_run(next.id).await.unwrap().unwrap();
    assert_eq!(stored.continued_from, Some(old.id));

    // The key moved: the ended run no longer holds it, the next one does.
    let found = store.find_run_by_key("tail", "tail-1").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(next.id));
    let mut rival = Run::new("tail", "goal", "o");
    rival.key = Some("tail-1".into());
    let err = store.insert_run(rival, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::RunKeyTaken { existing, .. } if existing == next.id),
        "{err}"
    );
    // A continued run is terminal to the recovery scan and has its outcome.
    let unfinished: Vec<_> = store
        .list_runs_to_recover()
        .await
        .unwrap()
        .into_iter()
        .filter_map(Result::ok)
        .map(|r| r.id)
        .collect();
    assert!(unfinished.contains(&next.id) && !unfinished.contains(&old.id));
    assert!(
        store
            .list_runs_missing_terminal_event()
            .await
            .unwrap()
            .is_empty()
    );
    let filter = RunFilter {
        status: Some(RunStatus::ContinuedAsNew),
        ..RunFilter::default()
    };
    let listed = store.list_runs(&filter, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [old.id]);
}

pub async fn a_failed_continue_leaves_neither(store: AnyStore) {
    let old = running(&store, "tail-2").await;
    let before = store.replay(old.id).await.unwrap();
    // The next run's id is taken: the insert fails, and so does the rest.
    let mut squatter = Run::new("other", "goal", "o");
    squatter.id = continued_run_id(old.id);
    store.insert_run(squatter.clone(), None).await.unwrap();
    let next = next_of(&old, json!(1));
    let err = store.apply(continue_write(&old, &next)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::RunExists(id) if id == next.id),
        "{err}"
    );
    let kept = store.get_run(old.id).await.unwrap().unwrap();
    assert_eq!(
        (kept.status, kept.revision),
        (RunStatus::Running, old.revision)
    );
    assert_eq!(store.terminal_event(old.id).await.unwrap(), None);
    assert_eq!(store.replay(old.id).await.unwrap(), before);
    let squatted = store.get_run(squatter.id).await.unwrap().unwrap();
    assert_eq!(
        (squatted.controller_id.as_str(), squatted.continued_from),
        ("other", None)
    );
    // The key stayed with the old run.
    let found = store.find_run_by_key("tail", "tail-2").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(old.id));
}

pub async fn a_run_continues_once(store: AnyStore) {
    let old = running(&store, "tail-3").await;
    let next = next_of(&old, json!(1));
    store.apply(continue_write(&old, &next)).await.unwrap();
    let ended = store.get_run(old.id).await.unwrap().unwrap();
    let log = store.replay(old.id).await.unwrap();

    // Again, based on the ended run: a second terminal, a second next run.
    let mut other = next_of(&ended, json!(2));
    other.id = uuid::Uuid::now_v7();
    let err = store
        .apply(continue_write(&ended, &other))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TerminalExists { .. }), "{err}");
    assert_eq!(store.get_run(other.id).await.unwrap(), None);
    // The same next run again (as a retry would name it): refused too.
    let err = store
        .apply(continue_write(&ended, &next))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TerminalExists { .. } | StoreError::RunExists(_)
        ),
        "{err}"
    );
    assert_eq!(store.replay(old.id).await.unwrap(), log);
    assert_eq!(
        store.get_run(next.id).await.unwrap().unwrap().input,
        json!(1)
    );
    let again = store
        .append_terminal_event_if_absent(old.id, TerminalEvent::RunCancelled)
        .await
        .unwrap();
    assert!(
        matches!(again, TerminalAppend::AlreadyPresent(_)),
        "{again:?}"
    );
}

pub async fn a_continued_run_without_its_outcome_is_listed_for_repair(store: AnyStore) {
    let old = running(&store, "tail-4").await;
    set_status(&store, old.id, RunStatus::ContinuedAsNew).await;
    let missing: Vec<_> = store
        .list_runs_missing_terminal_event()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(missing, [old.id]);
    // Its key is free once it ended.
    let mut after = Run::new("tail", "goal", "o");
    after.key = Some("tail-4".into());
    store.insert_run(after, None).await.unwrap();
}
