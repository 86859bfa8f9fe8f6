//! The store conformance suite: one async fn per rule, run against every
//! backend by the `conformance!` macro in `tests/store_conformance.rs`.

use std::sync::Arc;

use serde_json::{Value, json};
use troupe::records::{
    DeadLetter, EventKind, FailureEntry, InboxEntry, InboxMessage, MAX_JSON_DEPTH, NewEvent, Run,
    RunStatus, RunStep, RunStepStatus, Settled, StepOutput, StepRuntime, StoreError,
    TerminalAppend, TerminalEvent, WriteOp, WriteOutcome,
};
use troupe::store::Store;
use uuid::Uuid;

pub type AnyStore = Arc<dyn Store>;

pub fn custom(name: &str, payload: Value) -> EventKind {
    EventKind::custom(name, payload)
}

pub async fn new_run(store: &AnyStore, owner: &str) -> Run {
    let run = Run::new("ctrl", "goal", owner);
    store
        .insert_run(run.clone(), Some(custom("created", Value::Null)))
        .await
        .expect("insert run");
    run
}

pub async fn ordering_and_cursors(store: AnyStore) {
    let a = new_run(&store, "o").await;
    let b = new_run(&store, "o").await;
    let start = store.latest_cursor().await.unwrap();
    let mut cursors = Vec::new();
    for i in 0..5 {
        for run in [&a, &b] {
            let ev = NewEvent::new(run.id, custom("tick", json!({ "i": i })));
            cursors.push(store.append(ev).await.unwrap().cursor);
        }
    }
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors grow: {cursors:?}"
    );
    assert_eq!(
        store.latest_cursor().await.unwrap(),
        *cursors.last().unwrap()
    );
    assert!(start < cursors[0]);

    let replay = store.replay(a.id).await.unwrap();
    assert_eq!(replay.len(), 6);
    let seqs: Vec<u64> = replay.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(replay[0].kind, custom("created", Value::Null));
    assert_eq!(replay[3].kind, custom("tick", json!({"i": 2})));
    assert_eq!(replay[3].event_id, "#4");
    assert!(replay.iter().all(|e| e.run_id == a.id));

    let page1 = store.poll(start, 4).await.unwrap();
    assert_eq!(page1.len(), 4);
    let page2 = store.poll(page1[3].cursor, 100).await.unwrap();
    assert_eq!(page2.len(), 6);
    let all: Vec<_> = page1.iter().chain(&page2).map(|e| e.cursor).collect();
    assert_eq!(all, cursors);
    assert_eq!(page2[5].run_id, b.id);
}

pub async fn list_events_returns_most_recent(store: AnyStore) {
    let run = new_run(&store, "o").await;
    for i in 0..9 {
        store
            .append(NewEvent::new(run.id, custom("tick", json!(i))))
            .await
            .unwrap();
    }
    let last3 = store.list_events(run.id, 3).await.unwrap();
    let seqs: Vec<u64> = last3.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![8, 9, 10]);
    assert_eq!(store.list_events(run.id, 0).await.unwrap(), vec![]);
    assert_eq!(store.list_events(run.id, 100).await.unwrap().len(), 10);
    assert_eq!(store.list_events(Uuid::now_v7(), 5).await.unwrap(), vec![]);
}

pub async fn caller_event_ids_are_idempotent(store: AnyStore) {
    let run = new_run(&store, "o").await;
    let ev = NewEvent::with_id(run.id, "stage-1-done", custom("done", json!({"n": 1})));
    let first = store.append(ev.clone()).await.unwrap();
    assert!(!first.duplicate);
    let again = store.append(ev).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.cursor, again.seq), (first.cursor, first.seq));
    let events = store.replay(run.id).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_id, "stage-1-done");
    for bad in ["", "#7"] {
        let err = store
            .append(NewEvent::with_id(run.id, bad, custom("x", Value::Null)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidInput {
                    field: "event_id",
                    ..
                }
            ),
            "{err}"
        );
    }
}

