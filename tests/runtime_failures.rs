//! Stage failures under supervision: panics restart a stage per its policy
//! (an item's error is dead-lettered instead, see `runtime_dead_letters`), the restarted stage retries the item it held, an
//! exhausted intensity fails the flow naming the stage, a temporary stage
//! is abandoned while the run carries on, and every failure lands in the
//! failure ledger.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use runtime_support::*;
use troupe::flow::FlowDefinition;
use troupe::flow::{Backoff, RestartPolicy, RetryPolicy, Supervision};
use troupe::records::{EventKind, RunStatus, TerminalEvent};
use troupe::stage::PipeConfig;
use troupe::stage::StageContext;
use troupe::stage::{Emitter, Transform, source_iter};
use troupe::store::Store;
use troupe::supervise::BoxError;

/// Fails on `at` (by panicking or erroring), once per `Arc<AtomicBool>` or always.
struct Faulty {
    at: u64,
    panic: bool,
    once: Option<Arc<AtomicBool>>,
}

impl Transform<u64> for Faulty {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        let fail = x >= self.at
            && match &self.once {
                Some(failed) => !failed.swap(true, Ordering::SeqCst),
                None => true,
            };
        if fail && self.panic {
            panic!("poisoned item {x}");
        }
        if fail {
            return Err(format!("cannot handle item {x}").into());
        }
        out.push(x);
        Ok(())
    }
}

fn pipeline(
    name: &str,
    faulty: impl Fn(&StageContext) -> Faulty + Send + Sync + 'static,
    policy: RestartPolicy,
    supervision: Supervision,
    consumed: &Arc<AtomicU64>,
) -> FlowDefinition<u64> {
    let consumed = consumed.clone();
    FlowDefinition::<u64>::builder(name)
        .source("numbers", |_| source_iter(0..1_000_u64))
        .transform("faulty", faulty)
        .sink("tally", move |_| Tally::new(&consumed))
        .pipeline(["numbers", "faulty", "tally"])
        .restart("faulty", policy)
        .supervision(supervision)
        .default_retry(RetryPolicy::none())
        .pipes(PipeConfig {
            batch_size: 32,
            capacity: 2,
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_panicking_stage_is_restarted_and_the_flow_completes() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let faulty = move |_: &StageContext| Faulty {
        at: 500,
        panic: true,
        once: Some(f.clone()),
    };
    runtime
        .register(pipeline(
            "panics",
            faulty,
            RestartPolicy::transient(),
            Supervision::default(),
            &consumed,
        ))
        .await
        .unwrap();
    let run = runtime.start("panics").await.unwrap();
    let outcome = run.wait().await.unwrap();

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    // The restarted stage retried the item it panicked on, then the rest
    // of its batch and everything after: each reached the sink once.
    assert_eq!(get(&consumed), 1_000);
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["faulty"]["items_in"], 1_000);
    assert_eq!(steps["faulty"]["retried"], 1);
    assert_eq!(steps["tally"]["items_in"], 1_000);

    let failures = runtime.journal().list_failures(run.run_id()).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].step_id, "faulty");
    assert!(
        failures[0].reason.contains("poisoned item 500"),
        "{failures:?}"
    );
    assert_eq!(
        failures[0].error_json,
        Some(serde_json::json!({"restarted": true}))
    );
    assert_eq!(terminal_count(runtime.journal(), run.run_id()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_restart_intensity_fails_the_flow_naming_the_stage() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let faulty = |_: &StageContext| Faulty {
        at: 100,
        panic: true,
        once: None,
    };
    let policy = RestartPolicy::transient().backoff(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        factor: 2.0,
    });
    let supervision = Supervision::one_for_one().intensity(2, Duration::from_secs(10));
    runtime
        .register(pipeline("hopeless", faulty, policy, supervision, &consumed))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let run = runtime.start("hopeless").await.unwrap();
    let outcome = run.wait().await.unwrap();

    // Every start retries item 100, the one the first failed on.
    let reason = "stage `faulty` exceeded the flow's restart intensity (2 restarts in 10s); \
                  last error: dispatch_state panicked in state `Running`: poisoned item 100";
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.reason.as_deref(), Some(reason));
    // Two backoffs: 100 ms, then 200 ms, on tokio's (paused) clock.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let store = runtime.journal();
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunFailed {
            reason: reason.into()
        })
    );
    assert_eq!(terminal_count(store, run.run_id()).await, 1);
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.state_json["failure"]["reason"], reason);
    let restarted: Vec<_> = store
        .list_failures(run.run_id())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.error_json.unwrap()["restarted"].as_bool().unwrap())
        .collect();
    assert_eq!(restarted, [true, true, false]);
    // Nothing is recorded as completed for a failed flow's unfinished stages.
    assert!(
        store
            .list_step_outputs(run.run_id())
            .await
            .unwrap()
            .iter()
            .all(|o| o.step_id == "numbers")
    );
}

