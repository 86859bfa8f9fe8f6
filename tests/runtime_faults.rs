//! Journal failures under a running flow are never silent: a stage output
//! that cannot be recorded fails the flow with the store's error, and an
//! outcome whose terminal event cannot be appended is published with the
//! error, left in the failure ledger, and repaired by the next start.

mod runtime_support;

use std::sync::Arc;

use runtime_support::*;
use troupe::flow::FlowDefinition;
use troupe::runtime::Runtime;
use troupe::stage::{sink_fn, source_iter};
use troupe::store::{
    EventKind, Fault, FaultyStore, FlowStatus, FlowStore, MemoryStore, SYSTEM_STEP_ID,
    TerminalEvent,
};

fn small() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("small")
        .source("numbers", || source_iter(0..100_u64))
        .sink("discard", || sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .unwrap()
}

async fn faulty_runtime(fault: Fault) -> (Runtime, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::new());
    let faulty = FaultyStore::new(inner.clone());
    faulty.inject(fault);
    let runtime = Runtime::builder()
        .store(Arc::new(faulty))
        .register(small())
        .unwrap()
        .start()
        .await
        .unwrap();
    (runtime, inner)
}

#[tokio::test(start_paused = true)]
async fn a_stage_output_that_cannot_be_recorded_fails_the_flow() {
    let (runtime, store) = faulty_runtime(Fault::Fail {
        op: "record_step_output",
        count: 1,
    })
    .await;
    let run = runtime.start("small").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, FlowStatus::Failed);
    let reason = outcome.reason.unwrap();
    assert!(reason.contains("record_step_output"), "{reason}");
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::FlowFailed { reason })
    );
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_terminal_event_is_reported_then_repaired_at_the_next_start() {
    let (runtime, store) = faulty_runtime(Fault::Fail {
        op: "append_terminal_if_absent",
        count: 1,
    })
    .await;
    let run = runtime.start("small").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, FlowStatus::Finished);
    let reason = outcome.reason.unwrap();
    assert!(
        reason.starts_with("recording the outcome failed: terminal run status persisted but FlowCompleted append failed"),
        "{reason}"
    );
    assert_eq!(store.terminal_event(run.run_id()).await.unwrap(), None);
    let ledger = store.list_failures(run.run_id()).await.unwrap();
    assert!(ledger.iter().any(|f| f.step_id == SYSTEM_STEP_ID));
    runtime.shutdown().await;

    let again = Runtime::builder()
        .store(store.clone())
        .register(small())
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(again.recovery().repaired, [run.run_id()]);
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    let EventKind::Terminal(TerminalEvent::FlowCompleted {
        structured_output: Some(output),
    }) = terminal.kind
    else {
        panic!("repaired with {:?}", terminal.kind);
    };
    assert_eq!(output["steps"]["discard"]["items_in"], 100);
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
    again.shutdown().await;
}
