//! Two runtimes share one PostgreSQL journal.
//! - Takeover: runtime `a` runs a run whose step waits for a signal; its
//!   lease lapses (expired in the database, as if `a` had stalled) and
//!   runtime `b` claims it at start and resumes it. `a`'s next write for the
//!   run is refused, so `a` stops the run (its handle says it moved) and
//!   commits nothing more; `b` takes the signal and finishes the run: one
//!   terminal event, one signal taken.
//! - Doorbell: a signal sent through `b` to a run `a` holds (live, or
//!   hibernated) reaches it at once through the journal's doorbell.
//! - A runtime with a cap claims no more runs than it allows.
//! - A cancel requested through `b` reaches the run `a` holds at once.
//! - A parent in `a` awaits a child whose lease moved to `b`, awake or
//!   asleep.

#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use troupe::flow::{FlowDefinition, HandleError};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};
use troupe::store::{PostgresConfig, Store};

/// A flow whose one step says when it waits, then waits for `go`.
fn flow(waiting: mpsc::UnboundedSender<&'static str>, me: &'static str) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("approval")
        .step("decide", move |ctx: &StageContext| {
            let (ctx, waiting) = (ctx.clone(), waiting.clone());
            step_fn(move |_| {
                let (ctx, waiting) = (ctx.clone(), waiting.clone());
                async move {
                    let _ = waiting.send(me);
                    let answer = ctx.wait_signal("go", None).await?;
                    Ok(json!({ "answer": answer, "by": me }))
                }
            })
        })
        .build()
        .expect("flow")
}

async fn runtime(
    schema: &postgres::Schema,
    worker: &str,
    waiting: &mpsc::UnboundedSender<&'static str>,
    me: &'static str,
) -> Runtime {
    runtime_with(schema, worker, waiting, me, None).await
}

/// `hibernate_after`: `None` never hibernates.
async fn runtime_with(
    schema: &postgres::Schema,
    worker: &str,
    waiting: &mpsc::UnboundedSender<&'static str>,
    me: &'static str,
    hibernate_after: Option<Duration>,
) -> Runtime {
    runtime_capped(schema, worker, waiting, me, hibernate_after, None).await
}

