//! The drive loop's rules (issue 3, "Semantics of the drive loop").

mod supervise_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use supervise_support::*;
use troupe::ids::StageId;
use troupe::supervise::{Driver, MAX_IDENTICAL_FAILURES, Progress, SupervisedExt, SupervisorError};

fn failed(why: &str) -> St {
    St::Failed(why.to_owned())
}

// Rules 1, 3 and 7: dispatch in a loop, transitions run their actions, Terminate completes once.
#[tokio::test]
async fn transitions_run_actions_and_terminate_completes_once() {
    let script = Script::new([Step::Go(Ev::Start), Step::Go(Ev::Finish), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Created, Ctx::default())
        .await
        .unwrap();
    assert_eq!(done.state, St::Done);
    assert_eq!(done.context.log, ["started", "finished"]);
    let observed = script.observed();
    assert_eq!(observed.dispatched, [St::Created, St::Running, St::Done]);
    assert_eq!(observed.completions, 1);
    assert!(observed.failures.is_empty());
}

// Rule 2: Continue dispatches again, and other tasks run between iterations.
#[tokio::test(flavor = "current_thread")]
async fn continue_dispatches_again_and_yields() {
    let script = Script::new([
        Step::Continue,
        Step::Continue,
        Step::Continue,
        Step::Terminate,
    ]);
    let ticks: Arc<AtomicUsize> = script.ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            ticks.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    ticker.abort();
    let observed = script.observed();
    assert_eq!(observed.dispatched.len(), 4);
    // On one thread, the ticker only advances when the loop yields.
    assert!(
        observed.ticks_seen.windows(2).all(|w| w[0] < w[1]),
        "the loop did not yield between iterations: {:?}",
        observed.ticks_seen
    );
}

// A loop of transitions never starves other tasks either (it spends tokio's coop budget).
#[tokio::test(flavor = "current_thread")]
async fn transitions_do_not_starve_other_tasks() {
    let mut steps: Vec<Step> = (0..300)
        .flat_map(|_| [Step::Go(Ev::Pause), Step::Go(Ev::Start)])
        .collect();
    steps.push(Step::Terminate);
    let script = Script::new(steps);
    let ticks: Arc<AtomicUsize> = script.ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            ticks.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    ticker.abort();
    let observed = script.observed();
    assert_eq!(observed.dispatched.len(), 601);
    let (first, last) = (observed.ticks_seen[0], observed.ticks_seen[600]);
    assert!(
        last > first + 1,
        "the ticker ran {} times in 600 transitions",
        last - first
    );
}

// Rule 4: a dispatch error in Running drives the machine to Failed; the
// failure action runs once; the next dispatch terminates; one completion.
#[tokio::test]
async fn a_dispatch_error_becomes_the_failure_event() {
    let script = Script::new([Step::Err("disk full".into()), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    assert_eq!(done.state, failed("disk full"));
    assert_eq!(done.context.log, ["failure: disk full"]);
    let observed = script.observed();
    assert_eq!(observed.failures, ["disk full"]);
    assert_eq!(observed.dispatched, [St::Running, failed("disk full")]);
    assert_eq!(observed.completions, 1);
}

// Rule 4: a failing action takes the failure path; the rest of its batch is dropped.
#[tokio::test]
async fn a_failing_action_takes_the_failure_path() {
    let script = Script::new([Step::Go(Ev::BadActions), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    let failure = "action 1 of 3 failed (1 later action(s) dropped): bad";
    assert_eq!(
        done.context.log,
        ["a".to_owned(), format!("failure: {failure}")]
    );
    assert_eq!(done.state, failed(failure));
    assert_eq!(script.observed().failures, [failure]);
}

// Rule 5: panics in dispatch_state, in a machine handler and in an action are caught.
#[tokio::test]
async fn panics_take_the_failure_path() {
    let script = Script::new([
        Step::Panic("dispatch exploded".into()),
        Step::Go(Ev::Start), // unhandled in Failed: an FSM error, mapped too
        Step::Terminate,
    ]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    let failures = script.observed().failures.clone();
    assert_eq!(
        failures[0],
        "dispatch_state panicked in state `Running`: dispatch exploded"
    );
    assert_eq!(
        failures[1],
        "no handler for event `Start` in state `Failed`"
    );
    assert_eq!(done.state, failed(&failures[1]));

    let script = Script::new([Step::Go(Ev::Explode), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    let failure = "handler for event `Explode` panicked in state `Running`: handler exploded";
    assert_eq!(done.state, failed(failure));
    assert_eq!(script.observed().failures, [failure]);

    let script = Script::new([Step::Go(Ev::PanickyAction), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    let failure = "action 0 of 2 failed (1 later action(s) dropped): panicked: action exploded";
    assert_eq!(done.state, failed(failure));
    assert_eq!(
        done.context.log,
        [format!("failure: {failure}")],
        "the action after the panic is dropped"
    );
}

// Actions that answer `execute_now` run there, in their place in the batch,
// and a panic there is caught like any other action's.
#[tokio::test]
async fn actions_answered_now_run_in_place_and_their_panics_are_caught() {
    let script = Script::new([Step::Go(Ev::Quick), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    assert_eq!(done.state, St::Running);
    assert_eq!(done.context.log, ["now: quick", "then slow"]);
    assert!(script.observed().failures.is_empty());

    let script = Script::new([Step::Go(Ev::PanickyNow), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    let failure =
        "action 0 of 2 failed (1 later action(s) dropped): panicked: execute_now exploded";
    assert_eq!(done.state, failed(failure));
    assert_eq!(done.context.log, [format!("failure: {failure}")]);
}

// Rule 5: a panicking entry hook of the initial state is caught too.
#[tokio::test]
async fn a_panicking_initial_entry_hook_is_mapped() {
    let script = Script::new([Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Booting, Ctx::default())
        .await
        .unwrap();
    let failure = "entry hook of state `Booting` panicked: entry exploded";
    assert_eq!(done.state, failed(failure));
    assert_eq!(script.observed().failures, [failure]);
    assert_eq!(script.observed().completions, 1);
}

// Rule 6: an FSM error takes the failure path once.
#[tokio::test]
async fn an_unhandled_event_is_mapped_once() {
    let script = Script::new([Step::Go(Ev::Bogus), Step::Terminate]);
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    let failure = "no handler for event `Bogus` in state `Running`";
    assert_eq!(script.observed().failures, [failure]);
    assert_eq!(done.context.log, [format!("failure: {failure}")]);
    assert_eq!(script.observed().completions, 1);
}

// Rule 6: a failure event the machine cannot handle ends run with an error naming state and event.
#[tokio::test]
async fn an_unhandleable_failure_event_ends_run() {
    let mut script = Script::new([Step::Err("broken".into())]);
    script.failure_event = |_| Ev::Bogus;
    let error = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap_err();
    let SupervisorError::FailureUnhandled {
        state,
        event,
        failure,
        ..
    } = &error
    else {
        panic!("unexpected error {error}");
    };
    assert_eq!(
        (*state, *event, failure.as_str()),
        ("Running", "Bogus", "broken")
    );
    assert!(
        error
            .to_string()
            .contains("`Bogus` cannot be handled in state `Running`"),
        "{error}"
    );
    assert_eq!(script.observed().completions, 0);
}

// Rule 6: the same failure repeating without a state change ends run after the bound.
#[tokio::test]
async fn repeated_identical_failures_end_run() {
    let mut script = Script::new([]);
    script.when_done = Step::Err("still broken".into());
    let error = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap_err();
    let SupervisorError::RepeatedFailure {
        state,
        count,
        failure,
        ..
    } = &error
    else {
        panic!("unexpected error {error}");
    };
    assert_eq!(
        (*state, *count, failure.as_str()),
        ("Failed", MAX_IDENTICAL_FAILURES, "still broken")
    );
    // One failure moved Running to Failed; then the bound's worth in Failed; then the stop.
    let observed = script.observed();
    assert_eq!(observed.failures.len(), 1 + MAX_IDENTICAL_FAILURES as usize);
    assert_eq!(
        observed.dispatched.len(),
        2 + MAX_IDENTICAL_FAILURES as usize
    );
    assert_eq!(observed.completions, 0);
}

// Rule 6: the bound is about identical failures; progress in between resets it.
#[tokio::test]
async fn progress_between_failures_resets_the_bound() {
    let mut steps = Vec::new();
    for _ in 0..2 * MAX_IDENTICAL_FAILURES {
        steps.extend([Step::Err("flaky".into()), Step::Continue]);
    }
    steps.push(Step::Terminate);
    let script = Script::new(steps);
    Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    assert_eq!(
        script.observed().failures.len(),
        2 * MAX_IDENTICAL_FAILURES as usize
    );
}

// Rule 7: a failed completion write is returned, not swallowed, and not retried.
#[tokio::test]
async fn a_failed_completion_write_is_returned() {
    let mut script = Script::new([Step::Terminate]);
    script.completion_fails = true;
    let error = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SupervisorError::CompletionWrite { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("journal unavailable"), "{error}");
    assert_eq!(script.observed().completions, 1);
}

// Stepping after the end runs nothing (the completion stays written once).
#[tokio::test]
async fn a_driver_never_runs_after_the_end() {
    let script = Script::new([Step::Continue, Step::Terminate]);
    let mut driver = Sup(script.clone()).driver(St::Running, Ctx::default());
    assert_eq!(driver.step().await.unwrap(), Progress::Continued);
    assert_eq!(driver.step().await.unwrap(), Progress::Terminated);
    assert!(driver.has_ended());
    let error = driver.step().await.unwrap_err();
    assert!(
        matches!(error, SupervisorError::AlreadyEnded { .. }),
        "{error}"
    );
    assert_eq!(script.observed().completions, 1);
    assert_eq!(script.observed().dispatched.len(), 2);
}

// A state's timeout cancels the dispatch in progress and fires handle_timeout.
#[tokio::test(start_paused = true)]
async fn a_state_timeout_interrupts_a_waiting_dispatch() {
    let script = Script::new([Step::Go(Ev::Wait), Step::Hang, Step::Terminate]);
    let started = tokio::time::Instant::now();
    let done = Sup(script.clone())
        .run(St::Running, Ctx::default())
        .await
        .unwrap();
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(5));
    assert_eq!(done.state, failed("timed out"));
    assert_eq!(done.context.log, ["timeout"]);
    assert_eq!(script.observed().completions, 1);
}

// Rule 8: the watcher sees every change and nothing else.
#[tokio::test]
async fn state_changes_are_published_only_on_change() {
    let script = Script::new([
        Step::Go(Ev::BadActions), // Running -> Running, then the failure -> Failed(..)
        Step::Err("x".into()),    // Failed(a) -> Failed("x"): a change of value
        Step::Err("x".into()),    // Failed("x") -> Failed("x"): no change
        Step::Continue,
        Step::Terminate,
    ]);
    let (wrapped, _tx, watcher) = with_channel(script, St::Running);
    let mut seen = watcher.subscribe();
    let mut driver = Driver::new(wrapped, St::Running, Ctx::default());
    let mut published = Vec::new();
    while driver.step().await.unwrap().is_running() {
        if seen.has_changed().unwrap() {
            published.push(seen.borrow_and_update().clone());
        }
    }
    assert!(!seen.has_changed().unwrap());
    let bad = "action 1 of 3 failed (1 later action(s) dropped): bad";
    assert_eq!(published, [failed(bad), failed("x")]);
    assert_eq!(*watcher.current(), failed("x"));
}

/// How a stopped loop names its supervisor: the error's `who.stage` and message.
async fn stage_in_error(
    sup: impl SupervisedExt<State = St, Context = Ctx>,
) -> (Option<StageId>, String) {
    let error = sup.run(St::Running, Ctx::default()).await.unwrap_err();
    let SupervisorError::CompletionWrite { who, .. } = &error else {
        panic!("unexpected error {error}");
    };
    (who.stage, error.to_string())
}

// A stage's supervisor is named by its stage id in the errors of its loop,
// wrapped or not; another component (`stage_id` is `None`) by name and writer only.
#[tokio::test]
async fn the_stage_id_names_the_supervisor_in_errors() {
    let mut script = Script::new([Step::Terminate]);
    script.completion_fails = true;
    let (stage, message) = stage_in_error(Sup(script.clone())).await;
    assert_eq!(stage, Some(STAGE));
    assert!(message.contains("`Sup` (writer-7, stage-7)"), "{message}");

    let mut script = Script::new([Step::Terminate]);
    script.completion_fails = true;
    let (wrapped, _tx, _watcher) = with_channel(script, St::Running);
    let (stage, message) = stage_in_error(wrapped).await;
    assert_eq!(stage, Some(STAGE), "the wrapper keeps the inner stage id");
    assert!(message.contains("`Sup` (writer-7, stage-7)"), "{message}");

    let mut script = Script::new([Step::Terminate]);
    script.completion_fails = true;
    script.stage = None;
    let (stage, message) = stage_in_error(Sup(script)).await;
    assert_eq!(stage, None);
    assert!(message.contains("`Sup` (writer-7)"), "{message}");
}

/// A subscriber that records the `stage` field of each `supervise` span.
#[derive(Clone, Default)]
struct SpanStages(Arc<Mutex<Vec<Option<u64>>>>);

struct StageField(Option<u64>);

impl tracing::field::Visit for StageField {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "stage" {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl tracing::Subscriber for SpanStages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        if span.metadata().name() == "supervise" {
            let mut stage = StageField(None);
            span.record(&mut stage);
            self.0.lock().unwrap().push(stage.0);
        }
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// The loop's span carries the stage id, wrapped or not, and none for another component.
#[test]
fn the_stage_id_is_a_field_of_the_loop_span() {
    let spans = SpanStages::default();
    tracing::subscriber::with_default(spans.clone(), || {
        drop(Sup(Script::new([])).driver(St::Running, Ctx::default()));
        let (wrapped, _tx, _watcher) = with_channel(Script::new([]), St::Running);
        drop(wrapped.driver(St::Running, Ctx::default()));
        let mut script = Script::new([]);
        script.stage = None;
        drop(Sup(script).driver(St::Running, Ctx::default()));
    });
    assert_eq!(
        *spans.0.lock().unwrap(),
        [Some(STAGE.get()), Some(STAGE.get()), None]
    );
}
