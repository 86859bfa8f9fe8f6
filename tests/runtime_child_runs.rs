//! Child runs (`StageContext::start_child` / `await_child`): a parent step
//! starts a run of another flow as its child, once per key whatever the
//! restarts and crashes, and gets the child's real terminal, recorded in
//! the parent once; a parent that fails or is cancelled cancels its
//! children that have not ended (unless they were abandoned).

mod runtime_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::{runtime_on, settle};
use serde_json::{Value, json};
use troupe::flow::{ControlEvent, FlowDefinition, RunOptions};
use troupe::records::{Run, RunFilter, RunStatus};
use troupe::runtime::Runtime;
use troupe::stage::{ChildError, ChildRun, ParentClose, PermanentError, StageContext, step_fn};
use troupe::store::{MemoryStore, SqliteStore, Store};
use uuid::Uuid;

/// What the parent's step got from `await_child`: the output, or the
/// failure's reason.
type Got = Arc<Mutex<Vec<Result<Value, String>>>>;

/// `ship`: labels the parcel `input.n`; first waits for the signal `go`
/// when `input.wait`, fails for good when `input.fail`.
fn ship() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("ship")
        .step("label", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let input = ctx.input_json().clone();
                    if input["wait"] == json!(true) {
                        ctx.wait_signal("go", None).await?;
                    }
                    if input["fail"] == json!(true) {
                        return Err(PermanentError::new("no truck").into());
                    }
                    Ok(json!({ "label": input["n"] }))
                }
            })
        })
        .build()
        .unwrap()
}

/// `order`: its step `shipment` starts `ship` (or `input.flow`) with `input.child` under the
/// key `parcel` (or awaits the run `input.await` instead), panics once
/// after the start while `crash` is set, then awaits the child and keeps
/// what it got in `got` (and panics then instead, once, while `crash` is
/// set, when `input.crash_after_await`).
fn order(got: &Got, crash: &Arc<AtomicBool>) -> FlowDefinition<u64> {
    let (got, crash) = (got.clone(), crash.clone());
    FlowDefinition::<u64>::builder("order")
        .step("shipment", move |ctx: &StageContext| {
            let (ctx, got, crash) = (ctx.clone(), got.clone(), crash.clone());
            step_fn(move |_| {
                let (ctx, got, crash) = (ctx.clone(), got.clone(), crash.clone());
                async move {
                    let input = ctx.input_json().clone();
                    let child = match input["await"].as_str() {
                        Some(id) => ChildRun::new(id.parse()?, "ship"),
                        None => {
                            let policy = match input["abandon"] == json!(true) {
                                true => ParentClose::Abandon,
                                false => ParentClose::Cancel,
                            };
                            let flow = input["flow"].as_str().unwrap_or("ship");
                            ctx.start_child_with(flow, &input["child"], "parcel", policy)
                                .await?
                        }
                    };
                    let late = input["crash_after_await"] == json!(true);
                    if !late && crash.swap(false, Ordering::SeqCst) {
                        panic!("crash after the start");
                    }
                    let answer = match ctx.await_child(&child).await {
                        Ok(output) => Ok(output),
                        Err(ChildError::Failed { reason, .. }) => Err(reason),
                        Err(other) => return Err(other.into()),
                    };
                    got.lock().unwrap().push(answer.clone());
                    if late && crash.swap(false, Ordering::SeqCst) {
                        panic!("crash after the await");
                    }
                    Ok(json!({ "child": child.run_id(), "got": format!("{answer:?}") }))
                }
            })
        })
        .build()
        .unwrap()
}

async fn both_on(store: &Arc<dyn Store>, got: &Got, crash: &Arc<AtomicBool>) -> Runtime {
    let runtime = runtime_on(store).await;
    runtime.register(ship()).await.unwrap();
    runtime.register(order(got, crash)).await.unwrap();
    runtime
}

fn calm() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

async fn children(store: &Arc<dyn Store>, parent: Uuid) -> Vec<Run> {
    let filter = RunFilter {
        parent_run_id: Some(parent),
        ..RunFilter::default()
    };
    store.list_runs(&filter, None, 100).await.unwrap()
}

/// Waits until the parent has a child; that child.
async fn child_of(store: &Arc<dyn Store>, parent: Uuid) -> Run {
    for _ in 0..PATIENCE {
        if let Some(child) = children(store, parent).await.pop() {
            return child;
        }
        settle().await;
    }
    panic!("run {parent} started no child");
}

