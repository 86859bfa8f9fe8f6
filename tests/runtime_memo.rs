//! Memoized side effects (`StageContext::run`) in a running flow: a step
//! that restarts, or a run that resumes after its process went away, gets
//! the journaled result and never calls the effect twice.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use runtime_support::{runtime_on, settle};
use serde_json::{Value, json};
use tokio::sync::watch;
use troupe::flow::{FlowDefinition, RunOptions};
use troupe::records::{RunStatus, RunStatus::Running};
use troupe::stage::{PermanentError, StageContext, step_fn};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;

/// Counts the calls of the effect; panics if it is called a second time.
#[derive(Clone, Default)]
struct Card(Arc<AtomicU32>);

impl Card {
    async fn charge(&self, cents: u64) -> Result<String, BoxError> {
        let calls = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(calls, 1, "the card was charged twice");
        Ok(format!("receipt-{cents}"))
    }
}

/// `charge`: charges the card once per run (the input's cents), then —
/// while `crash` is set — panics after the charge, or waits forever while
/// `hold` is set.
fn checkout(
    card: &Card,
    crash: &Arc<AtomicBool>,
    hold: &watch::Receiver<bool>,
) -> FlowDefinition<u64> {
    let (card, crash, hold) = (card.clone(), crash.clone(), hold.clone());
    FlowDefinition::<u64>::builder("checkout")
        .step("charge", move |ctx: &StageContext| {
            let (ctx, card, crash, hold) = (ctx.clone(), card.clone(), crash.clone(), hold.clone());
            step_fn(move |_| {
                let (ctx, card, crash, hold) =
                    (ctx.clone(), card.clone(), crash.clone(), hold.clone());
                async move {
                    let cents: u64 = ctx.input()?;
                    let receipt: String = ctx
                        .run("charge-card", || async { card.charge(cents).await })
                        .await?;
                    if crash.swap(false, Ordering::SeqCst) {
                        panic!("crash after the charge");
                    }
                    let mut hold = hold;
                    hold.wait_for(|held| !held).await?;
                    Ok(json!({ "receipt": receipt, "generation": ctx.generation() }))
                }
            })
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_restarted_step_gets_the_journaled_result() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let card = Card::default();
    let crash = Arc::new(AtomicBool::new(true));
    let runtime = runtime_on(&store).await;
    runtime
        .register(checkout(&card, &crash, &watch::channel(false).1))
        .await
        .unwrap();
    let run = runtime
        .start_with("checkout", RunOptions::new().input(250))
        .await
        .unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    let step = &outcome.structured_output.unwrap()["steps"]["charge"];
    assert_eq!(step["receipt"], "receipt-250");
    assert_eq!(step["generation"], 2, "it ran again after the panic");
    assert_eq!(card.0.load(Ordering::SeqCst), 1);
    let memos = store.list_memos(run.run_id(), "charge").await.unwrap();
    assert_eq!(memos.len(), 1);
    assert_eq!(memos[0].result, Ok(Value::from("receipt-250")));
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_resumed_run_gets_the_journaled_result() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let card = Card::default();
    let (release, hold) = watch::channel(true);
    let first = runtime_on(&store).await;
    first
        .register(checkout(&card, &Arc::default(), &hold))
        .await
        .unwrap();
    let run = first
        .start_with("checkout", RunOptions::new().input(99))
        .await
        .unwrap();
    // The charge is journaled; the step holds.
    while store
        .list_memos(run.run_id(), "charge")
        .await
        .unwrap()
        .is_empty()
    {
        settle().await;
    }
    // The process goes away mid-step.
    drop(first);
    settle().await;
    assert_eq!(
        store.get_run(run.run_id()).await.unwrap().unwrap().status,
        Running
    );

    release.send_replace(false);
    let second = runtime_on(&store).await;
    let report = second
        .register(checkout(&card, &Arc::default(), &hold))
        .await
        .unwrap();
    let again = report
        .resumed
        .iter()
        .find(|h| h.run_id() == run.run_id())
        .expect("resumed");
    let outcome = again.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["charge"]["receipt"],
        "receipt-99"
    );
    assert_eq!(
        card.0.load(Ordering::SeqCst),
        1,
        "charged once across processes"
    );
    second.shutdown().await;
}

#[tokio::test]
async fn a_permanent_failure_is_journaled_and_fails_the_step_without_retries() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let flow = FlowDefinition::<u64>::builder("declined")
        .step("charge", move |ctx: &StageContext| {
            let (ctx, c) = (ctx.clone(), c.clone());
            step_fn(move |_| {
                let (ctx, c) = (ctx.clone(), c.clone());
                async move {
                    let _: String = ctx
                        .run("charge-card", || async {
                            c.fetch_add(1, Ordering::SeqCst);
                            Err(PermanentError::new("card declined").into())
                        })
                        .await?;
                    Ok(Value::Null)
                }
            })
        })
        .build()
        .unwrap();
    let runtime = runtime_on(&store).await;
    runtime.register(flow).await.unwrap();
    let run = runtime.start("declined").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(
        outcome
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("card declined"),
        "{outcome:?}"
    );
    let memos = store.list_memos(run.run_id(), "charge").await.unwrap();
    assert_eq!(memos.len(), 1);
    assert!(matches!(&memos[0].result, Err(m) if m.contains("card declined")));
    // However the stage was restarted, the declined card was tried once.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    runtime.shutdown().await;
}

/// `remind`: sleeps an hour on a durable timer, then records how long this
/// start of the step waited.
fn reminder(waited: &Arc<std::sync::Mutex<Vec<std::time::Duration>>>) -> FlowDefinition<u64> {
    let waited = waited.clone();
    FlowDefinition::<u64>::builder("reminder")
        .step("remind", move |ctx: &StageContext| {
            let (ctx, waited) = (ctx.clone(), waited.clone());
            step_fn(move |_| {
                let (ctx, waited) = (ctx.clone(), waited.clone());
                async move {
                    let started = tokio::time::Instant::now();
                    ctx.sleep("hour", std::time::Duration::from_secs(3600))
                        .await?;
                    waited.lock().unwrap().push(started.elapsed());
                    Ok(json!("reminded"))
                }
            })
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_durable_timer_resumes_with_what_is_left_of_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let waited = Arc::default();
    let first = runtime_on(&store).await;
    first.register(reminder(&waited)).await.unwrap();
    let run = first.start("reminder").await.unwrap();
    // Its deadline is journaled; 40 minutes pass; the process goes away.
    while store
        .list_memos(run.run_id(), "remind")
        .await
        .unwrap()
        .is_empty()
    {
        settle().await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(40 * 60)).await;
    drop(first);
    settle().await;
    assert!(waited.lock().unwrap().is_empty(), "not fired yet");

    let second = runtime_on(&store).await;
    let resumed_at = tokio::time::Instant::now();
    let report = second.register(reminder(&waited)).await.unwrap();
    let outcome = report.resumed[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(waited.lock().unwrap().len(), 1, "fired once");
    // The resumed run waited the 20 minutes left, not a new hour (its
    // step may have hibernated meanwhile, and started again at the end).
    let left = resumed_at.elapsed().as_secs();
    assert!((19 * 60..=21 * 60).contains(&left), "waited {left} s");
    let fired = store
        .replay(run.run_id())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.name() == "timer_fired")
        .count();
    assert_eq!(fired, 1);
    second.shutdown().await;
}