async fn runtime_capped(
    schema: &postgres::Schema,
    worker: &str,
    waiting: &mpsc::UnboundedSender<&'static str>,
    me: &'static str,
    hibernate_after: Option<Duration>,
    cap: Option<usize>,
) -> Runtime {
    let config = PostgresConfig {
        worker: Some(worker.to_owned()),
        // Long: the keeper does not notice the loss first; the write does.
        lease: Duration::from_secs(60),
        ..schema.config()
    };
    let builder = Runtime::builder().postgres_with(&schema.url, config);
    let builder = match hibernate_after {
        Some(after) => builder.hibernate_after(after),
        None => builder.never_hibernate(),
    };
    let builder = match cap {
        Some(cap) => builder.claim_at_most(cap),
        None => builder,
    };
    builder
        .register(flow(waiting.clone(), me))
        .expect("register")
        .start()
        .await
        .expect("start runtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_run_stops_on_its_old_owner_and_finishes_on_the_new_one() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let (tx, mut waiting) = mpsc::unbounded_channel();
    let a = runtime(&schema, "a", &tx, "a").await;
    let run = a.start("approval").await.expect("start run");
    assert_eq!(waiting.recv().await, Some("a"));

    // `a` stalls: its lease lapses, and `b` claims the run as it starts.
    schema.lapse_leases().await;
    let b = runtime(&schema, "b", &tx, "b").await;
    assert_eq!(waiting.recv().await, Some("b"), "b resumed the run");
    let resumed = b.resumed();
    assert_eq!(resumed.len(), 1);
    let record = b.journal().get_run(run.run_id()).await.unwrap().unwrap();
    let lease = record.lease.expect("leased");
    assert_eq!((lease.owner.as_str(), lease.epoch), ("b", 2));

    // `a` wakes up and writes: refused, so it stops the run.
    let _ = a
        .send_signal(run.run_id(), None, "go", json!("from a"))
        .await;
    let moved = tokio::time::timeout(Duration::from_secs(20), run.wait())
        .await
        .expect("a stops the run");
    assert!(
        matches!(moved, Err(HandleError::Moved { run_id }) if run_id == run.run_id()),
        "{moved:?}"
    );

    // `b` finishes it, with the signal it gets (the one `a` journaled
    // stays in the inbox: input is never lost, and a step takes one).
    b.send_signal(run.run_id(), None, "go", json!("from b"))
        .await
        .expect("signal b");
    let outcome = tokio::time::timeout(Duration::from_secs(20), resumed[0].wait())
        .await
        .expect("b ends the run")
        .expect("outcome");
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let output = outcome.structured_output.unwrap();
    assert_eq!(output["steps"]["decide"]["by"], "b", "{output}");

    let log = b.journal().replay(run.run_id()).await.unwrap();
    let terminals = log
        .iter()
        .filter(|e| e.kind.as_terminal().is_some())
        .count();
    assert_eq!(terminals, 1);
    let taken = log
        .iter()
        .filter(|e| e.kind.name() == "signal_taken")
        .count();
    assert_eq!(
        taken,
        1,
        "{:?}",
        log.iter().map(|e| e.kind.name()).collect::<Vec<_>>()
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Runtimes `a` (hibernating at once if `asleep`) and `b`, and a run `a`
/// holds, waiting for its signal (asleep, if `asleep`).
async fn a_run_waiting_in_a(
    schema: &postgres::Schema,
    asleep: bool,
) -> (Runtime, Runtime, troupe::flow::RunHandle) {
    let (tx, mut waiting) = mpsc::unbounded_channel();
    let hibernate = asleep.then_some(Duration::ZERO);
    let a = runtime_with(schema, "a", &tx, "a", hibernate).await;
    let b = runtime(schema, "b", &tx, "b").await;
    let run = a.start("approval").await.expect("start run");
    assert_eq!(waiting.recv().await, Some("a"));
    if asleep {
        while !run.is_hibernated() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (a, b, run)
}

/// A signal sent through `b` reaches the run `a` holds, woken if `asleep`.
async fn signal_through_the_other_runtime(asleep: bool) {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let (a, b, run) = a_run_waiting_in_a(&schema, asleep).await;
    b.send_signal(run.run_id(), None, "go", json!("from b"))
        .await
        .expect("signal through b");
    let outcome = tokio::time::timeout(Duration::from_secs(20), run.wait())
        .await
        .expect("the doorbell reached a")
        .expect("outcome");
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let output = outcome.structured_output.unwrap();
    assert_eq!(output["steps"]["decide"]["answer"], "from b", "{output}");
    assert_eq!(output["steps"]["decide"]["by"], "a", "{output}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_from_another_process_reaches_a_live_run_at_once() {
    signal_through_the_other_runtime(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_from_another_process_wakes_a_hibernated_run() {
    signal_through_the_other_runtime(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_runtime_claims_no_more_than_its_cap() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let (tx, _waiting) = mpsc::unbounded_channel();
    let a = runtime(&schema, "a", &tx, "a").await;
    for _ in 0..10 {
        a.start("approval").await.expect("start run");
    }
    // `a` dies: its leases lapse at once.
    drop(a);
    schema.lapse_leases().await;
    let b = runtime_capped(&schema, "b", &tx, "b", None, Some(4)).await;
    assert_eq!(b.resumed().len(), 4, "b claims up to its cap");
    let c = runtime(&schema, "c", &tx, "c").await;
    assert_eq!(c.resumed().len(), 6, "c claims the rest");
    // Not `shutdown`: it would drain runs that wait for a signal forever.
    drop((b, c));
}

/// A cancel requested through `b` for the run `a` holds (live, or
/// hibernated if `asleep`) reaches `a` through the doorbell at once, long
/// before `a`'s next renewal (a 60 s lease renews every 20 s).
async fn cancel_through_the_other_runtime(asleep: bool) {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let (a, b, run) = a_run_waiting_in_a(&schema, asleep).await;
    b.runs()
        .request_cancel(run.run_id())
        .await
        .expect("cancel through b");
    let outcome = tokio::time::timeout(Duration::from_secs(10), run.wait())
        .await
        .expect("the cancel reached a before its next renewal")
        .expect("outcome");
    assert_eq!(outcome.status, RunStatus::Cancelled, "{outcome:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_process_reaches_a_live_run_at_once() {
    cancel_through_the_other_runtime(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_process_reaches_a_hibernated_run_at_once() {
    cancel_through_the_other_runtime(true).await;
}

/// An order whose one step ships through a child run and returns what the
/// child returned.
fn order() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("order")
        .step("ship", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let child = ctx.start_child("approval", json!(null), "ship").await?;
                    Ok(ctx.await_child(&child).await?)
                }
            })
        })
        .build()
        .expect("flow")
}

/// The one child run of `parent`.
async fn child_of(runtime: &Runtime, parent: uuid::Uuid) -> uuid::Uuid {
    let filter = troupe::records::RunFilter {
        parent_run_id: Some(parent),
        ..Default::default()
    };
    let children = runtime
        .journal()
        .list_runs(&filter, None, 10)
        .await
        .expect("children");
    assert_eq!(children.len(), 1, "{children:?}");
    children[0].id
}

/// A parent in `a` awaits a child whose lease moved to `b`: the child
/// finishes in `b`, and its end reaches the parent through the journal
/// (doorbell, or the store read it falls back to), recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_awaits_a_child_that_runs_in_another_process() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let (tx, mut waiting) = mpsc::unbounded_channel();
    let config = |worker: &str| PostgresConfig {
        worker: Some(worker.to_owned()),
        lease: Duration::from_secs(60),
        ..schema.config()
    };
    let a = Runtime::builder()
        .postgres_with(&schema.url, config("a"))
        .never_hibernate()
        .register(flow(tx.clone(), "a"))
        .and_then(|builder| builder.register(order()))
        .expect("register")
        .start()
        .await
        .expect("start a");
    let parent = a.start("order").await.expect("start the order");
    assert_eq!(waiting.recv().await, Some("a"), "the child waits in a");

    // The child's lease lapses; `b`, which runs only children, claims it.
    schema.lapse_leases().await;
    let b = runtime(&schema, "b", &tx, "b").await;
    assert_eq!(waiting.recv().await, Some("b"), "the child waits in b");
    b.send_signal(
        child_of(&b, parent.run_id()).await,
        None,
        "go",
        json!("shipped"),
    )
    .await
    .expect("signal the child in b");

    let outcome = tokio::time::timeout(Duration::from_secs(20), parent.wait())
        .await
        .expect("the child's end reached the parent")
        .expect("outcome");
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let output = outcome.structured_output.unwrap();
    assert_eq!(
        output["steps"]["ship"]["steps"]["decide"]["by"], "b",
        "{output}"
    );
    let ended = a
        .journal()
        .replay(parent.run_id())
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind.name() == "child_ended")
        .count();
    assert_eq!(ended, 1, "the child's end is recorded once in the parent");
    a.shutdown().await;
    b.shutdown().await;
}

/// A parent that hibernated in `a` is resumed (asleep) in `a2` while its
/// child runs in `b`, and wakes and finishes when the child ends there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_parent_wakes_when_its_child_ends_in_another_process() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let (tx, mut waiting) = mpsc::unbounded_channel();
    let orders = |worker: &str, me: &'static str, hibernate: bool| {
        let config = PostgresConfig {
            worker: Some(worker.to_owned()),
            lease: Duration::from_secs(60),
            ..schema.config()
        };
        let builder = Runtime::builder().postgres_with(&schema.url, config);
        let builder = match hibernate {
            true => builder.hibernate_after(Duration::ZERO),
            false => builder.never_hibernate(),
        };
        builder
            .register(flow(tx.clone(), me))
            .and_then(|builder| builder.register(order()))
            .expect("register")
    };
    let a = orders("a", "a", true).start().await.expect("start a");
    let parent = a.start("order").await.expect("start the order").run_id();
    assert_eq!(waiting.recv().await, Some("a"), "the child waits in a");
    // Both asleep, `a` stops, letting their leases go (a clean shutdown).
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let runs = a.live_runs();
            if runs.len() == 2 && runs.iter().all(|run| run.is_hibernated()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the order and its child hibernate in a");
    a.shutdown().await;
    // `b` (children only) takes the child; `a2` then takes the order.
    let b = runtime(&schema, "b", &tx, "b").await;
    assert_eq!(waiting.recv().await, Some("b"), "the child waits in b");
    let a2 = orders("a2", "a2", true).start().await.expect("start a2");
    let handle = a2
        .resumed()
        .into_iter()
        .find(|handle| handle.run_id() == parent)
        .expect("a2 resumed the order");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !handle.is_hibernated() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the parent resumes asleep");

    b.send_signal(child_of(&b, parent).await, None, "go", json!("shipped"))
        .await
        .expect("signal the child in b");
    let outcome = tokio::time::timeout(Duration::from_secs(20), handle.wait())
        .await
        .expect("the child's end woke the parent")
        .expect("outcome");
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    a2.shutdown().await;
    b.shutdown().await;
}
