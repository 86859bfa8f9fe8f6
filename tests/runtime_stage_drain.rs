//! Drains that meet a restart or a fan-out: a drain is sticky (no later
//! pause or resume undoes it for a restarted stage), and an interrupted
//! fan-out send delivers each item once to each output.

mod runtime_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::*;
use serde_json::Value;
use tokio::sync::Semaphore;
use troupe::flow::{Backoff, RestartPolicy, Supervision};
use troupe::flow::{ControlEvent, FlowDefinition, RunHandle, StageControl, StageHandle};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::PipeConfig;
use troupe::stage::{Emitter, EventPolicy, OnEvent, Produced, Sink, Source, StageState};
use troupe::supervise::BoxError;

const MINUTE: Duration = Duration::from_secs(60);

/// An endless counter whose `complete` waits on `gate`, then fails the
/// first time.
struct FailsOnceInComplete {
    inner: Counter,
    gate: Arc<Semaphore>,
    failed: Arc<AtomicBool>,
}

impl Source<u64> for FailsOnceInComplete {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.inner.produce(out).await
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        self.gate.acquire().await?.forget();
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err("complete failed once".into());
        }
        Ok(None)
    }
}

/// Always restarted, at once.
fn at_once() -> RestartPolicy {
    RestartPolicy::permanent().backoff(Backoff::NONE)
}

/// An endless `numbers` source that fails once in `complete` (restarted
/// at once) → `tally`, drained through its handle, with the gate its
/// `complete` waits on.
async fn draining_source(name: &str) -> (Runtime, RunHandle, StageHandle, Arc<Semaphore>) {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    let gate = Arc::new(Semaphore::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    runtime
        .register(
            FlowDefinition::<u64>::builder(name)
                .source("numbers", move |_| FailsOnceInComplete {
                    inner: Counter::endless(produced.clone()),
                    gate: g.clone(),
                    failed: failed.clone(),
                })
                .sink("tally", move |_| Tally::new(&consumed))
                .pipeline(["numbers", "tally"])
                .restart("numbers", at_once())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start(name).await.unwrap();
    settle().await;
    let numbers = run.stage("numbers").unwrap();
    numbers.send(StageControl::Drain).await.unwrap();
    settle().await;
    (runtime, run, numbers, gate)
}

/// Lets the drained source's `complete` fail once, then succeed: the run
/// ends only if the restarted source is drained again.
async fn fail_complete_and_end(run: &RunHandle, gate: &Semaphore) {
    gate.add_permits(2);
    let outcome = tokio::time::timeout(MINUTE, run.wait())
        .await
        .expect("the restarted source was not drained: the run never ends")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
}

#[tokio::test(start_paused = true)]
async fn a_drained_source_that_fails_in_complete_is_drained_again() {
    let (_runtime, run, _, gate) = draining_source("drain-restart").await;
    fail_complete_and_end(&run, &gate).await;
}

/// A resume sent to a draining source is a no-op for it (`Ok(Draining)`),
/// and stays one for its restart.
#[tokio::test(start_paused = true)]
async fn a_noop_resume_after_drain_does_not_undrain_a_restarted_source() {
    let (_runtime, run, numbers, gate) = draining_source("drain-resume").await;
    assert_eq!(
        numbers.send(StageControl::Resume).await,
        Ok(StageState::Draining)
    );
    assert_eq!(
        numbers.send(StageControl::Pause).await,
        Ok(StageState::Draining)
    );
    fail_complete_and_end(&run, &gate).await;
}

/// The same through the flow: a flow-wide pause and resume reach every
/// stage, the drained one included, and must not undo its drain.
#[tokio::test(start_paused = true)]
async fn a_flow_pause_and_resume_do_not_undrain_a_restarted_source() {
    let (_runtime, run, _, gate) = draining_source("drain-flow-resume").await;
    run.send(ControlEvent::Pause).await.unwrap();
    settle().await;
    run.send(ControlEvent::Resume).await.unwrap();
    settle().await;
    fail_complete_and_end(&run, &gate).await;
}

/// A source whose items are unique across its restarts (the next number
/// lives outside the logic), a batch per millisecond.
struct Numbers(Arc<AtomicU64>);

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        for _ in 0..out.room() {
            out.push(self.0.fetch_add(1, Ordering::SeqCst));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(Produced::More)
    }
}

type Items = Arc<Mutex<Vec<u64>>>;

/// A sink recording each item; waits for a permit per item if gated; fails
/// on any user event.
struct Record {
    items: Items,
    gate: Option<Arc<Semaphore>>,
}

impl Sink<u64> for Record {
    async fn consume(&mut self, item: u64) -> Result<(), BoxError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await?.forget();
        }
        self.items.lock().unwrap().push(item);
        Ok(())
    }
}