pub async fn one_terminal_event_per_run(store: AnyStore) {
    let run = new_run(&store, "o").await;
    let out = json!({"steps": {"a": 1}});
    let first = store
        .append_terminal_event_if_absent(
            run.id,
            TerminalEvent::RunCompleted {
                structured_output: Some(out.clone()),
            },
        )
        .await
        .unwrap();
    let TerminalAppend::Appended(appended) = first else {
        panic!("expected Appended, got {first:?}")
    };
    let second = store
        .append_terminal_event_if_absent(run.id, TerminalEvent::RunCancelled)
        .await
        .unwrap();
    let TerminalAppend::AlreadyPresent(existing) = second else {
        panic!("expected AlreadyPresent")
    };
    assert_eq!(existing.cursor, appended.cursor);
    assert_eq!(
        existing.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(out)
        })
    );
    let err = store
        .append(NewEvent::new(
            run.id,
            TerminalEvent::RunFailed { reason: "x".into() },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TerminalExists {
                existing: "RunCompleted",
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .append(NewEvent::new(run.id, custom("RunCancelled", Value::Null)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidInput { field: "kind", .. }),
        "{err}"
    );
    let terminals = store
        .replay(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_terminal().is_some())
        .count();
    assert_eq!(terminals, 1);
    assert_eq!(
        store
            .terminal_event(run.id)
            .await
            .unwrap()
            .map(|e| e.cursor),
        Some(appended.cursor)
    );
}

pub async fn terminal_payloads_round_trip(store: AnyStore) {
    let cases = [
        TerminalEvent::RunCompleted {
            structured_output: None,
        },
        TerminalEvent::RunCompleted {
            structured_output: Some(json!({"steps": {"é": [1, 2]}})),
        },
        TerminalEvent::RunFailed {
            reason: "disk \"full\"\n".into(),
        },
        TerminalEvent::RunCancelled,
        TerminalEvent::RunContinuedAsNew {
            next_run_id: Uuid::now_v7(),
        },
    ];
    for t in cases {
        let run = new_run(&store, "o").await;
        store
            .append(NewEvent::new(run.id, t.clone()))
            .await
            .unwrap();
        let got = store.terminal_event(run.id).await.unwrap().unwrap();
        assert_eq!(got.kind, EventKind::Terminal(t));
    }
}

pub async fn cas_update_appends_one_audit_event(store: AnyStore) {
    let mut run = new_run(&store, "o").await;
    run.status = RunStatus::Running;
    run.state_json = json!({"k": "v"});
    let rev = store
        .update_run(run.clone(), 0, custom("started", Value::Null))
        .await
        .unwrap();
    assert_eq!(rev, 1);
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!(stored.state_json, json!({"k": "v"}));

    let mut stale = run.clone();
    stale.goal = "overwritten".into();
    let err = stale_update(&store, stale).await;
    assert!(
        matches!(
            err,
            StoreError::RevisionMismatch {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{err}"
    );
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.goal, "goal", "a failed CAS changes nothing");
    let kinds: Vec<String> = store
        .list_events(run.id, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec!["created", "started"],
        "one audit event per landed change"
    );
    let err = store
        .update_run(Run::new("c", "g", "o"), 0, custom("x", Value::Null))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RunNotFound(_)), "{err}");
}

async fn stale_update(store: &AnyStore, run: Run) -> StoreError {
    store
        .update_run(run, 0, custom("goal_changed", Value::Null))
        .await
        .unwrap_err()
}

pub async fn runs_are_unique_and_listed(store: AnyStore) {
    let a = new_run(&store, "alice").await;
    let b = new_run(&store, "bob").await;
    let c = new_run(&store, "alice").await;
    let err = store.insert_run(a.clone(), None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::RunExists(id) if id == a.id),
        "{err}"
    );
    let alice: Vec<Uuid> = store
        .list_runs_by_owner("alice")
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(alice, vec![a.id, c.id]);
    let mut running = b.clone();
    running.status = RunStatus::Running;
    store
        .update_run(running, 0, custom("started", Value::Null))
        .await
        .unwrap();
    let ids = |v: Vec<Run>| v.iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_runs_by_status(RunStatus::Running).await.unwrap()),
        vec![b.id]
    );
    assert_eq!(
        ids(store.list_runs_by_status(RunStatus::Created).await.unwrap()),
        vec![a.id, c.id]
    );
    let got = store.get_run(a.id).await.unwrap().unwrap();
    assert_eq!(got.controller_id, a.controller_id);
    assert_eq!(
        got.created_at.timestamp_micros(),
        a.created_at.timestamp_micros()
    );
    assert_eq!(store.get_run(Uuid::now_v7()).await.unwrap(), None);
    let err = store
        .append(NewEvent::new(Uuid::now_v7(), custom("x", Value::Null)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RunNotFound(_)), "{err}");
}

