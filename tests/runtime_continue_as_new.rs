//! Continue-as-new (`StageContext::continue_as_new`): a run ends with a
//! `ContinuedAsNew` outcome naming the next run, created in the same write
//! with an empty history and its new input; `RunHandle::wait`, child
//! watchers and `RunManager::chain` follow the chain; a second continue of
//! one run is refused and creates no second run; a run a continue created
//! resumes after a restart like any other.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use runtime_support::{runtime_on, settle};
use serde_json::{Value, json};
use troupe::flow::{FlowDefinition, RunHandle, RunOptions};
use troupe::records::{EventKind, Run, RunFilter, RunStatus, TerminalEvent, continued_run_id};
use troupe::runs::{CreateManagedInput, RunError, RunManager};
use troupe::runtime::Runtime;
use troupe::stage::{ChildError, ChildRun, StageContext, step_fn};
use troupe::store::{Fault, FaultyStore, MemoryStore, SqliteStore, Store};
use uuid::Uuid;

/// `count`: its step `next` reads `n` from the input, runs a memoized
/// effect (counted in `effects`) and continues as new with `n + 1` until
/// `n` is `last`; at `n == wait_at` it waits for the signal `go` first.
/// When `fail_once` holds a store, the first continue's write fails.
fn count(effects: &Arc<AtomicU64>, faulty: Option<Arc<FaultyStore>>) -> FlowDefinition<u64> {
    let effects = effects.clone();
    FlowDefinition::<u64>::builder("count")
        .step("next", move |ctx: &StageContext| {
            let (ctx, effects, faulty) = (ctx.clone(), effects.clone(), faulty.clone());
            step_fn(move |_| {
                let (ctx, effects, faulty) = (ctx.clone(), effects.clone(), faulty.clone());
                async move {
                    let input = ctx.input_json().clone();
                    let n = input["n"].as_u64().unwrap_or(0);
                    let last = input["last"].as_u64().unwrap_or(2);
                    let seen = ctx
                        .run("effect", || async {
                            effects.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, troupe::supervise::BoxError>(n)
                        })
                        .await?;
                    if input["wait_at"].as_u64() == Some(n) {
                        ctx.wait_signal("go", None).await?;
                    }
                    if n >= last {
                        return Ok(json!({ "n": seen }));
                    }
                    if let Some(store) = faulty {
                        store.inject(Fault::Fail {
                            op: "atomic",
                            count: 1,
                        });
                    }
                    let mut next = input.clone();
                    next["n"] = json!(n + 1);
                    ctx.continue_as_new(next)
                }
            })
        })
        .build()
        .unwrap()
}

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

async fn runtime_with_count(store: &Arc<dyn Store>, effects: &Arc<AtomicU64>) -> Runtime {
    let runtime = runtime_on(store).await;
    runtime.register(count(effects, None)).await.unwrap();
    runtime
}

/// Starts a run of `count` with `input`.
async fn start_count(runtime: &Runtime, input: Value) -> RunHandle {
    let options = RunOptions::new().input(input);
    runtime.start_with("count", options).await.unwrap()
}

/// The ids of a chain of `len` runs starting at `first`.
fn chain_ids(first: Uuid, len: usize) -> Vec<Uuid> {
    std::iter::successors(Some(first), |id| Some(continued_run_id(*id)))
        .take(len)
        .collect()
}

async fn run_of(store: &Arc<dyn Store>, id: Uuid) -> Run {
    store.get_run(id).await.unwrap().expect("the run is stored")
}

/// How many times a test looks again for what it waits for (10 ms apart).
const PATIENCE: usize = 1_000;

