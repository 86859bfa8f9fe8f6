//! A flow supervises its stages as an OTP supervisor its children: the
//! intensity counts the restarts of every stage of a run, the strategy
//! says which stages a restart takes, each stage's restart type which of
//! its exits restart it. Stage starts are counted through their factories.

mod runtime_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::*;
use serde_json::{Value, json};
use troupe::flow::{
    FlowBuilder, FlowDefinition, RestartPolicy, RestartStrategy, RestartType, RetryPolicy,
    RunOutcome, Supervision,
};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::StageContext;
use troupe::stage::{Emitter, PipeConfig, StepInputs, Transform, source_iter, step_fn};
use troupe::store::Store;
use troupe::supervise::BoxError;

/// The stages of [`chain`], in start order.
const STAGES: [&str; 4] = ["numbers", "a", "b", "sink"];

/// Passes items on; fails on every item from `at` on while `left` says
/// it still has failures to give.
struct Relay {
    at: u64,
    left: Arc<AtomicU64>,
}

impl Transform<u64> for Relay {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        let fail = x >= self.at
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            // A panic fails the stage (an error would dead-letter the item).
            panic!("relay failed on item {x}");
        }
        out.push(x);
        Ok(())
    }
}

/// When relays `a` and `b` fail: from which item on, and how many times.
#[derive(Clone, Copy)]
struct Faults {
    a: (u64, u64),
    b: (u64, u64),
}

const NEVER: (u64, u64) = (0, 0);

/// `numbers` (0..1000) → `a` → `b` → `sink` over small pipes (the source
/// is still producing when a relay fails early), each stage counting its
/// starts. The caller adds restart policies and supervision.
struct Chain {
    starts: [Arc<AtomicU64>; 4],
    consumed: Arc<AtomicU64>,
}

impl Chain {
    fn builder(name: &str, faults: Faults) -> (FlowBuilder<u64>, Chain) {
        let starts: [Arc<AtomicU64>; 4] = Default::default();
        let consumed = counter();
        let [n, a, b, k] = starts.clone();
        let c = consumed.clone();
        let relay = |started: Arc<AtomicU64>, (at, times): (u64, u64)| {
            let left = Arc::new(AtomicU64::new(times));
            move |_: &StageContext| {
                started.fetch_add(1, Ordering::SeqCst);
                Relay {
                    at,
                    left: left.clone(),
                }
            }
        };
        let builder = FlowDefinition::<u64>::builder(name)
            .source("numbers", move |_| {
                n.fetch_add(1, Ordering::SeqCst);
                source_iter(0..1_000_u64)
            })
            .transform("a", relay(a, faults.a))
            .transform("b", relay(b, faults.b))
            .sink("sink", move |_| {
                k.fetch_add(1, Ordering::SeqCst);
                Tally::new(&c)
            })
            .pipeline(STAGES)
            .pipes(PipeConfig {
                batch_size: 8,
                capacity: 2,
            })
            // Without item retries, an item's error fails its stage at once.
            .default_retry(RetryPolicy::none());
        (builder, Chain { starts, consumed })
    }

    /// How many times each stage started, in [`STAGES`] order.
    fn starts(&self) -> [u64; 4] {
        self.starts.each_ref().map(get)
    }
}

async fn run_to_end<T: Clone + Send + 'static>(
    runtime: &Runtime,
    builder: FlowBuilder<T>,
) -> RunOutcome {
    let def = builder.build().unwrap();
    let name = def.name().to_owned();
    runtime.register(def).await.unwrap();
    let run = runtime.start(&name).await.unwrap();
    tokio::time::timeout(Duration::from_secs(600), run.wait())
        .await
        .expect("the run did not end")
        .unwrap()
}

/// Whether each failure in the run's ledger was followed by a restart, by stage.
async fn ledger(runtime: &Runtime, outcome: &RunOutcome) -> Vec<(String, bool)> {
    let failures = runtime
        .journal()
        .list_failures(outcome.run_id)
        .await
        .unwrap();
    failures
        .into_iter()
        .map(|f| {
            let restarted = f.error_json.unwrap()["restarted"].as_bool().unwrap();
            (f.step_id, restarted)
        })
        .collect()
}

