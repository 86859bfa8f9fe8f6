//! Behaviour cases of the run lifecycle (moves, state, cancellation,
//! outcomes), one async fn per rule; `tests/runs_manager.rs` runs each over
//! every store. Write-path cases are in `manager_write_cases.rs`.

use chrono::{DateTime, Utc};
use serde_json::json;
use troupe::records::{EventKind, NewEvent, RunEvent, StoreError, TerminalEvent};
use troupe::runs::{CreateManagedInput, RunError, RunManager, RunStatus, recover};
use uuid::Uuid;

use super::backends::AnyStore;
use super::run_model::{Model, Move, without_failure_time};

pub fn input(owner: &str) -> CreateManagedInput {
    CreateManagedInput {
        controller_id: "orders".into(),
        goal: "ship order 17".into(),
        owner_session_key: owner.into(),
        requester_origin: Some("web".into()),
        current_step: Some("pick".into()),
        state_json: json!({"items": 3}),
        input: serde_json::Value::Null,
        key: None,
        parent_run_id: None,
    }
}

pub async fn events(m: &RunManager, id: Uuid) -> Vec<RunEvent> {
    m.list_events(id, usize::MAX).await.expect("list events")
}

pub async fn kinds(m: &RunManager, id: Uuid) -> Vec<String> {
    events(m, id)
        .await
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect()
}

/// A new run brought to `status` by the manager's own moves.
pub async fn run_in(m: &RunManager, status: RunStatus) -> Uuid {
    let id = m.create_managed(input("owner")).await.unwrap().id;
    let moves: &[Move] = match status {
        RunStatus::Created => &[],
        RunStatus::Running => &[Move::Start],
        RunStatus::Waiting => &[Move::Start, Move::Wait],
        RunStatus::Finished => &[Move::Start, Move::Finish],
        RunStatus::Failed => &[Move::Fail],
        RunStatus::Cancelled => &[Move::Cancel],
        RunStatus::ContinuedAsNew => &[Move::Start, Move::ContinueAsNew],
    };
    for (n, mv) in moves.iter().enumerate() {
        mv.apply(m, id, n as u64).await.unwrap();
    }
    id
}

pub async fn create_managed_is_created_at_revision_zero(store: AnyStore) {
    let m = RunManager::new(store);
    let run = m.create_managed(input("s1")).await.unwrap();
    assert_eq!((run.status, run.revision), (RunStatus::Created, 0));
    assert!(!run.cancel_requested);
    let stored = m.get(run.id).await.unwrap().expect("stored");
    assert_eq!(stored.controller_id, "orders");
    assert_eq!(stored.goal, "ship order 17");
    assert_eq!(stored.owner_session_key, "s1");
    assert_eq!(stored.requester_origin.as_deref(), Some("web"));
    assert_eq!(stored.current_step.as_deref(), Some("pick"));
    assert_eq!(stored.state_json, json!({"items": 3}));
    assert_eq!((stored.status, stored.revision), (RunStatus::Created, 0));
    let log = events(&m, run.id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].kind,
        EventKind::custom(
            "created",
            json!({"status": "created", "revision": 0, "runtime": "managed"})
        )
    );
    assert_eq!(m.get(Uuid::now_v7()).await.unwrap(), None);
}

pub async fn runs_are_listed_by_owner_and_status(store: AnyStore) {
    let m = RunManager::new(store);
    let a = m.create_managed(input("alice")).await.unwrap().id;
    let b = m.create_managed(input("bob")).await.unwrap().id;
    let c = m.create_managed(input("alice")).await.unwrap().id;
    m.start_running(c).await.unwrap();
    let ids = |runs: Vec<troupe::runs::Run>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(m.list_by_owner("alice").await.unwrap()), vec![a, c]);
    assert!(m.list_by_owner("nobody").await.unwrap().is_empty());
    assert_eq!(
        ids(m.list_by_status(RunStatus::Created).await.unwrap()),
        vec![a, b]
    );
    assert_eq!(
        ids(m.list_by_status(RunStatus::Running).await.unwrap()),
        vec![c]
    );
}