/// How many times a test looks again for what it waits for (10 ms apart).
const PATIENCE: usize = 1_000;

/// Waits until the run's record has `status`.
async fn record_is(store: &Arc<dyn Store>, run: Uuid, status: RunStatus) -> Run {
    let mut record = None;
    for _ in 0..PATIENCE {
        let now = store.get_run(run).await.unwrap().unwrap();
        if now.status == status {
            return now;
        }
        record = Some(now);
        settle().await;
    }
    panic!("run {run} is not {status:?}: {record:?}");
}

async fn events_named(store: &Arc<dyn Store>, run: Uuid, name: &str) -> usize {
    let log = store.replay(run).await.unwrap();
    log.iter().filter(|e| e.kind.name() == name).count()
}

async fn memos_named(store: &Arc<dyn Store>, run: Uuid, prefix: &str) -> usize {
    let memos = store.list_memos(run, "shipment").await.unwrap();
    memos.iter().filter(|m| m.name.starts_with(prefix)).count()
}

#[tokio::test]
async fn a_parent_gets_its_childs_output_and_the_child_names_its_parent() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    parent_gets_output(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_gets_its_childs_output_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("journal.sqlite"))
        .await
        .unwrap();
    parent_gets_output(Arc::new(store)).await;
}

async fn parent_gets_output(store: Arc<dyn Store>) {
    let got = Got::default();
    let runtime = both_on(&store, &got, &calm()).await;
    let options = RunOptions::new().input(json!({ "child": { "n": 7 } }));
    let parent = runtime.start_with("order", options).await.unwrap();
    let outcome = parent.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let output = got.lock().unwrap().pop().unwrap().unwrap();
    assert_eq!(output["steps"]["label"], json!({ "label": 7 }));

    let kids = children(&store, parent.run_id()).await;
    assert_eq!(kids.len(), 1);
    let child = &kids[0];
    assert_eq!(child.parent_run_id, Some(parent.run_id()));
    assert_eq!(child.controller_id, "ship");
    assert_eq!(child.status, RunStatus::Finished);
    assert_eq!(
        child.key.as_deref(),
        Some(format!("{}/parcel", parent.run_id()).as_str())
    );
    assert_eq!(
        events_named(&store, parent.run_id(), "child_started").await,
        1
    );
    assert_eq!(
        events_named(&store, parent.run_id(), "child_ended").await,
        1
    );
    assert_eq!(
        memos_named(&store, parent.run_id(), "@child-terminal/").await,
        1
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_start_run_again_after_a_stage_restart_returns_the_same_child() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let crash = Arc::new(AtomicBool::new(true));
    let runtime = both_on(&store, &got, &crash).await;
    let options = RunOptions::new().input(json!({ "child": { "n": 1 } }));
    let parent = runtime.start_with("order", options).await.unwrap();
    let outcome = parent.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert!(!crash.load(Ordering::SeqCst), "the step panicked once");
    assert_eq!(children(&store, parent.run_id()).await.len(), 1);
    assert_eq!(got.lock().unwrap().len(), 1);
    assert_eq!(
        events_named(&store, parent.run_id(), "child_started").await,
        1
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_step_run_again_after_the_await_gets_the_terminal_recorded_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let crash = Arc::new(AtomicBool::new(true));
    let runtime = both_on(&store, &got, &crash).await;
    let input = json!({ "child": { "n": 5 }, "crash_after_await": true });
    let parent = runtime
        .start_with("order", RunOptions::new().input(input))
        .await
        .unwrap();
    let outcome = parent.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert!(!crash.load(Ordering::SeqCst), "the step panicked once");
    let answers = got.lock().unwrap().clone();
    assert_eq!(answers.len(), 2, "once before the panic, once after");
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        events_named(&store, parent.run_id(), "child_ended").await,
        1
    );
    assert_eq!(
        memos_named(&store, parent.run_id(), "@child-terminal/").await,
        1
    );
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_crash_the_resumed_parent_gets_the_childs_terminal_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let first = both_on(&store, &got, &calm()).await;
    let options = RunOptions::new().input(json!({ "child": { "n": 3, "wait": true } }));
    let parent = first.start_with("order", options).await.unwrap();
    let child = child_of(&store, parent.run_id()).await;
    // While it waits, the parent's record says for what.
    let record = record_is(&store, parent.run_id(), RunStatus::Waiting).await;
    let wait = record.wait_json.unwrap();
    assert_eq!(wait["for"], "stages");
    assert_eq!(wait["stages"]["shipment"]["for"], "child");
    assert_eq!(wait["stages"]["shipment"]["child"], json!(child.id));
    drop(first);
    settle().await;

    // The next process resumes both; the parent is registered first, so
    // it finds its child in the store before the child runs here.
    let second = runtime_on(&store).await;
    let report = second.register(order(&got, &calm())).await.unwrap();
    assert_eq!(report.resumed.len(), 1);
    let resumed = report.resumed[0].clone();
    settle().await;
    second.register(ship()).await.unwrap();
    second
        .send_signal(child.id, None, "go", json!(null))
        .await
        .unwrap();
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let answers = got.lock().unwrap().clone();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        answers[0].as_ref().unwrap()["steps"]["label"],
        json!({ "label": 3 })
    );
    assert_eq!(children(&store, parent.run_id()).await.len(), 1);
    assert_eq!(
        events_named(&store, parent.run_id(), "child_ended").await,
        1
    );
    assert_eq!(
        memos_named(&store, parent.run_id(), "@child-terminal/").await,
        1
    );
    second.shutdown().await;
}