/// A temporary stage's failure alone does not fail the run: the stage is
/// abandoned, its downstream gets what it emitted and then the end of its
/// input, what its upstream still sends it is dropped, and the outcome
/// (durably, in the run's `RunCompleted`) lists it.
#[tokio::test(start_paused = true)]
async fn a_temporary_stage_failure_lets_the_run_finish_saying_so() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let faulty = |_: &StageContext| Faulty {
        at: 10,
        panic: true,
        once: None,
    };
    runtime
        .register(pipeline(
            "fragile",
            faulty,
            RestartPolicy::temporary(),
            Supervision::default(),
            &consumed,
        ))
        .await
        .unwrap();
    let run = runtime.start("fragile").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(outcome.abandoned_stages(), ["faulty"]);
    let output = outcome.structured_output.clone().unwrap();
    let reason = output["abandoned"]["faulty"]["reason"].as_str().unwrap();
    assert!(reason.contains("poisoned item 10"), "{reason}");
    // The items it passed on before failing reached the sink; the one it
    // failed on and the rest of the source's items were dropped.
    assert_eq!(get(&consumed), 10);
    assert_eq!(output["steps"]["tally"]["items_in"], 10);
    assert_eq!(output["steps"]["numbers"]["items_out"], 1_000);
    assert!(output["steps"].get("faulty").is_none(), "{output}");

    let store = runtime.journal();
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(output)
        })
    );
    let failures = store.list_failures(run.run_id()).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].step_id, "faulty");
    assert_eq!(
        failures[0].error_json,
        Some(serde_json::json!({"restarted": false}))
    );
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_unfinished_stage() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let faulty = move |_: &StageContext| Faulty {
        at: 300,
        panic: true,
        once: Some(f.clone()),
    };
    let (policy, supervision) = (RestartPolicy::transient(), Supervision::one_for_all());
    runtime
        .register(pipeline("together", faulty, policy, supervision, &consumed))
        .await
        .unwrap();
    let run = runtime.start("together").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let steps = &outcome.structured_output.unwrap()["steps"];
    // The restarted source starts over (at-least-once), so the sink sees
    // the items before the failure again, and the one that failed.
    let sink_in = steps["tally"]["items_in"].as_u64().unwrap();
    assert!(sink_in >= 1_000, "{steps}");
    assert_eq!(sink_in, get(&consumed));
    assert!(failed.load(Ordering::SeqCst));
}

/// A sink that takes one permit per item and fails once, when told to.
struct FailsOnce {
    gate: Arc<tokio::sync::Semaphore>,
    fail: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
}

impl troupe::stage::Sink<u64> for FailsOnce {
    async fn consume(&mut self, _item: u64) -> Result<(), BoxError> {
        self.gate.acquire().await?.forget();
        if self.fail.swap(false, Ordering::SeqCst) {
            panic!("sink failed");
        }
        self.consumed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One-for-all kills the relay while it is blocked sending to the full pipe
/// of the failed sink: nothing it held is lost, nor the item the sink
/// failed on (the restarted sink retries it).
#[tokio::test(start_paused = true)]
async fn a_one_for_all_kill_mid_send_loses_nothing() {
    let runtime = memory_runtime().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let fail = Arc::new(AtomicBool::new(false));
    let consumed = counter();
    let (g, f, c) = (gate.clone(), fail.clone(), consumed.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("one-for-all")
                .source("numbers", |_| source_iter(0..30_u64))
                .transform("relay", |_| {
                    troupe::stage::transform_fn(|x: u64, out: &mut Emitter<u64>| {
                        out.push(x);
                        Ok(())
                    })
                })
                .sink("sink", move |_| FailsOnce {
                    gate: g.clone(),
                    fail: f.clone(),
                    consumed: c.clone(),
                })
                .pipeline(["numbers", "relay", "sink"])
                .default_restart(RestartPolicy::transient())
                .supervision(Supervision::one_for_all())
                .default_retry(RetryPolicy::none())
                .pipes(PipeConfig {
                    batch_size: 4,
                    capacity: 4,
                })
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("one-for-all").await.unwrap();
    settle().await;
    let recorded = runtime
        .journal()
        .list_step_outputs(run.run_id())
        .await
        .unwrap();
    let names: Vec<_> = recorded.iter().map(|o| o.step_id.as_str()).collect();
    assert_eq!(names, ["numbers"], "the source completes first");
    fail.store(true, Ordering::SeqCst);
    gate.add_permits(1_000);
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(get(&consumed), 30, "an item was lost");
}

/// `default_restart` covers every stage without a policy of its own, even
/// stages added before it: here a temporary sink is not restarted.
#[tokio::test(start_paused = true)]
async fn default_restart_applies_to_stages_added_before_it() {
    let runtime = memory_runtime().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(1_000));
    let fail = Arc::new(AtomicBool::new(true));
    let consumed = counter();
    let (g, f, c) = (gate.clone(), fail.clone(), consumed.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("temporary")
                .source("numbers", |_| source_iter(0..10_u64))
                .sink("sink", move |_| FailsOnce {
                    gate: g.clone(),
                    fail: f.clone(),
                    consumed: c.clone(),
                })
                .pipeline(["numbers", "sink"])
                .default_restart(RestartPolicy::temporary())
                .retry("sink", RetryPolicy::none())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("temporary").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(outcome.abandoned_stages(), ["sink"]);
    assert_eq!(get(&consumed), 0);
}
