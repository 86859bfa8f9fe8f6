//! Conformance cases for terminalization, repair and the recovery scan.

use serde_json::{Value, json};
use troupe::records::{
    EventKind, FailureEntry, Run, RunStatus, SYSTEM_STEP_ID, StepOutput, TerminalEvent,
};
use troupe::runs::{
    TerminalTarget, TerminalizationError, TerminalizationOutcome, plan_repairs,
    record_persisted_terminalization, recover, repair_persisted_terminalization,
};

use super::conformance::{AnyStore, custom, new_run};

/// A run whose terminal status is persisted (as the control plane does before terminalizing).
pub async fn persisted(store: &AnyStore, status: RunStatus) -> Run {
    let mut run = new_run(store, "o").await;
    run.status = status;
    store
        .update_run(run.clone(), 0, custom(status.as_str(), Value::Null))
        .await
        .unwrap();
    run
}

pub async fn terminal_kinds(store: &AnyStore, run: &Run) -> Vec<EventKind> {
    store
        .replay(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_terminal().is_some())
        .map(|e| e.kind)
        .collect()
}

pub async fn record_appends_once(store: AnyStore) {
    let run = persisted(&store, RunStatus::Finished).await;
    let target = TerminalTarget::Completed {
        structured_output: Some(json!({"n": 1})),
    };
    for _ in 0..2 {
        let out = record_persisted_terminalization(&*store, run.id, "ctrl", target.clone()).await;
        assert_eq!(out.unwrap(), TerminalizationOutcome::Transitioned);
    }
    assert_eq!(
        terminal_kinds(&store, &run).await,
        vec![EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(json!({"n": 1}))
        })]
    );
    assert!(store.list_failures(run.id).await.unwrap().is_empty());
}

pub async fn record_failure_goes_to_ledger(store: AnyStore) {
    let run = persisted(&store, RunStatus::Failed).await;
    store
        .append_terminal_event_if_absent(run.id, TerminalEvent::RunCancelled)
        .await
        .unwrap();
    let err = record_persisted_terminalization(
        &*store,
        run.id,
        "ctrl",
        TerminalTarget::Failed {
            reason: "boom".into(),
        },
    )
    .await
    .unwrap_err();
    let TerminalizationError::AppendFailed { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        reason.starts_with("terminal run status persisted but RunFailed append failed: run "),
        "{reason}"
    );
    assert_eq!(err.to_string(), *reason);
    let ledger = store.list_failures(run.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].step_id, SYSTEM_STEP_ID);
    assert_eq!(&ledger[0].reason, reason);
    assert_eq!(terminal_kinds(&store, &run).await.len(), 1);
}

pub async fn repair_noop_when_not_terminal(store: AnyStore) {
    let run = persisted(&store, RunStatus::Running).await;
    let out =
        repair_persisted_terminalization(&*store, run.id, "ctrl", Some(TerminalTarget::Cancelled))
            .await;
    assert_eq!(out.unwrap(), TerminalizationOutcome::Noop);
    assert!(terminal_kinds(&store, &run).await.is_empty());
}

pub async fn repair_completed_uses_requested_output(store: AnyStore) {
    let run = persisted(&store, RunStatus::Finished).await;
    let target = TerminalTarget::Completed {
        structured_output: Some(json!({"given": true})),
    };
    repair_persisted_terminalization(&*store, run.id, "ctrl", Some(target))
        .await
        .unwrap();
    assert_eq!(
        terminal_kinds(&store, &run).await,
        vec![EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(json!({"given": true}))
        })]
    );
}

pub async fn repair_completed_rebuilds_output(store: AnyStore) {
    let run = persisted(&store, RunStatus::Finished).await;
    let record =
        |step: &str, loop_id: Option<&str>, iteration: Option<u32>, output: Value| StepOutput {
            run_id: run.id,
            step_id: step.into(),
            loop_id: loop_id.map(Into::into),
            iteration,
            output,
            at: chrono::Utc::now(),
        };
    for o in [
        record("fetch", None, None, json!({"rows": 3})),
        record("enrich", Some("items"), Some(2), json!("c")),
        record("enrich", Some("items"), Some(0), json!("a")),
        record("score", None, None, json!("plain")),
        record("score", Some("rounds"), Some(1), json!("round 1")),
        record("enrich", Some("items"), Some(1), json!("b")),
    ] {
        store.record_step_output(o).await.unwrap();
    }
    // The target is not Completed, so the persisted status wins and the output is rebuilt.
    repair_persisted_terminalization(&*store, run.id, "ctrl", Some(TerminalTarget::Cancelled))
        .await
        .unwrap();
    // Loop-iteration outputs are flattened into `steps`: the latest
    // iteration wins, also over a plain output of the same step.
    let expected = json!({"steps": {
        "fetch": {"rows": 3},
        "enrich": "c",
        "score": "round 1",
    }});
    assert_eq!(
        terminal_kinds(&store, &run).await,
        vec![EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(expected)
        })]
    );
}