pub async fn append_batch_is_atomic(store: AnyStore) {
    let run = new_run(&store, "o").await;
    let good = NewEvent::new(run.id, custom("a", Value::Null));
    let bad = NewEvent::with_id(run.id, "#bad", custom("b", Value::Null));
    let err = store
        .append_batch(vec![good.clone(), good.clone(), bad])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
    assert_eq!(
        store.replay(run.id).await.unwrap().len(),
        1,
        "nothing of the batch is stored"
    );
    let missing = NewEvent::new(Uuid::now_v7(), custom("b", Value::Null));
    let err = store
        .apply(WriteOp::Atomic(vec![
            WriteOp::Append(good.clone()),
            WriteOp::Append(missing),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RunNotFound(_)), "{err}");
    assert_eq!(store.replay(run.id).await.unwrap().len(), 1);
    let ok = store.append_batch(vec![good.clone(), good]).await.unwrap();
    assert_eq!(ok.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![2, 3]);
    // A later append continues the sequence: nothing of the failed batches leaked.
    let next = store
        .append(NewEvent::new(run.id, custom("c", Value::Null)))
        .await
        .unwrap();
    assert_eq!(next.seq, 4);
}

pub async fn batch_results_are_per_request(store: AnyStore) {
    let run = new_run(&store, "o").await;
    let ops = vec![
        WriteOp::Append(NewEvent::new(run.id, custom("one", Value::Null))),
        WriteOp::Append(NewEvent::new(Uuid::now_v7(), custom("lost", Value::Null))),
        WriteOp::AppendTerminalIfAbsent {
            run_id: run.id,
            event: TerminalEvent::RunCancelled,
        },
        WriteOp::Append(NewEvent::new(run.id, TerminalEvent::RunCancelled)),
        WriteOp::Append(NewEvent::new(run.id, custom("two", Value::Null))),
    ];
    let results = store.apply_batch(ops).await.unwrap();
    assert_eq!(results.len(), 5);
    assert!(matches!(results[0], Ok(WriteOutcome::Appended(_))));
    assert!(matches!(results[1], Err(StoreError::RunNotFound(_))));
    assert!(matches!(
        results[2],
        Ok(WriteOutcome::Terminal(TerminalAppend::Appended(_)))
    ));
    assert!(
        matches!(results[3], Err(StoreError::TerminalExists { .. })),
        "{:?}",
        results[3]
    );
    assert!(matches!(results[4], Ok(WriteOutcome::Appended(_))));
    let names: Vec<String> = store
        .replay(run.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(names, vec!["created", "one", "RunCancelled", "two"]);
}

pub async fn outputs_failures_and_steps(store: AnyStore) {
    let run = new_run(&store, "o").await;
    let out = |step: &str, loop_id: Option<&str>, it: Option<u32>, v: Value| StepOutput {
        run_id: run.id,
        step_id: step.into(),
        loop_id: loop_id.map(Into::into),
        iteration: it,
        output: v,
        at: chrono::Utc::now(),
    };
    assert!(
        store
            .record_step_output(out("a", None, None, json!(1)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_step_output(out("a", None, None, json!(2)))
            .await
            .unwrap(),
        "first wins"
    );
    assert!(
        store
            .record_step_output(out("b", Some("L"), Some(0), json!("x")))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_step_output(out("b", Some("L"), Some(1), json!("y")))
            .await
            .unwrap()
    );
    let outputs = store.list_step_outputs(run.id).await.unwrap();
    assert_eq!(outputs.len(), 3);
    assert_eq!(outputs[0].output, json!(1));
    assert_eq!(outputs[2].iteration, Some(1));

    let entry = FailureEntry {
        run_id: run.id,
        step_id: "a".into(),
        reason: "boom".into(),
        error_json: Some(json!({"code": 7})),
        at: chrono::Utc::now(),
    };
    store.record_failure(entry.clone()).await.unwrap();
    let failures = store.list_failures(run.id).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].reason.as_str(), &failures[0].error_json),
        ("boom", &entry.error_json)
    );

    let now = chrono::Utc::now();
    let step = RunStep {
        id: Uuid::now_v7(),
        run_id: run.id,
        runtime: StepRuntime::Mirrored,
        child_session_key: Some("child-1".into()),
        external_run_id: "ext-1".into(),
        task: "fetch".into(),
        status: RunStepStatus::Running,
        result_json: None,
        created_at: now,
        updated_at: now,
    };
    let stored = store.upsert_step(step.clone()).await.unwrap();
    let update = RunStep {
        id: Uuid::now_v7(),
        child_session_key: None,
        status: RunStepStatus::Succeeded,
        result_json: Some(json!({"ok": true})),
        ..step.clone()
    };
    let updated = store.upsert_step(update).await.unwrap();
    assert_eq!(updated.id, stored.id, "same step row");
    assert_eq!(
        updated.child_session_key.as_deref(),
        Some("child-1"),
        "earlier key kept"
    );
    let steps = store.list_steps(run.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, RunStepStatus::Succeeded);
    assert_eq!(steps[0].result_json, Some(json!({"ok": true})));
    let orphan = RunStep {
        run_id: Uuid::now_v7(),
        ..step
    };
    assert!(matches!(
        store.upsert_step(orphan).await,
        Err(StoreError::RunNotFound(_))
    ));
}

/// The ids of the runs the recovery scan lists, in its order.
async fn missing_ids(store: &AnyStore) -> Vec<Uuid> {
    store
        .list_runs_missing_terminal_event()
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect()
}

pub async fn lists_runs_missing_terminal_event(store: AnyStore) {
    let mut done = new_run(&store, "o").await;
    let mut repaired = new_run(&store, "o").await;
    let _open = new_run(&store, "o").await;
    for run in [&mut done, &mut repaired] {
        run.status = RunStatus::Finished;
        store
            .update_run(run.clone(), 0, custom("finished", Value::Null))
            .await
            .unwrap();
    }
    store
        .append_terminal_event_if_absent(
            repaired.id,
            TerminalEvent::RunCompleted {
                structured_output: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(missing_ids(&store).await, vec![done.id]);
}

/// The recovery scan's rows: unfinished runs and terminal runs without
/// their outcome, oldest first, each row on its own; a finished run with its
/// outcome is not listed.
pub async fn lists_runs_to_recover(store: AnyStore) {
    let created = new_run(&store, "o").await;
    let mut missing = new_run(&store, "o").await;
    let mut done = new_run(&store, "o").await;
    let mut waiting = new_run(&store, "o").await;
    missing.status = RunStatus::Failed;
    store
        .update_run(missing.clone(), 0, custom("failed", Value::Null))
        .await
        .unwrap();
    done.status = RunStatus::Cancelled;
    store
        .apply(WriteOp::Atomic(vec![
            WriteOp::UpdateRun {
                run: Box::new(done.clone()),
                expected_revision: 0,
                audit: custom("cancelled", Value::Null),
            },
            WriteOp::Append(NewEvent::new(done.id, TerminalEvent::RunCancelled)),
        ]))
        .await
        .unwrap();
    waiting.status = RunStatus::Waiting;
    store
        .update_run(waiting.clone(), 0, custom("waiting", Value::Null))
        .await
        .unwrap();
    let rows: Vec<(Uuid, RunStatus)> = store
        .list_runs_to_recover()
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.map(|r| (r.id, r.status)).expect("no damaged row"))
        .collect();
    assert_eq!(
        rows,
        [
            (created.id, RunStatus::Created),
            (missing.id, RunStatus::Failed),
            (waiting.id, RunStatus::Waiting),
        ]
    );
}

/// One read lists the outputs of many runs: grouped by run in the order
/// asked (a repeated run once, an unknown run none), each run's in
/// recording order, loop iterations included.
pub async fn step_outputs_of_many_runs(store: AnyStore) {
    let a = new_run(&store, "o").await;
    let b = new_run(&store, "o").await;
    let silent = new_run(&store, "o").await;
    let out = |run: &Run, step: &str, it: Option<u32>| StepOutput {
        run_id: run.id,
        step_id: step.into(),
        loop_id: it.map(|_| "L".into()),
        iteration: it,
        output: json!(format!("{step}{it:?}")),
        at: chrono::Utc::now(),
    };
    // Interleaved, so that recording order and run order differ.
    for output in [
        out(&a, "x", None),
        out(&b, "x", None),
        out(&a, "y", Some(0)),
        out(&b, "y", None),
        out(&a, "y", Some(1)),
    ] {
        assert!(store.record_step_output(output).await.unwrap());
    }
    let listed = |outputs: Vec<StepOutput>| -> Vec<(Uuid, String, Option<u32>)> {
        outputs
            .into_iter()
            .map(|o| (o.run_id, o.step_id, o.iteration))
            .collect()
    };
    let ids = [b.id, Uuid::now_v7(), silent.id, a.id, b.id];
    let outputs = store.list_step_outputs_for(&ids).await.unwrap();
    let entry = |run: &Run, step: &str, it| (run.id, step.to_owned(), it);
    assert_eq!(
        listed(outputs.clone()),
        vec![
            entry(&b, "x", None),
            entry(&b, "y", None),
            entry(&a, "x", None),
            entry(&a, "y", Some(0)),
            entry(&a, "y", Some(1)),
        ]
    );
    assert_eq!(outputs[0].output, json!("xNone"));
    // The same records a per-run read returns.
    let mut per_run = store.list_step_outputs(b.id).await.unwrap();
    per_run.extend(store.list_step_outputs(a.id).await.unwrap());
    assert_eq!(outputs, per_run);
    assert!(store.list_step_outputs_for(&[]).await.unwrap().is_empty());
    assert!(
        store
            .list_step_outputs_for(&[silent.id])
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every way of recording an outcome takes the run off the recovery scan,
/// whatever comes first (the event or the terminal status), and an outcome
/// whose write is rolled back does not: the scan lists exactly the runs with
/// a terminal status and no terminal event.
pub async fn recovery_scan_follows_every_outcome_write(store: AnyStore) {
    let completed = || {
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: None,
        })
    };
    let finish = |run: &Run| {
        let mut run = run.clone();
        run.status = RunStatus::Finished;
        run
    };
    let event_first = new_run(&store, "o").await;
    let appended = new_run(&store, "o").await;
    let batched = new_run(&store, "o").await;
    let atomic = new_run(&store, "o").await;
    let rolled_back = new_run(&store, "o").await;
    let not_terminal = new_run(&store, "o").await;

    // The outcome first, then the status: the CAS update keeps it recorded.
    store
        .append(NewEvent::new(event_first.id, completed()))
        .await
        .unwrap();
    let done = custom("finished", Value::Null);
    store
        .update_run(finish(&event_first), 0, done.clone())
        .await
        .unwrap();
    // The status first, then the outcome, by a plain append and in a batch.
    for run in [&appended, &batched, &rolled_back] {
        store
            .update_run(finish(run), 0, done.clone())
            .await
            .unwrap();
    }
    store
        .append(NewEvent::new(appended.id, completed()))
        .await
        .unwrap();
    store
        .append_batch(vec![
            NewEvent::new(batched.id, custom("tick", Value::Null)),
            NewEvent::new(batched.id, completed()),
        ])
        .await
        .unwrap();
    // Both in one atomic op, as the run manager moves a run to its end.
    let outcomes = store
        .apply_batch(vec![WriteOp::Atomic(vec![
            WriteOp::UpdateRun {
                run: Box::new(finish(&atomic)),
                expected_revision: 0,
                audit: done.clone(),
            },
            WriteOp::Append(NewEvent::new(atomic.id, completed())),
        ])])
        .await
        .unwrap();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // An outcome appended, then undone with the rest of its atomic op.
    let outcomes = store
        .apply_batch(vec![WriteOp::Atomic(vec![
            WriteOp::Append(NewEvent::new(rolled_back.id, completed())),
            WriteOp::UpdateRun {
                run: Box::new(finish(&rolled_back)),
                expected_revision: 0,
                audit: done.clone(),
            },
        ])])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[..], [Err(StoreError::RevisionMismatch { .. })]),
        "{outcomes:?}"
    );
    assert!(
        store
            .terminal_event(rolled_back.id)
            .await
            .unwrap()
            .is_none()
    );
    // An outcome without a terminal status is not the scan's business.
    store
        .append(NewEvent::new(not_terminal.id, completed()))
        .await
        .unwrap();

    assert_eq!(missing_ids(&store).await, vec![rolled_back.id]);
}