#[tokio::test]
async fn a_failed_child_is_a_failure_with_its_reason() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let runtime = both_on(&store, &got, &calm()).await;
    let options = RunOptions::new().input(json!({ "child": { "fail": true } }));
    let parent = runtime.start_with("order", options).await.unwrap();
    parent.wait().await.unwrap();
    let answer = got.lock().unwrap().pop().unwrap();
    let reason = answer.unwrap_err();
    assert!(reason.contains("no truck"), "{reason}");
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_child_is_a_failure_saying_cancelled() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let runtime = both_on(&store, &got, &calm()).await;
    let options = RunOptions::new().input(json!({ "child": { "wait": true } }));
    let parent = runtime.start_with("order", options).await.unwrap();
    let child = child_of(&store, parent.run_id()).await;
    let live = runtime.live_runs();
    let handle = live.iter().find(|h| h.run_id() == child.id).unwrap();
    let reason = "out of stock".to_owned();
    handle.send(ControlEvent::Cancel { reason }).await.unwrap();
    parent.wait().await.unwrap();
    let answer = got.lock().unwrap().pop().unwrap();
    assert_eq!(answer.unwrap_err(), "cancelled:out of stock");
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_child_not_visible_yet_is_found_once_it_appears() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let runtime = both_on(&store, &got, &calm()).await;
    let late = Uuid::now_v7();
    let options = RunOptions::new().input(json!({ "await": late }));
    let parent = runtime.start_with("order", options).await.unwrap();
    record_is(&store, parent.run_id(), RunStatus::Waiting).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(got.lock().unwrap().is_empty());

    // The run appears (written by another writer of the journal), then ends.
    let mut run = Run::new("ship", "late", "tests");
    run.id = late;
    runtime.journal().insert_run(run, None).await.unwrap();
    let manager = runtime.runs();
    manager.start_running(late).await.unwrap();
    manager
        .finish(late, Some(json!({ "label": "late" })))
        .await
        .unwrap();
    let outcome = parent.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let answer = got.lock().unwrap().pop().unwrap().unwrap();
    assert_eq!(answer["label"], "late");
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_parent_cancels_its_running_child_unless_abandoned() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let runtime = both_on(&store, &got, &calm()).await;
    let options = RunOptions::new().input(json!({ "child": { "wait": true } }));
    let parent = runtime.start_with("order", options).await.unwrap();
    let child = child_of(&store, parent.run_id()).await;
    let reason = "order withdrawn".to_owned();
    parent.send(ControlEvent::Cancel { reason }).await.unwrap();
    assert_eq!(parent.wait().await.unwrap().status, RunStatus::Cancelled);
    record_is(&store, child.id, RunStatus::Cancelled).await;

    // An abandoned child runs on.
    let input = json!({ "child": { "wait": true }, "abandon": true });
    let parent = runtime
        .start_with("order", RunOptions::new().input(input))
        .await
        .unwrap();
    let child = child_of(&store, parent.run_id()).await;
    let reason = "order withdrawn".to_owned();
    parent.send(ControlEvent::Cancel { reason }).await.unwrap();
    assert_eq!(parent.wait().await.unwrap().status, RunStatus::Cancelled);
    for _ in 0..10 {
        settle().await;
    }
    let record = store.get_run(child.id).await.unwrap().unwrap();
    assert!(!record.status.is_terminal(), "{:?}", record.status);
    runtime.shutdown_within(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_unknown_flow_or_a_bad_key_is_a_typed_error_and_starts_nothing_but_a_long_key_works() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = both_on(&store, &Got::default(), &calm()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let reckless = FlowDefinition::<u64>::builder("reckless")
        .step("try", move |ctx: &StageContext| {
            let (ctx, s) = (ctx.clone(), s.clone());
            step_fn(move |_| {
                let (ctx, s) = (ctx.clone(), s.clone());
                async move {
                    let attempts = [
                        ctx.start_child("nowhere", json!(null), "a").await,
                        ctx.start_child("ship", json!(null), "").await,
                        ctx.start_child("ship", json!(null), "bad\nkey").await,
                        ctx.start_child("ship", json!(null), &"k".repeat(100_000))
                            .await,
                    ];
                    for attempt in attempts {
                        let error = attempt.expect_err("refused");
                        s.lock().unwrap().push((error.is_permanent(), error));
                    }
                    // The longest key that makes a run id is fine.
                    let longest = "k".repeat(troupe::records::MAX_RUN_KEY_LEN - 37);
                    let child = ctx.start_child("ship", json!({ "n": 1 }), &longest).await?;
                    Ok(ctx.await_child(&child).await?)
                }
            })
        })
        .build()
        .unwrap();
    runtime.register(reckless).await.unwrap();
    let run = runtime.start("reckless").await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        matches!(&seen[0], (false, ChildError::UnknownFlow { flow, registered, .. })
            if flow == "nowhere" && registered.contains(&"ship".to_owned())),
        "{:?}",
        seen[0]
    );
    assert!(seen[0].1.to_string().contains("nowhere"), "{}", seen[0].1);
    for refused in &seen[1..] {
        assert!(
            matches!(refused, (true, ChildError::BadKey { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(children(&store, run.run_id()).await.len(), 1);
    assert_eq!(events_named(&store, run.run_id(), "child_started").await, 1);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_childs_own_children_are_cancelled_too() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let runtime = both_on(&store, &got, &calm()).await;
    // `relay` starts a waiting `ship` of its own and awaits it.
    let relay = FlowDefinition::<u64>::builder("relay")
        .step("forward", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let inner = ctx
                        .start_child("ship", json!({ "wait": true }), "inner")
                        .await?;
                    Ok(ctx.await_child(&inner).await?)
                }
            })
        })
        .build()
        .unwrap();
    runtime.register(relay).await.unwrap();
    let input = json!({ "flow": "relay", "child": null });
    let parent = runtime
        .start_with("order", RunOptions::new().input(input))
        .await
        .unwrap();
    let middle = child_of(&store, parent.run_id()).await;
    let inner = child_of(&store, middle.id).await;
    assert_eq!(inner.controller_id, "ship");
    let reason = "order withdrawn".to_owned();
    parent.send(ControlEvent::Cancel { reason }).await.unwrap();
    assert_eq!(parent.wait().await.unwrap().status, RunStatus::Cancelled);
    record_is(&store, middle.id, RunStatus::Cancelled).await;
    record_is(&store, inner.id, RunStatus::Cancelled).await;
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_child_whose_parent_ended_while_the_process_was_down_is_cancelled_at_resume() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let got = Got::default();
    let first = both_on(&store, &got, &calm()).await;
    let options = RunOptions::new().input(json!({ "child": { "wait": true } }));
    let parent = first.start_with("order", options).await.unwrap();
    let child = child_of(&store, parent.run_id()).await;
    record_is(&store, parent.run_id(), RunStatus::Waiting).await;
    drop(first);
    settle().await;

    // Cancelled by an operator while no process runs its flow.
    let between = runtime_on(&store).await;
    between.runs().cancel(parent.run_id()).await.unwrap();
    between.shutdown().await;
    assert!(
        !store
            .get_run(child.id)
            .await
            .unwrap()
            .unwrap()
            .status
            .is_terminal()
    );

    // The next process resumes the child, then closes it for its parent.
    let second = runtime_on(&store).await;
    let report = second.register(order(&got, &calm())).await.unwrap();
    assert!(report.resumed.is_empty(), "the parent has ended");
    let report = second.register(ship()).await.unwrap();
    assert_eq!(report.resumed.len(), 1);
    record_is(&store, child.id, RunStatus::Cancelled).await;
    assert!(got.lock().unwrap().is_empty());
    second.shutdown().await;
}
