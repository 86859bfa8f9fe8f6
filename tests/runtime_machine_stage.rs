//! Machine stages: a flow stage that is the user's own `fsm!` machine.
//! Items, user events, the end of input and the machine's timeouts are its
//! events; its actions emit items; a terminal state completes it; item
//! failures are retried and dead-lettered; a durable machine's state
//! survives a restart of the stage and of the process, its timer re-armed
//! for the journaled deadline.

mod runtime_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use troupe::checkpoint::Checkpoints;
use troupe::flow::{
    DeadLetterPolicy, FlowBuilder, FlowDefinition, RetryPolicy, RunHandle, RunOutcome,
};
use troupe::fsm::{EventVariant, FsmError, NoAction, StateMachine, StateVariant, Transition, fsm};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{
    Emitter, EventPolicy, MachineContext, MachineStage, Produced, Sink, Source, StageContext,
    StageInput, sink_fn, source_iter,
};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;

#[derive(Debug, Clone, PartialEq, StateVariant, Serialize, Deserialize)]
enum Gate {
    Open,
    Held,
    Done,
}

#[derive(Debug, EventVariant)]
enum Ev {
    Item(u64),
    Hold,
    Release,
    Fail,
    End,
}

/// What the tests tell the gate.
#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Hold,
    Release,
    Fail,
    Close,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    seen: u64,
    held: Vec<u64>,
}

type Ctx = MachineContext<u64, Tally>;

const HOLD_FOR: Duration = Duration::from_secs(30);
/// Emitted when a hold times out.
const TIMED_OUT: u64 = 7_777;
/// The item that completes the gate.
const STOP: u64 = 999;

fn release(ctx: &mut Ctx) {
    for x in std::mem::take(&mut ctx.held) {
        ctx.emit(x * 10);
    }
}

/// Passes items on (times 10) while open, keeps them while held, until
/// released or `HOLD_FOR` passes; `0` is a poisoned item; `STOP` and the
/// end of input close it for good.
fn gate() -> StateMachine<Gate, Ev, Ctx, NoAction<Ctx>> {
    fsm! {
        state: Gate; event: Ev; context: Ctx; initial: Gate::Open;
        terminal: Gate::Done;
        state Gate::Open {
            on Ev::Item => [Gate::Open, Gate::Done] sync |_, e, ctx| {
                let Ev::Item(x) = e else { unreachable!() };
                if *x == 0 {
                    return Err(FsmError::handler("item 0 is poisoned"));
                }
                ctx.seen += 1;
                if *x == STOP {
                    return Ok(Transition::to(Gate::Done));
                }
                ctx.emit(x * 10);
                Ok(Transition::to(Gate::Open))
            };
            on Ev::Hold => [Gate::Held] sync |_, _, _| Transition::to(Gate::Held);
        }
        state Gate::Held {
            on Ev::Item => [Gate::Held] sync |_, e, ctx| {
                let Ev::Item(x) = e else { unreachable!() };
                ctx.seen += 1;
                ctx.held.push(*x);
                Transition::to(Gate::Held)
            };
            on Ev::Release => [Gate::Open] sync |_, _, ctx| {
                release(ctx);
                Transition::to(Gate::Open)
            };
            timeout HOLD_FOR => [Gate::Open] sync |_, ctx| {
                release(ctx);
                ctx.emit(TIMED_OUT);
                Transition::to(Gate::Open)
            };
        }
        state Gate::Done {}
        state _ {
            on Ev::End => [Gate::Done] sync |_, _, _| Transition::to(Gate::Done);
            on Ev::Fail => sync |_, _, _| Err(FsmError::handler("told to fail"));
        }
    }
}

/// Maps what reaches the gate to its events; the end of input closes it
/// when `end` says, else only `Cmd::Close` does.
fn map(end: bool) -> impl Fn(StageInput<u64, Cmd>) -> Option<Ev> + Send + Sync + 'static {
    move |input| {
        Some(match input {
            StageInput::Item(x) => Ev::Item(x),
            StageInput::Event(Cmd::Hold) => Ev::Hold,
            StageInput::Event(Cmd::Release) => Ev::Release,
            StageInput::Event(Cmd::Fail) => Ev::Fail,
            StageInput::Event(Cmd::Close) => Ev::End,
            StageInput::End => return end.then_some(Ev::End),
        })
    }
}

