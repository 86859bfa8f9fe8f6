//! When a stage takes its user events around its work and its end: one per
//! unit of work, every accepted one before it completes (whatever its
//! policy), and never one that keeps a drain from finishing.

mod runtime_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::*;
use serde_json::Value;
use tokio::sync::Semaphore;
use troupe::flow::{ControlEvent, FlowDefinition, HandleError, RunHandle, StageControl};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::StageContext;
use troupe::stage::{
    Durable, Emitter, EventPolicy, OnEvent, Produced, Source, Transform, source_iter,
};
use troupe::store::Store;
use troupe::supervise::{BoxError, ExternalEventMode};

const MINUTE: Duration = Duration::from_secs(60);

/// What a stage did, in order.
type Log = Arc<Mutex<Vec<&'static str>>>;

fn log(l: &Log) -> Vec<&'static str> {
    l.lock().unwrap().clone()
}

/// An endless counter whose `complete` waits on `gate`; logs its events
/// and its completion.
struct GatedComplete {
    inner: Counter,
    gate: Arc<Semaphore>,
    log: Log,
}

impl Source<u64> for GatedComplete {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.inner.produce(out).await
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        self.log.lock().unwrap().push("complete");
        self.gate.acquire().await?.forget();
        Ok(None)
    }
}

impl OnEvent<&'static str> for GatedComplete {
    async fn on_event(&mut self, event: &'static str) -> Result<(), BoxError> {
        self.log.lock().unwrap().push(event);
        Ok(())
    }
}

/// A transform logging each item, each event and its completion.
struct Logged(Log);

impl Transform<u64> for Logged {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        self.0.lock().unwrap().push("item");
        out.push(x);
        Ok(())
    }

    async fn complete(&mut self, _: &mut Emitter<u64>) -> Result<Option<Value>, BoxError> {
        self.0.lock().unwrap().push("complete");
        Ok(None)
    }
}

impl OnEvent<&'static str> for Logged {
    async fn on_event(&mut self, event: &'static str) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(event);
        Ok(())
    }
}

/// Starts `source → relay (Logged, taking events per `policy`) → tally`.
async fn relay_run<S: Source<u64>>(
    name: &str,
    policy: EventPolicy,
    source: impl Fn(&StageContext) -> S + Send + Sync + 'static,
) -> (Runtime, RunHandle, Log) {
    let runtime = memory_runtime().await;
    let relay_log = Log::default();
    let l = relay_log.clone();
    let relay = move |_: &StageContext| Logged(l.clone());
    let (run, _) = relay_flow::<&'static str, _, _>(&runtime, name, policy, source, relay).await;
    (runtime, run, relay_log)
}

async fn finished(run: &RunHandle) {
    let outcome = tokio::time::timeout(MINUTE, run.wait())
        .await
        .expect("the run never ends")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
}

