//! A step waiting for a signal (`StageContext::wait_signal`): the signal
//! may come before the wait, during it, or while the process is down; the
//! wait may time out; each signal is taken once and settled in the inbox.

mod runtime_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_support::{runtime_on, settle};
use serde_json::{Value, json};
use tokio::sync::watch;
use troupe::flow::FlowDefinition;
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};
use troupe::store::{MemoryStore, Store};

type Answers = Arc<Mutex<Vec<Option<Value>>>>;

/// `approve`: waits for `gate` to open, then for the signal `approval`
/// (`timeout`), and records the answer.
fn approval(
    answers: &Answers,
    gate: &watch::Receiver<bool>,
    timeout: Option<Duration>,
) -> FlowDefinition<u64> {
    let (answers, gate) = (answers.clone(), gate.clone());
    FlowDefinition::<u64>::builder("approval")
        .step("approve", move |ctx: &StageContext| {
            let (ctx, answers, gate) = (ctx.clone(), answers.clone(), gate.clone());
            step_fn(move |_| {
                let (ctx, answers, mut gate) = (ctx.clone(), answers.clone(), gate.clone());
                async move {
                    gate.wait_for(|open| *open).await?;
                    let answer = ctx.wait_signal("approval", timeout).await?;
                    answers.lock().unwrap().push(answer.clone());
                    Ok(json!({ "approved": answer }))
                }
            })
        })
        .build()
        .unwrap()
}

fn open() -> watch::Receiver<bool> {
    watch::channel(true).1
}

async fn inbox_settled(store: &Arc<dyn Store>, run: uuid::Uuid) -> Vec<bool> {
    let entries = store.list_inbox(run).await.unwrap();
    entries.iter().map(|e| e.settled.is_some()).collect()
}

#[tokio::test]
async fn a_signal_sent_before_the_wait_is_taken_by_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let (opener, gate) = watch::channel(false);
    let runtime = runtime_on(&store).await;
    runtime
        .register(approval(&answers, &gate, None))
        .await
        .unwrap();
    let run = runtime.start("approval").await.unwrap();
    let id = runtime
        .send_signal(run.run_id(), None, "approval", json!({"by": "ada"}))
        .await
        .unwrap();
    settle().await;
    // The step is not waiting yet: the signal stays in the inbox.
    assert_eq!(inbox_settled(&store, run.run_id()).await, [false]);
    opener.send_replace(true);
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(*answers.lock().unwrap(), [Some(json!({"by": "ada"}))]);
    let entries = store.list_inbox(run.run_id()).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    let settled = entries[0].settled.as_ref().expect("settled by the wait");
    assert_eq!(settled.undeliverable, None);
    let log = store.replay(run.run_id()).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.kind.name() == "signal_taken")
            .count(),
        1
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_waiting_step_wakes_on_its_signal_and_ignores_others() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let runtime = runtime_on(&store).await;
    runtime
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let run = runtime.start("approval").await.unwrap();
    settle().await;
    runtime
        .send_signal(run.run_id(), Some("approve"), "noise", json!(1))
        .await
        .unwrap();
    settle().await;
    assert!(
        answers.lock().unwrap().is_empty(),
        "another name does not wake it"
    );
    // Typed, through the run's handle.
    run.signal("approval", "yes").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(*answers.lock().unwrap(), [Some(json!("yes"))]);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_wait_times_out_with_none() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let runtime = runtime_on(&store).await;
    let timeout = Some(Duration::from_secs(3600));
    runtime
        .register(approval(&answers, &open(), timeout))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let run = runtime.start("approval").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert!(started.elapsed() >= Duration::from_secs(3599));
    assert_eq!(*answers.lock().unwrap(), [None]);
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["approve"],
        json!({ "approved": null })
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_signal_sent_while_the_process_is_down_reaches_the_resumed_wait() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let first = runtime_on(&store).await;
    first
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let run = first.start("approval").await.unwrap();
    settle().await;
    drop(first);
    settle().await;

    // A process without the flow journals the signal for the run.
    let between = runtime_on(&store).await;
    between
        .send_signal(run.run_id(), None, "approval", json!("granted"))
        .await
        .unwrap();
    between.shutdown().await;
    assert!(answers.lock().unwrap().is_empty());

    let second = runtime_on(&store).await;
    let report = second
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let outcome = report.resumed[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(*answers.lock().unwrap(), [Some(json!("granted"))]);
    assert!(inbox_settled(&store, run.run_id()).await.iter().all(|s| *s));
    second.shutdown().await;
}

