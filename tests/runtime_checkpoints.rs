//! Checkpointed streams: a run resumes from its last checkpoint, its
//! sources from their positions and its stateful stages from their state,
//! so a stateful sink ends with each item counted once; barriers align at
//! fan-in; a flow whose sources keep no position takes no checkpoint. A
//! dropped runtime stands in for a crashed process; the store outlives it.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use runtime_support::settle;
use serde_json::{Value, json};
use troupe::checkpoint::Checkpoints;
use troupe::flow::FlowDefinition;
use troupe::records::{Checkpoint, RunStatus};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, Produced, Sink, Source, source_iter, transform_fn};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;
use uuid::Uuid;

/// Emits `tag * 1_000_000 + n` for n in `next..end`, a few per call; holds
/// (emitting nothing) at `hold` while the gate is shut.
struct Numbers {
    tag: u64,
    next: u64,
    end: u64,
    per_call: u64,
    hold: u64,
    gate: Arc<AtomicBool>,
}

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.next >= self.hold && !self.gate.load(Ordering::SeqCst) {
            // Nothing now; checkpoints still pass between calls.
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Ok(Produced::More);
        }
        let stop = (self.next + self.per_call).min(self.end);
        while self.next < stop {
            out.push(self.tag * 1_000_000 + self.next);
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

/// Counts and sums what it sees, per source tag; its state is checkpointed.
#[derive(Default)]
struct Totals {
    count: [u64; 2],
    sum: u64,
}

impl Sink<u64> for Totals {
    async fn consume(&mut self, item: u64) -> Result<(), BoxError> {
        self.count[(item / 1_000_000) as usize] += 1;
        self.sum += item;
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!({ "count": self.count, "sum": self.sum })))
    }

    fn restore(&mut self, state: Value) -> Result<(), BoxError> {
        self.count = serde_json::from_value(state["count"].clone())?;
        self.sum = serde_json::from_value(state["sum"].clone())?;
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!({ "count": self.count, "sum": self.sum })))
    }
}

const END: u64 = 2_000;

fn numbers(tag: u64, hold: u64, per_call: u64, gate: &Arc<AtomicBool>) -> Numbers {
    Numbers {
        tag,
        next: 0,
        end: END,
        per_call,
        hold,
        gate: gate.clone(),
    }
}

/// `numbers` → `double` → `totals`, checkpointed every 50 ms.
fn pipeline(gate: &Arc<AtomicBool>, starts: &Arc<AtomicU64>) -> FlowDefinition<u64> {
    let (gate, starts) = (gate.clone(), starts.clone());
    FlowDefinition::<u64>::builder("counted")
        .source("numbers", move |_| {
            starts.fetch_add(1, Ordering::SeqCst);
            numbers(0, 1_200, 10, &gate)
        })
        .transform("double", |_| {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                out.push(x * 2);
                Ok(())
            })
        })
        .sink("totals", |_| Totals::default())
        .pipeline(["numbers", "double", "totals"])
        .checkpoints(Checkpoints::every(Duration::from_millis(50)))
        .build()
        .unwrap()
}

