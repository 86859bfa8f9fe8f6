//! Recovery at start: unfinished runs of registered flows resume (stages
//! whose completion is recorded do not run again), a recorded cancel
//! request is carried out, runs of unregistered flows are reported and left
//! alone. A dropped runtime stands in for a crashed process; the store
//! outlives it as a file would.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use runtime_support::*;
use troupe::flow::FlowDefinition;
use troupe::records::{Run, RunStatus, StoreError};
use troupe::runtime::{ResumeError, Runtime};
use troupe::stage::source_iter;
use troupe::store::{MemoryStore, Store};

/// Two independent branches: `quick` ends at once, `slow` never (unless `finite`).
fn branches(finite: &Arc<AtomicBool>, quick_starts: &Arc<AtomicU64>) -> FlowDefinition<u64> {
    let (finite, quick_starts) = (finite.clone(), quick_starts.clone());
    let (quick_count, slow_count, produced) = (counter(), counter(), counter());
    FlowDefinition::<u64>::builder("branches")
        .source("quick", move |_| {
            quick_starts.fetch_add(1, Ordering::SeqCst);
            source_iter(0..10_u64)
        })
        .sink("quick-sink", move |_| Tally::new(&quick_count))
        .source("slow", move |_| Counter {
            limit: finite.load(Ordering::SeqCst).then_some(50),
            ..Counter::endless(produced.clone())
        })
        .sink("slow-sink", move |_| Tally::new(&slow_count))
        .edge("quick", "quick-sink")
        .edge("slow", "slow-sink")
        .build()
        .unwrap()
}