/// OTP counts restarts per supervisor: `a` and `b` each fail once within
/// the period, which exceeds the flow's intensity of 1 although each stage
/// alone is within it. The run fails naming the stage whose exit exceeded it.
#[tokio::test(start_paused = true)]
async fn two_stages_failing_once_each_exceed_an_intensity_of_one() {
    let runtime = memory_runtime().await;
    let faults = Faults {
        a: (10, 1),
        b: (20, 1),
    };
    let (builder, chain) = Chain::builder("two-failures", faults);
    let intensity = Supervision::one_for_one().intensity(1, Duration::from_secs(60));
    let outcome = run_to_end(&runtime, builder.supervision(intensity)).await;

    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    assert_eq!(
        outcome.reason.as_deref(),
        Some(
            "stage `b` exceeded the flow's restart intensity (1 restart in 60s); \
             last error: dispatch_state panicked in state `Running`: relay failed on item 20"
        )
    );
    assert_eq!(chain.starts(), [1, 2, 1, 1]);
    let expected = [("a".to_owned(), true), ("b".to_owned(), false)];
    assert_eq!(ledger(&runtime, &outcome).await, expected);

    // Allowed two restarts, the same failures leave the run to finish.
    let (builder, chain) = Chain::builder("two-failures-allowed", faults);
    let intensity = Supervision::one_for_one().intensity(2, Duration::from_secs(60));
    let outcome = run_to_end(&runtime, builder.supervision(intensity)).await;
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(chain.starts(), [1, 2, 2, 1]);
    // Nothing is lost: each restarted relay retried the item it failed on.
    assert_eq!(get(&chain.consumed), 1000);
}

/// Without any setting, a flow allows OTP's 1 restart in 5 s: a stage that
/// fails again right after its restart fails the run.
#[tokio::test(start_paused = true)]
async fn the_default_intensity_is_one_restart_in_five_seconds() {
    let runtime = memory_runtime().await;
    let faults = Faults {
        a: (10, u64::MAX),
        b: NEVER,
    };
    let (builder, chain) = Chain::builder("defaults", faults);
    let outcome = run_to_end(&runtime, builder).await;
    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    assert_eq!(
        outcome.reason.as_deref(),
        Some(
            "stage `a` exceeded the flow's restart intensity (1 restart in 5s); \
             last error: dispatch_state panicked in state `Running`: relay failed on item 10"
        )
    );
    assert_eq!(chain.starts(), [1, 2, 1, 1]);
}

/// The default restart type is permanent and the default strategy
/// one-for-one: a failed stage alone is restarted, with the default backoff.
#[tokio::test(start_paused = true)]
async fn by_default_a_failed_stage_alone_is_restarted() {
    let runtime = memory_runtime().await;
    let faults = Faults {
        a: NEVER,
        b: (300, 1),
    };
    let (builder, chain) = Chain::builder("one-for-one", faults);
    let started = tokio::time::Instant::now();
    let outcome = run_to_end(&runtime, builder.default_restart(RestartPolicy::default())).await;
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "no backoff"
    );
    assert_eq!(chain.starts(), [1, 1, 2, 1]);
    // The restarted stage retried the item it failed on.
    assert_eq!(get(&chain.consumed), 1000);
}

/// Which stages a restart takes, by strategy: one-for-one the failed stage,
/// one-for-all every stage, rest-for-one the failed stage and the stages
/// after it in start order (the ones before it keep running).
#[tokio::test(start_paused = true)]
async fn each_strategy_restarts_the_stages_it_takes() {
    let runtime = memory_runtime().await;
    let b_fails = Faults {
        a: NEVER,
        b: (20, 1),
    };
    let a_fails = Faults {
        a: (20, 1),
        b: NEVER,
    };
    let cases = [
        (Supervision::one_for_one(), b_fails, [1, 1, 2, 1]),
        (Supervision::one_for_all(), b_fails, [2, 2, 2, 2]),
        (Supervision::rest_for_one(), b_fails, [1, 1, 2, 2]),
        (Supervision::rest_for_one(), a_fails, [1, 2, 2, 2]),
    ];
    for (i, (supervision, faults, starts)) in cases.into_iter().enumerate() {
        let (builder, chain) = Chain::builder(&format!("strategy-{i}"), faults);
        let outcome = run_to_end(&runtime, builder.supervision(supervision)).await;
        let case = format!("{:?}: {outcome:?}", supervision.strategy);
        assert_eq!(outcome.status, RunStatus::Finished, "{case}");
        assert_eq!(chain.starts(), starts, "{case}");
        // A restarted source starts over (at-least-once); otherwise every
        // item arrives once (the restarted relay retried the one it failed on).
        let consumed = get(&chain.consumed);
        match starts[0] {
            1 => assert_eq!(consumed, 1000, "{case}"),
            _ => assert!(consumed >= 1000, "{case}"),
        }
    }
}

