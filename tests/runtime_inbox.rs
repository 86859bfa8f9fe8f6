//! Durable operator input: signals and durable stage events are accepted
//! into the run's inbox (the journal) before a stage sees them, settled once
//! it took them, and handed over again after a crash; input for a run that
//! is not live waits for its resume; an ended run refuses input. A dropped
//! runtime stands in for a crashed process; the store outlives it.

mod runtime_support;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use troupe::flow::{ControlEvent, FlowDefinition, HandleError};
use troupe::records::{InboxMessage, RunStatus};
use troupe::runtime::RuntimeError;
use troupe::stage::{Durable, Emitter, EventPolicy, OnEvent, Transform, sink_fn};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::{BoxError, ExternalEventMode};
use uuid::Uuid;

use runtime_support::{Counter, cancel_and_wait, runtime_on, settle};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SetFactor(u64);

/// What the `scale` stage was handed: events by id, and signals.
#[derive(Default)]
struct Seen {
    events: Vec<(Uuid, u64)>,
    signals: Vec<(String, Value)>,
}

/// Multiplies by a factor an operator sets durably.
struct Scale {
    factor: u64,
    seen: Arc<Mutex<Seen>>,
}

impl Transform<u64> for Scale {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        out.push(x * self.factor);
        Ok(())
    }

    fn on_signal(&mut self, name: &str, payload: &Value) {
        let signal = (name.to_owned(), payload.clone());
        self.seen.lock().unwrap().signals.push(signal);
    }
}

impl OnEvent<Durable<SetFactor>> for Scale {
    async fn on_event(&mut self, e: Durable<SetFactor>) -> Result<(), BoxError> {
        self.factor = e.event.0;
        self.seen.lock().unwrap().events.push((e.id, e.event.0));
        Ok(())
    }
}

/// `numbers → scale → discard`; `numbers` counts forever. `scale` takes
/// durable `SetFactor`s per `policy`.
fn scaled(seen: &Arc<Mutex<Seen>>, policy: EventPolicy) -> FlowDefinition<u64> {
    let seen = seen.clone();
    FlowDefinition::<u64>::builder("scaled")
        .source("numbers", |_| Counter::endless(Arc::new(AtomicU64::new(0))))
        .with_durable_events::<SetFactor>(policy)
        .transform("scale", move |_| Scale {
            factor: 1,
            seen: seen.clone(),
        })
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "scale", "discard"])
        .build()
        .unwrap()
}

/// Events wait while `scale` runs; a pause hands them over.
fn held_while_running() -> EventPolicy {
    EventPolicy::default().running(ExternalEventMode::Ignore)
}