async fn process(store: &Arc<dyn Store>, flow: FlowDefinition<u64>) -> Runtime {
    Runtime::builder()
        .store(store.clone())
        .register(flow)
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// Waits (in paused time) for a checkpoint that `ready` accepts.
async fn checkpoint_where(
    store: &Arc<dyn Store>,
    run: Uuid,
    ready: impl Fn(&Checkpoint) -> bool,
) -> Checkpoint {
    for _ in 0..10_000 {
        if let Some(c) = store.last_checkpoint(run).await.unwrap()
            && ready(&c)
        {
            return c;
        }
        settle().await;
    }
    panic!("no such checkpoint was taken");
}

fn position(c: &Checkpoint, stage: &str) -> u64 {
    c.stages[stage]
        .state
        .as_ref()
        .and_then(Value::as_u64)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_counts_each_item_once_in_its_stateful_sink() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let gate = Arc::new(AtomicBool::new(false));
    let starts = Arc::new(AtomicU64::new(0));

    let first = process(&store, pipeline(&gate, &starts)).await;
    let run = first.start("counted").await.unwrap();
    let run_id = run.run_id();
    let taken = checkpoint_where(&store, run_id, |c| position(c, "numbers") >= 1_200).await;
    // The cut is consistent: the sink saw exactly what the source emitted
    // before its position, doubled.
    let sink = taken.stages["totals"].state.clone().unwrap();
    let at = position(&taken, "numbers");
    assert_eq!(sink["count"][0], json!(at));
    assert_eq!(sink["sum"], json!((0..at).map(|x| x * 2).sum::<u64>()));
    assert_eq!(taken.stages["double"].items_in, at);
    assert!(!taken.stages["numbers"].finished);
    drop(first);
    settle().await;

    gate.store(true, Ordering::SeqCst);
    let second = process(&store, pipeline(&gate, &starts)).await;
    let resumed = second.resumed().into_iter().find(|r| r.run_id() == run_id);
    let outcome = resumed.unwrap().wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let totals = &outcome.structured_output.as_ref().unwrap()["steps"]["totals"]["result"];
    assert_eq!(totals["count"][0], json!(END), "{totals}");
    assert_eq!(totals["sum"], json!((0..END).map(|x| x * 2).sum::<u64>()));
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    // The counts go on from the cut, not from zero.
    let recorded = store.list_step_outputs(run_id).await.unwrap();
    let double = recorded.iter().find(|o| o.step_id == "double").unwrap();
    assert_eq!(double.output["items_in"], json!(END));
}

/// Two sources into one sink: a fast one and one held back.
fn fan_in(gate: &Arc<AtomicBool>) -> FlowDefinition<u64> {
    let (fast_gate, slow_gate) = (gate.clone(), gate.clone());
    FlowDefinition::<u64>::builder("fan-in")
        .source("fast", move |_| numbers(0, END, 50, &fast_gate))
        .source("slow", move |_| numbers(1, 300, 1, &slow_gate))
        .sink("totals", |_| Totals::default())
        .edge("fast", "totals")
        .edge("slow", "totals")
        .checkpoints(Checkpoints::every(Duration::from_millis(20)))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn barriers_align_at_fan_in_and_a_fast_input_is_not_taken_early() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let gate = Arc::new(AtomicBool::new(false));
    let rt = process(&store, fan_in(&gate)).await;
    let run = rt.start("fan-in").await.unwrap();
    let mut seen = 0;
    for _ in 0..10_000 {
        if let Some(c) = store.last_checkpoint(run.run_id()).await.unwrap()
            && c.id > seen
        {
            seen = c.id;
            let sink = c.stages["totals"].state.clone().unwrap();
            for (tag, source) in ["fast", "slow"].into_iter().enumerate() {
                let part = &c.stages[source];
                if part.finished {
                    continue;
                }
                // Exactly the items before each source's barrier.
                assert_eq!(sink["count"][tag], json!(position(&c, source)), "{c:?}");
            }
            if seen >= 5 {
                break;
            }
        }
        settle().await;
    }
    assert!(seen >= 5, "only {seen} checkpoints were taken");
    gate.store(true, Ordering::SeqCst);
    let outcome = run.wait().await.unwrap();
    let totals = &outcome.structured_output.as_ref().unwrap()["steps"]["totals"]["result"];
    assert_eq!(totals["count"], json!([END, END]));
}

#[tokio::test(start_paused = true)]
async fn a_flow_whose_source_keeps_no_position_takes_no_checkpoint() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = FlowDefinition::<u64>::builder("plain")
        .source("numbers", |_| source_iter(0..100_000_u64))
        .sink("totals", |_| Totals::default())
        .pipeline(["numbers", "totals"])
        .checkpoints(Checkpoints::every(Duration::from_millis(1)))
        .build()
        .unwrap();
    let rt = process(&store, flow).await;
    let run = rt.start("plain").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(store.last_checkpoint(run.run_id()).await.unwrap(), None);
}

