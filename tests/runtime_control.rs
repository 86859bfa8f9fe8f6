//! Control events: pause and resume, drain, cancel (sticky, nothing recorded
//! after it), signals, rejected events and events sent to a finished flow.

mod runtime_support;

use std::sync::{Arc, Mutex};

use runtime_support::*;
use serde_json::{Value, json};
use troupe::flow::{ControlEvent, FlowDefinition, HandleError, RunHandle, RunState, StageControl};
use troupe::records::{EventKind, RunStatus, TerminalEvent};
use troupe::runtime::Runtime;
use troupe::stage::PipeConfig;
use troupe::stage::{Emitter, StageState, Transform};
use troupe::store::Store;
use troupe::supervise::BoxError;

/// Passes items on and remembers the signals it got.
struct Relay {
    signals: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Transform<u64> for Relay {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        out.push(x);
        Ok(())
    }

    fn on_signal(&mut self, name: &str, payload: &Value) {
        if let Ok(mut signals) = self.signals.lock() {
            signals.push((name.to_owned(), payload.clone()));
        }
    }
}

struct Endless {
    runtime: Runtime,
    run: RunHandle,
    produced: Arc<std::sync::atomic::AtomicU64>,
    consumed: Arc<std::sync::atomic::AtomicU64>,
    signals: Arc<Mutex<Vec<(String, Value)>>>,
}

