//! Unit tests of [`Runtime`](super::Runtime).

use super::*;
use crate::flow::actor::FlowArgs;
use crate::records::{EventKind, RunStatus, TerminalEvent};
use crate::runtime::root::{RootActor, root_state, root_state_with};
use crate::runtime::spawn::{BoxedSpawn, SpawnFlow, spawn_flow_actor};
use crate::stage::{sink_fn, source_iter};
use crate::store::Store;

#[tokio::test]
async fn a_flow_actor_that_dies_without_an_outcome_has_its_run_failed() {
    let runtime = Runtime::builder().memory().start().await.unwrap();
    runtime.register(endless()).await.unwrap();
    let run = runtime.start("endless").await.unwrap();
    run.actor_ref().kill();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.recorded);
    let reason = outcome.reason.unwrap();
    assert!(
        reason.starts_with("the flow actor stopped without an outcome in state Running"),
        "{reason}"
    );
    let store = runtime.journal();
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        terminal.kind,
        EventKind::Terminal(TerminalEvent::RunFailed { reason })
    );
    assert!(runtime.live_runs().is_empty());
    runtime.shutdown().await;
}

fn endless() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("endless")
        .source("numbers", |_| source_iter(0_u64..))
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .unwrap()
}

fn small() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("small")
        .source("numbers", |_| source_iter(0..10_u64))
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .unwrap()
}

/// A runtime over `store` whose root spawns flow actors with `spawn`.
async fn runtime_with<S: Store + 'static>(store: Arc<S>, spawn: SpawnFlow) -> Runtime {
    let (root, _) = ractor::Actor::spawn(None, RootActor, root_state_with(spawn))
        .await
        .unwrap();
    let config = crate::journal::JournalConfig::default();
    let journal = JournalHandle::spawn(store, config, Some(root.get_cell()))
        .await
        .unwrap();
    let recovery = crate::runs::recover(&journal).await.unwrap();
    let runtime = Runtime::new(journal, root, Registry::default(), recovery, None, None);
    runtime.register(small()).await.unwrap();
    runtime
}

/// Spawns flow actors, except that the spawn of a run whose goal is
/// `"panic"` panics.
fn panics_on_goal(args: FlowArgs, supervisor: ractor::ActorCell) -> BoxedSpawn {
    Box::pin(async move {
        assert_ne!(args.run.goal, "panic", "injected: the spawn panics");
        spawn_flow_actor(args, supervisor).await
    })
}

/// The run and the cause of a `NotStarted` whose run was failed.
fn not_started(error: RuntimeError) -> (Uuid, RuntimeError) {
    let RuntimeError::NotStarted {
        run_id,
        cause,
        already_ended: None,
        not_ended: None,
    } = error
    else {
        panic!("{error:?}");
    };
    (run_id, *cause)
}

/// The run's record and terminal event, which must say it failed because
/// its flow was not started.
async fn assert_failed_unstarted(store: &impl Store, run_id: Uuid) -> String {
    let record = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let terminal = store.terminal_event(run_id).await.unwrap().unwrap();
    let EventKind::Terminal(TerminalEvent::RunFailed { reason }) = terminal.kind else {
        panic!("not a RunFailed: {terminal:?}");
    };
    assert!(
        reason.starts_with("the runtime could not start the run's flow"),
        "{reason}"
    );
    reason
}

