//! Stage logic and helpers shared by the runtime behaviour tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use troupe::flow::{FlowDefinition, RunHandle};
use troupe::records::EventKind;
use troupe::runtime::Runtime;
use troupe::stage::PipeConfig;
use troupe::stage::StageContext;
use troupe::stage::{Emitter, EventPolicy, OnEvent, Produced, Sink, Source, Transform};
use troupe::store::Store;
use troupe::supervise::BoxError;
use uuid::Uuid;

/// The items a [`Record`] sink consumed, in order.
pub type Seen = Arc<Mutex<Vec<u64>>>;

/// Records every item it consumes.
pub struct Record(pub Seen);

impl Sink<u64> for Record {
    async fn consume(&mut self, item: u64) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(item);
        Ok(())
    }
}

/// A source counting up from 0 forever (or to `limit`), recording how many it produced.
pub struct Counter {
    pub next: u64,
    pub limit: Option<u64>,
    pub produced: Arc<AtomicU64>,
    /// Dropped with the source: lets a test see that every stage is gone.
    pub alive: Option<mpsc::Sender<()>>,
}

impl Counter {
    pub fn endless(produced: Arc<AtomicU64>) -> Self {
        Counter {
            next: 0,
            limit: None,
            produced,
            alive: None,
        }
    }
}

impl Source<u64> for Counter {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        for _ in 0..out.room() {
            if self.limit.is_some_and(|l| self.next >= l) {
                return Ok(Produced::Done);
            }
            out.push(self.next);
            self.next += 1;
            self.produced.fetch_add(1, Ordering::SeqCst);
        }
        // A batch per millisecond, as a source waiting on IO would: under
        // paused time the runtime goes idle in between, so tests can settle.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        Ok(Produced::More)
    }
}

/// A sink counting and summing what it consumes; waits for a permit per
/// item if `gate` is set (a slow sink the test controls).
pub struct Tally {
    pub count: Arc<AtomicU64>,
    pub sum: Arc<AtomicU64>,
    pub gate: Option<Arc<Semaphore>>,
}

impl Tally {
    pub fn new(count: &Arc<AtomicU64>) -> Self {
        Tally {
            count: count.clone(),
            sum: Arc::new(AtomicU64::new(0)),
            gate: None,
        }
    }
}

impl Sink<u64> for Tally {
    async fn consume(&mut self, item: u64) -> Result<(), BoxError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await?.forget();
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        self.sum.fetch_add(item, Ordering::SeqCst);
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!({ "sum": self.sum.load(Ordering::SeqCst) })))
    }
}

/// Registers and starts `name`: an endless counter → tally flow over
/// one-batch pipes of 4 items, so a paused sink soon blocks the source on
/// its full output.
pub async fn tight_pipeline(
    runtime: &Runtime,
    name: &str,
    produced: &Arc<AtomicU64>,
    consumed: &Arc<AtomicU64>,
) -> RunHandle {
    let (p, c) = (produced.clone(), consumed.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder(name)
                .source("numbers", move |_| Counter::endless(p.clone()))
                .sink("tally", move |_| Tally::new(&c))
                .pipeline(["numbers", "tally"])
                .pipes(PipeConfig {
                    batch_size: 4,
                    capacity: 1,
                })
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    runtime.start(name).await.unwrap()
}

/// A [`tight_pipeline`] whose sink is paused, so that its source is
/// blocked on its full output.
pub async fn blocked_pipeline(
    runtime: &Runtime,
    name: &str,
    produced: &Arc<AtomicU64>,
    consumed: &Arc<AtomicU64>,
) -> RunHandle {
    let run = tight_pipeline(runtime, name, produced, consumed).await;
    settle().await;
    run.stage("tally")
        .unwrap()
        .send(troupe::flow::StageControl::Pause)
        .await
        .unwrap();
    settle().await;
    run
}

pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

pub fn get(c: &Arc<AtomicU64>) -> u64 {
    c.load(Ordering::SeqCst)
}

pub async fn memory_runtime() -> Runtime {
    Runtime::builder().memory().start().await.unwrap()
}

/// A runtime over `store`, which outlives it (a dropped runtime stands in
/// for a crashed process).
pub async fn runtime_on(store: &Arc<dyn Store>) -> Runtime {
    Runtime::builder()
        .store(store.clone())
        .start()
        .await
        .unwrap()
}

/// Cancels a run that would not end by itself, and waits for its outcome.
pub async fn cancel_and_wait(run: &RunHandle) -> troupe::flow::RunOutcome {
    let cancel = troupe::flow::ControlEvent::Cancel {
        reason: "done".into(),
    };
    run.send(cancel).await.unwrap();
    run.wait().await.unwrap()
}

/// Lets every task run until all wait (paused time advances only when idle).
pub async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

/// The names of the run's events, in order.
pub async fn event_names(store: &dyn Store, run: Uuid) -> Vec<String> {
    store
        .replay(run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.name().to_owned())
        .collect()
}

/// How many terminal events the run has.
pub async fn terminal_count(store: &dyn Store, run: Uuid) -> usize {
    store
        .replay(run)
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Terminal(_)))
        .count()
}

/// Registers and starts `name`: `source` → `relay` (taking events `Ev` per
/// `policy`) → a tally, over pipes of 4-item batches, 4 in flight. Returns
/// the tally's count.
pub async fn relay_flow<Ev, S, X>(
    runtime: &Runtime,
    name: &str,
    policy: EventPolicy,
    source: impl Fn(&StageContext) -> S + Send + Sync + 'static,
    relay: impl Fn(&StageContext) -> X + Send + Sync + 'static,
) -> (RunHandle, Arc<AtomicU64>)
where
    Ev: Send + 'static,
    S: Source<u64>,
    X: Transform<u64> + OnEvent<Ev>,
{
    let consumed = counter();
    let c = consumed.clone();
    runtime
        .register(
            FlowDefinition::<u64>::builder(name)
                .source("numbers", source)
                .with_events::<Ev>(policy)
                .transform("relay", relay)
                .sink("tally", move |_| Tally::new(&c))
                .pipeline(["numbers", "relay", "tally"])
                .pipes(PipeConfig {
                    batch_size: 4,
                    capacity: 4,
                })
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    (runtime.start(name).await.unwrap(), consumed)
}