/// Waits until run `id` exists with `status`.
async fn record_is(store: &Arc<dyn Store>, id: Uuid, status: RunStatus) -> Run {
    let mut last = None;
    for _ in 0..PATIENCE {
        if let Some(run) = store.get_run(id).await.unwrap() {
            if run.status == status {
                return run;
            }
            last = Some(run);
        }
        settle().await;
    }
    panic!("run {id} is not {status:?}: {last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_run_continues_twice_and_wait_returns_the_final_outcome() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let effects = counter();
    let runtime = runtime_with_count(&store, &effects).await;
    let first = start_count(&runtime, json!({ "n": 0 })).await;
    let outcome = first.wait().await.unwrap();
    let ids = chain_ids(first.run_id(), 3);
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(outcome.run_id, ids[2], "the last run's outcome");
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["next"],
        json!({ "n": 2 })
    );
    assert_eq!(effects.load(Ordering::SeqCst), 3, "one effect per run");
    // The handle's own outcome is its run's: continued, naming the next.
    let own = first.outcome().unwrap();
    assert_eq!(
        (own.status, own.next_run_id),
        (RunStatus::ContinuedAsNew, Some(ids[1]))
    );

    for (i, id) in ids.iter().enumerate() {
        let run = run_of(&store, *id).await;
        assert_eq!(run.controller_id, "count");
        assert_eq!(run.input["n"], json!(i), "each run has its own input");
        assert_eq!(run.continued_from, i.checked_sub(1).map(|p| ids[p]));
        assert_eq!(run.fingerprint, run_of(&store, ids[0]).await.fingerprint);
        let memos = store.list_memos(*id, "next").await.unwrap();
        assert_eq!(memos.len(), 1, "an empty history: only its own memo");
        let terminal = store.terminal_event(*id).await.unwrap().unwrap();
        if i < 2 {
            assert_eq!(run.status, RunStatus::ContinuedAsNew);
            assert_eq!(
                terminal.kind,
                EventKind::Terminal(TerminalEvent::RunContinuedAsNew {
                    next_run_id: ids[i + 1]
                })
            );
        } else {
            assert_eq!(run.status, RunStatus::Finished);
        }
    }
    // The new run's log starts over: created, then its own life.
    let log = runtime_support::event_names(&*store, ids[1]).await;
    assert_eq!(log.first().map(String::as_str), Some("created"), "{log:?}");
    assert_eq!(log.iter().filter(|n| *n == "created").count(), 1, "{log:?}");
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_chain_lists_in_order_from_any_member() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_with_count(&store, &counter()).await;
    let first = start_count(&runtime, json!({ "n": 0 })).await;
    first.wait().await.unwrap();
    let ids = chain_ids(first.run_id(), 3);
    for id in &ids {
        let chain = runtime.runs().chain(*id).await.unwrap();
        let listed: Vec<Uuid> = chain.iter().map(|r| r.id).collect();
        assert_eq!(listed, ids, "from {id}");
    }
    let lone = start_count(&runtime, json!({ "n": 2 })).await;
    lone.wait().await.unwrap();
    let chain = runtime.runs().chain(lone.run_id()).await.unwrap();
    assert_eq!(
        chain.len(),
        1,
        "a run that never continued is a chain of one"
    );
    let unknown = runtime.runs().chain(Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(unknown, RunError::NotFound(_)), "{unknown}");
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_continue_write_leaves_neither_and_the_step_runs_again() {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultyStore::new(memory.clone()));
    let store: Arc<dyn Store> = faulty.clone();
    let effects = counter();
    let runtime = runtime_on(&store).await;
    runtime
        .register(count(&effects, Some(faulty.clone())))
        .await
        .unwrap();
    let input = json!({ "n": 0, "last": 1 });
    let first = start_count(&runtime, input).await;
    let outcome = first.wait().await.unwrap();
    assert!(!outcome.recorded, "{outcome:?}");
    assert_eq!(faulty.fired(), ["atomic"]);
    // Neither the old run's end nor the new run.
    let next = continued_run_id(first.run_id());
    assert_eq!(store.get_run(next).await.unwrap(), None);
    let old = run_of(&store, first.run_id()).await;
    assert!(!old.status.is_terminal(), "{:?}", old.status);
    assert_eq!(store.terminal_event(first.run_id()).await.unwrap(), None);
    runtime.shutdown().await;

    // The next start resumes the run: its step runs again, its memoized
    // effect answers from the journal, and it continues this time.
    let runtime = runtime_on(&memory).await;
    let report = runtime.register(count(&effects, None)).await.unwrap();
    let [resumed] = &report.resumed[..] else {
        panic!("the run resumes: {:?}", report.failures);
    };
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(outcome.run_id, next);
    assert_eq!(effects.load(Ordering::SeqCst), 2, "the memo answered once");
    let chain = runtime.runs().chain(first.run_id()).await.unwrap();
    assert_eq!(chain.len(), 2);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_continue_of_a_run_is_refused_and_creates_no_second_run() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runs = RunManager::new(store.clone());
    let first = runs
        .create_managed(CreateManagedInput::new("tail", "follow", "o"))
        .await
        .unwrap();
    runs.start_running(first.id).await.unwrap();
    let next = runs.continue_as_new(first.id, json!(1)).await.unwrap();
    assert_eq!(next.id, continued_run_id(first.id));
    assert_eq!(
        (next.status, next.input.clone()),
        (RunStatus::Created, json!(1))
    );
    let again = runs.continue_as_new(first.id, json!(2)).await.unwrap_err();
    assert!(
        matches!(
            again,
            RunError::AlreadyTerminal {
                status: RunStatus::ContinuedAsNew,
                ..
            }
        ),
        "{again}"
    );
    let all = store
        .list_runs(&RunFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "no second next run");
    assert_eq!(run_of(&store, next.id).await.input, json!(1));
    assert_eq!(runtime_support::terminal_count(&*store, first.id).await, 1);
    // Not started yet, or cancel requested: refused, nothing created.
    let idle = runs
        .create_managed(CreateManagedInput::new("tail", "idle", "o"))
        .await
        .unwrap();
    let refused = runs.continue_as_new(idle.id, json!(0)).await.unwrap_err();
    assert!(
        matches!(refused, RunError::InvalidTransition { .. }),
        "{refused}"
    );
    runs.start_running(idle.id).await.unwrap();
    runs.request_cancel(idle.id).await.unwrap();
    let refused = runs.continue_as_new(idle.id, json!(0)).await.unwrap_err();
    assert!(
        matches!(refused, RunError::CancelPending { .. }),
        "{refused}"
    );
    assert_eq!(
        store.get_run(continued_run_id(idle.id)).await.unwrap(),
        None
    );
}