fn gate_stage(durable: bool, end: bool) -> MachineStage<u64, Gate, Ev, Tally, NoAction<Ctx>, Cmd> {
    let stage = MachineStage::new(gate, |_: &StageContext| Tally::default(), map(end))
        .output(|_, tally: &Tally| json!(tally.seen));
    if durable { stage.durable() } else { stage }
}

/// A source emitting what the test sends, ending when the sender is dropped.
struct Feed(mpsc::UnboundedReceiver<u64>);

impl Source<u64> for Feed {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        Ok(match self.0.recv().await {
            Some(x) => {
                out.push(x);
                Produced::More
            }
            None => Produced::Done,
        })
    }
}

/// What reached the sink, with when.
type Seen = Arc<Mutex<Vec<(u64, Instant)>>>;

/// A sink noting what reaches it, and when.
struct Out(Seen);

impl Sink<u64> for Out {
    async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
        self.0.lock().unwrap().push((x, Instant::now()));
        Ok(())
    }
}

fn items(seen: &Seen) -> Vec<u64> {
    seen.lock().unwrap().iter().map(|s| s.0).collect()
}

/// `feed` (what the test sends) → `gate` (the machine, taking `Cmd`s; the
/// end of input closes it when `end` says) → `out`; returns the sender and
/// what `out` saw.
fn gate_flow(durable: bool, end: bool) -> (FlowDefinition<u64>, mpsc::UnboundedSender<u64>, Seen) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let seen = Seen::default();
    let s = seen.clone();
    let flow = FlowDefinition::<u64>::builder("gated")
        .source("feed", move |_| {
            Feed(rx.lock().unwrap().take().expect("the feed starts once"))
        })
        .with_events::<Cmd>(EventPolicy::default())
        .machine_stage("gate", gate_stage(durable, end))
        .sink("out", move |_| Out(s.clone()))
        .pipeline(["feed", "gate", "out"])
        .checkpoints(Checkpoints::off())
        .build()
        .unwrap();
    (flow, tx, seen)
}

fn result(outcome: &RunOutcome) -> Value {
    outcome.structured_output.clone().unwrap()["steps"]["gate"]["result"].clone()
}

async fn tell(run: &RunHandle, cmd: Cmd) {
    let gate = run.stage_events::<Cmd>("gate").await.unwrap();
    gate.send(cmd).await.unwrap();
    settle().await;
}

/// The states the gate journaled, in order.
async fn journaled_states(store: &dyn Store, run: uuid::Uuid) -> Vec<String> {
    let events = store.replay(run).await.unwrap();
    let states = events.into_iter().filter_map(|e| match e.kind {
        troupe::records::EventKind::Custom { name, payload } if name == "stage_machine_state" => {
            Some(payload["state"].as_str().unwrap().to_owned())
        }
        _ => None,
    });
    states.collect()
}

#[tokio::test(start_paused = true)]
async fn items_events_a_timeout_and_the_end_of_input_drive_the_machine() {
    let runtime = memory_runtime().await;
    let (flow, tx, seen) = gate_flow(false, true);
    runtime.register(flow).await.unwrap();
    let run = runtime.start("gated").await.unwrap();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    settle().await;
    assert_eq!(items(&seen), [10, 20], "items pass while open");

    let held_at = Instant::now();
    tell(&run, Cmd::Hold).await;
    tx.send(3).unwrap();
    settle().await;
    assert_eq!(items(&seen), [10, 20], "held while held");
    // The hold times out: what it kept goes on, then the marker.
    tokio::time::sleep(HOLD_FOR).await;
    assert_eq!(items(&seen), [10, 20, 30, TIMED_OUT]);
    let fired = seen.lock().unwrap()[3].1 - held_at;
    assert!(
        fired >= HOLD_FOR && fired < HOLD_FOR + Duration::from_millis(20),
        "{fired:?}"
    );

    tell(&run, Cmd::Hold).await;
    tx.send(4).unwrap();
    settle().await;
    tell(&run, Cmd::Release).await;
    assert_eq!(
        items(&seen),
        [10, 20, 30, TIMED_OUT, 40],
        "released by an event"
    );

    // The end of input closes the gate: a terminal state, and the output.
    drop(tx);
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(result(&outcome), json!({"state": "Done", "output": 4}));
}

