//! Hibernated runs, on an SQLite journal, `hibernate_after(0)`:
//!
//! 1. **Memory.** N runs of a one-step flow sleeping a day on a durable
//!    timer (`StageContext::sleep`) hibernate; the process RSS is read
//!    before the first start and once every run hibernates (their handles
//!    dropped: what the runtime itself keeps). Baseline, same process: the
//!    RSS the same number of live runs cost before hibernation existed is in
//!    `idle_flows` / `signal_wake` (BENCHMARKS.md), not re-measured here.
//! 2. **Signal → resumed.** 1,000 runs waiting in `wait_signal` hibernate;
//!    each gets its signal in turn (`Runtime::send_signal`), and the time
//!    from the send to the woken step holding the payload is measured: the
//!    wake (record and outputs read, flow and stage spawned, the step run
//!    again, its memos read) plus the signal's fsync'd commit. Baseline in
//!    the same run: the same against runs that never hibernate.
//!
//! Run: `cargo bench --bench hibernate` (N from `TROUPE_HIBERNATED_RUNS`,
//! default 100,000; `TROUPE_SIGNAL_RUNS`, default 1,000).

#[path = "support/heap.rs"]
mod heap;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::oneshot;
use troupe::flow::FlowDefinition;
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};

type Woken = Arc<Mutex<HashMap<uuid::Uuid, oneshot::Sender<Instant>>>>;

/// `nap`: one step sleeping a day.
fn nap() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("nap")
        .step("rest", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    ctx.sleep("day", Duration::from_secs(24 * 3600)).await?;
                    Ok(json!(null))
                }
            })
        })
        .build()
        .expect("flow")
}

/// `wait`: one step waiting for `go`, telling `woken` when it has it.
fn waiting(woken: &Woken) -> FlowDefinition<u64> {
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

/// Waits until `runtime` has `hibernated` runs and no live one.
async fn all_hibernated(runtime: &Runtime, hibernated: usize) {
    loop {
        let counts = runtime.run_counts();
        if counts.hibernated >= hibernated && counts.live == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn memory(dir: &std::path::Path, runs: usize) {
    let runtime = Arc::new(
        Runtime::builder()
            .sqlite(dir.join("timers.sqlite"))
            .hibernate_after(Duration::ZERO)
            .register(nap())
            .expect("register")
            .start()
            .await
            .expect("runtime"),
    );
    let before = support::rss_kib();
    let heap_before = heap::in_use();
    let started = Instant::now();
    // Started 256 at a time, so their journal writes share commits; each
    // wave hibernates before the next starts, so that the RSS is not the
    // high-water mark of many live runs at once.
    let mut left = runs;
    while left > 0 {
        let batch = left.min(256);
        left -= batch;
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let runtime = runtime.clone();
            starts.spawn(async move { runtime.start("nap").await.map(|h| h.run_id()) });
        }
        while let Some(started) = starts.join_next().await {
            started.expect("join").expect("start");
        }
        all_hibernated(&runtime, runs - left).await;
    }
    let asleep = started.elapsed();
    let after = support::rss_kib();
    let heap_after = heap::in_use();
    let counts = runtime.run_counts();
    println!(
        "hibernate/memory: {runs} runs on timers started and hibernated in {asleep:.2?}; \
         {counts:?}; RSS {before} KiB -> {after} KiB: {:.0} B per hibernated run; \
         heap in use {:.1} MiB -> {:.1} MiB: {:.0} B per hibernated run",
        after.saturating_sub(before) as f64 * 1024.0 / runs as f64,
        heap_before as f64 / 1048576.0,
        heap_after as f64 / 1048576.0,
        (heap_after - heap_before) as f64 / runs as f64
    );
    if let Ok(runtime) = Arc::try_unwrap(runtime) {
        runtime.shutdown().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "hibernate/signal/{name}: n={} p50={p50:.2?} p99={p99:.2?} max={:.2?}",
        samples.len(),
        samples[samples.len() - 1]
    );
    p99
}

/// Signal → resumed for `runs` waiting runs, hibernated or (`hibernate`
/// false) live.
async fn signal(dir: &std::path::Path, runs: usize, hibernate: bool) -> Vec<Duration> {
    let woken = Woken::default();
    let builder = Runtime::builder().sqlite(dir.join(format!("signal-{hibernate}.sqlite")));
    let builder = if hibernate {
        builder.hibernate_after(Duration::ZERO)
    } else {
        builder.never_hibernate()
    };
    let runtime = builder
        .register(waiting(&woken))
        .expect("register")
        .start()
        .await
        .expect("runtime");
    let mut handles = Vec::with_capacity(runs);
    for _ in 0..runs {
        handles.push(runtime.start("wait").await.expect("start"));
    }
    if hibernate {
        all_hibernated(&runtime, runs).await;
    } else {
        let journal = runtime.journal();
        for handle in &handles {
            use troupe::store::Store;
            while journal
                .get_run(handle.run_id())
                .await
                .expect("read")
                .is_none_or(|r| r.wait_json.is_none())
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
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
    runtime.shutdown().await;
    samples
}

fn main() {
    if support::probing() {
        return;
    }
    let runs = support::env::<usize>("TROUPE_HIBERNATED_RUNS", 100_000);
    let signal_runs = support::env::<usize>("TROUPE_SIGNAL_RUNS", 1_000);
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        // Memory first: the heap is not yet grown by the other phase.
        if runs > 0 {
            memory(dir.path(), runs).await;
        }
        if signal_runs > 0 {
            let live = signal(dir.path(), signal_runs, false).await;
            let hibernated = signal(dir.path(), signal_runs, true).await;
            let base = report("live runs (never hibernate)", live);
            let ours = report("hibernated runs", hibernated);
            println!(
                "hibernate/signal: p99 hibernated / live = {:.2}",
                ours.as_secs_f64() / base.as_secs_f64()
            );
        }
    });
}
