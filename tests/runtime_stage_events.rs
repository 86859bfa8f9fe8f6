//! Typed user events for one stage: declared at build time, type-checked
//! when a handle is taken, taken when the stage's `EventPolicy` says, kept
//! across the stage's restarts.

mod runtime_support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use runtime_support::*;
use tokio::sync::Semaphore;
use troupe::flow::{ControlEvent, FlowDefinition, HandleError, RunHandle, StageControl};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{
    Emitter, EventPolicy, OnEvent, Produced, Source, StageState, Transform, source_iter,
};
use troupe::supervise::{BoxError, ExternalEventMode};

/// What the tests tell a stage.
#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Note(&'static str),
    Fail,
}

type Seen = Arc<Mutex<Vec<Cmd>>>;

fn seen(s: &Seen) -> Vec<Cmd> {
    s.lock().unwrap().clone()
}

/// Passes items on; remembers the commands it got, fails on `Cmd::Fail`.
struct Relay(Seen);

impl Transform<u64> for Relay {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        out.push(x);
        Ok(())
    }
}

impl OnEvent<Cmd> for Relay {
    async fn on_event(&mut self, cmd: Cmd) -> Result<(), BoxError> {
        if cmd == Cmd::Fail {
            return Err("told to fail".into());
        }
        self.0.lock().unwrap().push(cmd);
        Ok(())
    }
}

/// An endless counter → relay (taking `Cmd`s per `policy`) → tally flow.
async fn relay_run(
    policy: EventPolicy,
) -> (Runtime, RunHandle, Seen, Arc<std::sync::atomic::AtomicU64>) {
    let runtime = memory_runtime().await;
    let produced = counter();
    let commands: Seen = Arc::default();
    let s = commands.clone();
    let (run, consumed) = relay_flow::<Cmd, _, _>(
        &runtime,
        "relay",
        policy,
        move |_| Counter::endless(produced.clone()),
        move |_| Relay(s.clone()),
    )
    .await;
    settle().await;
    (runtime, run, commands, consumed)
}

async fn end(run: &RunHandle) {
    run.send(ControlEvent::Cancel {
        reason: "test over".into(),
    })
    .await
    .unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn typed_events_reach_the_stage_that_declared_them_and_the_type_is_checked() {
    let (_runtime, run, commands, consumed) = relay_run(EventPolicy::default()).await;
    let run_id = run.run_id();
    let relay = run.stage_events::<Cmd>("relay").await.unwrap();
    assert_eq!(relay.name(), "relay");
    relay.send(Cmd::Note("one")).await.unwrap();
    relay.try_send(Cmd::Note("two")).unwrap();
    settle().await;
    // Poll (the default) takes them between batches of a running stage.
    assert_eq!(seen(&commands), [Cmd::Note("one"), Cmd::Note("two")]);
    assert!(get(&consumed) > 0);

    match run.stage_events::<String>("relay").await {
        Err(HandleError::EventType {
            stage,
            declared,
            asked,
            ..
        }) => {
            assert_eq!(stage, "relay");
            assert!(declared.contains("Cmd"), "{declared}");
            assert!(asked.contains("String"), "{asked}");
        }
        other => panic!("expected EventType, got {other:?}"),
    }
    match run.stage_events::<Cmd>("tally").await {
        Err(HandleError::EventType { declared, .. }) => assert_eq!(declared, "no user events"),
        other => panic!("expected EventType, got {other:?}"),
    }
    assert_eq!(
        run.stage_events::<Cmd>("nope").await.unwrap_err(),
        HandleError::UnknownStage {
            run_id,
            stage: "nope".into()
        }
    );

    end(&run).await;
    assert!(matches!(
        relay.send(Cmd::Note("late")).await,
        Err(HandleError::Finished { .. })
    ));
    assert!(matches!(
        run.stage_events::<Cmd>("relay").await,
        Err(HandleError::Finished { .. })
    ));
}

/// A source producing one item per call; with `Block` while running, each
/// event lets it produce once.
struct Ticked {
    next: u64,
    ticks: Seen,
}

impl Source<u64> for Ticked {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        out.push(self.next);
        self.next += 1;
        Ok(Produced::More)
    }
}

