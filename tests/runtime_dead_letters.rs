//! Dead letters: an item whose attempts ran out (or whose error is
//! permanent) is recorded with its errors and, with `serde_items`, itself;
//! the run fails (`FailRun`, the default) or carries on (`Continue`)
//! counting it; a dead letter that cannot be recorded fails the stage,
//! which keeps the item.

mod runtime_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use runtime_support::*;
use serde_json::json;
use troupe::flow::{DeadLetterPolicy, FlowBuilder, FlowDefinition, RetryPolicy, RunOutcome};
use troupe::records::{DeadLetter, EventKind, RunStatus, TerminalEvent};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, PermanentError, Transform, source_iter};
use troupe::store::{Fault, FaultyStore, MemoryStore, Store};
use troupe::supervise::BoxError;

/// Passes items on, and always fails on item 5 (permanently if told to),
/// counting the attempts at it.
struct Poisoned {
    permanent: bool,
    attempts: Arc<AtomicU32>,
}

impl Transform<u64> for Poisoned {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if x != 5 {
            out.push(x);
            return Ok(());
        }
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let error = format!("cannot handle item {x} (attempt {n})");
        if self.permanent {
            return Err(PermanentError::new(error).into());
        }
        Err(error.into())
    }
}

struct Probe {
    seen: Seen,
    attempts: Arc<AtomicU32>,
}

/// `numbers` (0..10) → `poisoned` → `record`, three attempts per item
/// without backoff jitter; `configure` adds the settings under test.
fn flow(
    permanent: bool,
    configure: impl FnOnce(FlowBuilder<u64>) -> FlowBuilder<u64>,
) -> (FlowDefinition<u64>, Probe) {
    let seen = Seen::default();
    let attempts = Arc::new(AtomicU32::new(0));
    let (s, a) = (seen.clone(), attempts.clone());
    let builder = FlowDefinition::<u64>::builder("letters")
        .source("numbers", |_| source_iter(0..10_u64))
        .transform("poisoned", move |_| Poisoned {
            permanent,
            attempts: a.clone(),
        })
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "poisoned", "record"])
        .default_retry(RetryPolicy::attempts(3).jitter(0.0));
    (
        configure(builder).build().unwrap(),
        Probe { seen, attempts },
    )
}

async fn run_on(runtime: &Runtime, def: FlowDefinition<u64>) -> (RunOutcome, Vec<DeadLetter>) {
    runtime.register(def.clone()).await.unwrap();
    let run = runtime.start(def.name()).await.unwrap();
    let outcome = run.wait().await.unwrap();
    let letters = runtime
        .runs()
        .list_dead_letters(run.run_id())
        .await
        .unwrap();
    let direct = runtime.journal().list_dead_letters(run.run_id()).await;
    assert_eq!(direct.unwrap(), letters, "the journal lists the same");
    (outcome, letters)
}

fn sorted(seen: &Seen) -> Vec<u64> {
    let mut items = seen.lock().unwrap().clone();
    items.sort_unstable();
    items
}

#[tokio::test(start_paused = true)]
async fn under_continue_the_run_finishes_counting_the_dead_letter() {
    let (def, probe) = flow(false, |b| {
        b.serde_items().on_dead_letter(DeadLetterPolicy::Continue)
    });
    let runtime = memory_runtime().await;
    let (outcome, letters) = run_on(&runtime, def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(sorted(&probe.seen), [0, 1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(
        outcome.dead_letters(),
        BTreeMap::from([("poisoned".to_owned(), 1)])
    );
    let output = outcome.structured_output.clone().unwrap();
    assert_eq!(output["dead_letters"], json!({"poisoned": 1}));
    assert_eq!(output["steps"]["poisoned"]["items_in"], 10);
    // The recorded outcome says the same as the published one.
    let terminal = runtime
        .journal()
        .terminal_event(outcome.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(output)
        })
    );

    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(
        (letter.stage.as_str(), letter.position, letter.attempts),
        ("poisoned", 5, 3)
    );
    assert_eq!(
        letter.errors,
        (1..=3)
            .map(|n| format!("cannot handle item 5 (attempt {n})"))
            .collect::<Vec<_>>()
    );
    assert_eq!(letter.item, json!(5));
    assert_eq!(letter.run_id, outcome.run_id);
}

#[tokio::test(start_paused = true)]
async fn by_default_a_dead_letter_fails_the_run_naming_the_stage() {
    let (def, probe) = flow(false, |b| b.serde_items());
    let runtime = memory_runtime().await;
    let (outcome, letters) = run_on(&runtime, def).await;

    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    let reason = outcome.reason.unwrap();
    assert!(
        reason.contains("stage `poisoned`")
            && reason.contains("item 5")
            && reason.contains("cannot handle item 5 (attempt 3)"),
        "{reason}"
    );
    assert_eq!(probe.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].item, json!(5));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_dead_lettered_after_one_attempt() {
    let (def, probe) = flow(true, |b| {
        b.serde_items().on_dead_letter(DeadLetterPolicy::Continue)
    });
    let runtime = memory_runtime().await;
    let (outcome, letters) = run_on(&runtime, def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(probe.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].errors, ["cannot handle item 5 (attempt 1)"]);
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["poisoned"]["retried"],
        0
    );
}