/// `levels` arrays nested around `1`: `[[[1]]]` for 3.
pub fn nested(levels: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

fn is_invalid(result: &Result<impl std::fmt::Debug, StoreError>, name: &str) -> bool {
    matches!(result, Err(StoreError::InvalidInput { field, .. }) if *field == name)
}

/// JSON nested deeper than serde_json reads back (128 levels) is refused at
/// write time, naming the field, by every backend and for every JSON a
/// store keeps; a refused op fails alone and nothing of it is stored.
pub async fn too_deep_json_is_refused_at_write(store: AnyStore) {
    let deep = nested(200);
    let mut run = Run::new("ctrl", "goal", "deep");
    run.state_json = deep.clone();
    let inserted = store.insert_run(run.clone(), None).await;
    assert!(is_invalid(&inserted, "state_json"), "{inserted:?}");
    assert_eq!(store.get_run(run.id).await.unwrap(), None);

    let ok = new_run(&store, "deep").await;
    let mut waiting = ok.clone();
    waiting.status = RunStatus::Waiting;
    waiting.wait_json = Some(deep.clone());
    let updated = store
        .update_run(waiting, 0, custom("waiting", Value::Null))
        .await;
    assert!(is_invalid(&updated, "wait_json"), "{updated:?}");

    let batch = vec![
        WriteOp::Append(NewEvent::new(ok.id, custom("before", json!(1)))),
        WriteOp::Append(NewEvent::new(ok.id, custom("deep", deep.clone()))),
        WriteOp::Append(NewEvent::new(ok.id, custom("after", json!(2)))),
    ];
    let results = store.apply_batch(batch).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(is_invalid(&results[1], "payload"), "{results:?}");

    let output = StepOutput {
        run_id: ok.id,
        step_id: "s".into(),
        loop_id: None,
        iteration: None,
        output: deep.clone(),
        at: chrono::Utc::now(),
    };
    let recorded = store.record_step_output(output).await;
    assert!(is_invalid(&recorded, "output"), "{recorded:?}");
    let failure = FailureEntry {
        run_id: ok.id,
        step_id: "s".into(),
        reason: "r".into(),
        error_json: Some(deep.clone()),
        at: chrono::Utc::now(),
    };
    let failed = store.record_failure(failure).await;
    assert!(is_invalid(&failed, "error_json"), "{failed:?}");
    let step = RunStep {
        id: Uuid::now_v7(),
        run_id: ok.id,
        runtime: StepRuntime::Mirrored,
        child_session_key: None,
        external_run_id: "x".into(),
        task: "t".into(),
        status: RunStepStatus::Succeeded,
        result_json: Some(deep.clone()),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    let upserted = store.upsert_step(step).await;
    assert!(is_invalid(&upserted, "result_json"), "{upserted:?}");
    let terminal = store
        .append_terminal_event_if_absent(
            ok.id,
            TerminalEvent::RunCompleted {
                structured_output: Some(deep),
            },
        )
        .await;
    assert!(is_invalid(&terminal, "structured_output"), "{terminal:?}");

    // Nothing refused was stored, and the run reads back whole.
    let stored = store.get_run(ok.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.revision), (RunStatus::Created, 0));
    let kinds: Vec<String> = store
        .replay(ok.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(kinds, ["created", "before", "after"]);
    assert!(store.list_step_outputs(ok.id).await.unwrap().is_empty());
    assert!(store.list_failures(ok.id).await.unwrap().is_empty());
    assert!(store.list_steps(ok.id).await.unwrap().is_empty());
    assert_eq!(store.terminal_event(ok.id).await.unwrap(), None);
}

/// A compare-and-set based on `u64::MAX` has no next revision: a typed
/// error for that op alone, never an overflow.
pub async fn revision_overflow_is_refused(store: AnyStore) {
    let run = new_run(&store, "o").await;
    let mut next = run.clone();
    next.status = RunStatus::Running;
    let batch = vec![
        WriteOp::UpdateRun {
            run: Box::new(next.clone()),
            expected_revision: u64::MAX,
            audit: custom("started", Value::Null),
        },
        WriteOp::Append(NewEvent::new(run.id, custom("tick", json!(1)))),
    ];
    let results = store.apply_batch(batch).await.unwrap();
    assert!(
        matches!(
            &results[0],
            Err(StoreError::InvalidInput {
                field: "expected_revision",
                ..
            })
        ),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    // A run stored at the last revision cannot change any more.
    let mut last = Run::new("ctrl", "goal", "o");
    last.revision = u64::MAX;
    store.insert_run(last.clone(), None).await.unwrap();
    assert_eq!(
        store.get_run(last.id).await.unwrap().unwrap().revision,
        u64::MAX
    );
    let refused = store
        .update_run(last.clone(), u64::MAX, custom("x", Value::Null))
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::InvalidInput {
                field: "expected_revision",
                ..
            })
        ),
        "{refused:?}"
    );
    // The store still takes writes.
    let revision = store
        .update_run(next, 0, custom("started", Value::Null))
        .await
        .unwrap();
    assert_eq!(revision, 1);
}