/// Starts `numbers` (taking `Ev` events per `policy`) → a tally counting
/// into `consumed`, on a fresh memory runtime.
async fn source_to_tally<Ev, S>(
    name: &str,
    policy: EventPolicy,
    source: impl Fn(&StageContext) -> S + Send + Sync + 'static,
    consumed: &Arc<AtomicU64>,
) -> (Runtime, RunHandle)
where
    Ev: Send + 'static,
    S: Source<u64> + OnEvent<Ev>,
{
    let runtime = memory_runtime().await;
    let consumed = consumed.clone();
    runtime
        .register(
            FlowDefinition::<u64>::builder(name)
                .with_events::<Ev>(policy)
                .source("numbers", source)
                .sink("tally", move |_| Tally::new(&consumed))
                .pipeline(["numbers", "tally"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start(name).await.unwrap();
    settle().await;
    (runtime, run)
}

/// Starts an endless `numbers` source taking events per `policy`, whose
/// `complete` waits on the returned gate (with `permits`) → a tally.
async fn gated_source_run(
    name: &str,
    policy: EventPolicy,
    permits: usize,
) -> (Runtime, RunHandle, Arc<Semaphore>, Log) {
    let produced = counter();
    let (gate, source_log) = (Arc::new(Semaphore::new(permits)), Log::default());
    let (g, l) = (gate.clone(), source_log.clone());
    let source = move |_: &StageContext| GatedComplete {
        inner: Counter::endless(produced.clone()),
        gate: g.clone(),
        log: l.clone(),
    };
    let (runtime, run) = source_to_tally::<&'static str, _>(name, policy, source, &counter()).await;
    (runtime, run, gate, source_log)
}

/// An event sent (and accepted) while the stage runs its completion hook
/// is handed to it before its outputs close; once it has, sends fail.
#[tokio::test(start_paused = true)]
async fn an_event_accepted_during_completion_is_handled() {
    let (_runtime, run, gate, source_log) =
        gated_source_run("late-event", EventPolicy::default(), 0).await;
    let events = run.stage_events::<&'static str>("numbers").await.unwrap();
    run.stage("numbers")
        .unwrap()
        .send(StageControl::Drain)
        .await
        .unwrap();
    settle().await;
    assert_eq!(log(&source_log), ["complete"], "not inside `complete`");
    assert_eq!(events.send("late").await, Ok(()));
    gate.add_permits(1);
    finished(&run).await;
    assert_eq!(log(&source_log), ["complete", "late"]);
    assert!(matches!(
        events.send("too late").await,
        Err(HandleError::StageNotRunning { .. } | HandleError::Finished { .. })
    ));
}

/// A finite source that fails on every user event and whose `complete`
/// waits on a gate.
struct FailsOnEvents {
    inner: Counter,
    gate: Arc<Semaphore>,
    completes: Arc<AtomicU64>,
}

impl Source<u64> for FailsOnEvents {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.inner.produce(out).await
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        self.completes.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await?.forget();
        Ok(None)
    }
}

impl OnEvent<()> for FailsOnEvents {
    async fn on_event(&mut self, (): ()) -> Result<(), BoxError> {
        Err("event handling failed".into())
    }
}

/// An event accepted during the completion hook is handled before the
/// outputs close: if it fails, the stage restarts with its outputs open and
/// runs again into them, instead of into closed outputs (where every item
/// of the re-run would vanish).
#[tokio::test(start_paused = true)]
async fn an_event_failing_after_the_completion_hook_fails_the_stage_before_its_outputs_close() {
    let (produced, consumed, completes) = (counter(), counter(), counter());
    let gate = Arc::new(Semaphore::new(0));
    let (p, g, c) = (produced.clone(), gate.clone(), completes.clone());
    let source = move |_: &StageContext| FailsOnEvents {
        inner: Counter {
            limit: Some(8),
            ..Counter::endless(p.clone())
        },
        gate: g.clone(),
        completes: c.clone(),
    };
    let (_runtime, run) =
        source_to_tally::<(), _>("fail-late", EventPolicy::default(), source, &consumed).await;
    assert_eq!(get(&completes), 1, "not inside `complete`");
    let events = run.stage_events::<()>("numbers").await.unwrap();
    assert_eq!(events.send(()).await, Ok(()));
    gate.add_permits(10);
    finished(&run).await;
    assert_eq!(
        get(&completes),
        2,
        "the failed hand-over restarted the source"
    );
    assert_eq!(get(&produced), 16);
    assert_eq!(get(&consumed), 16, "items of the re-run were lost");
}

/// A finite source gated by `Block`: one event per item.
struct OneEach {
    next: u64,
    limit: u64,
    produced: Arc<AtomicU64>,
    completes: Arc<AtomicU64>,
}

impl Source<u64> for OneEach {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.next >= self.limit {
            return Ok(Produced::Done);
        }
        out.push(self.next);
        self.next += 1;
        self.produced.fetch_add(1, Ordering::SeqCst);
        Ok(Produced::More)
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        if self.completes.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("first completion fails".into());
        }
        Ok(None)
    }
}

