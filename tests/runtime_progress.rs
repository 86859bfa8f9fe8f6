//! Live progress (`RunHandle::progress`, `RunHandle::watch_progress`): the
//! counters move while a run works and are right at its end — items in
//! and out per stage as the sink saw them, a retried item, a dead letter,
//! a restart, the last checkpoint — across a stage's restart and a run's
//! hibernation, and from a checkpoint after a crash. Paused time throughout.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use runtime_support::*;
use serde_json::{Value, json};
use troupe::checkpoint::Checkpoints;
use troupe::flow::{DeadLetterPolicy, FlowDefinition};
use troupe::progress::{RunProgress, StageProgress, StageStatus};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{
    Emitter, PermanentError, Produced, Source, StageContext, Transform, source_iter, step_fn,
};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;

/// Passes items on, except: item 5 fails its first attempt (retried on
/// the stage), item 7 fails for good (dead-lettered), and the first
/// attempt at item 9 panics (the stage restarts and takes it again).
struct Picky {
    failed: Arc<AtomicBool>,
    panicked: Arc<AtomicBool>,
}

impl Transform<u64> for Picky {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        match x {
            5 if !self.failed.swap(true, Ordering::SeqCst) => {
                return Err("item 5 fails once".into());
            }
            7 => return Err(PermanentError::new("item 7 never passes").into()),
            9 if !self.panicked.swap(true, Ordering::SeqCst) => panic!("item 9, first attempt"),
            _ => {}
        }
        out.push(x);
        Ok(())
    }
}

fn stage<'a>(progress: &'a RunProgress, name: &str) -> &'a StageProgress {
    progress
        .stage(name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

#[tokio::test(start_paused = true)]
async fn counts_are_right_at_the_end_through_a_retry_a_dead_letter_and_a_restart() {
    let seen = Seen::default();
    let s = seen.clone();
    let (failed, panicked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let def = FlowDefinition::<u64>::builder("picky")
        .source("numbers", |_| source_iter(0..100_u64))
        .transform("picky", move |_| Picky {
            failed: failed.clone(),
            panicked: panicked.clone(),
        })
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "picky", "record"])
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()
        .unwrap();
    let runtime = memory_runtime().await;
    runtime.register(def).await.unwrap();
    let run = runtime.start("picky").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");

    let progress = run.progress();
    assert!(progress.ended);
    assert!(!progress.hibernated);
    assert_eq!(progress.last_checkpoint, None, "no source keeps a position");
    let sink_saw = seen.lock().unwrap().len() as u64;
    assert_eq!(sink_saw, 99, "all but the dead letter");

    let numbers = stage(&progress, "numbers");
    assert_eq!(numbers.state, StageStatus::Completed);
    assert_eq!((numbers.items_in, numbers.items_out), (0, 100));
    assert_eq!(numbers.pipe_depth, 0);

    let picky = stage(&progress, "picky");
    assert_eq!(picky.state, StageStatus::Completed);
    assert_eq!((picky.items_in, picky.items_out), (100, sink_saw));
    assert_eq!(picky.pipe_depth, 0);
    // Item 5 once on the stage; item 9 again after the restart.
    assert_eq!(picky.retries, 2, "{picky:?}");
    assert_eq!(picky.dead_letters, 1);
    assert_eq!(picky.restarts, 1);

    let record = stage(&progress, "record");
    assert_eq!((record.items_in, record.items_out), (sink_saw, 0));
    assert_eq!(
        (record.retries, record.dead_letters, record.restarts),
        (0, 0, 0)
    );
    // The counts are the ones the outcome recorded.
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["picky"]["items_in"], 100);
    assert_eq!(steps["record"]["items_in"], sink_saw);
    runtime.shutdown().await;
}

/// Emits `0..end`, `per_call` per call, a millisecond apart; keeps its
/// position for checkpoints.
struct Slow {
    next: u64,
    end: u64,
}