pub async fn each_change_adds_one_revision_and_one_audit_event(store: AnyStore) {
    let m = RunManager::new(store);
    let id = m.create_managed(input("o")).await.unwrap().id;
    let steps = [
        Move::UpdateState,
        Move::Start,
        Move::Observe,
        Move::Wait,
        Move::Resume,
        Move::RequestCancel,
        Move::Fail,
    ];
    for (n, mv) in steps.into_iter().enumerate() {
        mv.apply(&m, id, n as u64).await.unwrap();
        let run = m.get(id).await.unwrap().unwrap();
        assert_eq!(run.revision, n as u64 + 1, "after {mv:?}");
        let audit: Vec<RunEvent> = events(&m, id)
            .await
            .into_iter()
            .filter(|e| e.kind.as_terminal().is_none())
            .collect();
        assert_eq!(audit.len(), n + 2, "one audit event per change");
        let last = audit.last().unwrap();
        assert_eq!(last.kind.name(), mv.audit_kind());
        let EventKind::Custom { payload, .. } = &last.kind else {
            panic!("audit events are custom events");
        };
        assert_eq!(payload["revision"], json!(run.revision));
        assert_eq!(payload["status"], json!(run.status.as_str()));
    }
}

/// Every move from every status, with and without a pending cancellation,
/// against the reference model: refused moves change nothing.
pub async fn moves_follow_the_legal_move_table(store: AnyStore) {
    let m = RunManager::new(store);
    for status in RunStatus::ALL {
        for cancel_requested in [false, true] {
            if cancel_requested && status.is_terminal() {
                continue;
            }
            for mv in Move::ALL {
                let id = run_in(&m, status).await;
                if cancel_requested {
                    m.request_cancel(id).await.unwrap();
                }
                let before = m.get(id).await.unwrap().unwrap();
                let logged = events(&m, id).await.len();
                let mut model = Model {
                    status,
                    cancel_requested,
                    revision: before.revision,
                    state: without_failure_time(&before.state_json),
                    current_step: before.current_step.clone(),
                    ..Model::created(json!({}))
                };
                let expected = model.step(mv, 1);
                let got = mv.apply(&m, id, 1).await;
                let after = m.get(id).await.unwrap().unwrap();
                match (expected, &got) {
                    (Ok(()), Ok(())) => {}
                    (Err(refusal), Err(e)) if refusal.matches(e) => {
                        assert_eq!(after, before, "a refused {mv:?} changes nothing");
                    }
                    _ => panic!(
                        "{mv:?} from {status:?} (cancel {cancel_requested}): model {expected:?}, got {got:?}"
                    ),
                }
                assert_eq!(after.status, model.status, "{mv:?} from {status:?}");
                assert_eq!(after.revision, model.revision, "{mv:?} from {status:?}");
                assert_eq!(after.cancel_requested, model.cancel_requested);
                assert_eq!(without_failure_time(&after.state_json), model.state);
                let written = (model.revision - before.revision) as usize
                    + usize::from(model.outcome.is_some());
                assert_eq!(
                    events(&m, id).await.len(),
                    logged + written,
                    "{mv:?} from {status:?}"
                );
            }
        }
    }
}

/// Every change but a step observation (see
/// `manager_write_cases::step_observations_on_a_terminal_run_leave_the_run_alone`).
pub async fn terminal_runs_refuse_every_change(store: AnyStore) {
    let m = RunManager::new(store);
    for status in [
        RunStatus::Finished,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::ContinuedAsNew,
    ] {
        let id = run_in(&m, status).await;
        let log = events(&m, id).await;
        for mv in Move::ALL.into_iter().filter(|mv| *mv != Move::Observe) {
            let result = mv.apply(&m, id, 0).await;
            assert!(
                matches!(result, Err(RunError::AlreadyTerminal { id: got, status: s }) if got == id && s == status),
                "{mv:?} on {status:?}: {result:?}"
            );
        }
        assert_eq!(events(&m, id).await, log, "nothing was written");
        assert_eq!(m.list_steps(id).await.unwrap(), vec![]);
    }
}