#[tokio::test]
async fn an_answer_taken_before_a_restart_is_not_waited_for_again() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let (opener, gate) = watch::channel(true);
    // The step takes the signal, then the process goes away before it ends.
    let runtime = runtime_on(&store).await;
    let a = answers.clone();
    let flow = FlowDefinition::<u64>::builder("approval")
        .step("approve", move |ctx: &StageContext| {
            let (ctx, a, gate) = (ctx.clone(), a.clone(), gate.clone());
            step_fn(move |_| {
                let (ctx, a, mut gate) = (ctx.clone(), a.clone(), gate.clone());
                async move {
                    let answer = ctx.wait_signal("approval", None).await?;
                    a.lock().unwrap().push(answer.clone());
                    // Held after taking it, until the gate closes and opens.
                    gate.wait_for(|open| !*open).await?;
                    Ok(json!(answer))
                }
            })
        })
        .build()
        .unwrap();
    runtime.register(flow).await.unwrap();
    let run = runtime.start("approval").await.unwrap();
    runtime
        .send_signal(run.run_id(), None, "approval", json!(7))
        .await
        .unwrap();
    while answers.lock().unwrap().is_empty() {
        settle().await;
    }
    drop(runtime);
    settle().await;
    opener.send_replace(false);

    // Resumed: the memo answers at once; no second signal is needed.
    let second = runtime_on(&store).await;
    let report = second
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let outcome = report.resumed[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(*answers.lock().unwrap(), [Some(json!(7)), Some(json!(7))]);
    assert_eq!(inbox_settled(&store, run.run_id()).await, [true]);
    second.shutdown().await;
}

/// Waits until the run's record has `status`.
async fn record_is(
    store: &Arc<dyn Store>,
    run: uuid::Uuid,
    status: RunStatus,
) -> troupe::records::Run {
    loop {
        let record = store.get_run(run).await.unwrap().unwrap();
        if record.status == status {
            return record;
        }
        settle().await;
    }
}

