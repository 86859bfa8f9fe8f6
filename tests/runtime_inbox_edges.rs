//! Inbox edge cases a review found: input accepted for a stage that is
//! finishing, and durable events whose handling panics, are settled
//! undeliverable (never left waiting while the run goes on or ends).

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use runtime_support::{cancel_and_wait, runtime_on, settle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use troupe::flow::{DeadLetterPolicy, FlowDefinition, RetryPolicy};
use troupe::records::RunStatus;
use troupe::runtime::ReplayInto;
use troupe::stage::{
    Durable, Emitter, EventPolicy, OnEvent, PermanentError, Sink, Transform, source_iter,
};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;

/// Dead-letters 3; its `complete` waits for `gate`.
struct Gated {
    gate: Arc<Notify>,
}

impl Sink<u64> for Gated {
    async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
        if x == 3 {
            return Err(PermanentError::new("three").into());
        }
        Ok(())
    }
    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        self.gate.notified().await;
        Ok(None)
    }
}

/// `numbers` (0..5) → `gated`, carrying on past dead letters, items kept.
fn gated(gate: &Arc<Notify>) -> FlowDefinition<u64> {
    let gate = gate.clone();
    FlowDefinition::<u64>::builder("gated")
        .source("numbers", |_| source_iter(0_u64..5))
        .sink("gated", move |_| Gated { gate: gate.clone() })
        .pipeline(["numbers", "gated"])
        .default_retry(RetryPolicy::none())
        .on_dead_letter(DeadLetterPolicy::Continue)
        .serde_items()
        .build()
        .unwrap()
}

/// Items replayed into a sink that is in its `complete` (input ended, flow
/// still sees it running) are accepted; the stage never takes them, so its
/// end settles them undeliverable.
#[tokio::test(start_paused = true)]
async fn items_replayed_into_a_completing_sink_are_settled_when_it_ends() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let gate = Arc::new(Notify::new());
    runtime.register(gated(&gate)).await.unwrap();
    let run = runtime.start("gated").await.unwrap();
    settle().await; // 3 dead-lettered; the sink waits in `complete`
    let replayed = runtime
        .replay_dead_letters(run.run_id(), "gated", ReplayInto::SameRun)
        .await
        .expect("accepted: the flow sees the stage running");
    gate.notify_one();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    let entry = inbox.iter().find(|e| e.id == replayed.ids[0]).unwrap();
    // Invariant 12: handed over, or settled undeliverable.
    let settled = entry.settled.as_ref().expect("settled");
    assert!(settled.undeliverable.is_some(), "{entry:?}");
    runtime.shutdown().await;
}

/// A signal accepted for a stage that is finishing is settled undeliverable
/// when it ends.
#[tokio::test(start_paused = true)]
async fn a_signal_for_a_completing_stage_is_settled_when_it_ends() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let gate = Arc::new(Notify::new());
    runtime.register(gated(&gate)).await.unwrap();
    let run = runtime.start("gated").await.unwrap();
    settle().await;
    let id = runtime
        .send_signal(run.run_id(), Some("gated"), "hello", json!(1))
        .await
        .expect("accepted");
    gate.notify_one();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    let entry = inbox.iter().find(|e| e.id == id).unwrap();
    let settled = entry.settled.as_ref().expect("settled");
    assert!(settled.undeliverable.is_some(), "{entry:?}");
    runtime.shutdown().await;
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Poke(u64);

/// Panics on its first durable event.
struct Touchy {
    panicked: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Transform<u64> for Touchy {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        out.push(x);
        Ok(())
    }
}

impl OnEvent<Durable<Poke>> for Touchy {
    async fn on_event(&mut self, e: Durable<Poke>) -> Result<(), BoxError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("poke {}", e.event.0);
        }
        self.seen.lock().unwrap().push(e.event.0);
        Ok(())
    }
}

/// A durable event whose `on_event` panics is settled undeliverable, as an
/// `Err` is, and not handed to the restarted stage again.
#[tokio::test(start_paused = true)]
async fn a_durable_event_whose_handling_panics_is_settled_undeliverable() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let panicked = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (p, s) = (panicked.clone(), seen.clone());
    let def = FlowDefinition::<u64>::builder("touchy")
        .source("numbers", |_| Stay)
        .with_durable_events::<Poke>(EventPolicy::default())
        .transform("touchy", move |_| Touchy {
            panicked: p.clone(),
            seen: s.clone(),
        })
        .sink("discard", |_| troupe::stage::sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "touchy", "discard"])
        .build()
        .unwrap();
    runtime.register(def).await.unwrap();
    let run = runtime.start("touchy").await.unwrap();
    settle().await;
    let handle = run.durable_stage_events::<Poke>("touchy").await.unwrap();
    let id = handle.send(&Poke(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // restart
    assert!(panicked.load(Ordering::SeqCst));
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    let entry = inbox.iter().find(|e| e.id == id).unwrap();
    let settled = entry.settled.as_ref().expect("settled");
    let why = settled.undeliverable.as_deref().unwrap_or_default();
    assert!(why.contains("did not finish"), "{entry:?}");
    assert!(seen.lock().unwrap().is_empty(), "not handed over again");
    cancel_and_wait(&run).await;
    runtime.shutdown().await;
}

/// Emits nothing and never ends (a run that stays live).
struct Stay;
impl troupe::stage::Source<u64> for Stay {
    async fn produce(&mut self, _: &mut Emitter<u64>) -> Result<troupe::stage::Produced, BoxError> {
        std::future::pending::<()>().await;
        Ok(troupe::stage::Produced::Done)
    }
}