#[tokio::test(start_paused = true)]
async fn without_serde_items_the_item_is_recorded_as_unserializable() {
    let (def, _probe) = flow(false, |b| b.on_dead_letter(DeadLetterPolicy::Continue));
    let runtime = memory_runtime().await;
    let (outcome, letters) = run_on(&runtime, def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].item, json!({"unserializable": "u64"}));
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_that_cannot_be_recorded_fails_the_stage_keeping_the_item() {
    let inner = Arc::new(MemoryStore::new());
    let faulty = FaultyStore::new(inner.clone());
    faulty.inject(Fault::Fail {
        op: "record_dead_letter",
        count: 1,
    });
    let runtime = Runtime::builder()
        .store(Arc::new(faulty))
        .start()
        .await
        .unwrap();
    let (def, probe) = flow(false, |b| {
        b.serde_items().on_dead_letter(DeadLetterPolicy::Continue)
    });
    let (outcome, letters) = run_on(&runtime, def).await;

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    // The stage failed with the item, was restarted (one-for-one, the
    // default) and tried it again before its dead letter was recorded.
    let failures = inner.list_failures(outcome.run_id).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].step_id, "poisoned");
    assert!(failures[0].reason.contains("dead letter"), "{failures:?}");
    assert_eq!(probe.attempts.load(Ordering::SeqCst), 6);
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].attempts, letters[0].errors.len()), (6, 6));
    assert_eq!(letters[0].item, json!(5));
    assert_eq!(sorted(&probe.seen), [0, 1, 2, 3, 4, 6, 7, 8, 9]);
}

/// `numbers` (0..10) → `poisoned` (item 5 fails permanently) → a sink that
/// takes no item until `gate` lets it (never, with `Some(0)`), so a run
/// can be cut short after its dead letter is recorded.
fn gated(
    policy: DeadLetterPolicy,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> FlowDefinition<u64> {
    let count = counter();
    FlowDefinition::<u64>::builder("gated-letters")
        .source("numbers", |_| source_iter(0..10_u64))
        .transform("poisoned", |_| Poisoned {
            permanent: true,
            attempts: Arc::new(AtomicU32::new(0)),
        })
        .sink("tally", move |_| Tally {
            gate: gate.clone(),
            ..Tally::new(&count)
        })
        .pipeline(["numbers", "poisoned", "tally"])
        .on_dead_letter(policy)
        .build()
        .unwrap()
}

/// Runs `gated` (carrying on past dead letters) until its dead letter is
/// recorded, then drops the runtime (a crash); resumes it under `policy` on
/// a new runtime over the same store. (A `FailRun` flow fails as soon as
/// the letter is recorded: resuming under it stands for a crash between
/// the two.)
async fn crash_after_the_dead_letter(policy: DeadLetterPolicy) -> (Arc<dyn Store>, RunOutcome) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = runtime_on(&store).await;
    let closed = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    let before = DeadLetterPolicy::Continue;
    first.register(gated(before, closed)).await.unwrap();
    let run = first.start("gated-letters").await.unwrap();
    settle().await;
    assert_eq!(
        store.list_dead_letters(run.run_id()).await.unwrap().len(),
        1
    );
    drop((run, first));
    settle().await;

    let second = runtime_on(&store).await;
    let report = second.register(gated(policy, None)).await.unwrap();
    let outcome = report.resumed[0].wait().await.unwrap();
    second.shutdown().await;
    (store, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_counts_the_dead_letters_recorded_before_the_restart() {
    let (store, outcome) = crash_after_the_dead_letter(DeadLetterPolicy::Continue).await;
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    // Item 5 was dead-lettered once per process (no source position yet):
    // the outcome counts both, as the journal lists both.
    let letters = store.list_dead_letters(outcome.run_id).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(
        outcome.dead_letters(),
        BTreeMap::from([("poisoned".to_owned(), 2)])
    );
}

#[tokio::test(start_paused = true)]
async fn under_fail_run_a_dead_letter_recorded_before_the_restart_fails_the_resumed_run() {
    let (store, outcome) = crash_after_the_dead_letter(DeadLetterPolicy::FailRun).await;
    assert_eq!(outcome.status, RunStatus::Failed, "{outcome:?}");
    let reason = outcome.reason.clone().unwrap_or_default();
    assert!(reason.contains("before a restart"), "{reason}");
    assert!(reason.contains("item 5"), "{reason}");
    assert_eq!(
        store.list_dead_letters(outcome.run_id).await.unwrap().len(),
        1
    );
    assert_eq!(terminal_count(&*store, outcome.run_id).await, 1);
}
