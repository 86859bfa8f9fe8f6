//! Hibernating runs: a run whose steps all wait durably holds no actor
//! (`Runtime::run_counts`), and is woken by its timer, a signal, a child's
//! end or a cancel; its `RunHandle` keeps working across the cycles, its
//! memos are not run again, and a crash while it hibernates loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use troupe::flow::{ControlEvent, FlowDefinition, RunHandle, RunOptions};
use troupe::records::{RunFilter, RunStatus};
use troupe::runtime::{RunCounts, Runtime, RuntimeBuilder};
use troupe::stage::{ParentClose, StageContext, step_fn};
use troupe::store::Store;

const HOUR: Duration = Duration::from_secs(3600);

fn builder() -> RuntimeBuilder {
    Runtime::builder().memory().hibernate_after(Duration::ZERO)
}

/// `nap`: charges once (counted in `calls`, memoized), sleeps an hour,
/// then answers with the charge.
fn nap(calls: &Arc<AtomicU32>) -> FlowDefinition<u64> {
    let calls = calls.clone();
    FlowDefinition::<u64>::builder("nap")
        .step("rest", move |ctx: &StageContext| {
            let (ctx, calls) = (ctx.clone(), calls.clone());
            step_fn(move |_| {
                let (ctx, calls) = (ctx.clone(), calls.clone());
                async move {
                    let charge: u32 = ctx
                        .run("charge", || async move {
                            Ok(calls.fetch_add(1, Ordering::SeqCst) + 41)
                        })
                        .await?;
                    ctx.sleep("nap", HOUR).await?;
                    Ok(json!({ "charge": charge }))
                }
            })
        })
        .build()
        .unwrap()
}

/// `approval`: sleeps `before` (if any), then takes the signals `names` in
/// order and answers with their payloads.
fn approval(before: Option<Duration>, names: &'static [&'static str]) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("approval")
        .step("approve", move |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    if let Some(before) = before {
                        ctx.sleep("before", before).await?;
                    }
                    let mut got = Vec::new();
                    for name in names {
                        got.push(ctx.wait_signal(name, None).await?);
                    }
                    Ok(json!(got))
                }
            })
        })
        .build()
        .unwrap()
}

/// `chore`: waits for the signal `go`, answers with its payload.
fn chore() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("chore")
        .step("work", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move { Ok(json!(ctx.wait_signal("go", None).await?)) }
            })
        })
        .build()
        .unwrap()
}

/// `parent`: starts a `chore` per key of its input (`{"key": "abandon" |
/// "cancel"}`, their parent-close policy) and awaits them all.
fn parent() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("parent")
        .step("delegate", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let kids: serde_json::Map<String, Value> = ctx.input().unwrap_or_default();
                    let mut started = Vec::new();
                    for (key, policy) in &kids {
                        let policy = match policy.as_str() {
                            Some("abandon") => ParentClose::Abandon,
                            _ => ParentClose::Cancel,
                        };
                        started.push(ctx.start_child_with("chore", 0, key, policy).await?);
                    }
                    let mut outputs = Vec::new();
                    for child in &started {
                        outputs.push(ctx.await_child(child).await?["steps"]["work"].clone());
                    }
                    Ok(json!(outputs))
                }
            })
        })
        .build()
        .unwrap()
}