pub async fn repair_completed_without_outputs_has_no_output(store: AnyStore) {
    let run = persisted(&store, RunStatus::Finished).await;
    repair_persisted_terminalization(&*store, run.id, "ctrl", None)
        .await
        .unwrap();
    assert_eq!(
        terminal_kinds(&store, &run).await,
        vec![EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: None
        })]
    );
}

pub async fn repair_failed_reason_precedence(store: AnyStore) {
    let given = persisted(&store, RunStatus::Failed).await;
    repair_persisted_terminalization(
        &*store,
        given.id,
        "ctrl",
        Some(TerminalTarget::Failed {
            reason: "given".into(),
        }),
    )
    .await
    .unwrap();
    let from_ledger = persisted(&store, RunStatus::Failed).await;
    for reason in ["first", "last"] {
        let entry = FailureEntry {
            run_id: from_ledger.id,
            step_id: "s".into(),
            reason: reason.into(),
            error_json: None,
            at: chrono::Utc::now(),
        };
        store.record_failure(entry).await.unwrap();
    }
    repair_persisted_terminalization(&*store, from_ledger.id, "ctrl", None)
        .await
        .unwrap();
    let fallback = persisted(&store, RunStatus::Failed).await;
    repair_persisted_terminalization(
        &*store,
        fallback.id,
        "ctrl",
        Some(TerminalTarget::Cancelled),
    )
    .await
    .unwrap();
    for (run, reason) in [
        (&given, "given"),
        (&from_ledger, "last"),
        (&fallback, "run already failed"),
    ] {
        assert_eq!(
            terminal_kinds(&store, run).await,
            vec![EventKind::Terminal(TerminalEvent::RunFailed {
                reason: reason.into()
            })]
        );
    }
}

pub async fn repair_cancelled_status_wins_and_is_idempotent(store: AnyStore) {
    let run = persisted(&store, RunStatus::Cancelled).await;
    let target = TerminalTarget::Completed {
        structured_output: Some(json!(1)),
    };
    // The first repair appends the event; the second finds it there.
    for expected in [
        TerminalizationOutcome::Transitioned,
        TerminalizationOutcome::Noop,
    ] {
        let out =
            repair_persisted_terminalization(&*store, run.id, "ctrl", Some(target.clone())).await;
        assert_eq!(out.unwrap(), expected);
    }
    assert_eq!(
        terminal_kinds(&store, &run).await,
        vec![EventKind::Terminal(TerminalEvent::RunCancelled)]
    );
}

pub async fn recovery_scan_repairs_and_reports(store: AnyStore) {
    let broken = persisted(&store, RunStatus::Failed).await;
    let settled = persisted(&store, RunStatus::Finished).await;
    record_persisted_terminalization(
        &*store,
        settled.id,
        "ctrl",
        TerminalTarget::Completed {
            structured_output: None,
        },
    )
    .await
    .unwrap();
    let running = persisted(&store, RunStatus::Running).await;
    let waiting = persisted(&store, RunStatus::Waiting).await;
    // Planned first, reading only: the same run, with the event appended next.
    let plan = plan_repairs(&*store).await.unwrap();
    assert_eq!(plan.repairs.len(), 1);
    assert_eq!(plan.repairs[0].run_id, broken.id);
    assert_eq!(plan.unfinished, 2);
    assert!(terminal_kinds(&store, &broken).await.is_empty());
    let report = recover(&*store).await.unwrap();
    assert_eq!(report.repaired, vec![broken.id]);
    assert_eq!(
        terminal_kinds(&store, &broken).await,
        vec![EventKind::Terminal(plan.repairs[0].event.clone())]
    );
    assert!(report.repair_failures.is_empty());
    let unfinished: Vec<_> = report.unfinished.iter().map(|f| f.id).collect();
    assert_eq!(unfinished, vec![running.id, waiting.id]);
    assert_eq!(terminal_kinds(&store, &broken).await.len(), 1);
    assert_eq!(terminal_kinds(&store, &settled).await.len(), 1);
    let again = recover(&*store).await.unwrap();
    assert!(again.repaired.is_empty());
    assert!(plan_repairs(&*store).await.unwrap().repairs.is_empty());
}
