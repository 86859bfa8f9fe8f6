//! Item failures: an error for one item is retried on its stage per its
//! retry policy; a stage that fails while it holds an item (its retries
//! spent, a panic) keeps the item for its restart; an item that never
//! succeeds is dead-lettered (see `runtime_dead_letters`). No item is
//! dropped while a run ends plain `Finished`.

mod runtime_support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::*;
use serde_json::Value;
use tokio::time::Instant;
use troupe::flow::{
    Backoff, FlowBuilder, FlowDefinition, RestartPolicy, RetryPolicy, RunOutcome, Supervision,
};
use troupe::records::RunStatus;
use troupe::stage::{Emitter, Transform, source_iter};
use troupe::store::Store;
use troupe::supervise::BoxError;

/// Passes items on; on item `at` it first emits `emits` items, then fails
/// (an error, or a panic) for its first `failures` attempts (shared across
/// restarts), recording when each attempt at `at` began.
struct Flaky {
    at: u64,
    failures: u32,
    panic: bool,
    emits: u64,
    tried: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

impl Transform<u64> for Flaky {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if x != self.at {
            out.push(x);
            return Ok(());
        }
        self.attempts.lock().unwrap().push(Instant::now());
        for i in 0..self.emits {
            out.push(1_000 + i);
        }
        if self.tried.fetch_add(1, Ordering::SeqCst) < self.failures {
            if self.panic {
                panic!("poisoned item {x}");
            }
            return Err(format!("cannot handle item {x}").into());
        }
        out.push(x);
        Ok(())
    }
}

struct Setup {
    failures: u32,
    panic: bool,
    emits: u64,
}

struct Probe {
    seen: Seen,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

/// `numbers` (0..10) → `flaky` (fails on item 5 as `setup` says) → `record`;
/// `configure` sets the policies.
fn flow(
    name: &str,
    setup: Setup,
    configure: impl FnOnce(FlowBuilder<u64>) -> FlowBuilder<u64>,
) -> (FlowDefinition<u64>, Probe) {
    let seen = Seen::default();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let tried = Arc::new(AtomicU32::new(0));
    let (s, a) = (seen.clone(), attempts.clone());
    let builder = FlowDefinition::<u64>::builder(name)
        .source("numbers", |_| source_iter(0..10_u64))
        .transform("flaky", move |_| Flaky {
            at: 5,
            failures: setup.failures,
            panic: setup.panic,
            emits: setup.emits,
            tried: tried.clone(),
            attempts: a.clone(),
        })
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "flaky", "record"]);
    let def = configure(builder).build().unwrap();
    (def, Probe { seen, attempts })
}

async fn run(def: FlowDefinition<u64>) -> (RunOutcome, usize) {
    let runtime = memory_runtime().await;
    runtime.register(def.clone()).await.unwrap();
    let run = runtime.start(def.name()).await.unwrap();
    let outcome = run.wait().await.unwrap();
    let failures = runtime.journal().list_failures(run.run_id()).await.unwrap();
    (outcome, failures.len())
}

fn sorted(seen: &Seen) -> Vec<u64> {
    let mut items = seen.lock().unwrap().clone();
    items.sort_unstable();
    items
}

fn stage_output(outcome: &RunOutcome, stage: &str) -> Value {
    outcome.structured_output.as_ref().unwrap()["steps"][stage].clone()
}

/// The reproduction of issue 15: the item a transform failed on once was
/// dropped and the run still ended `Finished`.
#[tokio::test(start_paused = true)]
async fn an_item_failing_once_is_retried_on_its_stage() {
    let setup = Setup {
        failures: 1,
        panic: false,
        emits: 0,
    };
    let (def, probe) = flow("retry-once", setup, |b| b);
    let (outcome, failures) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(sorted(&probe.seen), (0..10).collect::<Vec<_>>());
    let flaky = stage_output(&outcome, "flaky");
    assert_eq!(flaky["items_in"], 10);
    assert_eq!(flaky["items_out"], 10);
    assert_eq!(flaky["retried"], 1, "{flaky}");
    assert_eq!(stage_output(&outcome, "record")["retried"], 0);
    // Retried on the stage: no restart, so nothing in the failure ledger.
    assert_eq!(failures, 0);
}