pub async fn cancel_request_blocks_finish_and_update_state(store: AnyStore) {
    let m = RunManager::new(store);
    let id = run_in(&m, RunStatus::Running).await;
    let requested = m.request_cancel(id).await.unwrap();
    assert!(requested.cancel_requested);
    assert_eq!(requested.revision, 2);
    // Sticky and idempotent: asking again writes nothing.
    assert_eq!(m.request_cancel(id).await.unwrap().revision, 2);
    assert!(
        matches!(m.finish(id, None).await, Err(RunError::CancelPending { id: got }) if got == id)
    );
    assert!(matches!(
        m.update_state(id, json!({"x": 1}), None).await,
        Err(RunError::CancelPending { .. })
    ));
    // The controller may still wait and resume on its way to cancelling.
    m.set_waiting(id, json!({"for": "cleanup"})).await.unwrap();
    let cancelled = m.cancel(id).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.revision),
        (RunStatus::Cancelled, 4)
    );
    assert!(cancelled.ended_at.is_some());
    assert_eq!(cancelled.wait_json, None);
    assert_eq!(
        kinds(&m, id).await,
        [
            "created",
            "started",
            "cancel_requested",
            "waiting",
            "cancelled",
            "RunCancelled"
        ]
    );

    let other = run_in(&m, RunStatus::Waiting).await;
    m.request_cancel(other).await.unwrap();
    assert_eq!(
        m.fail(other, "gave up").await.unwrap().status,
        RunStatus::Failed
    );
}

pub async fn state_patches_merge_shallowly(store: AnyStore) {
    let m = RunManager::new(store);
    let id = m
        .create_managed(CreateManagedInput {
            state_json: json!({"a": {"x": 1}, "b": 2}),
            ..input("o")
        })
        .await
        .unwrap()
        .id;
    let run = m
        .update_state(id, json!({"a": {"y": 2}, "c": null}), Some("pack".into()))
        .await
        .unwrap();
    assert_eq!(run.state_json, json!({"a": {"y": 2}, "b": 2, "c": null}));
    assert_eq!(run.current_step.as_deref(), Some("pack"));
    let run = m.update_state(id, json!({"d": 4}), None).await.unwrap();
    assert_eq!(
        run.current_step.as_deref(),
        Some("pack"),
        "no next step keeps it"
    );
    assert_eq!(
        run.state_json,
        json!({"a": {"y": 2}, "b": 2, "c": null, "d": 4})
    );
    let run = m.update_state(id, json!(["whole"]), None).await.unwrap();
    assert_eq!(
        run.state_json,
        json!(["whole"]),
        "a non-object patch replaces"
    );
    m.start_running(id).await.unwrap();
    m.set_waiting(id, json!({"for": "input"})).await.unwrap();
    let run = m.resume(id, Some(json!({"answer": 42}))).await.unwrap();
    assert_eq!(run.state_json, json!({"answer": 42}));
    assert_eq!(run.wait_json, None);
    m.set_waiting(id, json!({"for": "more"})).await.unwrap();
    let run = m.resume(id, None).await.unwrap();
    assert_eq!(
        run.state_json,
        json!({"answer": 42}),
        "no patch keeps the state"
    );
    assert_eq!(
        m.get(id).await.unwrap().unwrap(),
        run,
        "the stored run is the returned one"
    );
}