impl OnEvent<()> for OneEach {
    async fn on_event(&mut self, (): ()) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A stage whose completion hook fails restarts with its event queue open:
/// `Block` still gates it, and sends still reach it.
#[tokio::test(start_paused = true)]
async fn a_block_gated_source_restarted_after_its_completion_hook_stays_gated() {
    let (produced, consumed, completes) = (counter(), counter(), counter());
    let (p, c) = (produced.clone(), completes.clone());
    let source = move |_: &StageContext| OneEach {
        next: 0,
        limit: 3,
        produced: p.clone(),
        completes: c.clone(),
    };
    let policy = EventPolicy::default().running(ExternalEventMode::Block);
    let (_runtime, run) = source_to_tally::<(), _>("gated", policy, source, &consumed).await;
    assert_eq!(get(&produced), 0, "Block gates the first produce");
    let events = run.stage_events::<()>("numbers").await.unwrap();
    for _ in 0..4 {
        // three items, then the call that says Done
        events.send(()).await.unwrap();
        settle().await;
    }
    assert_eq!(get(&produced), 3);
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    let sent = events.send(()).await;
    assert_eq!(
        (get(&completes), get(&produced), &sent),
        (1, 3, &Ok(())),
        "the restarted source ran ungated: sent {sent:?}"
    );
}

/// The doorbell keeps one ring for several sends; `Poll` rings it again
/// while events remain, so a stage with no input coming takes them all.
#[tokio::test(start_paused = true)]
async fn poll_hands_over_every_queued_event_to_an_idle_transform() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let (_runtime, run, relay_log) = relay_run("poll-idle", EventPolicy::default(), move |_| {
        OnePerPermit(g.clone())
    })
    .await;
    settle().await;
    let events = run.stage_events::<&'static str>("relay").await.unwrap();
    for event in ["a", "b", "c"] {
        events.send(event).await.unwrap();
    }
    settle().await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(log(&relay_log), ["a", "b", "c"]);
}

/// A source emitting an item per permit of its semaphore.
struct OnePerPermit(Arc<Semaphore>);

impl Source<u64> for OnePerPermit {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.0.acquire().await?.forget();
        out.push(1);
        Ok(Produced::More)
    }
}

/// `Ignore` keeps events queued until a state that takes them; for a
/// stage that never takes them in its states, that is right before its
/// completion hook: none is dropped.
#[tokio::test(start_paused = true)]
async fn ignored_events_are_handed_over_before_the_completion_hook() {
    let policy = EventPolicy::default()
        .running(ExternalEventMode::Ignore)
        .draining(ExternalEventMode::Ignore);
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let (_runtime, run, relay_log) =
        relay_run("ignored", policy, move |_| OnePerPermit(g.clone())).await;
    settle().await;
    let events = run.stage_events::<&'static str>("relay").await.unwrap();
    events.send("a").await.unwrap();
    events.send("b").await.unwrap();
    gate.add_permits(3);
    settle().await;
    assert_eq!(log(&relay_log), ["item", "item", "item"]);
    run.send(ControlEvent::Drain).await.unwrap();
    finished(&run).await;
    assert_eq!(log(&relay_log)[3..], ["a", "b", "complete"]);
}

/// `Poll` takes one queued event per unit of work: a backlog of events
/// does not hold the work up.
#[tokio::test(start_paused = true)]
async fn poll_takes_one_event_per_unit_of_work() {
    let policy = EventPolicy::default().paused(ExternalEventMode::Ignore);
    let produced = counter();
    let (_runtime, run, relay_log) =
        relay_run("poll", policy, move |_| Counter::endless(produced.clone())).await;
    settle().await;
    let relay = run.stage("relay").unwrap();
    relay.send(StageControl::Pause).await.unwrap();
    settle().await; // input piles up
    let events = run.stage_events::<&'static str>("relay").await.unwrap();
    for _ in 0..3 {
        events.send("event").await.unwrap();
    }
    relay_log.lock().unwrap().clear();
    relay.send(StageControl::Resume).await.unwrap();
    settle().await;
    // A unit of work is a batch of 4 items.
    let head: Vec<_> = log(&relay_log).into_iter().take(11).collect();
    let batch = ["item"; 4];
    let expected: Vec<_> = [&["event"][..], &batch, &["event"], &batch, &["event"]].concat();
    assert_eq!(head, expected);
    run.send(ControlEvent::Cancel {
        reason: "over".into(),
    })
    .await
    .unwrap();
}