fn dead_letter(run_id: Uuid, stage: &str, position: u64, item: Value) -> DeadLetter {
    DeadLetter {
        run_id,
        stage: stage.into(),
        position,
        attempts: 3,
        errors: vec!["first".into(), "second".into(), "third".into()],
        item,
        // Whole microseconds: what every backend keeps.
        at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
    }
}

pub async fn dead_letters_round_trip_in_order(store: AnyStore) {
    let run = new_run(&store, "dl").await;
    let other = new_run(&store, "dl").await;
    let first = dead_letter(run.id, "parse", 7, json!({"order": 17, "lines": [1, 2]}));
    let mut second = dead_letter(run.id, "ship", u64::MAX, json!("plain"));
    second.errors.clear();
    second.attempts = 1;
    store.record_dead_letter(first.clone()).await.unwrap();
    store
        .record_dead_letter(dead_letter(other.id, "parse", 0, json!(null)))
        .await
        .unwrap();
    store.record_dead_letter(second.clone()).await.unwrap();
    assert_eq!(
        store.list_dead_letters(run.id).await.unwrap(),
        vec![first, second]
    );
    assert_eq!(store.list_dead_letters(other.id).await.unwrap().len(), 1);
    assert!(
        store
            .list_dead_letters(Uuid::now_v7())
            .await
            .unwrap()
            .is_empty()
    );
    let deep = store
        .record_dead_letter(dead_letter(run.id, "parse", 8, nested(200)))
        .await;
    assert!(is_invalid(&deep, "item"), "{deep:?}");
    assert_eq!(store.list_dead_letters(run.id).await.unwrap().len(), 2);
}