fn unsettled(inbox: &[troupe::records::InboxEntry]) -> Vec<Uuid> {
    inbox
        .iter()
        .filter(|e| e.settled.is_none())
        .map(|e| e.id)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_durable_event_reaches_its_stage_with_its_id_and_is_settled() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let runtime = runtime_on(&store).await;
    runtime
        .register(scaled(&seen, EventPolicy::default()))
        .await
        .unwrap();
    let run = runtime.start("scaled").await.unwrap();
    let scale = run
        .durable_stage_events::<SetFactor>("scale")
        .await
        .unwrap();
    let id = scale.send(&SetFactor(10)).await.unwrap();
    // In the journal before the stage took it: accepted means durable.
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].id, id);
    assert_eq!(inbox[0].stage, "scale");
    assert_eq!(inbox[0].message, InboxMessage::Event { payload: json!(10) });
    settle().await;
    assert_eq!(seen.lock().unwrap().events, [(id, 10)]);
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    let settled = inbox[0].settled.as_ref().expect("settled once handled");
    assert_eq!(settled.undeliverable, None);

    // A plain typed handle is not one for durable events, and back.
    let plain = run.stage_events::<SetFactor>("scale").await;
    assert!(
        matches!(plain, Err(HandleError::EventType { .. })),
        "{plain:?}"
    );
    // Nor can a plain handle send `Durable`s past the inbox.
    let forged = run.stage_events::<Durable<SetFactor>>("scale").await;
    assert!(
        matches!(forged, Err(HandleError::EventType { .. })),
        "{forged:?}"
    );
    let wrong = run.durable_stage_events::<String>("scale").await;
    assert!(
        matches!(wrong, Err(HandleError::EventType { .. })),
        "{wrong:?}"
    );
    let none = run.durable_stage_events::<SetFactor>("discard").await;
    assert!(
        matches!(none, Err(HandleError::EventType { .. })),
        "{none:?}"
    );
    // By run id, the event is checked against the stage's type first.
    let refused = runtime
        .send_event(run.run_id(), "scale", &"ten")
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RuntimeError::Input(HandleError::EventRefused { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(store.list_inbox(run.run_id()).await.unwrap().len(), 1);

    cancel_and_wait(&run).await;
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn events_accepted_before_a_crash_or_while_not_live_are_handled_after_the_resume() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let before = Arc::new(Mutex::new(Seen::default()));
    let first = runtime_on(&store).await;
    first
        .register(scaled(&before, held_while_running()))
        .await
        .unwrap();
    let run = first.start("scaled").await.unwrap();
    let run_id = run.run_id();
    let scale = run
        .durable_stage_events::<SetFactor>("scale")
        .await
        .unwrap();
    let accepted = scale.send(&SetFactor(7)).await.unwrap();
    let signal = first
        .send_signal(run_id, Some("scale"), "tune", json!({"gain": 2}))
        .await
        .unwrap();
    settle().await;
    // The signal was taken; the event waits (the stage ignores events while
    // it runs), and then the process dies.
    assert!(before.lock().unwrap().events.is_empty());
    assert_eq!(before.lock().unwrap().signals.len(), 1);
    assert_eq!(
        unsettled(&store.list_inbox(run_id).await.unwrap()),
        [accepted]
    );
    drop((run, scale, first));
    settle().await;

    let after = Arc::new(Mutex::new(Seen::default()));
    let second = runtime_on(&store).await;
    // Not live here yet (its flow is not registered): journaled, handed over
    // when it resumes.
    let offline = second
        .send_event(run_id, "scale", &SetFactor(9))
        .await
        .unwrap();
    let everyone = second
        .send_signal(run_id, None, "hello", json!(1))
        .await
        .unwrap();
    let report = second
        .register(scaled(&after, held_while_running()))
        .await
        .unwrap();
    assert_eq!(report.resumed.len(), 1);
    let run = report.resumed[0].clone();
    run.send(ControlEvent::Pause).await.unwrap();
    settle().await;
    {
        let seen = after.lock().unwrap();
        assert_eq!(
            seen.events,
            [(accepted, 7), (offline, 9)],
            "in accept order"
        );
        // The run-wide signal reached the stage once; the settled `tune` did not
        // come again.
        assert_eq!(seen.signals, [("hello".to_owned(), json!(1))]);
    }
    let inbox = store.list_inbox(run_id).await.unwrap();
    assert!(unsettled(&inbox).is_empty(), "{inbox:#?}");
    // The run-wide signal became one entry per stage (same id) on resume.
    let spread: Vec<&str> = inbox
        .iter()
        .filter(|e| e.id == everyone && e.stage != "*")
        .map(|e| e.stage.as_str())
        .collect();
    assert_eq!(spread, ["numbers", "scale", "discard"]);
    assert!(
        inbox
            .iter()
            .all(|e| e.settled.as_ref().unwrap().undeliverable.is_none())
    );
    assert!(inbox.iter().any(|e| e.id == signal));

    cancel_and_wait(&run).await;
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn input_a_stage_cannot_take_is_settled_undeliverable_and_ledgered() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let first = runtime_on(&store).await;
    first
        .register(scaled(&seen, held_while_running()))
        .await
        .unwrap();
    let run_id = first.start("scaled").await.unwrap().run_id();
    settle().await;
    drop(first);
    settle().await;

    let second = runtime_on(&store).await;
    let garbled = second
        .send_event(run_id, "scale", &"not a factor")
        .await
        .unwrap();
    let nowhere = second
        .send_event(run_id, "no-such-stage", &SetFactor(1))
        .await
        .unwrap();
    let report = second
        .register(scaled(&seen, held_while_running()))
        .await
        .unwrap();
    let run = report.resumed[0].clone();
    settle().await;
    let inbox = store.list_inbox(run_id).await.unwrap();
    for id in [garbled, nowhere] {
        let entry = inbox.iter().find(|e| e.id == id).unwrap();
        let why = entry.settled.as_ref().and_then(|s| s.undeliverable.clone());
        assert!(why.is_some(), "{entry:?}");
    }
    let failures = store.list_failures(run_id).await.unwrap();
    for id in [garbled, nowhere] {
        let ledgered = failures
            .iter()
            .filter(|f| f.reason.contains(&id.to_string()))
            .count();
        assert_eq!(ledgered, 1, "{failures:#?}");
    }
    // Settling it again (a re-delivered entry may be) ledgers nothing more.
    let again = store
        .settle_inbox(run_id, garbled, "scale".into(), Some("again".into()))
        .await
        .unwrap();
    assert!(!again);
    assert!(seen.lock().unwrap().events.is_empty());
    cancel_and_wait(&run).await;
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_ended_run_refuses_input_and_an_unknown_one_is_named() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let runtime = runtime_on(&store).await;
    runtime
        .register(scaled(&seen, EventPolicy::default()))
        .await
        .unwrap();
    let run = runtime.start("scaled").await.unwrap();
    let scale = run
        .durable_stage_events::<SetFactor>("scale")
        .await
        .unwrap();
    run.send(ControlEvent::Cancel {
        reason: "done".into(),
    })
    .await
    .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);

    let late = scale.send(&SetFactor(3)).await;
    assert!(
        matches!(late, Err(HandleError::Finished { .. })),
        "{late:?}"
    );
    let by_id = runtime
        .send_event(run.run_id(), "scale", &SetFactor(3))
        .await;
    assert!(
        matches!(
            by_id,
            Err(RuntimeError::Input(HandleError::Finished { .. }))
        ),
        "{by_id:?}"
    );
    let signal = runtime
        .send_signal(run.run_id(), None, "x", Value::Null)
        .await;
    assert!(
        matches!(
            signal,
            Err(RuntimeError::Input(HandleError::Finished { .. }))
        ),
        "{signal:?}"
    );
    assert!(store.list_inbox(run.run_id()).await.unwrap().is_empty());
    for reserved in ["*", ""] {
        let named = runtime
            .send_signal(run.run_id(), Some(reserved), "x", Value::Null)
            .await;
        assert!(
            matches!(
                named,
                Err(RuntimeError::Input(HandleError::UnknownStage { .. }))
            ),
            "{named:?}"
        );
        let event = runtime
            .send_event(run.run_id(), reserved, &SetFactor(1))
            .await;
        assert!(
            matches!(
                event,
                Err(RuntimeError::Input(HandleError::UnknownStage { .. }))
            ),
            "{event:?}"
        );
    }
    let unknown = Uuid::now_v7();
    let missing = runtime.send_signal(unknown, None, "x", Value::Null).await;
    assert!(
        matches!(missing, Err(RuntimeError::UnknownRun(id)) if id == unknown),
        "{missing:?}"
    );
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_completed_stage_refuses_durable_events_and_nothing_is_accepted() {
    // `scale` completes (its source is empty) while `forever` keeps the run live.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let def = FlowDefinition::<u64>::builder("half-done")
        .source("none", |_| troupe::stage::source_iter(0..0_u64))
        .with_durable_events::<SetFactor>(EventPolicy::default())
        .transform("scale", move |_| Scale {
            factor: 1,
            seen: s.clone(),
        })
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .source("forever", |_| Counter::endless(Arc::new(AtomicU64::new(0))))
        .sink("drain", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["none", "scale", "discard"])
        .pipeline(["forever", "drain"])
        .build()
        .unwrap();
    runtime.register(def).await.unwrap();
    let run = runtime.start("half-done").await.unwrap();
    settle().await;
    let late = run.durable_stage_events::<SetFactor>("scale").await;
    assert!(
        matches!(late, Err(HandleError::StageNotRunning { .. })),
        "{late:?}"
    );
    let by_id = runtime
        .send_event(run.run_id(), "scale", &SetFactor(2))
        .await;
    assert!(
        matches!(
            by_id,
            Err(RuntimeError::Input(HandleError::StageNotRunning { .. }))
        ),
        "{by_id:?}"
    );
    assert!(store.list_inbox(run.run_id()).await.unwrap().is_empty());
    // The live stages still take signals; the completed one is left out.
    let id = runtime
        .send_signal(run.run_id(), None, "ping", Value::Null)
        .await
        .unwrap();
    let stages: Vec<String> = store
        .list_inbox(run.run_id())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.id == id)
        .map(|e| e.stage)
        .collect();
    assert_eq!(stages, ["forever", "drain"]);
    cancel_and_wait(&run).await;
    runtime.shutdown().await;
}