/// `parent`: starts `count` (with `input`) as its child `c` and keeps
/// what `await_child` returned as its output.
fn parent() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("parent")
        .step("await", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let child = ctx.start_child("count", ctx.input_json(), "c").await?;
                    match ctx.await_child(&child).await {
                        Ok(output) => Ok(json!({ "child": child.run_id(), "output": output })),
                        Err(ChildError::Failed { reason, .. }) => Ok(json!({ "failed": reason })),
                        Err(other) => Err(other.into()),
                    }
                }
            })
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_parent_awaiting_a_child_that_continues_twice_gets_the_last_runs_output() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_with_count(&store, &counter()).await;
    runtime.register(parent()).await.unwrap();
    // The chain's second run waits for `go`: the parent must wait on.
    let input = json!({ "n": 0, "wait_at": 1 });
    let run = runtime
        .start_with("parent", RunOptions::new().input(input))
        .await
        .unwrap();
    let children = RunFilter {
        parent_run_id: Some(run.run_id()),
        ..RunFilter::default()
    };
    let mut child = None;
    for _ in 0..PATIENCE {
        child = store.list_runs(&children, None, 10).await.unwrap().pop();
        if child.is_some() {
            break;
        }
        settle().await;
    }
    let ids = chain_ids(child.expect("a child").id, 3);
    let second = record_is(&store, ids[1], RunStatus::Waiting).await;
    assert_eq!(second.parent_run_id, Some(run.run_id()), "the parent stays");
    settle().await;
    assert!(
        run.outcome().is_none(),
        "not satisfied by the continued run"
    );
    let memos = store.list_memos(run.run_id(), "await").await.unwrap();
    assert!(
        memos
            .iter()
            .all(|m| !m.name.starts_with("@child-terminal/")),
        "{memos:?}"
    );

    runtime
        .send_signal(ids[1], None, "go", Value::Null)
        .await
        .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let output = &outcome.structured_output.unwrap()["steps"]["await"];
    assert_eq!(output["child"], json!(ids[0]), "the child it started");
    assert_eq!(
        output["output"]["steps"]["next"],
        json!({ "n": 2 }),
        "the last run's"
    );
    let log = store.replay(run.run_id()).await.unwrap();
    let ended: Vec<&Value> = log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Custom { name, payload } if name == "child_ended" => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1, "recorded once");
    assert_eq!(ended[0]["terminal"]["status"], json!("finished"));
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn awaiting_any_member_of_a_chain_waits_for_its_last_run() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_with_count(&store, &counter()).await;
    let chain = start_count(&runtime, json!({ "n": 0 })).await;
    chain.wait().await.unwrap();
    // A later step that awaits the chain's first run by id.
    let id = chain.run_id();
    let late = FlowDefinition::<u64>::builder("late")
        .step("await", move |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move { Ok(ctx.await_child(&ChildRun::new(id, "count")).await?) }
            })
        })
        .build()
        .unwrap();
    runtime.register(late).await.unwrap();
    let outcome = runtime.start("late").await.unwrap().wait().await.unwrap();
    let output = outcome.structured_output.unwrap();
    assert_eq!(output["steps"]["await"]["steps"]["next"], json!({ "n": 2 }));
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_keyed_run_hands_its_id_along_the_chain() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_with_count(&store, &counter()).await;
    let input = json!({ "n": 0, "wait_at": 1 });
    let options = || RunOptions::new().input(input.clone()).id("tail");
    let first = runtime.start_with("count", options()).await.unwrap();
    let ids = chain_ids(first.run_id(), 3);
    record_is(&store, ids[1], RunStatus::Waiting).await;
    // Started again under its id: the chain's current run, not a new one.
    let again = runtime.start_with("count", options()).await.unwrap();
    assert_eq!(again.run_id(), ids[1]);
    assert_eq!(run_of(&store, ids[1]).await.key.as_deref(), Some("tail"));
    runtime
        .send_signal(ids[1], None, "go", Value::Null)
        .await
        .unwrap();
    assert_eq!(again.wait().await.unwrap().run_id, ids[2]);
    assert_eq!(first.wait().await.unwrap().run_id, ids[2]);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_created_by_continue_as_new_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("journal.sqlite"))
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let effects = counter();
    let runtime = runtime_with_count(&store, &effects).await;
    let input = json!({ "n": 0, "wait_at": 1 });
    let first = start_count(&runtime, input).await;
    let ids = chain_ids(first.run_id(), 3);
    record_is(&store, ids[1], RunStatus::Waiting).await;
    drop(runtime); // as a crash: nothing shut down
    settle().await;

    let runtime = runtime_on(&store).await;
    let report = runtime.register(count(&effects, None)).await.unwrap();
    let resumed: Vec<Uuid> = report.resumed.iter().map(|r| r.run_id()).collect();
    assert_eq!(resumed, [ids[1]], "only the chain's current run resumes");
    runtime
        .send_signal(ids[1], None, "go", Value::Null)
        .await
        .unwrap();
    let outcome = report.resumed[0].wait().await.unwrap();
    assert_eq!(
        (outcome.status, outcome.run_id),
        (RunStatus::Finished, ids[2])
    );
    let chain = runtime.runs().chain(ids[2]).await.unwrap();
    let listed: Vec<Uuid> = chain.iter().map(|r| r.id).collect();
    assert_eq!(listed, ids);
    assert_eq!(
        effects.load(Ordering::SeqCst),
        3,
        "memos answered on resume"
    );
    for id in &ids {
        assert_eq!(runtime_support::terminal_count(&*store, *id).await, 1);
    }
    runtime.shutdown().await;
}