pub async fn dead_letter_for_unknown_run_is_refused(store: AnyStore) {
    let unknown = Uuid::now_v7();
    let err = store
        .record_dead_letter(dead_letter(unknown, "parse", 0, json!(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RunNotFound(_)), "{err}");
    assert!(store.list_dead_letters(unknown).await.unwrap().is_empty());
}

/// An unsettled entry accepted at `micros` (whole microseconds: what every
/// backend keeps).
fn inbox_entry(run_id: Uuid, id: Uuid, stage: &str, message: InboxMessage) -> InboxEntry {
    InboxEntry {
        id,
        run_id,
        stage: stage.into(),
        message,
        accepted_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        settled: None,
    }
}

fn signal(name: &str, payload: Value) -> InboxMessage {
    InboxMessage::Signal {
        name: name.into(),
        payload,
    }
}

/// Moves the run to `status` (a CAS update from its stored revision).
pub async fn set_status(store: &AnyStore, run_id: Uuid, status: RunStatus) -> Run {
    let mut run = store.get_run(run_id).await.unwrap().unwrap();
    run.status = status;
    let revision = run.revision;
    run.revision = store
        .update_run(run.clone(), revision, custom(status.as_str(), Value::Null))
        .await
        .unwrap();
    run
}

pub async fn inbox_round_trips_in_accept_order(store: AnyStore) {
    let run = new_run(&store, "inbox").await;
    let other = new_run(&store, "inbox").await;
    let first = inbox_entry(
        run.id,
        Uuid::now_v7(),
        "parse",
        signal(
            "pause",
            json!({"why": "maintenance ✓", "big": u64::MAX, "neg": i64::MIN, "half": 0.5}),
        ),
    );
    // Accepted later, stamped earlier (and before the epoch): the list
    // keeps accept order, not time order.
    let mut second = inbox_entry(
        run.id,
        Uuid::now_v7(),
        "ship",
        InboxMessage::Event {
            payload: json!({"Reroute": {"to": "dock 4", "lines": [1, 2]}}),
        },
    );
    second.accepted_at = chrono::DateTime::from_timestamp_micros(-1_234_567).unwrap();
    let mut third = inbox_entry(
        run.id,
        Uuid::now_v7(),
        "parse",
        InboxMessage::Item {
            payload: json!(null),
        },
    );
    third.accepted_at = chrono::DateTime::from_timestamp_micros(1_700_000_000_999_999).unwrap();
    // A caller's `settled` is ignored: entries are stored unsettled.
    let mut claims_settled = third.clone();
    claims_settled.settled = Some(Settled {
        at: third.accepted_at,
        undeliverable: Some("not yet".into()),
    });
    let elsewhere = inbox_entry(other.id, first.id, "parse", signal("stop", json!({})));

    store.accept_inbox(vec![first.clone()]).await.unwrap();
    store.accept_inbox(vec![elsewhere.clone()]).await.unwrap();
    store
        .accept_inbox(vec![second.clone(), claims_settled])
        .await
        .unwrap();

    assert_eq!(
        store.list_inbox(run.id).await.unwrap(),
        vec![first, second, third]
    );
    assert_eq!(store.list_inbox(other.id).await.unwrap(), vec![elsewhere]);
    assert_eq!(store.list_inbox(Uuid::now_v7()).await.unwrap(), vec![]);
    // An empty batch is accepted and stores nothing.
    store.accept_inbox(Vec::new()).await.unwrap();
    assert_eq!(store.list_inbox(run.id).await.unwrap().len(), 3);
}

pub async fn inbox_accept_is_all_or_none(store: AnyStore) {
    let run = new_run(&store, "inbox").await;
    let other = new_run(&store, "inbox").await;
    // A run-wide signal: one id, one entry per stage.
    let id = Uuid::now_v7();
    let stored = vec![
        inbox_entry(run.id, id, "parse", signal("drain", json!(1))),
        inbox_entry(run.id, id, "ship", signal("drain", json!(1))),
    ];
    store.accept_inbox(stored.clone()).await.unwrap();

    let fresh = inbox_entry(
        run.id,
        Uuid::now_v7(),
        "parse",
        InboxMessage::Item { payload: json!(7) },
    );
    let unknown = Uuid::now_v7();
    let err = store
        .accept_inbox(vec![
            fresh.clone(),
            inbox_entry(unknown, Uuid::now_v7(), "parse", signal("x", json!(null))),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::RunNotFound(r) if r == unknown),
        "{err}"
    );

    let err = store
        .accept_inbox(vec![
            fresh.clone(),
            inbox_entry(run.id, id, "ship", signal("again", json!(2))),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InboxEntryExists { run_id, id: dup, stage }
            if *run_id == run.id && *dup == id && stage == "ship"),
        "{err}"
    );

    // A duplicate inside one batch is refused the same way.
    let twice = inbox_entry(run.id, Uuid::now_v7(), "ship", signal("y", json!(null)));
    let err = store
        .accept_inbox(vec![fresh.clone(), twice.clone(), twice.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InboxEntryExists { id: dup, .. } if *dup == twice.id),
        "{err}"
    );
    assert_eq!(store.list_inbox(run.id).await.unwrap(), stored);
    assert_eq!(store.list_inbox(unknown).await.unwrap(), vec![]);

    // Nothing of the refused batches was kept: each entry is still new.
    // The same (id, stage) in another run is another entry.
    let also = inbox_entry(other.id, id, "parse", signal("drain", json!(1)));
    store
        .accept_inbox(vec![fresh.clone(), twice.clone(), also.clone()])
        .await
        .unwrap();
    let mut all = stored;
    all.extend([fresh, twice]);
    assert_eq!(store.list_inbox(run.id).await.unwrap(), all);
    assert_eq!(store.list_inbox(other.id).await.unwrap(), vec![also]);
}

pub async fn inbox_refuses_ended_runs(store: AnyStore) {
    for status in RunStatus::ALL {
        let run = new_run(&store, "inbox").await;
        if status != RunStatus::Created {
            set_status(&store, run.id, status).await;
        }
        let entry = inbox_entry(run.id, Uuid::now_v7(), "parse", signal("s", json!(0)));
        let accepted = store.accept_inbox(vec![entry.clone()]).await;
        if status.is_terminal() {
            assert!(
                matches!(&accepted, Err(StoreError::RunEnded { run_id, status: s })
                    if *run_id == run.id && *s == status),
                "{status:?}: {accepted:?}"
            );
            assert_eq!(store.list_inbox(run.id).await.unwrap(), vec![]);
        } else {
            assert!(accepted.is_ok(), "{status:?}: {accepted:?}");
            assert_eq!(store.list_inbox(run.id).await.unwrap(), vec![entry]);
        }
    }

    // Inserted earlier in the same batch: live takes input, ended does not.
    let live = Run::new("ctrl", "goal", "inbox");
    let mut ended = Run::new("ctrl", "goal", "inbox");
    ended.status = RunStatus::Failed;
    let (to_live, to_ended) = (
        inbox_entry(live.id, Uuid::now_v7(), "parse", signal("s", json!(0))),
        inbox_entry(ended.id, Uuid::now_v7(), "parse", signal("s", json!(0))),
    );
    let mut ops = Vec::new();
    for (run, entry) in [(&live, &to_live), (&ended, &to_ended)] {
        ops.push(WriteOp::InsertRun {
            run: Box::new(run.clone()),
            audit: None,
        });
        ops.push(WriteOp::AcceptInbox(vec![entry.clone()]));
    }
    let results = store.apply_batch(ops).await.unwrap();
    assert!(
        matches!(
            &results[..],
            [
                Ok(WriteOutcome::RunInserted { .. }),
                Ok(WriteOutcome::InboxAccepted),
                Ok(WriteOutcome::RunInserted { .. }),
                Err(StoreError::RunEnded {
                    status: RunStatus::Failed,
                    ..
                }),
            ]
        ),
        "{results:?}"
    );
    assert_eq!(store.list_inbox(live.id).await.unwrap(), vec![to_live]);
    assert_eq!(store.list_inbox(ended.id).await.unwrap(), vec![]);

    // Ended earlier in the same batch: the accept sees the new status.
    let run = new_run(&store, "inbox").await;
    let mut running = set_status(&store, run.id, RunStatus::Running).await;
    let revision = running.revision;
    running.status = RunStatus::Finished;
    let entry = inbox_entry(run.id, Uuid::now_v7(), "parse", signal("s", json!(0)));
    let results = store
        .apply_batch(vec![
            WriteOp::UpdateRun {
                run: Box::new(running.clone()),
                expected_revision: revision,
                audit: custom("finished", Value::Null),
            },
            WriteOp::AcceptInbox(vec![entry.clone()]),
        ])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Ok(WriteOutcome::RunUpdated { revision: r, .. }) if r == revision + 1),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Err(StoreError::RunEnded { run_id, status: RunStatus::Finished })
            if *run_id == run.id),
        "{results:?}"
    );
    assert_eq!(results.len(), 2);
    assert_eq!(store.list_inbox(run.id).await.unwrap(), vec![]);

    // In one atomic op the refusal undoes the update too.
    let live = new_run(&store, "inbox").await;
    let mut cancelled = live.clone();
    cancelled.status = RunStatus::Cancelled;
    let atomic = store
        .apply(WriteOp::Atomic(vec![
            WriteOp::UpdateRun {
                run: Box::new(cancelled),
                expected_revision: live.revision,
                audit: custom("cancelled", Value::Null),
            },
            WriteOp::AcceptInbox(vec![inbox_entry(
                live.id,
                Uuid::now_v7(),
                "parse",
                signal("s", json!(0)),
            )]),
        ]))
        .await;
    assert!(
        matches!(
            &atomic,
            Err(StoreError::RunEnded {
                status: RunStatus::Cancelled,
                ..
            })
        ),
        "{atomic:?}"
    );
    assert_eq!(
        store.get_run(live.id).await.unwrap().unwrap().status,
        RunStatus::Created
    );
    assert_eq!(store.list_inbox(live.id).await.unwrap(), vec![]);
}