impl Source<u64> for Slow {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        let stop = (self.next + 10).min(self.end);
        while self.next < stop {
            out.push(self.next);
            self.next += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(if self.next == self.end {
            Produced::Done
        } else {
            Produced::More
        })
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!(self.next)))
    }

    fn restore(&mut self, position: Value) -> Result<(), BoxError> {
        self.next = serde_json::from_value(position)?;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn counts_move_while_the_run_works_and_checkpoints_show() {
    let seen = Seen::default();
    let s = seen.clone();
    let def = FlowDefinition::<u64>::builder("slow")
        .source("numbers", |_| Slow {
            next: 0,
            end: 2_000,
        })
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "record"])
        .checkpoints(Checkpoints::every(Duration::from_millis(20)))
        .build()
        .unwrap();
    let runtime = memory_runtime().await;
    runtime.register(def).await.unwrap();
    let run = runtime.start("slow").await.unwrap();

    // Read as a progress bar does: every 100 ms of (paused) time.
    let mut watch = run.watch_progress();
    let mut reads = Vec::new();
    while let Some(progress) = watch.next(Duration::from_millis(100)).await {
        reads.push(progress);
    }
    let taken: Vec<u64> = reads.iter().map(|p| stage(p, "record").items_in).collect();
    assert!(taken.windows(2).all(|w| w[0] <= w[1]), "{taken:?}");
    let moving = taken.iter().filter(|&&n| n > 0 && n < 2_000).count();
    assert!(moving >= 1, "no read while items moved: {taken:?}");
    let last = reads.last().unwrap();
    assert!(last.ended);
    assert_eq!(stage(last, "record").items_in, 2_000);
    assert_eq!(seen.lock().unwrap().len(), 2_000);

    // Checkpoints every 20 ms over ~200 ms of items.
    let committed = last.last_checkpoint.expect("a checkpoint was committed");
    assert!(committed >= 2, "{committed}");
    let passed = stage(last, "record").last_checkpoint.unwrap();
    assert!(passed >= committed, "{passed} < {committed}");
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_step_shows_and_its_counters_survive_hibernation() {
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let def = FlowDefinition::<u64>::builder("approval")
        .step("approve", move |ctx: &StageContext| {
            let (ctx, attempts) = (ctx.clone(), a.clone());
            step_fn(move |_| {
                let (ctx, attempts) = (ctx.clone(), attempts.clone());
                async move {
                    // The first attempt fails: a retry of the step.
                    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err("not yet".into());
                    }
                    Ok(json!(ctx.wait_signal("go", None).await?))
                }
            })
        })
        .build()
        .unwrap();
    let runtime = Runtime::builder()
        .memory()
        .hibernate_after(Duration::ZERO)
        .start()
        .await
        .unwrap();
    runtime.register(def).await.unwrap();
    let run = runtime.start("approval").await.unwrap();

    // Waits for changes only: the step's state, then the run's hibernation.
    let mut watch = run.watch_progress();
    let mut states = Vec::new();
    while !watch.progress().hibernated {
        assert!(watch.changed().await);
        let progress = watch.progress();
        states.push(stage(&progress, "approve").state);
    }
    assert!(states.contains(&StageStatus::Waiting), "{states:?}");
    let asleep = run.progress();
    assert_eq!(stage(&asleep, "approve").state, StageStatus::Waiting);
    assert_eq!(stage(&asleep, "approve").retries, 1);
    assert!(!asleep.ended);

    runtime
        .send_signal(run.run_id(), None, "go", json!("yes"))
        .await
        .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let done = run.progress();
    let approve = stage(&done, "approve");
    assert_eq!(approve.state, StageStatus::Completed);
    // The wake ran the step again: not a restart, and the retry is kept.
    assert_eq!((approve.restarts, approve.retries), (0, 1));
    assert!(done.ended && !done.hibernated);
    assert!(watch.changed().await, "the end is seen once");
    assert!(!watch.changed().await);
    runtime.shutdown().await;
}

/// A runtime over `store` with `flow` registered before it starts (so
/// that it resumes the flow's unfinished runs).
async fn process(store: &Arc<dyn Store>, flow: FlowDefinition<u64>) -> Runtime {
    let builder = Runtime::builder().store(store.clone()).register(flow);
    builder.unwrap().start().await.unwrap()
}

fn slow_flow(seen: &Seen) -> FlowDefinition<u64> {
    let s = seen.clone();
    FlowDefinition::<u64>::builder("slow")
        .source("numbers", |_| Slow {
            next: 0,
            end: 2_000,
        })
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "record"])
        .checkpoints(Checkpoints::every(Duration::from_millis(20)))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_run_resumed_after_a_crash_counts_on_from_its_checkpoint() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Seen::default();
    let first = process(&store, slow_flow(&seen)).await;
    let run_id = first.start("slow").await.unwrap().run_id();
    let cut = loop {
        match store.last_checkpoint(run_id).await.unwrap() {
            Some(c) if c.stages["record"].items_in >= 500 => break c,
            _ => settle().await,
        }
    };
    // A dropped runtime stands in for a crashed process.
    drop(first);
    settle().await;

    let second = process(&store, slow_flow(&seen)).await;
    let resumed = second.resumed().into_iter().find(|r| r.run_id() == run_id);
    let resumed = resumed.expect("the run resumes");
    let at_start = resumed.progress();
    assert!(at_start.last_checkpoint >= Some(cut.id), "{at_start:?}");
    let record = stage(&at_start, "record");
    assert!(
        record.items_in >= cut.stages["record"].items_in,
        "{record:?}"
    );
    assert_eq!(record.restarts, 0, "a process restart is no stage restart");
    assert!(record.last_checkpoint >= Some(cut.id), "{record:?}");

    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let done = resumed.progress();
    // Counted on from the cut, not from zero: each item once.
    assert_eq!(stage(&done, "record").items_in, 2_000);
    assert_eq!(stage(&done, "numbers").items_out, 2_000);
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_shows_its_stages_cancelled() {
    let seen = Seen::default();
    let s = seen.clone();
    let produced = counter();
    let p = produced.clone();
    let def = FlowDefinition::<u64>::builder("endless")
        .source("numbers", move |_| Counter::endless(p.clone()))
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "record"])
        .build()
        .unwrap();
    let runtime = memory_runtime().await;
    runtime.register(def).await.unwrap();
    let run = runtime.start("endless").await.unwrap();
    let mut watch = run.watch_progress();
    while watch
        .progress()
        .stages
        .iter()
        .any(|s| s.items_in + s.items_out == 0)
    {
        watch.next(Duration::from_millis(5)).await;
    }
    let outcome = cancel_and_wait(&run).await;
    assert_eq!(outcome.status, RunStatus::Cancelled);
    let progress = run.progress();
    assert!(progress.ended);
    for stage in &progress.stages {
        assert_eq!(stage.state, StageStatus::Cancelled, "{stage:?}");
    }
    // Items still in the source's outbox at the cancel were not handed on.
    assert!(stage(&progress, "numbers").items_out <= get(&produced));
    let taken = seen.lock().unwrap().len() as u64;
    assert_eq!(stage(&progress, "record").items_in, taken);
    runtime.shutdown().await;
}