/// Panics on item 5 the first time it sees it (a crash, not an item
/// failure), and records the signals it is handed.
struct Crashy {
    crashed: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<Seen>>,
}

impl Transform<u64> for Crashy {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if x == 5 && !self.crashed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("crash on item 5");
        }
        out.push(x);
        Ok(())
    }

    fn on_signal(&mut self, name: &str, payload: &Value) {
        let signal = (name.to_owned(), payload.clone());
        self.seen.lock().unwrap().signals.push(signal);
    }
}

#[tokio::test(start_paused = true)]
async fn a_signal_for_a_stage_waiting_for_its_restart_reaches_the_restarted_stage() {
    use std::time::Duration;
    use troupe::flow::{Backoff, RestartPolicy, StageControl};

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, c) = (seen.clone(), crashed.clone());
    let slow_restart = Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(10),
        factor: 1.0,
    };
    let def = FlowDefinition::<u64>::builder("crashy")
        .source("numbers", |_| Counter::endless(Arc::new(AtomicU64::new(0))))
        .transform("crashy", move |_| Crashy {
            crashed: c.clone(),
            seen: s.clone(),
        })
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "crashy", "discard"])
        .restart("crashy", RestartPolicy::permanent().backoff(slow_restart))
        .build()
        .unwrap();
    runtime.register(def).await.unwrap();
    let run = runtime.start("crashy").await.unwrap();
    settle().await;
    assert!(crashed.load(std::sync::atomic::Ordering::SeqCst));
    // Down, its restart 10 s away: the signal is accepted and kept for it.
    // Kept for it, up to a bound (more than its control channel holds: the
    // restart gets them from a task of their own, the flow never waits).
    let stage = run.stage("crashy").unwrap();
    for n in 0..1024 {
        let signal = StageControl::Signal {
            name: "tune".into(),
            payload: json!(n),
        };
        stage.send(signal).await.unwrap();
    }
    let over = stage
        .send(StageControl::Signal {
            name: "tune".into(),
            payload: json!(1024),
        })
        .await;
    assert!(matches!(over, Err(HandleError::Busy { .. })), "{over:?}");
    assert!(seen.lock().unwrap().signals.is_empty());
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    assert_eq!(unsettled(&inbox).len(), 1024);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let expected: Vec<(String, Value)> = (0..1024).map(|n| ("tune".to_owned(), json!(n))).collect();
    assert_eq!(
        seen.lock().unwrap().signals,
        expected,
        "each once, in order"
    );
    let inbox = store.list_inbox(run.run_id()).await.unwrap();
    assert!(unsettled(&inbox).is_empty(), "{inbox:?}");
    cancel_and_wait(&run).await;
    runtime.shutdown().await;
}