pub async fn inbox_settles_once(store: AnyStore) {
    let run = new_run(&store, "inbox").await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let entries = vec![
        inbox_entry(run.id, a, "parse", signal("drain", json!(null))),
        inbox_entry(run.id, a, "ship", signal("drain", json!(null))),
        inbox_entry(
            run.id,
            b,
            "parse",
            InboxMessage::Event {
                payload: json!("Nope"),
            },
        ),
    ];
    store.accept_inbox(entries.clone()).await.unwrap();

    // Every backend keeps at least whole microseconds of the settle time.
    let before =
        chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
    let settle = |id: Uuid, stage: &str, why: Option<&str>| {
        store.settle_inbox(run.id, id, stage.into(), why.map(Into::into))
    };
    assert!(settle(a, "parse", None).await.unwrap());
    let why = "`Nope` does not decode as the stage's event";
    assert!(settle(b, "parse", Some(why)).await.unwrap());
    let after = chrono::Utc::now();

    let listed = store.list_inbox(run.id).await.unwrap();
    assert_eq!(listed.len(), 3);
    for (i, expected) in [Some(None), None, Some(Some(why))].into_iter().enumerate() {
        // Everything but `settled` is as accepted.
        let mut unsettled = listed[i].clone();
        unsettled.settled = None;
        assert_eq!(unsettled, entries[i], "entry {i}");
        match (&listed[i].settled, expected) {
            (None, None) => {}
            (Some(s), Some(undeliverable)) => {
                assert_eq!(s.undeliverable.as_deref(), undeliverable, "entry {i}");
                assert!(
                    before <= s.at && s.at <= after,
                    "entry {i}: {before} <= {} <= {after}",
                    s.at
                );
            }
            (got, want) => panic!("entry {i}: settled {got:?}, expected {want:?}"),
        }
    }

    // Settling again, or something that is not there, changes nothing.
    assert!(!settle(a, "parse", Some("late")).await.unwrap());
    assert!(!settle(b, "parse", None).await.unwrap());
    assert!(!settle(a, "pack", None).await.unwrap());
    assert!(!settle(Uuid::now_v7(), "parse", None).await.unwrap());
    let unknown_run = store
        .settle_inbox(Uuid::now_v7(), a, "parse".into(), None)
        .await
        .unwrap();
    assert!(!unknown_run);
    assert_eq!(store.list_inbox(run.id).await.unwrap(), listed);

    // A settle undone by a later failure in its atomic op leaves the
    // entry waiting.
    let undone = store
        .apply(WriteOp::Atomic(vec![
            WriteOp::SettleInbox {
                run_id: run.id,
                id: a,
                stage: "ship".into(),
                undeliverable: None,
            },
            WriteOp::AcceptInbox(vec![entries[0].clone()]),
        ]))
        .await;
    assert!(
        matches!(&undone, Err(StoreError::InboxEntryExists { .. })),
        "{undone:?}"
    );
    assert_eq!(store.list_inbox(run.id).await.unwrap(), listed);

    // A run that has ended still settles what it had accepted.
    set_status(&store, run.id, RunStatus::Failed).await;
    assert!(
        settle(a, "ship", Some("stage `ship` had ended"))
            .await
            .unwrap()
    );
    let ended = store.list_inbox(run.id).await.unwrap();
    assert_eq!(
        ended[1]
            .settled
            .as_ref()
            .map(|s| s.undeliverable.as_deref()),
        Some(Some("stage `ship` had ended"))
    );
    assert_eq!((&ended[0], &ended[2]), (&listed[0], &listed[2]));
    assert!(!settle(a, "ship", None).await.unwrap());
}

