//! Runs with input and identity: the input is journaled and reaches every
//! stage's context; a declared input type is checked at start; a run
//! started twice with one id is one run.

mod runtime_support;

use std::sync::{Arc, Mutex};

use runtime_support::{cancel_and_wait, runtime_on};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use troupe::flow::{FlowDefinition, IdReuse, RunOptions};
use troupe::records::RunStatus;
use troupe::runtime::{Runtime, RuntimeError};
use troupe::stage::{StageContext, sink_fn, source_iter};
use troupe::store::{MemoryStore, Store};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    lines: Vec<u64>,
}

/// What each stage start saw of its context: (stage, generation, key, run key).
type Seen = Arc<Mutex<Vec<(String, u64, String, Option<String>)>>>;

/// `lines` → `book`: the source emits the order's lines; the sink sums them
/// into `booked`.
fn orders(seen: &Seen, booked: &Arc<Mutex<Vec<u64>>>) -> FlowDefinition<u64> {
    let note = |seen: &Seen, ctx: &StageContext| {
        seen.lock().unwrap().push((
            ctx.stage().to_owned(),
            ctx.generation(),
            ctx.key("charge"),
            ctx.run_key().map(str::to_owned),
        ));
    };
    let (s1, s2, booked) = (seen.clone(), seen.clone(), booked.clone());
    FlowDefinition::<u64>::builder("orders")
        .input::<Order>()
        .source("lines", move |ctx| {
            note(&s1, ctx);
            let order: Order = ctx.input().expect("checked at start");
            assert_eq!(ctx.flow(), "orders");
            source_iter(order.lines)
        })
        .sink("book", move |ctx| {
            note(&s2, ctx);
            let booked = booked.clone();
            sink_fn(move |line: u64| {
                booked.lock().unwrap().push(line);
                Ok(())
            })
        })
        .pipeline(["lines", "book"])
        .build()
        .unwrap()
}

async fn started(store: &Arc<dyn Store>, seen: &Seen, booked: &Arc<Mutex<Vec<u64>>>) -> Runtime {
    let runtime = runtime_on(store).await;
    runtime.register(orders(seen, booked)).await.unwrap();
    runtime
}

fn order(id: u64, lines: &[u64]) -> Order {
    Order {
        id,
        lines: lines.to_vec(),
    }
}

#[tokio::test]
async fn the_input_is_journaled_and_every_stage_gets_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Seen::default();
    let booked_lines = Arc::new(Mutex::new(Vec::new()));
    let runtime = started(&store, &seen, &booked_lines).await;
    let input = order(42, &[3, 4, 5]);
    let run = runtime
        .start_with("orders", RunOptions::new().input(&input))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    assert_eq!(*booked_lines.lock().unwrap(), vec![3, 4, 5]);

    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.input, serde_json::to_value(&input).unwrap());
    assert_eq!(record.key, None);
    let seen = seen.lock().unwrap().clone();
    let prefix = format!("{}/", run.run_id());
    assert_eq!(seen.len(), 2);
    for (stage, generation, key, run_key) in seen {
        assert_eq!(generation, 1, "{stage}: first start");
        assert_eq!(key, format!("{prefix}{stage}/charge"));
        assert_eq!(run_key, None);
    }
    runtime.shutdown().await;
}

