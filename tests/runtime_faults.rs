//! Journal failures under a running flow are never silent: a stage output
//! that cannot be recorded fails the flow with the store's error, and an
//! outcome that cannot be recorded is published as not recorded, with the
//! error, and leaves the run unfinished, so the next start resumes it and
//! records it.

mod runtime_support;

use std::sync::Arc;

use runtime_support::*;
use troupe::flow::{Backoff, RestartPolicy};
use troupe::flow::{ControlEvent, FlowDefinition};
use troupe::records::{EventKind, RunStatus, TerminalEvent};
use troupe::runtime::Runtime;
use troupe::stage::{sink_fn, source_iter};
use troupe::store::{Fault, FaultyStore, MemoryStore, Store};

fn small() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("small")
        .source("numbers", |_| source_iter(0..100_u64))
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
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
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.recorded);
    let reason = outcome.reason.unwrap();
    assert!(reason.contains("record_step_output"), "{reason}");
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunFailed { reason })
    );
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
}

/// A stage failure the ledger cannot hold fails the run instead of living
/// only in a log line.
#[tokio::test(start_paused = true)]
async fn a_stage_failure_that_cannot_be_recorded_fails_the_flow() {
    let inner = Arc::new(MemoryStore::new());
    let faulty = FaultyStore::new(inner.clone());
    faulty.inject(Fault::Fail {
        op: "record_failure",
        count: 1,
    });
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flaky = FlowDefinition::<u64>::builder("flaky")
        .source("numbers", |_| source_iter(0..10_u64))
        .sink("once", move |_| {
            let failed_once = failed_once.clone();
            sink_fn(move |_: u64| {
                if failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    // A panic fails the stage (an error would dead-letter the item).
                    panic!("boom")
                }
            })
        })
        .pipeline(["numbers", "once"])
        .build()
        .unwrap();
    let runtime = Runtime::builder()
        .store(Arc::new(faulty))
        .register(flaky)
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("flaky").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    let reason = outcome.reason.unwrap();
    assert!(
        reason.contains("boom") && reason.contains("could not be recorded"),
        "{reason}"
    );
    assert_eq!(terminal_count(&*inner, run.run_id()).await, 1);
}

/// A cancel whose request cannot be recorded, on a run with no live stage
/// (the only unfinished one waits out a long backoff), still ends the run.
#[tokio::test(start_paused = true)]
async fn a_cancel_whose_request_cannot_be_recorded_still_ends_the_run() {
    let inner = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let hour = std::time::Duration::from_secs(3600);
    let doomed = FlowDefinition::<u64>::builder("doomed")
        .source("numbers", |_| source_iter(0..10_u64))
        .sink("bad", |_| sink_fn(|_: u64| Err("boom".into())))
        .pipeline(["numbers", "bad"])
        .restart(
            "bad",
            RestartPolicy::transient().backoff(Backoff {
                initial: hour,
                max: hour,
                factor: 1.0,
            }),
        )
        .build()
        .unwrap();
    let runtime = Runtime::builder()
        .store(faulty.clone())
        .register(doomed)
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("doomed").await.unwrap();
    settle().await;
    faulty.inject(Fault::Fail {
        op: "append",
        count: 1,
    });
    let _ = run
        .send(ControlEvent::Cancel {
            reason: "stop".into(),
        })
        .await;
    let outcome = tokio::time::timeout(hour / 2, run.wait())
        .await
        .expect("wait() returns")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(terminal_count(&*inner, run.run_id()).await, 1);
}

/// Emits 0..100 once `gate` opens.
struct Gated(Arc<tokio::sync::Semaphore>);

impl troupe::stage::Source<u64> for Gated {
    async fn produce(
        &mut self,
        out: &mut troupe::stage::Emitter<u64>,
    ) -> Result<troupe::stage::Produced, troupe::supervise::BoxError> {
        let _permit = self.0.acquire().await?;
        (0..100).for_each(|i| out.push(i));
        Ok(troupe::stage::Produced::Done)
    }
}

#[tokio::test(start_paused = true)]
async fn an_outcome_that_cannot_be_recorded_is_published_and_recorded_at_the_next_start() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let gated = move || {
        let g = g.clone();
        FlowDefinition::<u64>::builder("gated")
            .source("numbers", move |_| Gated(g.clone()))
            .sink("discard", |_| sink_fn(|_: u64| Ok(())))
            .pipeline(["numbers", "discard"])
            .build()
            .unwrap()
    };
    let store = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    let runtime = Runtime::builder()
        .store(faulty.clone())
        .register(gated())
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("gated").await.unwrap();
    settle().await;
    // Every lifecycle change from here on fails (outputs still record).
    faulty.inject(Fault::Fail {
        op: "atomic",
        count: 1_000,
    });
    gate.add_permits(1);
    // The flow finished, and the outcome says that the journal does not
    // hold it yet: typed, with the error at the end of the reason.
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert!(!outcome.recorded);
    let reason = outcome.reason.unwrap();
    assert!(
        reason.starts_with("recording the outcome failed"),
        "{reason}"
    );
    assert_eq!(store.terminal_event(run.run_id()).await.unwrap(), None);
    assert_eq!(
        store.get_run(run.run_id()).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    drop(runtime);

    // The next start finds it unfinished with every stage recorded: it ends.
    let again = Runtime::builder()
        .store(store.clone())
        .register(gated())
        .unwrap()
        .start()
        .await
        .unwrap();
    let resumed = again.resumed()[0].wait().await.unwrap();
    assert_eq!(resumed.status, RunStatus::Finished);
    assert!(resumed.recorded);
    assert_eq!(
        resumed.structured_output.unwrap()["steps"]["discard"]["items_in"],
        100
    );
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert!(matches!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted { .. })
    ));
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
    again.shutdown().await;
}