pub async fn inbox_refuses_too_deep_payload(store: AnyStore) {
    let run = new_run(&store, "inbox").await;
    let kinds = |payload: Value| {
        [
            signal("deep", payload.clone()),
            InboxMessage::Event {
                payload: payload.clone(),
            },
            InboxMessage::Item { payload },
        ]
    };
    let ok = inbox_entry(run.id, Uuid::now_v7(), "parse", signal("ok", json!(1)));
    for message in kinds(nested(MAX_JSON_DEPTH + 1)) {
        let deep = inbox_entry(run.id, Uuid::now_v7(), "parse", message);
        let refused = store.accept_inbox(vec![ok.clone(), deep]).await;
        assert!(is_invalid(&refused, "payload"), "{refused:?}");
    }
    assert_eq!(store.list_inbox(run.id).await.unwrap(), vec![]);

    // At the limit every kind is kept and reads back, though the stored
    // message wraps its payload one level deeper.
    let at_limit: Vec<_> = kinds(nested(MAX_JSON_DEPTH))
        .into_iter()
        .map(|m| inbox_entry(run.id, Uuid::now_v7(), "parse", m))
        .collect();
    store.accept_inbox(at_limit.clone()).await.unwrap();
    assert_eq!(store.list_inbox(run.id).await.unwrap(), at_limit);
}

pub async fn runs_with_unsettled_inbox_are_found_in_one_call(store: AnyStore) {
    let (open, settled, empty) = (
        new_run(&store, "inbox").await,
        new_run(&store, "inbox").await,
        new_run(&store, "inbox").await,
    );
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .accept_inbox(vec![
            inbox_entry(open.id, a, "parse", signal("go", json!(1))),
            inbox_entry(settled.id, b, "parse", signal("go", json!(2))),
        ])
        .await
        .unwrap();
    assert!(
        store
            .settle_inbox(settled.id, b, "parse".into(), None)
            .await
            .unwrap()
    );
    let ids = [empty.id, settled.id, open.id, open.id, Uuid::now_v7()];
    assert_eq!(
        store.runs_with_unsettled_inbox(&ids).await.unwrap(),
        vec![open.id]
    );
    assert!(
        store
            .runs_with_unsettled_inbox(&[])
            .await
            .unwrap()
            .is_empty()
    );
}