/// A drained source whose policy blocks while draining does not wait for
/// an event to complete: a drain always finishes.
#[tokio::test(start_paused = true)]
async fn block_while_draining_does_not_hold_a_drain_up() {
    let policy = EventPolicy::default().draining(ExternalEventMode::Block);
    let (_runtime, run, _gate, source_log) = gated_source_run("drain-block", policy, 1).await;
    run.send(ControlEvent::Drain).await.unwrap();
    finished(&run).await;
    assert_eq!(log(&source_log), ["complete"]);
}

/// A transform that blocks on events while running completes once its
/// input ends, without an event: completing is not a unit of work.
#[tokio::test(start_paused = true)]
async fn block_while_running_does_not_hold_up_a_stage_whose_input_ended() {
    let policy = EventPolicy::default().running(ExternalEventMode::Block);
    let (_runtime, run, relay_log) =
        relay_run("block-ended", policy, |_| source_iter(0..3_u64)).await;
    settle().await;
    assert!(log(&relay_log).is_empty(), "worked without an event");
    let relay = run.stage_events::<&'static str>("relay").await.unwrap();
    relay.send("go").await.unwrap();
    finished(&run).await;
    assert_eq!(log(&relay_log), ["go", "item", "item", "item", "complete"]);
}

/// `try_send` never waits: a full queue is `Busy`, and the event is not
/// queued.
#[tokio::test(start_paused = true)]
async fn try_send_to_a_full_queue_is_busy() {
    let policy = EventPolicy::default()
        .running(ExternalEventMode::Ignore)
        .capacity(1);
    let produced = counter();
    let (_runtime, run, relay_log) =
        relay_run("busy", policy, move |_| Counter::endless(produced.clone())).await;
    settle().await;
    let relay = run.stage_events::<&'static str>("relay").await.unwrap();
    assert_eq!(relay.try_send("first"), Ok(()));
    assert_eq!(
        relay.try_send("second"),
        Err(HandleError::Busy {
            run_id: run.run_id(),
            stage: "relay".into(),
            event: std::any::type_name::<&'static str>(),
        })
    );
    run.send(ControlEvent::Drain).await.unwrap();
    finished(&run).await;
    let events: Vec<_> = log(&relay_log)
        .into_iter()
        .filter(|e| *e != "item")
        .collect();
    assert_eq!(events, ["first", "complete"]);
}

impl OnEvent<Durable<String>> for Logged {
    async fn on_event(&mut self, _: Durable<String>) -> Result<(), BoxError> {
        self.0.lock().unwrap().push("durable");
        Ok(())
    }
}

/// More durable events than an ignoring stage's queue holds: those that do
/// not fit wait on their way in, and a completing stage takes them too
/// (the close of its queue used to fail them, settled undeliverable).
#[tokio::test(start_paused = true)]
async fn durable_events_beyond_a_full_queue_are_handled_before_completion() {
    let policy = EventPolicy::default()
        .running(ExternalEventMode::Ignore)
        .capacity(1);
    let runtime = memory_runtime().await;
    let gate = Arc::new(Semaphore::new(0));
    let (g, relay_log) = (gate.clone(), Log::default());
    let l = relay_log.clone();
    runtime
        .register(
            FlowDefinition::<u64>::builder("durable-full")
                .source("numbers", move |_| OnePerPermit(g.clone()))
                .with_durable_events::<String>(policy)
                .transform("relay", move |_| Logged(l.clone()))
                .sink("tally", |_| Tally::new(&counter()))
                .pipeline(["numbers", "relay", "tally"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("durable-full").await.unwrap();
    settle().await;
    let relay = run.durable_stage_events::<String>("relay").await.unwrap();
    for e in ["a", "b", "c"] {
        relay.send(&e.to_owned()).await.unwrap();
    }
    gate.add_permits(1);
    settle().await;
    run.send(ControlEvent::Drain).await.unwrap();
    finished(&run).await;
    let handled = log(&relay_log).iter().filter(|e| **e == "durable").count();
    assert_eq!(handled, 3, "{:?}", log(&relay_log));
    let inbox = runtime.journal().list_inbox(run.run_id()).await.unwrap();
    assert_eq!(inbox.len(), 3);
    for entry in inbox {
        let settled = entry.settled.expect("settled");
        assert_eq!(settled.undeliverable, None, "{}", entry.id);
    }
}
