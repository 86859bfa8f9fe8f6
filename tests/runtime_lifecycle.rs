//! The runtime's own life: starting on SQLite (creating its directory),
//! registering and starting flows by name, graceful shutdown, and dropping
//! it with runs in flight leaving nothing behind.

mod runtime_support;

use std::time::Duration;

use runtime_support::*;
use tokio::sync::mpsc;
use troupe::flow::TopologyError;
use troupe::flow::{DefinitionError, FlowDefinition, RunState};
use troupe::records::RunStatus;
use troupe::runtime::{Runtime, RuntimeError};
use troupe::stage::{sink_fn, source_iter};
use troupe::store::Store;

fn endless(name: &str, alive: &mpsc::Sender<()>) -> FlowDefinition<u64> {
    let (produced, consumed) = (counter(), counter());
    let alive = alive.clone();
    FlowDefinition::<u64>::builder(name)
        .source("numbers", move |_| Counter {
            alive: Some(alive.clone()),
            ..Counter::endless(produced.clone())
        })
        .sink("tally", move |_| Tally::new(&consumed))
        .pipeline(["numbers", "tally"])
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn dropping_the_runtime_stops_every_flow_and_stage() {
    let runtime = memory_runtime().await;
    let (alive, mut gone) = mpsc::channel::<()>(1);
    runtime.register(endless("endless", &alive)).await.unwrap();
    let runs = [
        runtime.start("endless").await.unwrap(),
        runtime.start("endless").await.unwrap(),
    ];
    drop(alive);
    settle().await;
    assert_eq!(runtime.live_runs().len(), 2);
    assert!(runs.iter().all(|r| r.state() == RunState::Running));

    drop(runtime);
    // Every source (and so every stage actor's state) is dropped: the last
    // sender goes with the last of them.
    tokio::time::timeout(Duration::from_secs(5), gone.recv())
        .await
        .expect("a stage outlived its runtime");
    for run in &runs {
        assert!(
            run.wait().await.is_err(),
            "no outcome is invented for a killed run"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_runs_and_records_their_outcomes() {
    let runtime = memory_runtime().await;
    let (alive, mut gone) = mpsc::channel::<()>(1);
    runtime.register(endless("endless", &alive)).await.unwrap();
    drop(alive);
    let run = runtime.start("endless").await.unwrap();
    settle().await;
    let store = runtime.journal().clone();
    runtime.shutdown().await;
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Finished);
    assert_eq!(gone.recv().await, None);
}

#[tokio::test]
async fn a_sqlite_runtime_creates_its_directory_and_keeps_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("journal.sqlite");
    let runtime = Runtime::builder().sqlite(&path).start().await.unwrap();
    assert_eq!(runtime.journal_path(), Some(path.as_path()));
    runtime
        .register(
            FlowDefinition::<u64>::builder("small")
                .source("numbers", |_| source_iter(0..100_u64))
                .sink("discard", |_| sink_fn(|_: u64| Ok(())))
                .pipeline(["numbers", "discard"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run_id = runtime
        .start("small")
        .await
        .unwrap()
        .wait()
        .await
        .unwrap()
        .run_id;
    runtime.shutdown().await;

    let again = Runtime::builder().sqlite(&path).start().await.unwrap();
    assert!(again.recovery().unfinished.is_empty());
    let record = again.journal().get_run(run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Finished);
    assert_eq!(terminal_count(again.journal(), run_id).await, 1);
    again.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn names_are_checked_when_registering_and_starting() {
    let runtime = memory_runtime().await;
    let (alive, _gone) = mpsc::channel::<()>(1);
    runtime.register(endless("a", &alive)).await.unwrap();
    assert!(matches!(
        runtime.register(endless("a", &alive)).await,
        Err(RuntimeError::AlreadyRegistered(name)) if name == "a"
    ));
    let missing = runtime.start("b").await.unwrap_err();
    assert_eq!(
        missing.to_string(),
        "no flow named `b` is registered (registered: [\"a\"])"
    );
    assert_eq!(runtime.registered(), ["a"]);

    let cyclic = FlowDefinition::<u64>::builder("loop")
        .source("s", |_| source_iter(0..1_u64))
        .sink("k", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["s", "k"])
        .edge("k", "s")
        .build();
    let Err(DefinitionError::Topology { flow, source }) = cyclic else {
        panic!("a source with an input was accepted");
    };
    assert_eq!(flow, "loop");
    assert!(
        matches!(source, TopologyError::SourceHasInput { .. }),
        "{source}"
    );
    let unknown = FlowDefinition::<u64>::builder("policy")
        .source("s", |_| source_iter(0..1_u64))
        .sink("k", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["s", "k"])
        .restart("nope", Default::default())
        .build();
    assert_eq!(
        unknown.err().map(|e| e.to_string()).as_deref(),
        Some("flow `policy`: a restart policy names `nope`, which is not a declared stage")
    );
}

/// A sink blocked in `consume` for good: it never sees a drain or a cancel
/// (a source's pending `produce` would be interrupted by both).
struct Stuck;

impl troupe::stage::Sink<u64> for Stuck {
    async fn consume(&mut self, _: u64) -> Result<(), troupe::supervise::BoxError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_within_a_deadline_cancels_runs_that_do_not_drain() {
    let runtime = memory_runtime().await;
    runtime
        .register(
            FlowDefinition::<u64>::builder("stuck")
                .source("one", |_| source_iter(0..1_u64))
                .sink("stuck", |_| Stuck)
                .pipeline(["one", "stuck"])
                .cancel_grace(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("stuck").await.unwrap();
    let store = runtime.journal().clone();
    let started = tokio::time::Instant::now();
    runtime.shutdown_within(Duration::from_secs(3)).await;
    // Deadline, then the cancel grace before the stuck stage is killed.
    assert!(started.elapsed() >= Duration::from_secs(4));
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(terminal_count(&store, run.run_id()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn the_control_plane_sees_actor_driven_runs_and_its_cancel_is_honoured() {
    let runtime = memory_runtime().await;
    let (alive, _gone) = mpsc::channel::<()>(1);
    runtime.register(endless("endless", &alive)).await.unwrap();
    let run = runtime
        .start_with(
            "endless",
            troupe::flow::RunOptions::new().owner("session-9"),
        )
        .await
        .unwrap();
    settle().await;
    let runs = runtime.runs();
    let listed = runs.list_by_owner("session-9").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id, listed[0].status),
        (run.run_id(), RunStatus::Running)
    );

    // A cancel requested through the control plane reaches the live flow at
    // once: the endless run ends cancelled without being drained.
    runs.request_cancel(run.run_id()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the control-plane cancel ends the run")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    let record = runs.get(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(terminal_count(runtime.journal(), run.run_id()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_through_the_control_plane_publishes_the_persisted_status() {
    let runtime = memory_runtime().await;
    let (alive, _gone) = mpsc::channel::<()>(1);
    runtime.register(endless("endless", &alive)).await.unwrap();
    let run = runtime.start("endless").await.unwrap();
    settle().await;
    runtime.runs().cancel(run.run_id()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the control-plane cancel ends the run")
        .unwrap();
    let record = runtime
        .journal()
        .get_run(run.run_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(outcome.status, record.status);
    assert_eq!(terminal_count(runtime.journal(), run.run_id()).await, 1);
    // Nothing is recorded for the stages after the cancel.
    let outputs = runtime
        .journal()
        .list_step_outputs(run.run_id())
        .await
        .unwrap();
    assert!(outputs.is_empty(), "{outputs:?}");
}