/// Restart types under each strategy, `b` failing once with `a` transient
/// and `sink` temporary: a permanent or transient `b` is restarted with the
/// stages its strategy takes, of which a transient one is restarted and a
/// temporary one abandoned (OTP never restarts a temporary child, even one
/// a sibling's restart stopped); a temporary `b` is never restarted and
/// takes nothing with it: it is abandoned, and `sink` gets the end of its
/// input after what `b` passed on.
#[tokio::test(start_paused = true)]
async fn restart_types_under_each_strategy() {
    use RestartStrategy::{OneForAll, OneForOne, RestForOne};
    let runtime = memory_runtime().await;
    let faults = Faults {
        a: NEVER,
        b: (20, 1),
    };
    for strategy in [OneForOne, OneForAll, RestForOne] {
        for b_type in [
            RestartType::Permanent,
            RestartType::Transient,
            RestartType::Temporary,
        ] {
            let (starts, abandoned): ([u64; 4], &[&str]) = match (b_type, strategy) {
                (RestartType::Temporary, _) => ([1, 1, 1, 1], &["b"]),
                (_, OneForOne) => ([1, 1, 2, 1], &[]),
                (_, OneForAll) => ([2, 2, 2, 1], &["sink"]),
                (_, RestForOne) => ([1, 1, 2, 1], &["sink"]),
            };
            let name = format!("{strategy:?}-{b_type:?}");
            let (builder, chain) = Chain::builder(&name, faults);
            let builder = builder
                .supervision(Supervision {
                    strategy,
                    ..Supervision::default()
                })
                .restart("a", RestartPolicy::transient())
                .restart(
                    "b",
                    RestartPolicy {
                        restart: b_type,
                        ..RestartPolicy::default()
                    },
                )
                .restart("sink", RestartPolicy::temporary());
            let outcome = run_to_end(&runtime, builder).await;
            let case = format!("{name}: {outcome:?}");
            assert_eq!(outcome.status, RunStatus::Finished, "{case}");
            assert_eq!(chain.starts(), starts, "{case}");
            assert_eq!(outcome.abandoned_stages(), abandoned, "{case}");
            let ledger = ledger(&runtime, &outcome).await;
            let restarted = b_type != RestartType::Temporary;
            assert_eq!(ledger, [("b".to_owned(), restarted)], "{case}");
            if b_type == RestartType::Temporary {
                // What `b` passed on before it failed, and nothing after.
                assert_eq!(get(&chain.consumed), 20, "{case}");
            }
        }
    }
}

/// A temporary stage stopped by a restart of the stages before it
/// (rest-for-one, `a` failing) is abandoned, not restarted: the run
/// finishes without it, listing it.
#[tokio::test(start_paused = true)]
async fn a_temporary_stage_a_restart_stopped_is_abandoned() {
    let runtime = memory_runtime().await;
    let faults = Faults {
        a: (20, 1),
        b: NEVER,
    };
    let (builder, chain) = Chain::builder("rest-for-one-temporary", faults);
    let builder = builder
        .supervision(Supervision::rest_for_one())
        .restart("b", RestartPolicy::temporary());
    let outcome = run_to_end(&runtime, builder).await;
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(chain.starts(), [1, 2, 1, 2]);
    assert_eq!(outcome.abandoned_stages(), ["b"]);
    let output = outcome.structured_output.unwrap();
    assert_eq!(
        output["abandoned"]["b"]["reason"],
        "stopped for a restart of stage `a`"
    );
    // The restarted sink got what `b` had passed on, then the end of its input.
    assert_eq!(
        output["steps"]["sink"]["items_in"].as_u64(),
        Some(get(&chain.consumed))
    );
    assert!(get(&chain.consumed) <= 20);
}

/// A step after an abandoned temporary step runs without its output, as a
/// stream stage after an abandoned one gets the end of its input.
#[tokio::test(start_paused = true)]
async fn a_step_after_an_abandoned_step_runs_without_its_output() {
    let runtime = memory_runtime().await;
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Default::default();
    let s = seen.clone();
    let builder = FlowDefinition::<()>::builder("steps")
        .step("lookup", |_| {
            step_fn(|_: StepInputs| async { Err::<Value, BoxError>("lookup is down".into()) })
        })
        .step("reply", move |_| {
            let s = s.clone();
            step_fn(move |inputs: StepInputs| {
                s.lock().unwrap().push(inputs.keys().cloned().collect());
                async { Ok(json!("sent")) }
            })
        })
        .pipeline(["lookup", "reply"])
        .restart("lookup", RestartPolicy::temporary())
        .default_retry(RetryPolicy::none());
    let outcome = run_to_end(&runtime, builder).await;
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        outcome.structured_output,
        Some(json!({
            "steps": { "reply": "sent" },
            "abandoned": { "lookup": { "reason": "lookup is down" } },
        }))
    );
    assert_eq!(*seen.lock().unwrap(), [Vec::<String>::new()]);
}