/// Waits (in paused time) until `run` hibernates.
async fn hibernated(run: &RunHandle) {
    while !run.is_hibernated() {
        assert!(run.outcome().is_none(), "ended: {:?}", run.outcome());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn counts(live: usize, hibernated: usize, actors: usize) -> RunCounts {
    RunCounts {
        live,
        hibernated,
        actors,
    }
}

#[tokio::test(start_paused = true)]
async fn a_hibernated_run_has_no_actor_and_wakes_on_its_timer_without_charging_again() {
    let calls = Arc::new(AtomicU32::new(0));
    let runtime = builder()
        .register(nap(&calls))
        .unwrap()
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let run = runtime.start("nap").await.unwrap();
    hibernated(&run).await;
    assert_eq!(runtime.run_counts(), counts(0, 1, 0));
    let record = runtime.journal().get_run(run.run_id()).await.unwrap();
    assert_eq!(record.unwrap().status, RunStatus::Waiting);

    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert!(
        started.elapsed() >= HOUR,
        "woken early: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < HOUR + Duration::from_secs(1),
        "woken late: {:?}",
        started.elapsed()
    );
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["rest"],
        json!({ "charge": 41 })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the memo was run again");
    assert_eq!(runtime.run_counts(), counts(0, 0, 0));
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn signals_wake_a_hibernated_run_again_and_again_and_its_handle_follows() {
    let runtime = builder()
        .register(approval(None, &["first", "second"]))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("approval").await.unwrap();
    hibernated(&run).await;
    assert_eq!(runtime.run_counts(), counts(0, 1, 0));
    // Journaled for the run while it sleeps: it wakes, takes it, sleeps again.
    runtime
        .send_signal(run.run_id(), None, "first", json!(1))
        .await
        .unwrap();
    hibernated(&run).await;
    assert_eq!(run.outcome(), None);
    let waiting = runtime.journal().get_run(run.run_id()).await.unwrap();
    let wait = waiting.unwrap().wait_json.unwrap();
    assert_eq!(wait["stages"]["approve"]["signal"], "second", "{wait}");
    // Through the handle taken before the first sleep.
    run.signal("second", json!(2)).await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["approve"],
        json!([1, 2])
    );
    assert_eq!(run.state(), troupe::flow::RunState::Finished);
    assert!(run.signal("late", json!(3)).await.is_err());
    assert_eq!(runtime.run_counts(), counts(0, 0, 0));
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_signal_sent_before_the_run_hibernated_is_taken_once_it_wakes() {
    let runtime = builder()
        .register(approval(Some(HOUR), &["go"]))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("approval").await.unwrap();
    // Sent while the run is live and its step sleeps, before any wait for it.
    run.signal("go", json!("early")).await.unwrap();
    hibernated(&run).await;
    assert_eq!(runtime.run_counts(), counts(0, 1, 0));
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["approve"],
        json!(["early"])
    );
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hibernated_parent_wakes_when_its_child_ends() {
    let runtime = builder()
        .register(chore())
        .unwrap()
        .register(parent())
        .unwrap()
        .start()
        .await
        .unwrap();
    let options = RunOptions::new().input(json!({ "only": "cancel" }));
    let run = runtime.start_with("parent", options).await.unwrap();
    hibernated(&run).await;
    let child = only_child(&runtime, run.run_id()).await;
    while runtime.run_counts() != counts(0, 2, 0) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    runtime
        .send_signal(child, None, "go", json!("done"))
        .await
        .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["delegate"],
        json!(["done"])
    );
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_a_hibernated_run_and_its_children_per_their_policy() {
    let runtime = builder()
        .register(chore())
        .unwrap()
        .register(parent())
        .unwrap()
        .start()
        .await
        .unwrap();
    let options = RunOptions::new().input(json!({ "a": "cancel", "b": "abandon" }));
    let run = runtime.start_with("parent", options).await.unwrap();
    hibernated(&run).await;
    while runtime.run_counts() != counts(0, 3, 0) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reason = "no longer needed".to_owned();
    run.send(ControlEvent::Cancel { reason }).await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled, "{outcome:?}");
    let children = children_of(&runtime, run.run_id()).await;
    let status = |key: &str| {
        let key = format!("{}/{key}", run.run_id());
        children
            .iter()
            .find(|c| c.key.as_deref() == Some(key.as_str()))
            .map(|c| c.id)
            .unwrap()
    };
    let cancelled = status("a");
    let abandoned = status("b");
    // The cancelled child ends (woken for it); the abandoned one sleeps on.
    loop {
        let record = runtime.journal().get_run(cancelled).await.unwrap().unwrap();
        if record.status.is_terminal() {
            assert_eq!(record.status, RunStatus::Cancelled);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let record = runtime.journal().get_run(abandoned).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Waiting);
    while runtime.run_counts() != counts(0, 1, 0) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A cancel through the control plane ends a hibernated run too.
    runtime.runs().cancel(abandoned).await.unwrap();
    let handle = runtime
        .live_runs()
        .into_iter()
        .find(|r| r.run_id() == abandoned)
        .unwrap();
    assert_eq!(handle.wait().await.unwrap().status, RunStatus::Cancelled);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_hibernated_resumes_the_run_which_then_completes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let calls = Arc::new(AtomicU32::new(0));
    let first = builder()
        .sqlite(&path)
        .register(nap(&calls))
        .unwrap()
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let run = first.start("nap").await.unwrap();
    hibernated(&run).await;
    drop(first);

    let second = reopen(&path, Some(nap(&calls))).await;
    let resumed = second.resumed()[0].clone();
    assert_eq!(resumed.run_id(), run.run_id());
    // Its record said what it waits for: it hibernates without an actor
    // ever starting, until its journaled deadline.
    assert!(resumed.is_hibernated());
    assert_eq!(second.run_counts(), counts(0, 1, 0));
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    // (Not bounded above: paused time jumps ahead while SQLite works.)
    assert!(started.elapsed() >= HOUR);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the memo was run again");
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_leaves_a_hibernated_run_to_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let calls = Arc::new(AtomicU32::new(0));
    let first = builder()
        .sqlite(&path)
        .register(nap(&calls))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("nap").await.unwrap();
    hibernated(&run).await;
    first.shutdown().await;
    // Not woken to drain: left as the journal has it.
    assert_eq!(run.outcome(), None);
    let refused = run.signal("late", json!(1)).await;
    assert!(refused.is_err(), "{refused:?}");

    let second = reopen(&path, Some(nap(&calls))).await;
    let outcome = second.resumed()[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_run_with_a_signal_journaled_while_the_process_was_down_starts_awake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let first = reopen(&path, Some(approval(None, &["go"]))).await;
    let run = first.start("approval").await.unwrap();
    hibernated(&run).await;
    drop(first);
    // A process without the flow journals a signal for it.
    let between = reopen(&path, None).await;
    between
        .send_signal(run.run_id(), None, "go", json!("meanwhile"))
        .await
        .unwrap();
    between.shutdown().await;

    let last = reopen(&path, Some(approval(None, &["go"]))).await;
    let resumed = last.resumed()[0].clone();
    assert!(!resumed.is_hibernated(), "its inbox holds input");
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["approve"],
        json!(["meanwhile"])
    );
    last.shutdown().await;
}

async fn children_of(runtime: &Runtime, parent: uuid::Uuid) -> Vec<troupe::records::Run> {
    let filter = RunFilter {
        parent_run_id: Some(parent),
        ..RunFilter::default()
    };
    runtime
        .journal()
        .list_runs(&filter, None, 100)
        .await
        .unwrap()
}

async fn only_child(runtime: &Runtime, parent: uuid::Uuid) -> uuid::Uuid {
    let children = children_of(runtime, parent).await;
    assert_eq!(children.len(), 1);
    children[0].id
}

/// A runtime on the SQLite journal at `path` with `flow` registered, once
/// the runtime dropped before has released it.
async fn reopen(path: &std::path::Path, flow: Option<FlowDefinition<u64>>) -> Runtime {
    loop {
        let builder = builder().sqlite(path);
        let builder = match &flow {
            Some(flow) => builder.register(flow.clone()).unwrap(),
            None => builder,
        };
        match builder.start().await {
            Ok(runtime) => return runtime,
            Err(troupe::runtime::RuntimeError::JournalLocked { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
}