/// `numbers` (`items`) → `gate` (taking no events; the end of input is
/// an event when `end` says) → `out`, named `name`; returns what `out` saw.
fn numbers_flow(name: &str, items: Vec<u64>, end: bool) -> (FlowBuilder<u64>, Seen) {
    let seen = Seen::default();
    let s = seen.clone();
    let stage = MachineStage::new(
        gate,
        |_: &StageContext| Tally::default(),
        move |input| match input {
            StageInput::Item(x) => Some(Ev::Item(x)),
            StageInput::End => end.then_some(Ev::End),
            StageInput::Event(never) => match never {},
        },
    );
    let flow = FlowDefinition::<u64>::builder(name)
        .source("numbers", move |_| source_iter(items.clone()))
        .machine_stage("gate", stage)
        .sink("out", move |_| Out(s.clone()))
        .pipeline(["numbers", "gate", "out"]);
    (flow, seen)
}

#[tokio::test(start_paused = true)]
async fn a_terminal_state_completes_the_stage_and_drops_the_rest_of_its_input() {
    let runtime = memory_runtime().await;
    let (flow, seen) = numbers_flow("stops", (1..=5_000).collect(), false);
    let flow = flow.build().unwrap();
    runtime.register(flow).await.unwrap();
    let run = runtime.start("stops").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the source is not held up by a completed machine")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        result(&outcome),
        json!({"state": "Done", "output": Value::Null})
    );
    let expected: Vec<u64> = (1..STOP).map(|x| x * 10).collect();
    assert_eq!(items(&seen), expected);
    let steps = outcome.structured_output.unwrap()["steps"].clone();
    assert_eq!(steps["gate"]["items_out"], STOP - 1);
    assert_eq!(
        steps["numbers"]["items_out"], 5_000,
        "the source ran to its end"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_retried_then_dead_lettered() {
    let runtime = memory_runtime().await;
    let (flow, seen) = numbers_flow("poisoned", vec![1, 0, 2], true);
    let flow = flow
        .retry("gate", RetryPolicy::attempts(3).jitter(0.0))
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()
        .unwrap();
    runtime.register(flow).await.unwrap();
    let run = runtime.start("poisoned").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(items(&seen), [10, 20]);
    assert_eq!(outcome.dead_letters().get("gate"), Some(&1));
    let letters = runtime.journal().list_dead_letters(run.run_id()).await;
    let letters = letters.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].errors.iter().any(|e| e.contains("poisoned")),
        "{letters:?}"
    );
    let gate = &outcome.structured_output.unwrap()["steps"]["gate"];
    assert_eq!(gate["retried"], 2, "three attempts at the poisoned item");
    assert_eq!(
        gate["result"],
        json!({"state": "Done", "output": Value::Null})
    );
}

