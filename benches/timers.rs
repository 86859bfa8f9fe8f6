//! Durable timers at scale, on an SQLite journal, `hibernate_after(0)`:
//! N runs of a one-step flow each sleep until their own deadline
//! (`StageContext::sleep_until`), spread one every `TROUPE_TIMER_SPACING_US`
//! microseconds from a common start `TROUPE_TIMER_LEAD_S` seconds ahead.
//!
//! 1. The runs start and hibernate; the runtime shuts down (a restart).
//! 2. **Re-arm**: a new runtime opens the journal; timed: its `start`, until
//!    every run is hibernated again with its deadline armed (no actor).
//! 3. **Fire**: each step notes how late it woke past its deadline (wall
//!    clock); reported: p50, p99, max and how many were over 10 ms.
//!
//! Run: `cargo bench --bench timers` (N from `TROUPE_TIMER_RUNS`, default
//! 100,000).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use troupe::flow::{FlowDefinition, RunOptions};
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};

type Late = Arc<Mutex<Vec<i64>>>;

/// `alarm`: one step sleeping until the deadline its input gives (µs since
/// the epoch), then noting how late it woke.
fn alarm(late: &Late) -> FlowDefinition<u64> {
    let late = late.clone();
    FlowDefinition::<u64>::builder("alarm")
        .input::<i64>()
        .step("ring", move |ctx: &StageContext| {
            let (ctx, late) = (ctx.clone(), late.clone());
            step_fn(move |_| {
                let (ctx, late) = (ctx.clone(), late.clone());
                async move {
                    let micros: i64 = ctx.input()?;
                    let deadline = DateTime::from_timestamp_micros(micros).expect("deadline");
                    ctx.sleep_until("alarm", deadline).await?;
                    let behind = (Utc::now() - deadline)
                        .num_microseconds()
                        .unwrap_or(i64::MAX);
                    late.lock().unwrap().push(behind);
                    Ok(json!(null))
                }
            })
        })
        .build()
        .expect("flow")
}

async fn runtime(path: &std::path::Path, late: &Late) -> Runtime {
    Runtime::builder()
        .sqlite(path)
        .hibernate_after(Duration::ZERO)
        .register(alarm(late))
        .expect("register")
        .start()
        .await
        .expect("start")
}

/// Waits until `runtime` has `hibernated` runs and no live one.
async fn all_hibernated(runtime: &Runtime, hibernated: usize) {
    loop {
        let counts = runtime.run_counts();
        if counts.hibernated >= hibernated && counts.live == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default() as f64 / 1000.0
}

fn main() {
    if support::probing() {
        return;
    }
    let runs = support::env::<u64>("TROUPE_TIMER_RUNS", 100_000) as usize;
    let spacing = support::env::<u64>("TROUPE_TIMER_SPACING_US", 1_000) as i64;
    let lead = support::env::<u64>("TROUPE_TIMER_LEAD_S", 150) as i64;
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("timers.sqlite");
    let late: Late = Arc::default();
    rt.block_on(async {
        let first = runtime(&path, &late).await;
        let base = Utc::now() + TimeDelta::seconds(lead);
        let started = Instant::now();
        for i in 0..runs {
            let deadline = base + TimeDelta::microseconds(spacing * i as i64);
            let options = RunOptions::new().input(json!(deadline.timestamp_micros()));
            first.start_with("alarm", options).await.expect("start run");
        }
        all_hibernated(&first, runs).await;
        println!(
            "timers: {runs} runs started and hibernated in {:.2?}",
            started.elapsed()
        );
        first.shutdown().await;

        let restarted = Instant::now();
        let second = runtime(&path, &late).await;
        let start_returned = restarted.elapsed();
        all_hibernated(&second, runs).await;
        println!(
            "timers: restart re-armed {runs} timers: start returned in {start_returned:.2?}, \
             every run hibernated with its deadline after {:.2?}",
            restarted.elapsed()
        );
        if Utc::now() > base {
            println!("timers: warning: the first deadline passed before the restart ended");
        }
        while late.lock().unwrap().len() < runs {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut late = late.lock().unwrap().clone();
        late.sort_unstable();
        let over = late.iter().filter(|l| **l > 10_000).count();
        println!(
            "timers: {runs} timers fired, late by p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             {over} over 10 ms",
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            percentile(&late, 1.0),
        );
        second.shutdown().await;
    });
}
