//! Control of one stage: a stage's pause survives its restart, and a cancel
//! or drain reaches a source blocked inside its own `produce` or on a full
//! output.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use runtime_support::*;
use troupe::flow::{Backoff, RestartPolicy, Supervision};
use troupe::flow::{ControlEvent, FlowDefinition, StageControl};
use troupe::records::RunStatus;
use troupe::stage::PipeConfig;
use troupe::stage::{Emitter, EventPolicy, OnEvent, Produced, Source, StageState};
use troupe::supervise::BoxError;

const MINUTE: Duration = Duration::from_secs(60);

/// Counts up, a batch per millisecond; fails once when `fail` is set.
struct Flaky {
    inner: Counter,
    fail: Arc<AtomicBool>,
}

impl Source<u64> for Flaky {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err("the source tripped".into());
        }
        self.inner.produce(out).await
    }
}

/// A source restart that takes the (paused) sink with it (one-for-all)
/// brings the sink back paused: the pause belongs to the stage, not to the
/// actor that failed.
#[tokio::test(start_paused = true)]
async fn a_stage_paused_through_its_handle_comes_back_paused_after_a_restart() {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    let fail = Arc::new(AtomicBool::new(false));
    let (trip, seen) = (fail.clone(), consumed.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("paused-restart")
                .source("numbers", move |_| Flaky {
                    inner: Counter::endless(produced.clone()),
                    fail: trip.clone(),
                })
                .sink("tally", move |_| Tally::new(&seen))
                .pipeline(["numbers", "tally"])
                .restart("numbers", RestartPolicy::permanent().backoff(Backoff::NONE))
                .supervision(Supervision::one_for_all())
                .pipes(PipeConfig {
                    batch_size: 4,
                    capacity: 1024,
                })
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("paused-restart").await.unwrap();
    let tally = run.stage("tally").unwrap();
    settle().await;
    tally.send(StageControl::Pause).await.unwrap();
    settle().await;
    let before = get(&consumed);

    fail.store(true, Ordering::SeqCst);
    settle().await;
    assert!(!fail.load(Ordering::SeqCst), "the source did not fail");
    settle().await;
    assert_eq!(get(&consumed), before, "the restarted sink is not paused");
    assert_eq!(
        tally.send(StageControl::Resume).await,
        Ok(StageState::Paused)
    );
    settle().await;
    assert!(get(&consumed) > before, "the sink did not resume");
    run.send(ControlEvent::Drain).await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
}

/// Emits `first` items, then on the next call emits `then` more and waits
/// forever (a source stuck on the outside world).
struct Stuck {
    first: u64,
    then: u64,
    calls: Arc<AtomicU64>,
}

impl Source<u64> for Stuck {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let (from, count) = if call == 0 {
            (0, self.first)
        } else {
            (self.first, self.then)
        };
        for x in from..from + count {
            out.push(x);
        }
        if call > 0 {
            std::future::pending::<()>().await;
        }
        Ok(Produced::More)
    }
}

async fn stuck_run(
    name: &str,
) -> (
    troupe::runtime::Runtime,
    troupe::flow::RunHandle,
    Arc<AtomicU64>,
) {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let calls = counter();
    let (seen, c) = (consumed.clone(), calls.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder(name)
                .source("stuck", move |_| Stuck {
                    first: 3,
                    then: 2,
                    calls: c.clone(),
                })
                .sink("tally", move |_| Tally::new(&seen))
                .pipeline(["stuck", "tally"])
                // Only the cooperative path can end the run in time.
                .cancel_grace(Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start(name).await.unwrap();
    settle().await;
    assert_eq!(get(&calls), 2, "the source is not stuck in its second call");
    assert_eq!(get(&consumed), 3);
    (runtime, run, consumed)
}

#[tokio::test(start_paused = true)]
async fn cancel_reaches_a_source_blocked_in_produce() {
    let (_runtime, run, _) = stuck_run("stuck-cancel").await;
    run.send(ControlEvent::Cancel {
        reason: "stuck".into(),
    })
    .await
    .unwrap();
    let outcome = tokio::time::timeout(MINUTE, run.wait())
        .await
        .expect("the cancel waited for produce (or the grace kill)")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn drain_reaches_a_source_blocked_in_produce_and_keeps_what_it_emitted() {
    let (_runtime, run, consumed) = stuck_run("stuck-drain").await;
    run.stage("stuck")
        .unwrap()
        .send(StageControl::Drain)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(MINUTE, run.wait())
        .await
        .expect("the drain waited for produce")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    // The 2 items the interrupted call emitted before it blocked are sent.
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["stuck"]["items_out"], 5);
    assert_eq!(get(&consumed), 5);
}

/// A pause waits for a pending `produce` to return; the stage is paused after it.
#[tokio::test(start_paused = true)]
async fn pause_takes_effect_once_produce_returns() {
    let (_runtime, run, consumed) = stuck_run("stuck-pause").await;
    let stuck = run.stage("stuck").unwrap();
    assert_eq!(
        stuck.send(StageControl::Pause).await,
        Ok(StageState::Running)
    );
    settle().await;
    // Still inside produce: the pause is queued, not taken.
    assert_eq!(
        stuck.send(StageControl::Resume).await,
        Ok(StageState::Running)
    );
    assert_eq!(get(&consumed), 3);
    run.send(ControlEvent::Cancel {
        reason: "done".into(),
    })
    .await
    .unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);
}

/// A source blocked on a full output (its sink is paused) takes a drain at
/// once; the items it holds are still delivered once the sink resumes.
#[tokio::test(start_paused = true)]
async fn drain_reaches_a_source_blocked_on_backpressure() {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    let run = tight_pipeline(&runtime, "backpressure", &produced, &consumed).await;
    settle().await;
    let (numbers, tally) = (run.stage("numbers").unwrap(), run.stage("tally").unwrap());
    tally.send(StageControl::Pause).await.unwrap();
    settle().await;
    numbers.send(StageControl::Drain).await.unwrap();
    settle().await;
    // Resume is a no-op for a draining stage; its answer tells the state.
    assert_eq!(
        numbers.send(StageControl::Resume).await,
        Ok(StageState::Draining),
        "the drain waited for the full output"
    );
    tally.send(StageControl::Resume).await.unwrap();
    let outcome = tokio::time::timeout(MINUTE, run.wait())
        .await
        .expect("the run completes")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(get(&consumed), get(&produced));
}

/// An endless counter that fails on any user event.
struct FailsOnEvent(Counter);

impl Source<u64> for FailsOnEvent {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.0.produce(out).await
    }
}