#[tokio::test(start_paused = true)]
async fn after_its_input_ended_a_machine_takes_timeouts_and_events_until_a_terminal_state() {
    let runtime = memory_runtime().await;
    let (flow, tx, seen) = gate_flow(false, false);
    runtime.register(flow).await.unwrap();
    let run = runtime.start("gated").await.unwrap();
    tx.send(1).unwrap();
    tell(&run, Cmd::Hold).await;
    tx.send(2).unwrap();
    drop(tx);
    settle().await;
    assert_eq!(items(&seen), [10]);
    // The input ended; the hold still times out.
    tokio::time::sleep(HOLD_FOR).await;
    assert_eq!(items(&seen), [10, 20, TIMED_OUT]);
    assert!(run.outcome().is_none(), "not in a terminal state yet");
    tell(&run, Cmd::Close).await;
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(result(&outcome), json!({"state": "Done", "output": 2}));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_stage_resumes_a_durable_machine_and_restarts_another() {
    for durable in [true, false] {
        let runtime = memory_runtime().await;
        let (flow, tx, seen) = gate_flow(durable, true);
        runtime.register(flow).await.unwrap();
        let run = runtime.start("gated").await.unwrap();
        tx.send(1).unwrap();
        tell(&run, Cmd::Hold).await;
        // A failing event fails the stage, which restarts.
        tell(&run, Cmd::Fail).await;
        // Its restart's backoff.
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(2).unwrap();
        settle().await;
        if durable {
            assert_eq!(items(&seen), [10], "resumed held: the item is kept");
            tell(&run, Cmd::Release).await;
            assert_eq!(items(&seen), [10, 20]);
        } else {
            assert_eq!(items(&seen), [10, 20], "started open again");
        }
        drop(tx);
        let outcome = run.wait().await.unwrap();
        assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
        let journaled = journaled_states(runtime.journal(), run.run_id()).await;
        if durable {
            assert_eq!(journaled, ["Open", "Held", "Open", "Done"]);
        } else {
            assert!(journaled.is_empty(), "{journaled:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_durable_machine_resumes_in_its_state_after_a_crash_with_its_timer_rearmed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (flow, tx, _) = gate_flow(true, true);
    let first = Runtime::builder()
        .store(store.clone())
        .register(flow)
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("gated").await.unwrap();
    tx.send(1).unwrap();
    let held_at = Instant::now();
    tell(&run, Cmd::Hold).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    // The process dies, 20 s into the hold.
    drop(first);
    settle().await;

    let (flow, tx, seen) = gate_flow(true, true);
    let second = Runtime::builder()
        .store(store.clone())
        .register(flow)
        .unwrap()
        .start()
        .await
        .unwrap();
    let resumed = second.resumed()[0].clone();
    assert_eq!(resumed.run_id(), run.run_id());
    tx.send(5).unwrap();
    settle().await;
    assert!(items(&seen).is_empty(), "resumed held: {:?}", items(&seen));
    tokio::time::sleep(HOLD_FOR).await;
    assert_eq!(items(&seen), [50, TIMED_OUT]);
    // The timer kept its journaled deadline: 30 s after the hold, not
    // after the resume.
    let fired = seen.lock().unwrap()[1].1 - held_at;
    assert!(
        fired >= HOLD_FOR && fired < HOLD_FOR + Duration::from_millis(100),
        "{fired:?}"
    );
    drop(tx);
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(result(&outcome)["state"], "Done");
    assert_eq!(
        journaled_states(&*store, run.run_id()).await,
        ["Open", "Held", "Open", "Done"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_resumed_after_its_machine_completed_early_drops_what_its_upstream_sends() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (flow, tx, seen) = gate_flow(false, true);
    let first = Runtime::builder()
        .store(store.clone())
        .register(flow)
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("gated").await.unwrap();
    tx.send(1).unwrap();
    tx.send(STOP).unwrap();
    tx.send(2).unwrap();
    settle().await;
    assert_eq!(items(&seen), [10]);
    let recorded = store.list_step_outputs(run.run_id()).await.unwrap();
    let mut completed: Vec<_> = recorded.iter().map(|o| o.step_id.as_str()).collect();
    completed.sort_unstable();
    assert_eq!(completed, ["gate", "out"], "the feed still runs");
    // The process dies before the feed ends; the resumed feed runs again
    // into the completed machine, which drops what it sends.
    drop(first);
    settle().await;
    let (flow, tx, _) = gate_flow(false, true);
    let second = Runtime::builder()
        .store(store.clone())
        .register(flow)
        .unwrap()
        .start()
        .await
        .unwrap();
    let resumed = second.resumed()[0].clone();
    for x in 1..=100 {
        tx.send(x).unwrap();
    }
    drop(tx);
    let outcome = tokio::time::timeout(Duration::from_secs(60), resumed.wait())
        .await
        .expect("the feed is not held up by the completed machine")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(result(&outcome)["state"], "Done");
}

#[test]
fn the_machine_goes_into_the_fingerprint() {
    let (with_machine, _, _) = gate_flow(false, true);
    let gate_stage = &with_machine.shape().stages[1];
    assert_eq!(gate_stage.name, "gate");
    assert_eq!(gate_stage.machine, Some(gate().table().digest()));
    // A plain transform in its place fingerprints differently.
    let plain = FlowDefinition::<u64>::builder("gated")
        .source("feed", |_| source_iter([1_u64]))
        .with_events::<Cmd>(EventPolicy::default())
        .transform("gate", |_| Relay)
        .sink("out", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["feed", "gate", "out"])
        .build()
        .unwrap();
    assert_ne!(plain.fingerprint(), with_machine.fingerprint());
}

struct Relay;

impl troupe::stage::Transform<u64> for Relay {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        out.push(x);
        Ok(())
    }
}

impl troupe::stage::OnEvent<Cmd> for Relay {
    async fn on_event(&mut self, _: Cmd) -> Result<(), BoxError> {
        Ok(())
    }
}