impl OnEvent<Cmd> for Ticked {
    async fn on_event(&mut self, cmd: Cmd) -> Result<(), BoxError> {
        self.ticks.lock().unwrap().push(cmd);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn block_while_running_makes_each_event_gate_one_unit_of_work() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let ticks: Seen = Arc::default();
    let (c, t) = (consumed.clone(), ticks.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("ticked")
                .with_events::<Cmd>(EventPolicy::default().running(ExternalEventMode::Block))
                .source("ticks", move |_| Ticked {
                    next: 0,
                    ticks: t.clone(),
                })
                .sink("tally", move |_| Tally::new(&c))
                .pipeline(["ticks", "tally"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("ticked").await.unwrap();
    settle().await;
    assert_eq!(get(&consumed), 0, "worked without an event");
    let source = run.stage_events::<Cmd>("ticks").await.unwrap();
    for _ in 0..3 {
        source.send(Cmd::Note("tick")).await.unwrap();
    }
    settle().await;
    assert_eq!(seen(&ticks).len(), 3);
    assert_eq!(get(&consumed), 3, "one batch of one item per event");
    settle().await;
    assert_eq!(get(&consumed), 3);
    // Control events still reach a stage that waits for user events.
    run.send(ControlEvent::Drain).await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(get(&consumed), 3);
}

#[tokio::test(start_paused = true)]
async fn ignore_while_running_keeps_events_queued_until_the_stage_is_paused() {
    let policy = EventPolicy::default().running(ExternalEventMode::Ignore);
    let (_runtime, run, commands, consumed) = relay_run(policy).await;
    let relay = run.stage_events::<Cmd>("relay").await.unwrap();
    relay.send(Cmd::Note("queued")).await.unwrap();
    settle().await;
    assert!(seen(&commands).is_empty(), "taken while running");
    let before = get(&consumed);
    settle().await;
    assert!(get(&consumed) > before, "the relay stopped working");
    run.stage("relay")
        .unwrap()
        .send(StageControl::Pause)
        .await
        .unwrap();
    settle().await;
    // Paused takes them at once (the default for paused).
    assert_eq!(seen(&commands), [Cmd::Note("queued")]);
    relay.send(Cmd::Note("while paused")).await.unwrap();
    settle().await;
    assert_eq!(seen(&commands).len(), 2);
    end(&run).await;
}

#[tokio::test(start_paused = true)]
async fn ignore_while_paused_keeps_events_queued_until_resumed() {
    let policy = EventPolicy::default().paused(ExternalEventMode::Ignore);
    let (_runtime, run, commands, _) = relay_run(policy).await;
    let stage = run.stage("relay").unwrap();
    stage.send(StageControl::Pause).await.unwrap();
    settle().await;
    let relay = run.stage_events::<Cmd>("relay").await.unwrap();
    relay.send(Cmd::Note("later")).await.unwrap();
    settle().await;
    assert!(seen(&commands).is_empty(), "taken while paused");
    assert_eq!(
        stage.send(StageControl::Resume).await,
        Ok(StageState::Paused)
    );
    settle().await;
    assert_eq!(seen(&commands), [Cmd::Note("later")]);
    end(&run).await;
}

/// An event that fails the stage restarts it (its policy allows); the
/// restarted stage is still paused and takes the events queued after.
#[tokio::test(start_paused = true)]
async fn queued_events_and_the_pause_survive_a_restart() {
    let (_runtime, run, commands, consumed) = relay_run(EventPolicy::default()).await;
    let stage = run.stage("relay").unwrap();
    stage.send(StageControl::Pause).await.unwrap();
    settle().await;
    let relay = run.stage_events::<Cmd>("relay").await.unwrap();
    relay.send(Cmd::Fail).await.unwrap();
    relay.send(Cmd::Note("after the restart")).await.unwrap();
    // Past the restart backoff.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(seen(&commands), [Cmd::Note("after the restart")]);
    let before = get(&consumed);
    settle().await;
    assert_eq!(get(&consumed), before, "the restarted relay is not paused");
    assert_eq!(
        stage.send(StageControl::Resume).await,
        Ok(StageState::Paused)
    );
    settle().await;
    assert!(get(&consumed) > before);
    end(&run).await;
}

/// A stage that completed takes no more events, while its flow runs on.
#[tokio::test(start_paused = true)]
async fn a_completed_stage_refuses_events() {
    let runtime = memory_runtime().await;
    let consumed = counter();
    let gate = Arc::new(Semaphore::new(0));
    let (c, g) = (consumed.clone(), gate.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("short")
                // Waits for an event before its one batch.
                .with_events::<Cmd>(EventPolicy::default().running(ExternalEventMode::Block))
                .source("three", move |_| Ticked3(source_iter(0..3_u64)))
                .sink("gated", move |_| Tally {
                    gate: Some(g.clone()),
                    ..Tally::new(&c)
                })
                .pipeline(["three", "gated"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("short").await.unwrap();
    let source = run.stage_events::<Cmd>("three").await.unwrap();
    settle().await;
    source.send(Cmd::Note("go")).await.unwrap();
    settle().await;
    assert_eq!(
        source.send(Cmd::Note("too late")).await,
        Err(HandleError::StageNotRunning {
            run_id: run.run_id(),
            stage: "three".into()
        })
    );
    assert_eq!(
        run.stage_events::<Cmd>("three").await.unwrap_err(),
        HandleError::StageNotRunning {
            run_id: run.run_id(),
            stage: "three".into()
        }
    );
    gate.add_permits(3);
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(consumed.load(Ordering::SeqCst), 3);
}

/// A finite source that takes (and drops) `Cmd`s.
struct Ticked3<I>(troupe::stage::IterSource<I>);

impl<I: Iterator<Item = u64> + Send + 'static> Source<u64> for Ticked3<I> {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        self.0.produce(out).await
    }
}

impl<I: Send + 'static> OnEvent<Cmd> for Ticked3<I> {
    async fn on_event(&mut self, _: Cmd) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Queues too large to allocate are a definition error, not a panic when
/// the run starts.
#[test]
fn queues_too_large_are_rejected_when_the_flow_is_built() {
    use troupe::flow::DefinitionError;
    use troupe::stage::{MAX_EVENT_CAPACITY, sink_fn};
    use troupe::stage::{MAX_PIPE_CAPACITY, PipeConfig};

    let flow = |events: EventPolicy, pipes: PipeConfig| {
        FlowDefinition::<u64>::builder("huge")
            .source("numbers", |_| source_iter(0..3_u64))
            .with_events::<Cmd>(events)
            .transform("relay", |_| Relay(Seen::default()))
            .sink("tally", |_| sink_fn(|_: u64| Ok(())))
            .pipeline(["numbers", "relay", "tally"])
            .pipes(pipes)
            .build()
    };
    let huge_events = EventPolicy::default().capacity(usize::MAX);
    assert_eq!(
        flow(huge_events, PipeConfig::default()).err(),
        Some(DefinitionError::EventCapacity {
            flow: "huge".into(),
            stage: "relay".into(),
            capacity: usize::MAX,
            max: MAX_EVENT_CAPACITY,
        })
    );
    let huge_pipes = PipeConfig {
        capacity: usize::MAX,
        ..PipeConfig::default()
    };
    assert_eq!(
        flow(EventPolicy::default(), huge_pipes).err(),
        Some(DefinitionError::PipeSize {
            flow: "huge".into(),
            field: "capacity",
            value: usize::MAX,
            max: MAX_PIPE_CAPACITY,
        })
    );
    let largest = EventPolicy::default().capacity(MAX_EVENT_CAPACITY);
    assert!(flow(largest, PipeConfig::default()).is_ok());
}