#[tokio::test]
async fn a_run_whose_flow_cannot_be_spawned_is_failed_not_left_created() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let runtime = runtime_with(store.clone(), panics_on_goal).await;
    let options = RunOptions::new().goal("panic");
    let error = runtime.start_with("small", options).await.unwrap_err();
    let (run_id, cause) = not_started(error);
    assert!(matches!(cause, RuntimeError::Spawn(_)), "{cause:?}");
    let reason = assert_failed_unstarted(&*store, run_id).await;
    assert!(reason.contains("the spawn panics"), "{reason}");

    // The root took the panic in its stride: the next run starts and ends.
    let run = runtime.start("small").await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    assert!(runtime.live_runs().is_empty());
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_run_created_as_the_root_goes_away_is_failed_not_left_created() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let (root, _) = ractor::Actor::spawn(None, RootActor, root_state())
        .await
        .unwrap();
    // The journal outlives the root here, so the failure can be recorded.
    let config = crate::journal::JournalConfig::default();
    let journal = JournalHandle::spawn(store.clone(), config, None)
        .await
        .unwrap();
    let recovery = crate::runs::recover(&journal).await.unwrap();
    root.stop_and_wait(None, None).await.unwrap();
    let runtime = Runtime::new(
        journal.clone(),
        root,
        Registry::default(),
        recovery,
        None,
        None,
    );
    runtime.register(small()).await.unwrap();
    let (run_id, cause) = not_started(runtime.start("small").await.unwrap_err());
    assert!(matches!(cause, RuntimeError::ShuttingDown), "{cause:?}");
    assert_failed_unstarted(&*store, run_id).await;
    drop(runtime);
    journal.shutdown().await;
}

#[tokio::test]
async fn a_lost_flow_whose_failure_cannot_be_recorded_is_published_as_not_recorded() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let faulty = Arc::new(crate::store::FaultyStore::new(store.clone()));
    let runtime = runtime_with(faulty.clone(), spawn_flow_actor).await;
    runtime.register(endless()).await.unwrap();
    let run = runtime.start("endless").await.unwrap();
    // Every lifecycle change fails from here on.
    faulty.inject(crate::store::Fault::Fail {
        op: "atomic",
        count: 1_000,
    });
    faulty.inject(crate::store::Fault::Fail {
        op: "update_run",
        count: 1_000,
    });
    run.actor_ref().kill();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(!outcome.recorded);
    let reason = outcome.reason.unwrap();
    assert!(reason.contains("recording the failure failed"), "{reason}");
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert!(!record.status.is_terminal(), "{record:?}");
    drop(runtime);
}

#[test]
fn a_not_started_error_says_when_the_run_stays_created() {
    let run_id = Uuid::now_v7();
    let error = |not_ended| RuntimeError::NotStarted {
        run_id,
        cause: Box::new(RuntimeError::ShuttingDown),
        already_ended: None,
        not_ended,
    };
    let failed = error(None).to_string();
    assert!(failed.ends_with("the runtime is shutting down"), "{failed}");
    let source = StoreError::Injected { op: "atomic" };
    let stays = error(Some(Box::new(RecordError::Store { run_id, source }))).to_string();
    assert!(
        stays.contains("stays Created until the next start") && stays.contains("atomic"),
        "{stays}"
    );
}

/// Applies every write, but never acknowledges the one that makes a run
/// terminal: the outcome is durable while its flow still waits for the ack.
struct AckLostOnTerminal {
    inner: Arc<crate::store::MemoryStore>,
    /// Told once the terminal write is applied.
    durable: tokio::sync::Notify,
}

fn makes_terminal(op: &crate::records::WriteOp) -> bool {
    use crate::records::WriteOp;
    match op {
        WriteOp::UpdateRun { run, .. } => run.status.is_terminal(),
        WriteOp::Atomic(ops) => ops.iter().any(makes_terminal),
        _ => false,
    }
}

crate::store_wrapper! {
    AckLostOnTerminal, reads: inner;
    async fn apply_batch(&self, ops: Vec<crate::records::WriteOp>) -> crate::store::BatchResult {
        let terminal = ops.iter().any(makes_terminal);
        let results = self.inner.apply_batch(ops).await;
        if terminal {
            self.durable.notify_one();
            std::future::pending::<()>().await;
        }
        results
    }
}