/// A runtime over `store` with the flow registered before start, as a
/// process that resumes runs would do.
async fn process(
    store: &Arc<dyn Store>,
    finite: &Arc<AtomicBool>,
    quick_starts: &Arc<AtomicU64>,
) -> Runtime {
    Runtime::builder()
        .store(store.clone())
        .register(branches(finite, quick_starts))
        .unwrap()
        .start()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn unfinished_runs_resume_without_rerunning_completed_stages() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let finite = Arc::new(AtomicBool::new(false));
    let quick_starts = Arc::new(AtomicU64::new(0));

    // First process: the quick branch completes, the slow one is cut short.
    let first = process(&store, &finite, &quick_starts).await;
    let run = first.start("branches").await.unwrap();
    settle().await;
    let recorded: Vec<_> = store.list_step_outputs(run.run_id()).await.unwrap();
    let mut names: Vec<_> = recorded.iter().map(|o| o.step_id.as_str()).collect();
    names.sort();
    assert_eq!(names, ["quick", "quick-sink"]);
    // A run of a flow the next process does not know, and one whose cancel
    // was recorded just before the crash.
    let orphan = Run::new("retired-flow", "old work", "tests");
    store.insert_run(orphan.clone(), None).await.unwrap();
    let mut doomed = Run::new("branches", "cancelled work", "tests");
    doomed.status = RunStatus::Running;
    doomed.cancel_requested = true;
    store.insert_run(doomed.clone(), None).await.unwrap();
    drop(first);
    settle().await;
    assert_eq!(
        store.get_run(run.run_id()).await.unwrap().unwrap().status,
        RunStatus::Running
    );

    // Second process: same flows, the slow source now ends.
    finite.store(true, Ordering::SeqCst);
    let second = process(&store, &finite, &quick_starts).await;
    assert_eq!(second.recovery().unfinished.len(), 3);
    assert_eq!(second.unresumed(), std::slice::from_ref(&orphan));
    let resumed = second.resumed();
    assert_eq!(resumed.len(), 2);
    let again = resumed.iter().find(|h| h.run_id() == run.run_id()).unwrap();
    let outcome = again.wait().await.unwrap();

    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(
        quick_starts.load(Ordering::SeqCst),
        1,
        "a completed stage ran again"
    );
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["quick-sink"]["items_in"], 10); // from the journal
    assert_eq!(steps["slow-sink"]["items_in"], 50); // run again after the restart
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
    let events = event_names(&*store, run.run_id()).await;
    assert_eq!(
        events,
        [
            "created",
            "started",
            "recovered",
            "finished",
            "RunCompleted"
        ]
    );

    let cancelled = resumed.iter().find(|h| h.run_id() == doomed.id).unwrap();
    let cancelled = cancelled.wait().await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(
        cancelled.reason.as_deref(),
        Some("cancel requested before a restart")
    );
    assert_eq!(terminal_count(&*store, doomed.id).await, 1);
    assert!(store.list_step_outputs(doomed.id).await.unwrap().is_empty());

    let untouched = store.get_run(orphan.id).await.unwrap().unwrap();
    assert_eq!(
        (untouched.status, untouched.revision),
        (RunStatus::Created, 0)
    );
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_run_resumes_paused_and_a_fully_completed_run_just_ends() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let finite = Arc::new(AtomicBool::new(true));
    let quick_starts = Arc::new(AtomicU64::new(0));
    let mut waiting = Run::new("branches", "paused before the crash", "tests");
    waiting.status = RunStatus::Waiting;
    store.insert_run(waiting.clone(), None).await.unwrap();
    let mut done = Run::new("branches", "crashed before its outcome", "tests");
    done.status = RunStatus::Running;
    store.insert_run(done.clone(), None).await.unwrap();
    for stage in ["quick", "quick-sink", "slow", "slow-sink"] {
        let output = troupe::records::StepOutput {
            run_id: done.id,
            step_id: stage.into(),
            loop_id: None,
            iteration: None,
            output: serde_json::json!({ "from": "before the crash" }),
            at: chrono::Utc::now(),
        };
        store.record_step_output(output).await.unwrap();
    }

    let runtime = process(&store, &finite, &quick_starts).await;
    let handle = |id| {
        runtime
            .resumed()
            .iter()
            .find(|h| h.run_id() == id)
            .unwrap()
            .clone()
    };
    let (paused, finished) = (handle(waiting.id), handle(done.id));

    let outcome = finished.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["slow-sink"]["from"], "before the crash");
    assert_eq!(
        quick_starts.load(Ordering::SeqCst),
        1,
        "only the paused run starts `quick`"
    );

    settle().await;
    assert_eq!(paused.state(), troupe::flow::RunState::Waiting);
    assert_eq!(
        store.get_run(waiting.id).await.unwrap().unwrap().status,
        RunStatus::Waiting
    );
    paused
        .send(troupe::flow::ControlEvent::Resume)
        .await
        .unwrap();
    assert_eq!(paused.wait().await.unwrap().status, RunStatus::Finished);
    runtime.shutdown().await;
}

/// The source completed (and was recorded) but the sink had not consumed
/// its items when the process died: at resume the source runs again, so
/// no item is lost (at-least-once), and the run finishes once.
#[tokio::test(start_paused = true)]
async fn a_completed_source_with_an_unfinished_consumer_runs_again() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (source_starts, first_consumed, second_consumed) = (counter(), counter(), counter());
    let define = |gate: Option<Arc<tokio::sync::Semaphore>>, consumed: &Arc<AtomicU64>| {
        let (starts, consumed) = (source_starts.clone(), consumed.clone());
        FlowDefinition::<u64>::builder("gated")
            .source("numbers", move |_| {
                starts.fetch_add(1, Ordering::SeqCst);
                source_iter(0..100_u64)
            })
            .sink("tally", move |_| Tally {
                count: consumed.clone(),
                sum: counter(),
                gate: gate.clone(),
            })
            .pipeline(["numbers", "tally"])
            .pipes(troupe::stage::PipeConfig {
                batch_size: 10,
                capacity: 20,
            })
            .build()
            .unwrap()
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(5));
    let first = Runtime::builder()
        .store(store.clone())
        .register(define(Some(gate), &first_consumed))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("gated").await.unwrap();
    settle().await;
    let recorded: Vec<_> = store.list_step_outputs(run.run_id()).await.unwrap();
    assert_eq!(recorded.len(), 1, "only the source completed: {recorded:?}");
    drop(first);
    settle().await;

    let second = Runtime::builder()
        .store(store.clone())
        .register(define(None, &second_consumed))
        .unwrap()
        .start()
        .await
        .unwrap();
    let outcome = second.resumed()[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(source_starts.load(Ordering::SeqCst), 2);
    assert_eq!(get(&first_consumed), 5);
    assert_eq!(get(&second_consumed), 100, "items lost at the resume");
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
}