impl OnEvent<()> for FailsOnEvent {
    async fn on_event(&mut self, (): ()) -> Result<(), BoxError> {
        Err("told to fail".into())
    }
}

/// A paused source that fails (on an event it takes while paused) comes
/// back paused before any work: its restart produces nothing.
#[tokio::test(start_paused = true)]
async fn a_restarted_paused_source_does_no_work_before_its_pause() {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    let p = produced.clone();
    runtime
        .register(
            FlowDefinition::<u64>::builder("paused-source")
                .with_events::<()>(EventPolicy::default())
                .source("numbers", move |_| {
                    FailsOnEvent(Counter::endless(p.clone()))
                })
                .sink("tally", move |_| Tally::new(&consumed))
                .pipeline(["numbers", "tally"])
                .restart("numbers", RestartPolicy::permanent().backoff(Backoff::NONE))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("paused-source").await.unwrap();
    settle().await;
    let numbers = run.stage("numbers").unwrap();
    numbers.send(StageControl::Pause).await.unwrap();
    settle().await;
    let before = get(&produced);
    let events = run.stage_events::<()>("numbers").await.unwrap();
    events.send(()).await.unwrap();
    settle().await;
    assert_eq!(
        get(&produced),
        before,
        "the restarted source worked before its pause"
    );
    assert_eq!(
        numbers.send(StageControl::Resume).await,
        Ok(StageState::Paused)
    );
    run.send(ControlEvent::Drain).await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
}

/// A source blocked on a full output (its sink is paused) takes a cancel
/// at once, long before the cancel grace.
#[tokio::test(start_paused = true)]
async fn cancel_reaches_a_source_blocked_on_backpressure() {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    let run = blocked_pipeline(&runtime, "backpressure-cancel", &produced, &consumed).await;
    let before = get(&produced);
    settle().await;
    assert_eq!(get(&produced), before, "the source is not blocked");
    run.send(ControlEvent::Cancel {
        reason: "blocked".into(),
    })
    .await
    .unwrap();
    // Well within the default cancel grace (5 s).
    let outcome = tokio::time::timeout(Duration::from_secs(1), run.wait())
        .await
        .expect("the cancel waited for the full output")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
}

/// A source whose `on_event` never returns.
struct EndlessOnEvent(Counter);

impl Source<u64> for EndlessOnEvent {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.0.produce(out).await
    }
}

impl OnEvent<()> for EndlessOnEvent {
    async fn on_event(&mut self, (): ()) -> Result<(), BoxError> {
        std::future::pending().await
    }
}

/// A cancel does not interrupt `on_event`: a stage stuck in one is killed
/// once the cancel grace is over, and the run ends cancelled.
#[tokio::test(start_paused = true)]
async fn a_stage_stuck_in_on_event_is_killed_after_the_cancel_grace() {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    runtime
        .register(
            FlowDefinition::<u64>::builder("stuck-event")
                .with_events::<()>(EventPolicy::default())
                .source("numbers", move |_| {
                    EndlessOnEvent(Counter::endless(produced.clone()))
                })
                .sink("tally", move |_| Tally::new(&consumed))
                .pipeline(["numbers", "tally"])
                .cancel_grace(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("stuck-event").await.unwrap();
    settle().await;
    let events = run.stage_events::<()>("numbers").await.unwrap();
    events.send(()).await.unwrap();
    settle().await;
    run.send(ControlEvent::Cancel {
        reason: "stuck".into(),
    })
    .await
    .unwrap();
    let early = tokio::time::timeout(Duration::from_secs(29), run.wait()).await;
    assert!(early.is_err(), "on_event was interrupted: {early:?}");
    let outcome = tokio::time::timeout(MINUTE, run.wait())
        .await
        .expect("the grace kill did not end the run")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
}