/// A flow that dies after its outcome was recorded (but before it
/// published it) has the recorded outcome published, not a failure.
#[tokio::test]
async fn a_flow_lost_after_recording_its_outcome_publishes_the_recorded_one() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let wrapped = Arc::new(AckLostOnTerminal {
        inner: store.clone(),
        durable: tokio::sync::Notify::new(),
    });
    let runtime = runtime_with(wrapped.clone(), spawn_flow_actor).await;
    let run = runtime.start("small").await.unwrap();
    wrapped.durable.notified().await;
    let persisted = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(persisted.status, RunStatus::Finished);
    assert!(run.outcome().is_none(), "the flow still awaits the ack");
    run.actor_ref().kill();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert!(outcome.recorded);
    let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
    let EventKind::Terminal(TerminalEvent::RunCompleted { structured_output }) = terminal.kind
    else {
        panic!("not a RunCompleted: {terminal:?}");
    };
    assert_eq!(outcome.structured_output, structured_output);
    assert!(structured_output.is_some());
    drop(runtime);
}

/// Cancels the run through the control plane, then fails to spawn its flow.
fn cancelled_then_unspawnable(args: FlowArgs, _: ractor::ActorCell) -> BoxedSpawn {
    Box::pin(async move {
        crate::runs::RunManager::new(Arc::new(args.journal.clone()))
            .cancel(args.run.id)
            .await
            .map_err(|e| ractor::SpawnErr::StartupFailed(e.into()))?;
        Err(ractor::SpawnErr::StartupFailed("injected".into()))
    })
}

#[tokio::test]
async fn a_not_started_run_that_had_already_ended_is_not_claimed_failed() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let runtime = runtime_with(store.clone(), cancelled_then_unspawnable).await;
    let error = runtime.start("small").await.unwrap_err();
    let message = error.to_string();
    let RuntimeError::NotStarted {
        run_id,
        already_ended,
        not_ended: None,
        ..
    } = error
    else {
        panic!("{error:?}");
    };
    assert_eq!(already_ended, Some(RunStatus::Cancelled), "{message}");
    assert!(message.contains("already ended as cancelled"), "{message}");
    let record = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    drop(runtime);
}

/// Every run of the runtime's default owner: what the journal holds after
/// a start was given up on.
async fn all_runs(store: &impl Store) -> Vec<crate::records::Run> {
    store.list_runs_by_owner("troupe").await.unwrap()
}

/// Told when the root asks [`gated_spawn`] for a flow actor.
static SPAWN_ASKED: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Lets [`gated_spawn`] go on.
static SPAWN_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Spawns flow actors once [`SPAWN_GATE`] opens (one test uses it).
fn gated_spawn(args: FlowArgs, supervisor: ractor::ActorCell) -> BoxedSpawn {
    Box::pin(async move {
        SPAWN_ASKED.notify_one();
        SPAWN_GATE.notified().await;
        spawn_flow_actor(args, supervisor).await
    })
}

/// `start_with` dropped (e.g. under `tokio::time::timeout`) once the flow
/// was requested of the root: the run is still tracked, so `shutdown`
/// drains it to an outcome instead of leaving it `Running`.
#[tokio::test]
async fn a_start_dropped_after_requesting_its_flow_leaves_no_untracked_run() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let runtime = runtime_with(store.clone(), gated_spawn).await;
    runtime.register(endless()).await.unwrap();
    tokio::select! {
        _ = runtime.start("endless") => panic!("started before the spawn gate opened"),
        () = SPAWN_ASKED.notified() => {} // the start is dropped here
    }
    SPAWN_GATE.notify_one();
    runtime.shutdown().await;
    let runs = all_runs(&*store).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Finished, "{runs:?}");
}

/// A start dropped right after its first poll still runs to its end: the
/// run exists, is tracked, and ends with the runtime's shutdown.
#[tokio::test]
async fn a_start_dropped_after_its_first_poll_still_starts_a_tracked_run() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let runtime = runtime_with(store.clone(), spawn_flow_actor).await;
    runtime.register(endless()).await.unwrap();
    {
        let mut start = std::pin::pin!(runtime.start("endless"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(start.as_mut(), &mut cx).is_pending());
    }
    runtime.shutdown().await;
    let runs = all_runs(&*store).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Finished, "{runs:?}");
}
