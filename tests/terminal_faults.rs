//! Fault injection around terminalization: failed appends, lost acks, a
//! failing ledger, crashes between status and event. Repair converges and
//! every divergence is in the failure ledger.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use troupe::records::{EventKind, Run, RunStatus, SYSTEM_STEP_ID, StoreError, TerminalEvent};
use troupe::runs::{
    TerminalTarget, TerminalizationError, record_persisted_terminalization, recover,
    repair_persisted_terminalization,
};
use troupe::store::{Fault, FaultyStore, MemoryStore, SqliteStore, Store};

async fn persisted(store: &dyn Store, status: RunStatus) -> Run {
    let mut run = Run::new("ctrl", "g", "o");
    store.insert_run(run.clone(), None).await.unwrap();
    run.status = status;
    store
        .update_run(
            run.clone(),
            0,
            EventKind::custom(status.as_str(), Value::Null),
        )
        .await
        .unwrap();
    run
}

fn faulty() -> FaultyStore {
    FaultyStore::new(Arc::new(MemoryStore::new()))
}

#[tokio::test]
async fn failed_append_is_recorded_then_repaired() {
    let store = faulty();
    let run = persisted(&store, RunStatus::Finished).await;
    store.inject(Fault::Fail {
        op: "append_terminal_if_absent",
        count: 1,
    });
    let target = TerminalTarget::Completed {
        structured_output: Some(json!({"steps": {}})),
    };
    let err = record_persisted_terminalization(&store, run.id, "ctrl", target)
        .await
        .unwrap_err();
    let expected = "terminal run status persisted but RunCompleted append failed: \
                    injected fault on append_terminal_if_absent";
    assert!(
        matches!(&err, TerminalizationError::AppendFailed { reason, .. } if reason == expected),
        "{err}"
    );
    let ledger = store.list_failures(run.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].step_id.as_str(), ledger[0].reason.as_str()),
        (SYSTEM_STEP_ID, expected)
    );
    assert!(store.terminal_event(run.id).await.unwrap().is_none());

    let report = recover(&store).await.unwrap();
    assert_eq!(report.repaired, vec![run.id]);
    let terminal = store.terminal_event(run.id).await.unwrap().unwrap();
    // Repair rebuilds the output from the recorded ones; there are none.
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: None
        })
    );
}

#[tokio::test]
async fn a_failed_repair_append_is_in_the_ledger() {
    let store = faulty();
    let run = persisted(&store, RunStatus::Cancelled).await;
    store.inject(Fault::Fail {
        op: "append_terminal_if_absent",
        count: 1,
    });
    let err = repair_persisted_terminalization(&store, run.id, "ctrl", None)
        .await
        .unwrap_err();
    let expected = "terminal run status persisted but RunCancelled append failed: \
                    injected fault on append_terminal_if_absent";
    assert!(
        matches!(&err, TerminalizationError::AppendFailed { run_id, reason, .. }
            if *run_id == run.id && reason == expected),
        "{err:?}"
    );
    let ledger = store.list_failures(run.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].step_id.as_str(), ledger[0].reason.as_str()),
        (SYSTEM_STEP_ID, expected)
    );
    assert_eq!(ledger[0].error_json.as_ref().unwrap()["flow_name"], "ctrl");
    assert!(store.terminal_event(run.id).await.unwrap().is_none());
    // The next repair appends it.
    repair_persisted_terminalization(&store, run.id, "ctrl", None)
        .await
        .unwrap();
    assert_eq!(
        store.terminal_event(run.id).await.unwrap().unwrap().kind,
        EventKind::Terminal(TerminalEvent::RunCancelled)
    );
}

#[tokio::test]
async fn a_failed_append_in_the_recovery_scan_is_in_the_ledger() {
    let store = faulty();
    let run = persisted(&store, RunStatus::Finished).await;
    store.inject(Fault::Fail {
        op: "append_terminal_if_absent",
        count: 1,
    });
    let report = recover(&store).await.unwrap();
    assert!(report.repaired.is_empty());
    let [(id, err)] = &report.repair_failures[..] else {
        panic!("{:?}", report.repair_failures)
    };
    assert_eq!(*id, run.id);
    let expected = "terminal run status persisted but RunCompleted append failed: \
                    injected fault on append_terminal_if_absent";
    assert!(
        matches!(err, TerminalizationError::AppendFailed { reason, .. } if reason == expected),
        "{err:?}"
    );
    let ledger = store.list_failures(run.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].step_id.as_str(), ledger[0].reason.as_str()),
        (SYSTEM_STEP_ID, expected)
    );
    assert_eq!(recover(&store).await.unwrap().repaired, vec![run.id]);
}