/// An endless source → relay → tally flow, started.
async fn endless() -> Endless {
    let runtime = memory_runtime().await;
    let (produced, consumed) = (counter(), counter());
    let signals = Arc::new(Mutex::new(Vec::new()));
    let (p, c, s) = (produced.clone(), consumed.clone(), signals.clone());
    runtime
        .register(
            FlowDefinition::<u64>::builder("endless")
                .source("numbers", move |_| Counter::endless(p.clone()))
                .transform("relay", move |_| Relay { signals: s.clone() })
                .sink("tally", move |_| Tally::new(&c))
                .pipeline(["numbers", "relay", "tally"])
                .pipes(PipeConfig {
                    batch_size: 16,
                    capacity: 2,
                })
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("endless").await.unwrap();
    Endless {
        runtime,
        run,
        produced,
        consumed,
        signals,
    }
}

async fn status(f: &Endless) -> RunStatus {
    f.runtime
        .journal()
        .get_run(f.run.run_id())
        .await
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test(start_paused = true)]
async fn pause_stops_the_work_and_resume_restarts_it() {
    let f = endless().await;
    let mut states = f.run.watch();
    settle().await;
    assert!(get(&f.consumed) > 0);
    assert_eq!(status(&f).await, RunStatus::Running);

    f.run.send(ControlEvent::Pause).await.unwrap();
    assert_eq!(f.run.state(), RunState::Waiting);
    assert_eq!(*states.borrow_and_update(), RunState::Waiting);
    assert_eq!(status(&f).await, RunStatus::Waiting);
    settle().await;
    let (produced, consumed) = (get(&f.produced), get(&f.consumed));
    settle().await;
    assert_eq!(
        (get(&f.produced), get(&f.consumed)),
        (produced, consumed),
        "work went on while paused"
    );

    f.run.send(ControlEvent::Resume).await.unwrap();
    states.changed().await.unwrap();
    assert_eq!(*states.borrow_and_update(), RunState::Running);
    settle().await;
    assert!(get(&f.consumed) > consumed, "no work after resume");
    assert_eq!(status(&f).await, RunStatus::Running);

    let names = event_names(f.runtime.journal(), f.run.run_id()).await;
    assert_eq!(names, ["created", "started", "waiting", "resumed"]);
    f.run
        .send(ControlEvent::Cancel {
            reason: "done".into(),
        })
        .await
        .unwrap();
    f.run.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn drain_completes_an_endless_flow_with_every_item_delivered() {
    let f = endless().await;
    settle().await;
    f.run.send(ControlEvent::Pause).await.unwrap();
    // Draining a paused flow resumes it to finish.
    f.run.send(ControlEvent::Drain).await.unwrap();
    let outcome = f.run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    let steps = &outcome.structured_output.unwrap()["steps"];
    assert_eq!(steps["numbers"]["items_out"], get(&f.produced));
    assert_eq!(steps["tally"]["items_in"], get(&f.produced));
    assert_eq!(get(&f.consumed), get(&f.produced));
    assert_eq!(terminal_count(f.runtime.journal(), f.run.run_id()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn cancel_is_sticky_and_records_nothing_after_it() {
    let f = endless().await;
    settle().await;
    f.run
        .send(ControlEvent::Cancel {
            reason: "operator said so".into(),
        })
        .await
        .unwrap();
    // A second cancel is idempotent; a drain is refused.
    f.run
        .send(ControlEvent::Cancel {
            reason: "again".into(),
        })
        .await
        .ok();
    let outcome = f.run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("operator said so"),
        "the first cancel's reason"
    );
    assert!(outcome.recorded);
    assert_eq!(f.run.state(), RunState::Cancelled);

    let store = f.runtime.journal();
    let run = store.get_run(f.run.run_id()).await.unwrap().unwrap();
    assert!(run.cancel_requested);
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(store.list_step_outputs(run.id).await.unwrap().is_empty());
    let events = store.replay(run.id).await.unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        [
            "created",
            "started",
            "cancel_reason",
            "cancel_requested",
            "cancelled",
            "RunCancelled"
        ]
    );
    assert_eq!(
        events[2].kind,
        EventKind::custom("cancel_reason", json!({ "reason": "operator said so" }))
    );
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::Terminal(TerminalEvent::RunCancelled)
    );
    assert_eq!(terminal_count(store, run.id).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_requested_through_the_control_plane_says_so_in_the_outcome() {
    let f = endless().await;
    settle().await;
    f.runtime
        .runs()
        .request_cancel(f.run.run_id())
        .await
        .unwrap();
    let outcome = f.run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("cancel requested through the control plane")
    );
    assert!(outcome.recorded);
}

#[tokio::test(start_paused = true)]
async fn signals_are_recorded_and_reach_the_stages() {
    let f = endless().await;
    let payload = json!({ "threshold": 7 });
    f.run
        .send(ControlEvent::Signal {
            name: "tune".into(),
            payload: payload.clone(),
        })
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        *f.signals.lock().unwrap(),
        [("tune".to_owned(), payload.clone())]
    );
    let events = f.runtime.journal().replay(f.run.run_id()).await.unwrap();
    let recorded: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.kind.name() == "signal")
        .filter_map(|e| match &e.kind {
            EventKind::Custom { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), 1, "{events:?}");
    assert_eq!(recorded[0]["name"], "tune");
    assert_eq!(recorded[0]["payload"], payload);
    // Accepted into the inbox, one entry per stage with the signal's id,
    // each settled once its stage took it.
    let inbox = f
        .runtime
        .journal()
        .list_inbox(f.run.run_id())
        .await
        .unwrap();
    assert_eq!(inbox.len(), f.run.stage_names().len());
    for entry in &inbox {
        assert_eq!(entry.id.to_string(), recorded[0]["id"]);
        assert_eq!(
            entry.settled.as_ref().map(|s| s.undeliverable.clone()),
            Some(None)
        );
    }
    f.run.send(ControlEvent::Drain).await.unwrap();
    f.run.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn events_a_state_does_not_take_are_rejected_and_a_finished_flow_refuses_all() {
    let f = endless().await;
    let run_id = f.run.run_id();
    assert_eq!(
        f.run.send(ControlEvent::Resume).await,
        Err(HandleError::Rejected {
            run_id,
            state: "Running",
            event: "Resume"
        })
    );
    f.run.send(ControlEvent::Drain).await.unwrap();
    f.run.wait().await.unwrap();
    let late = f.run.clone();
    for event in [ControlEvent::Pause, ControlEvent::Drain] {
        let name = event.name();
        assert_eq!(
            late.send(event).await,
            Err(HandleError::Finished {
                run_id,
                event: name
            })
        );
    }
    // The outcome stays readable after the flow is gone.
    assert_eq!(late.wait().await.unwrap().status, RunStatus::Finished);
}

#[tokio::test(start_paused = true)]
async fn a_stage_handle_steers_one_stage() {
    let f = endless().await;
    let run_id = f.run.run_id();
    assert_eq!(f.run.stage_names(), ["numbers", "relay", "tally"]);
    assert_eq!(
        f.run.stage("nope").unwrap_err(),
        HandleError::UnknownStage {
            run_id,
            stage: "nope".into()
        }
    );
    let tally = f.run.stage("tally").unwrap();
    settle().await;
    assert_eq!(
        tally.send(StageControl::Pause).await,
        Ok(StageState::Running)
    );
    settle().await;
    let consumed = get(&f.consumed);
    settle().await;
    // The sink is paused; backpressure stops the rest; the flow still runs.
    assert_eq!(get(&f.consumed), consumed);
    assert_eq!(f.run.state(), RunState::Running);
    assert_eq!(
        tally.send(StageControl::Resume).await,
        Ok(StageState::Paused)
    );
    settle().await;
    assert!(get(&f.consumed) > consumed);

    let relay = f.run.stage("relay").unwrap();
    relay
        .send(StageControl::Signal {
            name: "only-me".into(),
            payload: json!(1),
        })
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        *f.signals.lock().unwrap(),
        [("only-me".to_owned(), json!(1))]
    );

    // Draining the source through its handle completes the whole flow.
    f.run
        .stage("numbers")
        .unwrap()
        .send(StageControl::Drain)
        .await
        .unwrap();
    assert_eq!(f.run.wait().await.unwrap().status, RunStatus::Finished);
    assert_eq!(
        tally.send(StageControl::Resume).await,
        Err(HandleError::Finished {
            run_id,
            event: "Resume"
        })
    );
}

/// A stage blocked on backpressure takes no control events; once its queue
/// is nearly full, user events are refused with `Busy` instead of wedging the
/// flow actor, and a cancel still ends the run.
#[tokio::test(start_paused = true)]
async fn a_blocked_stage_makes_signals_busy_not_a_wedged_flow() {
    let runtime = memory_runtime().await;
    // A paused sink leaves the source blocked on its full output.
    let run = blocked_pipeline(&runtime, "blocked", &counter(), &counter()).await;
    let minute = std::time::Duration::from_secs(60);
    let mut busy = 0;
    for i in 0..1100 {
        let signal = ControlEvent::Signal {
            name: "tick".into(),
            payload: json!(i),
        };
        let sent = tokio::time::timeout(minute, run.send(signal))
            .await
            .unwrap_or_else(|_| panic!("signal {i} never answered: the flow actor is wedged"));
        match sent {
            Ok(()) => {}
            Err(HandleError::Busy { stage, .. }) => {
                assert_eq!(stage, "numbers");
                busy += 1;
            }
            Err(other) => panic!("signal {i}: {other}"),
        }
    }
    assert!(busy > 0, "the source's queue never filled");
    let cancel = ControlEvent::Cancel {
        reason: "enough".into(),
    };
    tokio::time::timeout(minute, run.send(cancel))
        .await
        .expect("cancel answered")
        .unwrap();
    let outcome = tokio::time::timeout(minute * 10, run.wait())
        .await
        .expect("the run ends")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
}
