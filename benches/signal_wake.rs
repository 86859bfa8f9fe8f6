//! Signal → waiting run resumed, journal fsync included: N runs of a
//! one-step flow wait in `StageContext::wait_signal` on an SQLite journal;
//! each gets its signal in turn (`Runtime::send_signal`), and the time from
//! the send to the step holding the payload is measured. Also reports the
//! RSS each waiting run costs.
//!
//! Baseline, same run, same durable work: the signal's inbox entry accepted
//! by a bare `SqliteStore` (one commit, fsync'd as the journal's), then a
//! waiting tokio task woken through a oneshot.
//!
//! Run: `cargo bench --bench signal_wake` (N from `TROUPE_WAITING_RUNS`,
//! default 1,000).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::oneshot;
use troupe::flow::FlowDefinition;
use troupe::records::{InboxEntry, InboxMessage, Run};
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};
use troupe::store::{SqliteStore, Store};
use uuid::Uuid;

type Woken = Arc<Mutex<HashMap<Uuid, oneshot::Sender<Instant>>>>;

/// `wait`: one step that waits for `go`, then tells `woken` when.
fn waiting_flow(woken: &Woken) -> FlowDefinition<u64> {
    let woken = woken.clone();
    FlowDefinition::<u64>::builder("wait")
        .step("wait", move |ctx: &StageContext| {
            let (ctx, woken) = (ctx.clone(), woken.clone());
            step_fn(move |_| {
                let (ctx, woken) = (ctx.clone(), woken.clone());
                async move {
                    let payload = ctx.wait_signal("go", None).await?;
                    let at = Instant::now();
                    if let Some(tx) = woken.lock().unwrap().remove(&ctx.run_id()) {
                        let _ = tx.send(at);
                    }
                    Ok(payload.unwrap_or_default())
                }
            })
        })
        .build()
        .expect("flow")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "signal_wake/{name}: n={} p50={p50:.2?} p99={p99:.2?} max={:.2?}",
        samples.len(),
        samples[samples.len() - 1]
    );
    p99
}

fn main() {
    if support::probing() {
        return;
    }
    let runs: usize = std::env::var("TROUPE_WAITING_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        // Baseline: accept the entry durably, then wake a waiting task.
        let store = SqliteStore::open(dir.path().join("baseline.sqlite"))
            .await
            .expect("store");
        let mut ids = Vec::with_capacity(runs);
        for _ in 0..runs {
            let run = Run::new("wait", "bench", "bench");
            store.insert_run(run.clone(), None).await.expect("run");
            ids.push(run.id);
        }
        let mut baseline = Vec::with_capacity(runs);
        for &run_id in &ids {
            let (tx, rx) = oneshot::channel::<Instant>();
            let waiter = tokio::spawn(async move { rx.await.map(|_| Instant::now()) });
            let sent = Instant::now();
            let entry = InboxEntry {
                id: Uuid::now_v7(),
                run_id,
                stage: "wait".into(),
                message: InboxMessage::Signal {
                    name: "go".into(),
                    payload: json!(1),
                },
                accepted_at: chrono::Utc::now(),
                settled: None,
            };
            store.accept_inbox(vec![entry]).await.expect("accept");
            let _ = tx.send(Instant::now());
            let woke = waiter.await.expect("join").expect("woken");
            baseline.push(woke - sent);
        }
        drop(store);

        let woken = Woken::default();
        let runtime = Runtime::builder()
            .sqlite(dir.path().join("journal.sqlite"))
            .start()
            .await
            .expect("runtime");
        runtime.register(waiting_flow(&woken)).await.expect("register");
        let before = support::rss_kib();
        let mut handles = Vec::with_capacity(runs);
        for _ in 0..runs {
            handles.push(runtime.start("wait").await.expect("start"));
        }
        // Every run records `Waiting` once its step waits.
        let journal = runtime.journal().clone();
        for handle in &handles {
            loop {
                let record = journal.get_run(handle.run_id()).await.expect("read");
                if record.is_some_and(|r| r.wait_json.is_some()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let after = support::rss_kib();
        let mut samples = Vec::with_capacity(runs);
        for handle in &handles {
            let (tx, rx) = oneshot::channel();
            woken.lock().unwrap().insert(handle.run_id(), tx);
            let sent = Instant::now();
            runtime
                .send_signal(handle.run_id(), None, "go", json!(1))
                .await
                .expect("signal");
            let woke = rx.await.expect("woken");
            samples.push(woke - sent);
        }
        for handle in &handles {
            handle.wait().await.expect("outcome");
        }
        println!(
            "signal_wake: {runs} waiting runs; RSS {before} KiB -> {after} KiB; {:.1} KB per waiting run",
            (after.saturating_sub(before)) as f64 * 1.024 / runs as f64
        );
        let base = report("baseline (accept + wake)", baseline);
        let ours = report("troupe (send_signal → wait_signal)", samples);
        println!(
            "signal_wake: p99 troupe / baseline = {:.2}",
            ours.as_secs_f64() / base.as_secs_f64()
        );
        runtime.shutdown().await;
    });
}