pub async fn set_waiting_records_what_the_run_waits_for(store: AnyStore) {
    let m = RunManager::new(store);
    let id = run_in(&m, RunStatus::Running).await;
    let run = m.set_waiting(id, json!({"for": "approval"})).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    assert_eq!(
        m.get(id).await.unwrap().unwrap().wait_json,
        Some(json!({"for": "approval"}))
    );
    let log = events(&m, id).await;
    let EventKind::Custom { name, payload } = &log.last().unwrap().kind else {
        panic!("custom");
    };
    assert_eq!(name, "waiting");
    assert_eq!(payload["wait"], json!({"for": "approval"}));
}

pub async fn fail_records_the_failure_in_the_state(store: AnyStore) {
    let m = RunManager::new(store);
    let id = run_in(&m, RunStatus::Waiting).await;
    let before = Utc::now();
    let run = m.fail(id, "disk full").await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.state_json["items"], json!(3), "other keys stay");
    assert_eq!(run.state_json["failure"]["reason"], json!("disk full"));
    let at: DateTime<Utc> =
        serde_json::from_value(run.state_json["failure"]["at"].clone()).unwrap();
    assert!(before <= at && at <= Utc::now());
    assert_eq!(m.get(id).await.unwrap().unwrap().state_json, run.state_json);
    let terminal = m
        .store()
        .terminal_event(id)
        .await
        .unwrap()
        .expect("outcome");
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunFailed {
            reason: "disk full".into()
        })
    );
}

pub async fn finish_merges_the_final_state_and_records_completion(store: AnyStore) {
    let m = RunManager::new(store);
    let kept = run_in(&m, RunStatus::Running).await;
    let run = m.finish(kept, None).await.unwrap();
    assert_eq!(
        (run.status, run.state_json.clone()),
        (RunStatus::Finished, json!({"items": 3}))
    );
    let merged = run_in(&m, RunStatus::Waiting).await;
    let run = m
        .finish(merged, Some(json!({"shipped": true})))
        .await
        .unwrap();
    assert_eq!(
        run.state_json,
        json!({"items": 3, "shipped": true}),
        "the final state merges shallowly, as resume and update_state do"
    );
    assert_eq!(m.get(merged).await.unwrap().unwrap(), run);
    assert!(run.ended_at.is_some());
    assert_eq!(run.wait_json, None);
    let terminal = m
        .store()
        .terminal_event(merged)
        .await
        .unwrap()
        .expect("outcome");
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(json!({"items": 3, "shipped": true}))
        })
    );
    assert_eq!(
        kinds(&m, merged).await,
        ["created", "started", "waiting", "finished", "RunCompleted"]
    );
}

/// Terminal moves record the outcome in the same write: nothing is left for
/// the recovery scan, and an outcome recorded elsewhere first blocks the move.
pub async fn terminal_moves_record_the_outcome_exactly_once(store: AnyStore) {
    let m = RunManager::new(store.clone());
    for status in [
        RunStatus::Finished,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::ContinuedAsNew,
    ] {
        let id = run_in(&m, status).await;
        let outcomes = events(&m, id)
            .await
            .into_iter()
            .filter(|e| e.kind.as_terminal().is_some())
            .count();
        assert_eq!(outcomes, 1, "{status:?}");
    }
    assert_eq!(
        store.list_runs_missing_terminal_event().await.unwrap(),
        vec![]
    );
    let report = recover(store.as_ref()).await.unwrap();
    assert!(report.repaired.is_empty());

    let id = run_in(&m, RunStatus::Running).await;
    store
        .append(NewEvent::new(id, TerminalEvent::RunCancelled))
        .await
        .unwrap();
    let before = m.get(id).await.unwrap().unwrap();
    let log = events(&m, id).await;
    let refused = m.finish(id, None).await;
    assert!(
        matches!(
            refused,
            Err(RunError::Store(StoreError::TerminalExists {
                existing: "RunCancelled",
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(
        m.get(id).await.unwrap().unwrap(),
        before,
        "the status is not persisted"
    );
    assert_eq!(events(&m, id).await, log);
}