#[tokio::test]
async fn a_waiting_step_makes_the_run_waiting_with_what_for() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let runtime = runtime_on(&store).await;
    runtime
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let run = runtime.start("approval").await.unwrap();
    let record = record_is(&store, run.run_id(), RunStatus::Waiting).await;
    let wait = record.wait_json.expect("says what for");
    assert_eq!(wait["for"], "stages");
    assert_eq!(wait["stages"]["approve"]["for"], "signal");
    assert_eq!(wait["stages"]["approve"]["signal"], "approval");
    // The flow itself runs: only its record says it waits.
    assert_eq!(run.state(), troupe::flow::RunState::Running);

    // An operator's pause takes over the record, and its resume gives it back.
    run.send(troupe::flow::ControlEvent::Pause).await.unwrap();
    let paused = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(paused.wait_json.unwrap()["for"], "resume");
    run.send(troupe::flow::ControlEvent::Resume).await.unwrap();
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Waiting);
    assert_eq!(record.wait_json.unwrap()["for"], "stages");

    runtime
        .send_signal(run.run_id(), None, "approval", json!(true))
        .await
        .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    let audits: Vec<String> = store
        .replay(run.run_id())
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name().to_owned())
        .filter(|n| ["waiting", "resumed"].contains(&n.as_str()))
        .collect();
    // Waiting (stages), waiting (the pause takes it over, one write), the
    // resume and at once waiting (stages) again, resumed when the signal came.
    assert_eq!(
        audits,
        ["waiting", "waiting", "resumed", "waiting", "resumed"]
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn signals_to_a_step_that_never_waits_are_not_failures() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (opener, gate) = watch::channel(false);
    let flow = FlowDefinition::<u64>::builder("plain")
        .step("work", move |_: &StageContext| {
            let gate = gate.clone();
            step_fn(move |_| {
                let mut gate = gate.clone();
                async move {
                    gate.wait_for(|open| *open).await?;
                    Ok(Value::Null)
                }
            })
        })
        .build()
        .unwrap();
    let runtime = runtime_on(&store).await;
    runtime.register(flow).await.unwrap();
    let run = runtime.start("plain").await.unwrap();
    for i in 0..3 {
        runtime
            .send_signal(run.run_id(), None, "ping", json!(i))
            .await
            .unwrap();
    }
    opener.send_replace(true);
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    assert!(
        store.list_failures(run.run_id()).await.unwrap().is_empty(),
        "a signal no wait took is not a failure"
    );
    let entries = store.list_inbox(run.run_id()).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| {
        e.settled
            .as_ref()
            .is_some_and(|s| s.undeliverable.is_none())
    }));
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stage_waiting_for_two_things_stays_waiting_until_both_end() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let flow = FlowDefinition::<u64>::builder("both")
        .step("both", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let (a, b) = tokio::join!(
                        ctx.sleep("short", Duration::from_secs(10)),
                        ctx.sleep("long", Duration::from_secs(1000))
                    );
                    a?;
                    b?;
                    Ok(Value::Null)
                }
            })
        })
        .build()
        .unwrap();
    let runtime = runtime_on(&store).await;
    runtime.register(flow).await.unwrap();
    let run = runtime.start("both").await.unwrap();
    record_is(&store, run.run_id(), RunStatus::Waiting).await;
    // The short timer has fired; the long one still runs.
    tokio::time::sleep(Duration::from_secs(55)).await;
    let record = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        RunStatus::Waiting,
        "still waiting for the long timer"
    );
    assert_eq!(record.wait_json.unwrap()["stages"]["both"]["timer"], "long");
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_a_waiting_step_at_once_not_after_its_grace() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let runtime = runtime_on(&store).await;
    runtime
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let run = runtime.start("approval").await.unwrap();
    record_is(&store, run.run_id(), RunStatus::Waiting).await;
    let asked = tokio::time::Instant::now();
    run.send(troupe::flow::ControlEvent::Cancel {
        reason: "no longer needed".into(),
    })
    .await
    .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    let took = asked.elapsed();
    assert!(
        took < troupe::flow::DEFAULT_CANCEL_GRACE,
        "the wait held the cancel for {took:?}"
    );
    assert!(answers.lock().unwrap().is_empty());
    runtime.shutdown().await;
}

/// A shutdown does not wait for a signal that may never come: a run whose
/// steps all wait durably stops as it is (still `Waiting`, no outcome), and
/// the next start resumes it, where the signal completes it.
#[tokio::test]
async fn a_shutdown_stops_a_waiting_run_and_the_next_start_resumes_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let answers = Answers::default();
    let first = Runtime::builder()
        .store(store.clone())
        .never_hibernate()
        .start()
        .await
        .unwrap();
    first
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    let run = first.start("approval").await.unwrap().run_id();
    while store.get_run(run).await.unwrap().unwrap().status != RunStatus::Waiting {
        settle().await;
    }
    tokio::time::timeout(Duration::from_secs(30), first.shutdown())
        .await
        .expect("the shutdown did not wait for the signal");
    let record = store.get_run(run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Waiting);
    assert!(store.terminal_event(run).await.unwrap().is_none());

    let second = runtime_on(&store).await;
    let report = second
        .register(approval(&answers, &open(), None))
        .await
        .unwrap();
    second
        .send_signal(run, None, "approval", json!("granted"))
        .await
        .unwrap();
    let outcome = report.resumed[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(*answers.lock().unwrap(), [Some(json!("granted"))]);
    second.shutdown().await;
}