#[tokio::test]
async fn a_failed_repair_append_with_a_failing_ledger_says_so() {
    let store = faulty();
    let run = persisted(&store, RunStatus::Failed).await;
    store.inject(Fault::Fail {
        op: "append_terminal_if_absent",
        count: 1,
    });
    store.inject(Fault::Fail {
        op: "record_failure",
        count: 1,
    });
    let err = repair_persisted_terminalization(&store, run.id, "ctrl", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TerminalizationError::AppendAndLedgerFailed { .. }),
        "{err:?}"
    );
    assert!(store.list_failures(run.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn both_failing_says_so() {
    let store = faulty();
    let run = persisted(&store, RunStatus::Cancelled).await;
    store.inject(Fault::Fail {
        op: "append_terminal_if_absent",
        count: 1,
    });
    store.inject(Fault::Fail {
        op: "record_failure",
        count: 1,
    });
    let err = record_persisted_terminalization(&store, run.id, "ctrl", TerminalTarget::Cancelled)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TerminalizationError::AppendAndLedgerFailed { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "terminal run status persisted but RunCancelled append failed: injected fault on \
         append_terminal_if_absent; the failure-ledger append failed too: injected fault on record_failure"
    );
    assert_eq!(
        store.fired(),
        vec!["append_terminal_if_absent", "record_failure"]
    );
}

#[tokio::test]
async fn lost_ack_leaves_exactly_one_terminal_event() {
    let store = faulty();
    let run = persisted(&store, RunStatus::Failed).await;
    store.inject(Fault::LoseAck {
        op: "append_terminal_if_absent",
        count: 1,
    });
    let target = TerminalTarget::Failed {
        reason: "boom".into(),
    };
    let err = record_persisted_terminalization(&store, run.id, "ctrl", target.clone())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TerminalizationError::AppendFailed {
            source: StoreError::AckLost { .. },
            ..
        }
    ));
    assert_eq!(
        store.list_failures(run.id).await.unwrap().len(),
        1,
        "divergence is in the ledger"
    );
    // The retry and the recovery scan both see the event that did land.
    record_persisted_terminalization(&store, run.id, "ctrl", target)
        .await
        .unwrap();
    assert!(recover(&store).await.unwrap().repaired.is_empty());
    let events = store.replay(run.id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind.as_terminal().is_some())
            .count(),
        1
    );
}

#[tokio::test]
async fn failed_repair_is_reported_and_retried_by_the_next_scan() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(
        SqliteStore::open(dir.path().join("j.sqlite"))
            .await
            .unwrap(),
    );
    let store = FaultyStore::new(inner);
    let run = persisted(&store, RunStatus::Finished).await;
    store.inject(Fault::Fail {
        op: "list_step_outputs",
        count: 1,
    });
    let report = recover(&store).await.unwrap();
    assert!(report.repaired.is_empty());
    assert_eq!(report.repair_failures.len(), 1);
    assert_eq!(report.repair_failures[0].0, run.id);
    assert_eq!(recover(&store).await.unwrap().repaired, vec![run.id]);
}

/// What happens to one run's terminalization.
#[derive(Debug, Clone, Copy)]
enum Mishap {
    None,
    CrashBeforeAppend,
    FailAppend,
    LoseAck,
    FailAppendAndLedger,
}

fn mishap() -> impl Strategy<Value = Mishap> {
    prop_oneof![
        Just(Mishap::None),
        Just(Mishap::CrashBeforeAppend),
        Just(Mishap::FailAppend),
        Just(Mishap::LoseAck),
        Just(Mishap::FailAppendAndLedger),
    ]
}

fn status() -> impl Strategy<Value = RunStatus> {
    prop_oneof![
        Just(RunStatus::Finished),
        Just(RunStatus::Failed),
        Just(RunStatus::Cancelled)
    ]
}

fn target_for(status: RunStatus) -> TerminalTarget {
    match status {
        RunStatus::Finished => TerminalTarget::Completed {
            structured_output: None,
        },
        RunStatus::Failed => TerminalTarget::Failed { reason: "r".into() },
        _ => TerminalTarget::Cancelled,
    }
}

fn expected_kind(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Finished => "RunCompleted",
        RunStatus::Failed => "RunFailed",
        _ => "RunCancelled",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn repair_converges(runs in proptest::collection::vec((status(), mishap()), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let store = faulty();
            let mut created = Vec::new();
            for (status, mishap) in runs {
                let run = persisted(&store, status).await;
                match mishap {
                    Mishap::None | Mishap::CrashBeforeAppend => {}
                    Mishap::FailAppend => store.inject(Fault::Fail { op: "append_terminal_if_absent", count: 1 }),
                    Mishap::LoseAck => store.inject(Fault::LoseAck { op: "append_terminal_if_absent", count: 1 }),
                    Mishap::FailAppendAndLedger => {
                        store.inject(Fault::Fail { op: "append_terminal_if_absent", count: 1 });
                        store.inject(Fault::Fail { op: "record_failure", count: 1 });
                    }
                }
                let result = match mishap {
                    Mishap::CrashBeforeAppend => None,
                    _ => Some(record_persisted_terminalization(&store, run.id, "ctrl", target_for(status)).await),
                };
                created.push((run, status, mishap, result));
            }
            recover(&store).await.unwrap();
            for (run, status, mishap, result) in created {
                let events = store.replay(run.id).await.unwrap();
                let terminals: Vec<_> = events.iter().filter_map(|e| e.kind.as_terminal()).collect();
                prop_assert_eq!(terminals.len(), 1, "run {:?} {:?}", status, mishap);
                prop_assert_eq!(terminals[0].name(), expected_kind(status));
                let ledger = store.list_failures(run.id).await.unwrap();
                match (mishap, result) {
                    (Mishap::FailAppend | Mishap::LoseAck, Some(Err(TerminalizationError::AppendFailed { reason, .. }))) => {
                        prop_assert_eq!(ledger.len(), 1);
                        prop_assert_eq!(&ledger[0].reason, &reason);
                    }
                    (Mishap::FailAppendAndLedger, Some(Err(TerminalizationError::AppendAndLedgerFailed { .. }))) => {
                        prop_assert!(ledger.is_empty());
                    }
                    (Mishap::None, Some(Ok(_))) | (Mishap::CrashBeforeAppend, None) => prop_assert!(ledger.is_empty()),
                    (m, r) => prop_assert!(false, "unexpected result for {:?}: {:?}", m, r),
                }
            }
            Ok(())
        })?;
    }
}