impl OnEvent<()> for Record {
    async fn on_event(&mut self, (): ()) -> Result<(), BoxError> {
        Err("told to fail".into())
    }
}

/// `numbers` fanned out to `slow` (its first output, declared first, so
/// sent to before the last) and `fast` (which fails on any event), over
/// one-item pipes, restarted one-for-all.
async fn fan_out(name: &str, gate: Option<Arc<Semaphore>>) -> (Runtime, RunHandle, Items, Items) {
    let runtime = memory_runtime().await;
    let (slow, fast): (Items, Items) = Default::default();
    let (s, f, next) = (slow.clone(), fast.clone(), counter());
    runtime
        .register(
            FlowDefinition::<u64>::builder(name)
                .source("numbers", move |_| Numbers(next.clone()))
                .sink("slow", move |_| Record {
                    items: s.clone(),
                    gate: gate.clone(),
                })
                .with_events::<()>(EventPolicy::default())
                .sink("fast", move |_| Record {
                    items: f.clone(),
                    gate: None,
                })
                .edge("numbers", "slow")
                .edge("numbers", "fast")
                .pipes(PipeConfig {
                    batch_size: 1,
                    capacity: 1,
                })
                .default_restart(at_once())
                .supervision(Supervision::one_for_all())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start(name).await.unwrap();
    settle().await;
    (runtime, run, slow, fast)
}

/// Each output got every item once, in order, and both got the same.
fn assert_once_each(slow: &Items, fast: &Items) {
    let slow = slow.lock().unwrap().clone();
    let fast = fast.lock().unwrap().clone();
    assert!(
        slow.windows(2).all(|w| w[0] < w[1]),
        "slow got duplicates: {slow:?} (fast got {fast:?})"
    );
    assert_eq!(slow, fast);
}

/// A drain that interrupts a source blocked sending to its first output
/// (full: `slow` waits on its gate) does not send that item there again.
#[tokio::test(start_paused = true)]
async fn a_drain_interrupting_a_fan_out_send_duplicates_nothing() {
    let gate = Arc::new(Semaphore::new(0));
    let (_runtime, run, slow, fast) = fan_out("fan-out-drain", Some(gate.clone())).await;
    run.send(ControlEvent::Drain).await.unwrap();
    settle().await;
    gate.add_permits(1_000);
    let outcome = tokio::time::timeout(MINUTE, run.wait()).await.unwrap();
    assert_eq!(outcome.unwrap().status, RunStatus::Finished);
    assert_once_each(&slow, &fast);
}

/// A one-for-all restart kills the source while it waits on its first
/// output (`slow` is paused): the restarted source resumes the fan-out
/// where it stopped, and nothing is lost or sent twice.
#[tokio::test(start_paused = true)]
async fn a_kill_interrupting_a_fan_out_send_duplicates_nothing() {
    let (_runtime, run, slow, fast) = fan_out("fan-out-kill", None).await;
    let slow_stage = run.stage("slow").unwrap();
    slow_stage.send(StageControl::Pause).await.unwrap();
    settle().await; // the source waits on the full `slow`
    let before = fast.lock().unwrap().len();
    let fail = run.stage_events::<()>("fast").await.unwrap();
    fail.send(()).await.unwrap();
    settle().await; // every stage restarted; `slow` comes back paused
    // The restarted source hands `fast` the item it was fanning out, then
    // blocks on `slow` again.
    assert_eq!(fast.lock().unwrap().len(), before + 1);
    slow_stage.send(StageControl::Resume).await.unwrap();
    settle().await;
    run.send(ControlEvent::Drain).await.unwrap();
    let outcome = tokio::time::timeout(MINUTE, run.wait()).await.unwrap();
    assert_eq!(outcome.unwrap().status, RunStatus::Finished);
    assert_once_each(&slow, &fast);
}