/// A run whose flow is registered only after `start` is listed as
/// unresumed until then, and registering the flow resumes it; registering
/// another flow touches nothing.
#[tokio::test(start_paused = true)]
async fn registering_a_flow_after_start_resumes_its_runs() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let consumed = counter();
    let define = |gate: Option<Arc<tokio::sync::Semaphore>>| {
        let consumed = consumed.clone();
        FlowDefinition::<u64>::builder("gated")
            .source("numbers", |_| source_iter(0..100_u64))
            .sink("tally", move |_| Tally {
                count: consumed.clone(),
                sum: counter(),
                gate: gate.clone(),
            })
            .pipeline(["numbers", "tally"])
            .build()
            .unwrap()
    };
    let first = Runtime::builder()
        .store(store.clone())
        .register(define(Some(Arc::new(tokio::sync::Semaphore::new(5)))))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("gated").await.unwrap();
    settle().await;
    drop(first);
    settle().await;

    let second = Runtime::builder()
        .store(store.clone())
        .start()
        .await
        .unwrap();
    assert!(second.resumed().is_empty());
    let waiting: Vec<_> = second.unresumed().iter().map(|r| r.id).collect();
    assert_eq!(waiting, [run.run_id()]);
    let other = FlowDefinition::<u64>::builder("other")
        .source("numbers", |_| source_iter(0..1_u64))
        .sink("discard", |_| troupe::stage::sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .unwrap();
    let report = second.register(other).await.unwrap();
    assert!(report.resumed.is_empty() && report.failures.is_empty());
    assert_eq!(
        second.unresumed().len(),
        1,
        "still waiting for its own flow"
    );

    let report = second.register(define(None)).await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.resumed.len(), 1);
    assert_eq!(report.resumed[0].run_id(), run.run_id());
    assert!(second.unresumed().is_empty());
    let outcome = report.resumed[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(terminal_count(&*store, run.run_id()).await, 1);
    second.shutdown().await;
}

/// A store whose recorded outputs of one run cannot be read, as if a row
/// of it were corrupt.
struct OneUnreadable {
    inner: Arc<dyn Store>,
    bad: uuid::Uuid,
}

troupe::store_wrapper! {
    OneUnreadable, reads: inner;
    async fn apply_batch(&self, ops: Vec<troupe::records::WriteOp>) -> troupe::store::BatchResult {
        self.inner.apply_batch(ops).await
    }

    async fn list_step_outputs_for(
        &self,
        run_ids: &[uuid::Uuid],
    ) -> Result<Vec<troupe::records::StepOutput>, troupe::records::StoreError> {
        if run_ids.contains(&self.bad) {
            return Err(troupe::records::StoreError::Injected {
                op: "list_step_outputs_for",
            });
        }
        self.inner.list_step_outputs_for(run_ids).await
    }
}