/// A transactional target, outliving the processes as a database would:
/// transactions prepared per checkpoint, and what was committed.
#[derive(Default)]
struct Target {
    prepared: std::collections::BTreeMap<u64, Vec<u64>>,
    committed_ids: std::collections::BTreeSet<u64>,
    committed: Vec<u64>,
    commits: Vec<u64>,
}

/// A two-phase sink into a [`Target`].
struct TxSink {
    target: Arc<std::sync::Mutex<Target>>,
    pending: Vec<u64>,
}

impl Sink<u64> for TxSink {
    async fn consume(&mut self, item: u64) -> Result<(), BoxError> {
        self.pending.push(item);
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<(), BoxError> {
        let items = std::mem::take(&mut self.pending);
        // A stale transaction of the same id (never checkpointed) is replaced.
        self.target
            .lock()
            .unwrap()
            .prepared
            .insert(checkpoint, items);
        Ok(())
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), BoxError> {
        let mut target = self.target.lock().unwrap();
        target.commits.push(checkpoint);
        let ready: Vec<u64> = target
            .prepared
            .range(..=checkpoint)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let items = target.prepared.remove(&id).unwrap_or_default();
            if target.committed_ids.insert(id) {
                target.committed.extend(items);
            }
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        let items = std::mem::take(&mut self.pending);
        self.target.lock().unwrap().committed.extend(items);
        Ok(None)
    }
}

fn transactional(
    gate: &Arc<AtomicBool>,
    target: &Arc<std::sync::Mutex<Target>>,
) -> FlowDefinition<u64> {
    let (gate, target) = (gate.clone(), target.clone());
    FlowDefinition::<u64>::builder("transactional")
        .source("numbers", move |_| numbers(0, 900, 7, &gate))
        .sink("target", move |_| TxSink {
            target: target.clone(),
            pending: Vec::new(),
        })
        .pipeline(["numbers", "target"])
        .checkpoints(Checkpoints::every(Duration::from_millis(30)))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_two_phase_sink_commits_each_item_once_across_a_crash() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let gate = Arc::new(AtomicBool::new(false));
    let target = Arc::new(std::sync::Mutex::new(Target::default()));

    let first = process(&store, transactional(&gate, &target)).await;
    let run = first.start("transactional").await.unwrap();
    let run_id = run.run_id();
    let taken = checkpoint_where(&store, run_id, |c| position(c, "numbers") >= 900).await;
    // Let the sink commit what is durable, and pre-commit more.
    settle().await;
    {
        let target = target.lock().unwrap();
        assert!(!target.committed.is_empty(), "nothing was committed");
        // Only items of checkpoints that completed are committed.
        assert!(target.committed.len() as u64 <= position(&taken, "numbers"));
        assert!(target.committed_ids.iter().all(|id| *id <= taken.id));
    }
    drop(first);
    settle().await;
    let resumed_from = store.last_checkpoint(run_id).await.unwrap().unwrap().id;
    let commits_before = target.lock().unwrap().commits.len();

    gate.store(true, Ordering::SeqCst);
    let second = process(&store, transactional(&gate, &target)).await;
    let resumed = second.resumed().into_iter().find(|r| r.run_id() == run_id);
    let outcome = resumed.unwrap().wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let target = target.lock().unwrap();
    let mut committed = target.committed.clone();
    committed.sort_unstable();
    assert_eq!(committed, (0..END).collect::<Vec<_>>(), "each item once");
    // The resumed run first committed the checkpoint it resumed from again.
    assert_eq!(
        target.commits.get(commits_before),
        Some(&resumed_from),
        "commits: {:?}",
        target.commits
    );
}