#[tokio::test]
async fn concurrent_runs_of_one_flow_each_get_their_own_input() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Seen::default();
    let booked = Arc::new(Mutex::new(Vec::new()));
    let runtime = started(&store, &seen, &booked).await;
    // All started before any is waited for: they run side by side.
    let mut runs = Vec::new();
    for id in 0..8_u64 {
        let input = order(id, &[id * 100, id * 100 + 1]);
        runs.push(
            runtime
                .start_with("orders", RunOptions::new().input(input))
                .await
                .unwrap(),
        );
    }
    for run in runs {
        assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    }
    let mut lines = booked.lock().unwrap().clone();
    lines.sort_unstable();
    let want: Vec<u64> = (0..8).flat_map(|id| [id * 100, id * 100 + 1]).collect();
    assert_eq!(lines, want);
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_input_of_the_wrong_type_is_refused_before_any_run_exists() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = started(&store, &Seen::default(), &Arc::default()).await;
    for bad in [
        json!({"id": "forty-two", "lines": []}),
        Value::Null,
        json!([1, 2]),
    ] {
        let err = runtime
            .start_with("orders", RunOptions::new().input(bad.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RuntimeError::BadInput { flow, .. } if flow == "orders"),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("Order"), "names the type: {err}");
    }
    // Deeper than a store keeps.
    let mut deep = json!(1);
    for _ in 0..150 {
        deep = json!([deep]);
    }
    let err = runtime
        .start_with("orders", RunOptions::new().input(deep))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadInput { reason, .. } if reason.contains("nested")),
        "{err}"
    );
    // Not JSON at all: a map with non-string keys.
    let mut pairs = std::collections::BTreeMap::new();
    pairs.insert((1, 2), 3);
    let err = runtime
        .start_with("orders", RunOptions::new().input(pairs))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::BadInput { .. }), "{err}");
    let all = troupe::records::RunFilter::default();
    assert!(store.list_runs(&all, None, 10).await.unwrap().is_empty());
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_run_started_twice_with_one_id_is_one_run() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Seen::default();
    let booked = Arc::new(Mutex::new(Vec::new()));
    let runtime = started(&store, &seen, &booked).await;
    let input = order(42, &[1, 2]);
    let options = || RunOptions::new().id("order-42").input(&input);

    // Two starts at once: one run, both handles name it.
    let (a, b) = tokio::join!(
        runtime.start_with("orders", options()),
        runtime.start_with("orders", options())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.run_id(), b.run_id());
    assert_eq!(a.wait().await.unwrap().status, RunStatus::Finished);
    assert_eq!(b.wait().await.unwrap().status, RunStatus::Finished);
    assert_eq!(
        *booked.lock().unwrap(),
        vec![1, 2],
        "the lines were booked once"
    );

    // Once it has ended, the same id still names it (IdReuse::Never).
    let again = runtime.start_with("orders", options()).await.unwrap();
    assert_eq!(again.run_id(), a.run_id());
    let outcome = again.wait().await.unwrap();
    assert_eq!(
        (outcome.status, outcome.recorded),
        (RunStatus::Finished, true)
    );
    assert_eq!(*booked.lock().unwrap(), vec![1, 2]);

    // Another input under the id is a conflict naming the run.
    let err = runtime
        .start_with(
            "orders",
            RunOptions::new().id("order-42").input(order(42, &[9])),
        )
        .await
        .unwrap_err();
    match &err {
        RuntimeError::RunIdConflict { existing, id, .. } => {
            assert_eq!((*existing, id.as_str()), (a.run_id(), "order-42"));
        }
        other => panic!("expected RunIdConflict, got {other}"),
    }

    // The record keeps the key; the stages saw it.
    let record = store.get_run(a.run_id()).await.unwrap().unwrap();
    assert_eq!(record.key.as_deref(), Some("order-42"));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.3.as_deref() == Some("order-42"))
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "one start per stage");
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_new_run_may_take_the_id_of_an_ended_one_when_the_policy_says() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let booked = Arc::new(Mutex::new(Vec::new()));
    let runtime = started(&store, &Seen::default(), &booked).await;
    let first = runtime
        .start_with("orders", RunOptions::new().id("k").input(order(1, &[1])))
        .await
        .unwrap();
    first.wait().await.unwrap();

    // AfterFailure: the first finished, so the start returns it.
    let same = runtime
        .start_with(
            "orders",
            RunOptions::new()
                .id("k")
                .input(order(1, &[1]))
                .id_reuse(IdReuse::AfterFailure),
        )
        .await
        .unwrap();
    assert_eq!(same.run_id(), first.run_id());

    // AfterEnded: a new run, even with another input.
    let second = runtime
        .start_with(
            "orders",
            RunOptions::new()
                .id("k")
                .input(order(2, &[7]))
                .id_reuse(IdReuse::AfterEnded),
        )
        .await
        .unwrap();
    assert_ne!(second.run_id(), first.run_id());
    assert_eq!(second.wait().await.unwrap().status, RunStatus::Finished);
    assert_eq!(*booked.lock().unwrap(), vec![1, 7]);
    let found = store.find_run_by_key("orders", "k").await.unwrap().unwrap();
    assert_eq!(found.id, second.run_id());
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_running_id_is_not_replaced_whatever_the_policy() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let flow = FlowDefinition::<u64>::builder("held")
        .source("wait", move |_| {
            let g = g.clone();
            WaitSource(Some(g))
        })
        .sink("drop", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["wait", "drop"])
        .build()
        .unwrap();
    runtime.register(flow).await.unwrap();
    let options = || RunOptions::new().id("once").id_reuse(IdReuse::AfterEnded);
    let first = runtime.start_with("held", options()).await.unwrap();
    let second = runtime.start_with("held", options()).await.unwrap();
    assert_eq!(first.run_id(), second.run_id());
    // Another input while it runs: a conflict, not a second run.
    let err = runtime
        .start_with("held", options().input(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::RunIdConflict { .. }), "{err}");
    let outcome = cancel_and_wait(&first).await;
    assert_eq!(outcome.status, RunStatus::Cancelled);
    // Cancelled: AfterEnded may start it anew.
    let third = runtime
        .start_with("held", options().input(1))
        .await
        .unwrap();
    assert_ne!(third.run_id(), first.run_id());
    cancel_and_wait(&third).await;
    runtime.shutdown().await;
}

/// Produces nothing until the run is cancelled.
struct WaitSource(Option<Arc<Notify>>);

impl troupe::stage::Source<u64> for WaitSource {
    async fn produce(
        &mut self,
        _out: &mut troupe::stage::Emitter<u64>,
    ) -> Result<troupe::stage::Produced, troupe::supervise::BoxError> {
        if let Some(gate) = &self.0 {
            gate.notified().await;
        }
        Ok(troupe::stage::Produced::Done)
    }
}

#[tokio::test]
async fn bad_ids_are_refused_before_any_run_exists() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = started(&store, &Seen::default(), &Arc::default()).await;
    let long = "x".repeat(troupe::records::MAX_RUN_KEY_LEN + 1);
    for id in ["", "tab\there", long.as_str()] {
        let err = runtime
            .start_with("orders", RunOptions::new().id(id).input(order(1, &[])))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RuntimeError::BadRunId { flow, .. } if flow == "orders"),
            "{id:?}: {err}"
        );
        assert!(err.to_string().contains("run id"), "{err}");
        assert!(
            !err.to_string().contains("0000-0000"),
            "no made-up run id: {err}"
        );
    }
    let all = troupe::records::RunFilter::default();
    assert!(store.list_runs(&all, None, 10).await.unwrap().is_empty());
    runtime.shutdown().await;
}