/// One run whose recorded outputs cannot be read does not stop the
/// runtime: it is reported (and left as it is), the others resume.
#[tokio::test(start_paused = true)]
async fn an_unreadable_run_is_reported_and_the_others_resume() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut runs = Vec::new();
    for goal in ["unreadable", "fine"] {
        let mut run = Run::new("branches", goal, "tests");
        run.status = RunStatus::Running;
        store.insert_run(run.clone(), None).await.unwrap();
        runs.push(run);
    }
    let [bad, fine] = [&runs[0], &runs[1]];
    let wrapped: Arc<dyn Store> = Arc::new(OneUnreadable {
        inner: store.clone(),
        bad: bad.id,
    });
    let finite = Arc::new(AtomicBool::new(true));
    let runtime = process(&wrapped, &finite, &counter()).await;

    let failures = runtime.resume_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].run, *bad);
    assert!(
        matches!(
            failures[0].error,
            ResumeError::OutputsUnreadable(troupe::records::StoreError::Injected { .. })
        ),
        "{:?}",
        failures[0].error
    );
    let resumed: Vec<_> = runtime.resumed().iter().map(|h| h.run_id()).collect();
    assert_eq!(resumed, [fine.id]);
    let outcome = runtime.resumed()[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    runtime.shutdown().await;
    let untouched = store.get_run(bad.id).await.unwrap().unwrap();
    assert_eq!(
        (untouched.status, untouched.revision),
        (bad.status, bad.revision)
    );
}

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

fn small() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("small")
        .source("numbers", |_| source_iter(0..10_u64))
        .sink("discard", |_| troupe::stage::sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .unwrap()
}

/// One damaged run row (an unknown status code, unreadable state JSON, an
/// id that is not a uuid) no longer fails the start of every run, nor is
/// it skipped silently: it is reported with its row and error (and in the
/// failure ledger when its id can be read), and every other run resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_run_rows_are_reported_and_the_others_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let runs: Vec<Run> = (0..5)
        .map(|i| Run::new("small", format!("run {i}"), "tests"))
        .collect();
    {
        let store = troupe::store::SqliteStore::open(&path).await.unwrap();
        for run in &runs {
            store.insert_run(run.clone(), None).await.unwrap();
        }
    }
    // rids 1..=5 in insertion order: damage the 2nd, 3rd and 4th.
    raw_sqlite::run_sql(
        &path,
        "UPDATE runs SET status = 42 WHERE rid = 2; \
         UPDATE runs SET state_json = X'7B7B' WHERE rid = 3; \
         UPDATE runs SET id = X'0102' WHERE rid = 4;",
    );
    let runtime = Runtime::builder()
        .sqlite(&path)
        .register(small())
        .unwrap()
        .start()
        .await
        .expect("a damaged run must not fail the start");
    let resumed: Vec<_> = runtime.resumed().iter().map(|h| h.run_id()).collect();
    assert_eq!(resumed, [runs[0].id, runs[4].id]);
    for handle in runtime.resumed() {
        assert_eq!(handle.wait().await.unwrap().status, RunStatus::Finished);
    }
    let damaged: Vec<_> = runtime
        .damaged_runs()
        .iter()
        .map(|d| (d.row.table, d.row.rowid, d.row.run_id))
        .collect();
    assert_eq!(
        damaged,
        [
            ("runs", 2, Some(runs[1].id)),
            ("runs", 3, Some(runs[2].id)),
            ("runs", 4, None),
        ]
    );
    let errors = runtime.damaged_runs();
    assert!(
        matches!(&errors[0].error, StoreError::CorruptRow { column: "status", value, .. } if value == "42"),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(
            &errors[1].error,
            StoreError::CorruptPayload {
                column: "state_json",
                ..
            }
        ),
        "{:?}",
        errors[1]
    );
    assert!(
        matches!(
            &errors[2].error,
            StoreError::CorruptRow { column: "id", .. }
        ),
        "{:?}",
        errors[2]
    );
    // The two whose id reads are in their failure ledgers, once per damage.
    for run in [&runs[1], &runs[2]] {
        let ledger = runtime.journal().list_failures(run.id).await.unwrap();
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        assert_eq!(ledger[0].step_id, troupe::records::SYSTEM_STEP_ID);
    }
    runtime.shutdown().await;
    let again = Runtime::builder()
        .sqlite(&path)
        .register(small())
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(again.damaged_runs().len(), 3);
    assert!(again.resumed().is_empty());
    let ledger = again.journal().list_failures(runs[1].id).await.unwrap();
    assert_eq!(
        ledger.len(),
        1,
        "a second scan adds no duplicate: {ledger:?}"
    );
    again.shutdown().await;
}
