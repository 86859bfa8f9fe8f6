//! Pipelines on a runtime: completion with counts and exactly one outcome,
//! fan-out and fan-in, backpressure with a slow sink.

mod runtime_support;

use std::sync::Arc;

use runtime_support::*;
use serde_json::json;
use tokio::sync::Semaphore;
use troupe::flow::{FlowDefinition, RunState};
use troupe::records::{EventKind, RunStatus, TerminalEvent};
use troupe::stage::PipeConfig;
use troupe::stage::StageContext;
use troupe::stage::{Emitter, source_iter, transform_fn};
use troupe::store::Store;

#[tokio::test(start_paused = true)]
async fn a_pipeline_completes_with_counts_and_one_terminal_event() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let sink_count = consumed.clone();
    runtime
        .register(
            FlowDefinition::<u64>::builder("evens")
                .source("numbers", |_| source_iter(0..10_000_u64))
                .transform("keep-even", |_| {
                    transform_fn(|x: u64, out: &mut Emitter<u64>| {
                        if x.is_multiple_of(2) {
                            out.push(x);
                        }
                        Ok(())
                    })
                })
                .sink("tally", move |_| Tally::new(&sink_count))
                .pipeline(["numbers", "keep-even", "tally"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("evens").await.unwrap();
    let outcome = run.wait().await.unwrap();

    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(get(&consumed), 5_000);
    let expected_sum: u64 = (0..10_000).filter(|x| x % 2 == 0).sum();
    let expected = json!({ "steps": {
        "numbers": { "items_in": 0, "items_out": 10_000, "retried": 0 },
        "keep-even": { "items_in": 10_000, "items_out": 5_000, "retried": 0 },
        "tally": { "items_in": 5_000, "items_out": 0, "retried": 0, "result": { "sum": expected_sum } },
    }});
    assert_eq!(outcome.structured_output, Some(expected.clone()));
    assert_eq!(run.state(), RunState::Finished);

    let store = runtime.journal();
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Finished);
    assert_eq!(record.controller_id, "evens");
    assert!(record.ended_at.is_some());
    assert_eq!(terminal_count(store, run.run_id()).await, 1);
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(expected)
        })
    );
    assert_eq!(
        event_names(store, run.run_id()).await,
        ["created", "started", "finished", "RunCompleted"]
    );
    let outputs = store.list_step_outputs(run.run_id()).await.unwrap();
    let mut steps: Vec<_> = outputs.iter().map(|o| o.step_id.as_str()).collect();
    steps.sort();
    assert_eq!(steps, ["keep-even", "numbers", "tally"]);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fan_out_copies_every_item_and_fan_in_merges_them() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let sink_count = consumed.clone();
    let times = |factor: u64| {
        move |_: &StageContext| {
            transform_fn(move |x: u64, out: &mut Emitter<u64>| {
                out.push(x * factor);
                Ok(())
            })
        }
    };
    runtime
        .register(
            FlowDefinition::<u64>::builder("diamond")
                .source("numbers", |_| source_iter(1..=1_000_u64))
                .transform("double", times(2))
                .transform("triple", times(3))
                .sink("tally", move |_| Tally::new(&sink_count))
                .edge("numbers", "double")
                .edge("numbers", "triple")
                .edge("double", "tally")
                .edge("triple", "tally")
                .pipes(PipeConfig {
                    batch_size: 16,
                    capacity: 2,
                })
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let outcome = runtime
        .start("diamond")
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(get(&consumed), 2_000);
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["numbers"]["items_out"], 1_000);
    assert_eq!(steps["tally"]["items_in"], 2_000);
    // 5 * (1 + ... + 1000): every item reached the sink once through each branch.
    assert_eq!(steps["tally"]["result"]["sum"], 5 * 500_500);
}

#[tokio::test(start_paused = true)]
async fn a_slow_sink_bounds_what_the_source_runs_ahead() {
    let runtime = memory_runtime().await;
    let produced = counter();
    let consumed = counter();
    let gate = Arc::new(Semaphore::new(0));
    let (p, c, g) = (produced.clone(), consumed.clone(), gate.clone());
    let pipes = PipeConfig {
        batch_size: 8,
        capacity: 2,
    };
    runtime
        .register(
            FlowDefinition::<u64>::builder("slow")
                .source("numbers", move |_| Counter::endless(p.clone()))
                .transform("same", |_| {
                    transform_fn(|x: u64, out: &mut Emitter<u64>| {
                        out.push(x);
                        Ok(())
                    })
                })
                .sink("slow", move |_| Tally {
                    gate: Some(g.clone()),
                    ..Tally::new(&c)
                })
                .pipeline(["numbers", "same", "slow"])
                .pipes(pipes)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("slow").await.unwrap();
    // Per hop at most: the channel's batches, the sender's partial batch, and
    // the batch in the receiver's hands; plus what a stage holds between hops.
    let per_hop = (pipes.capacity + 2) * pipes.batch_size;
    let bound = (2 * per_hop + 2 * pipes.batch_size) as u64;
    for round in 1..=5_u64 {
        settle().await;
        let ahead = get(&produced) - get(&consumed);
        assert!(
            ahead <= bound,
            "round {round}: source ran {ahead} items ahead (bound {bound})"
        );
        assert_eq!(get(&consumed), (round - 1) * 10);
        gate.add_permits(10);
    }
    assert!(
        get(&produced) < 200,
        "the source kept producing: {}",
        get(&produced)
    );
    run.send(troupe::flow::ControlEvent::Cancel {
        reason: "test over".into(),
    })
    .await
    .unwrap();
    gate.add_permits(1_000_000);
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);
}

/// Emits one item per permit.
struct Trickle {
    next: u64,
    gate: Arc<Semaphore>,
}

impl troupe::stage::Source<u64> for Trickle {
    async fn produce(
        &mut self,
        out: &mut Emitter<u64>,
    ) -> Result<troupe::stage::Produced, troupe::supervise::BoxError> {
        self.gate.acquire().await?.forget();
        out.push(self.next);
        self.next += 1;
        Ok(troupe::stage::Produced::More)
    }
}

#[tokio::test(start_paused = true)]
async fn a_trickle_reaches_the_sink_without_waiting_for_a_full_batch() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let gate = Arc::new(Semaphore::new(0));
    let (c, g) = (consumed.clone(), gate.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("trickle")
                .source("drip", move |_| Trickle {
                    next: 0,
                    gate: g.clone(),
                })
                .transform("same", |_| {
                    transform_fn(|x: u64, out: &mut Emitter<u64>| {
                        out.push(x);
                        Ok(())
                    })
                })
                .sink("tally", move |_| Tally::new(&c))
                .pipeline(["drip", "same", "tally"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("trickle").await.unwrap();
    for expected in 1..=3 {
        gate.add_permits(1);
        settle().await;
        assert_eq!(
            get(&consumed),
            expected,
            "an item waited for its batch to fill"
        );
    }
    run.send(troupe::flow::ControlEvent::Cancel {
        reason: "test over".into(),
    })
    .await
    .unwrap();
    gate.close();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);
}