#[tokio::test(start_paused = true)]
async fn without_retries_the_restarted_stage_retries_the_item() {
    let setup = Setup {
        failures: 1,
        panic: true,
        emits: 0,
    };
    let (def, probe) = flow("restart-retries", setup, |b| {
        b.retry("flaky", RetryPolicy::none())
            .restart("flaky", RestartPolicy::transient())
    });
    let (outcome, failures) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(sorted(&probe.seen), (0..10).collect::<Vec<_>>());
    let flaky = stage_output(&outcome, "flaky");
    // Counted in once, though taken by two starts of the stage.
    assert_eq!(flaky["items_in"], 10, "{flaky}");
    assert_eq!(flaky["retried"], 1, "{flaky}");
    assert_eq!(failures, 1, "the stage failed once and was restarted");
}

#[tokio::test(start_paused = true)]
async fn what_a_failed_attempt_emitted_is_not_sent() {
    let setup = Setup {
        failures: 1,
        panic: false,
        emits: 2,
    };
    let (def, probe) = flow("no-double-emit", setup, |b| b);
    let (outcome, _) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let mut expected: Vec<u64> = (0..10).chain([1_000, 1_001]).collect();
    expected.sort_unstable();
    assert_eq!(sorted(&probe.seen), expected);
    assert_eq!(stage_output(&outcome, "flaky")["items_out"], 12);
}

#[tokio::test(start_paused = true)]
async fn what_a_panicked_attempt_emitted_is_not_sent_after_the_restart() {
    let setup = Setup {
        failures: 1,
        panic: true,
        emits: 2,
    };
    let (def, probe) = flow("panic-emit", setup, |b| b);
    let (outcome, failures) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let mut expected: Vec<u64> = (0..10).chain([1_000, 1_001]).collect();
    expected.sort_unstable();
    assert_eq!(sorted(&probe.seen), expected);
    assert_eq!(failures, 1);
}

#[tokio::test(start_paused = true)]
async fn an_item_a_stage_panicked_on_is_retried_after_the_restart() {
    let setup = Setup {
        failures: 1,
        panic: true,
        emits: 0,
    };
    let (def, probe) = flow("panic-once", setup, |b| b);
    let (outcome, failures) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(sorted(&probe.seen), (0..10).collect::<Vec<_>>());
    assert_eq!(probe.attempts.lock().unwrap().len(), 2);
    let flaky = stage_output(&outcome, "flaky");
    assert_eq!(flaky["items_in"], 10, "{flaky}");
    assert_eq!(flaky["retried"], 1, "{flaky}");
    assert_eq!(failures, 1);
}

#[tokio::test(start_paused = true)]
async fn an_item_that_always_fails_is_dead_lettered_and_fails_the_run() {
    let setup = Setup {
        failures: u32::MAX,
        panic: false,
        emits: 0,
    };
    let (def, probe) = flow("hopeless", setup, |b| {
        b.restart("flaky", RestartPolicy::transient().backoff(Backoff::NONE))
            .supervision(Supervision::one_for_one().intensity(2, Duration::from_secs(10)))
    });
    let (outcome, failures) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    assert_eq!(
        outcome.reason.as_deref(),
        Some("stage `flaky` dead-lettered item 5 after 3 attempt(s): cannot handle item 5")
    );
    // Three attempts at item 5, then its dead letter fails the run (no restart).
    assert_eq!(probe.attempts.lock().unwrap().len(), 3);
    assert_eq!(failures, 0);
    assert!(!sorted(&probe.seen).contains(&5));
}

/// When each retry of item 5 began, after the first attempt.
fn waits(probe: &Probe) -> Vec<Duration> {
    let attempts = probe.attempts.lock().unwrap();
    attempts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_wait_the_backoff_up_to_its_cap() {
    let setup = Setup {
        failures: 3,
        panic: false,
        emits: 0,
    };
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(250),
        factor: 2.0,
    };
    let (def, probe) = flow("backoff", setup, |b| {
        b.retry(
            "flaky",
            RetryPolicy::attempts(4).backoff(backoff).jitter(0.0),
        )
    });
    let (outcome, failures) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(failures, 0);
    assert_eq!(
        waits(&probe),
        [100, 200, 250].map(Duration::from_millis).to_vec()
    );
    assert_eq!(stage_output(&outcome, "flaky")["retried"], 3);
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_the_waits_and_never_lengthens_them() {
    let setup = Setup {
        failures: 4,
        panic: false,
        emits: 0,
    };
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(250),
        factor: 2.0,
    };
    let (def, probe) = flow("jitter", setup, |b| {
        b.default_retry(RetryPolicy::attempts(5).backoff(backoff).jitter(0.5))
    });
    let (outcome, _) = run(def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let waits = waits(&probe);
    assert_eq!(waits.len(), 4);
    for (n, wait) in waits.into_iter().enumerate() {
        let full = backoff.delay(n);
        assert!(
            wait <= full && wait >= full / 2,
            "retry {n} waited {wait:?}"
        );
    }
}
