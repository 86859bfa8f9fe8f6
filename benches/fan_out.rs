//! Child runs, on an SQLite journal (fsync on, the default),
//! `hibernate_after(0)`:
//!
//! 1. **Fan-out.** One parent run whose step starts N children
//!    (`StageContext::start_child`, 256 starts in flight at a time) and then
//!    awaits each in turn (`await_child`); each child is a one-step flow
//!    waiting for the signal `go`, so all N wait at once. Measured: the time
//!    from the parent's start until every child is started and every run
//!    (parent and children) hibernates; the RSS per hibernated run (read
//!    before the parent's start and once all hibernate; the runtime keeps
//!    no handle but the parent's); the time from the first signal (the
//!    bench signals every child in turn with `Runtime::send_signal`) until
//!    the parent's outcome (it has recorded every child's terminal).
//!    Baseline in the same run: the same N runs of the same flow started
//!    directly (`Runtime::start`, handles dropped), waiting for the same
//!    signal: their time to all hibernated, RSS, and time from the first
//!    signal until all ended.
//! 2. **Child terminal → parent recorded.** P parents each start one child
//!    and await it; all hibernate. Each child in turn gets its signal, and
//!    the time from the send to the parent's outcome (`RunHandle::wait`:
//!    the child's end, its terminal recorded in the parent as a memo and a
//!    `child_ended` event, the parent's end, each commit fsync'd) is
//!    measured. Baseline in the same run: signal → outcome of P hibernated
//!    runs of the child's flow started directly (the child's own path,
//!    without the hop to its parent).
//!
//! Run: `cargo bench --bench fan_out` (N from `TROUPE_FANOUT_CHILDREN`,
//! default 10,000; P from `TROUPE_CHILD_LATENCY_RUNS`, default 1,000).

#[path = "support/heap.rs"]
mod heap;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use troupe::flow::FlowDefinition;
use troupe::records::RunFilter;
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};
use troupe::store::Store;
use uuid::Uuid;

/// `leaf`: one step waiting for the signal `go`.
fn leaf() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("leaf")
        .step("wait", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let payload = ctx.wait_signal("go", None).await?;
                    Ok(payload.unwrap_or_default())
                }
            })
        })
        .build()
        .expect("flow")
}

/// `fan`: one step starting `input` children of `leaf` (256 starts in
/// flight), then awaiting each in turn.
fn fan() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("fan")
        .step("fan", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let n: usize = ctx.input().unwrap_or_default();
                    let mut children = Vec::with_capacity(n);
                    let mut next = 0;
                    while next < n {
                        let mut starts = tokio::task::JoinSet::new();
                        for i in next..(next + 256).min(n) {
                            let ctx = ctx.clone();
                            starts.spawn(async move {
                                let key = format!("c{i}");
                                (i, ctx.start_child("leaf", json!(null), &key).await)
                            });
                        }
                        next = (next + 256).min(n);
                        let mut wave = Vec::with_capacity(256);
                        while let Some(started) = starts.join_next().await {
                            let (i, child) = started?;
                            wave.push((i, child?));
                        }
                        wave.sort_unstable_by_key(|(i, _)| *i);
                        children.extend(wave.into_iter().map(|(_, c)| c));
                    }
                    for child in &children {
                        ctx.await_child(child).await?;
                    }
                    Ok(json!(children.len()))
                }
            })
        })
        .build()
        .expect("flow")
}

/// `one`: one step starting one child of `leaf` and awaiting it.
fn one() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("one")
        .step("one", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let child = ctx.start_child("leaf", json!(null), "c").await?;
                    Ok(ctx.await_child(&child).await?)
                }
            })
        })
        .build()
        .expect("flow")
}

async fn runtime(path: std::path::PathBuf) -> Arc<Runtime> {
    Arc::new(
        Runtime::builder()
            .sqlite(path)
            .hibernate_after(Duration::ZERO)
            .register(leaf())
            .expect("register")
            .register(fan())
            .expect("register")
            .register(one())
            .expect("register")
            .start()
            .await
            .expect("runtime"),
    )
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

/// Gives the actors of runs just hibernated a second to stop (what is
/// left then is counted, and printed).
async fn settle(_runtime: &Runtime) {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Waits until `runtime` has no run that has not ended.
async fn all_ended(runtime: &Runtime) {
    loop {
        let counts = runtime.run_counts();
        if counts.hibernated == 0 && counts.live == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The children of run `parent`, from the journal.
async fn children(runtime: &Runtime, parent: Uuid) -> Vec<Uuid> {
    let filter = RunFilter {
        parent_run_id: Some(parent),
        ..RunFilter::default()
    };
    let (mut ids, mut before) = (Vec::new(), None);
    loop {
        let page = runtime
            .journal()
            .list_runs(&filter, before, 1000)
            .await
            .expect("list");
        before = page.last().map(|r| r.id);
        let last = page.len() < 1000;
        ids.extend(page.into_iter().map(|r| r.id));
        if last {
            return ids;
        }
    }
}

async fn signal_all(runtime: &Runtime, runs: &[Uuid]) {
    for &run in runs {
        runtime
            .send_signal(run, None, "go", json!(1))
            .await
            .expect("signal");
    }
}

struct Phase {
    asleep: Duration,
    bytes_per_run: f64,
    heap_per_run: f64,
    ended: Duration,
}

fn show(name: &str, runs: usize, phase: &Phase) {
    println!(
        "fan_out/{name}: {runs} waiting runs started and hibernated in {:.2?}; \
         RSS {:.0} B, heap in use {:.0} B per hibernated run; \
         first signal -> all ended in {:.2?}",
        phase.asleep, phase.bytes_per_run, phase.heap_per_run, phase.ended
    );
}

/// The fan-out: one parent and `n` children.
async fn fan_out(dir: &std::path::Path, n: usize) -> Phase {
    let runtime = runtime(dir.join("fan.sqlite")).await;
    let before = support::rss_kib();
    let heap_before = heap::in_use();
    let started = Instant::now();
    let parent = runtime
        .start_with("fan", troupe::flow::RunOptions::new().input(json!(n)))
        .await
        .expect("start");
    all_hibernated(&runtime, n + 1).await;
    let asleep = started.elapsed();
    settle(&runtime).await;
    let after = support::rss_kib();
    let heap_after = heap::in_use();
    let counts = runtime.run_counts();
    println!("fan_out/children: {counts:?}, RSS {before} KiB -> {after} KiB");
    let children = children(&runtime, parent.run_id()).await;
    assert_eq!(children.len(), n);
    let first = Instant::now();
    signal_all(&runtime, &children).await;
    let signalled = first.elapsed();
    let outcome = parent.wait().await.expect("outcome");
    let ended = first.elapsed();
    assert_eq!(outcome.status, troupe::records::RunStatus::Finished);
    println!("fan_out/children: {n} signals sent in {signalled:.2?}");
    drop(parent);
    if let Ok(runtime) = Arc::try_unwrap(runtime) {
        runtime.shutdown().await;
    }
    Phase {
        asleep,
        bytes_per_run: after.saturating_sub(before) as f64 * 1024.0 / (n + 1) as f64,
        heap_per_run: (heap_after - heap_before) as f64 / (n + 1) as f64,
        ended,
    }
}

/// The baseline: `n` runs of `leaf` started directly.
async fn direct(dir: &std::path::Path, n: usize) -> Phase {
    let runtime = runtime(dir.join("direct.sqlite")).await;
    let before = support::rss_kib();
    let heap_before = heap::in_use();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let mut starts = tokio::task::JoinSet::new();
        for _ in next..(next + 256).min(n) {
            let runtime = runtime.clone();
            starts.spawn(async move { runtime.start("leaf").await.map(|h| h.run_id()) });
        }
        next = (next + 256).min(n);
        while let Some(started) = starts.join_next().await {
            ids.push(started.expect("join").expect("start"));
        }
    }
    all_hibernated(&runtime, n).await;
    let asleep = started.elapsed();
    settle(&runtime).await;
    let after = support::rss_kib();
    let heap_after = heap::in_use();
    let counts = runtime.run_counts();
    println!("fan_out/direct: {counts:?}, RSS {before} KiB -> {after} KiB");
    let first = Instant::now();
    signal_all(&runtime, &ids).await;
    let signalled = first.elapsed();
    all_ended(&runtime).await;
    let ended = first.elapsed();
    println!("fan_out/direct: {n} signals sent in {signalled:.2?}");
    if let Ok(runtime) = Arc::try_unwrap(runtime) {
        runtime.shutdown().await;
    }
    Phase {
        asleep,
        bytes_per_run: after.saturating_sub(before) as f64 * 1024.0 / n as f64,
        heap_per_run: (heap_after - heap_before) as f64 / n as f64,
        ended,
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
        "fan_out/latency/{name}: n={} p50={p50:.2?} p99={p99:.2?} max={:.2?}",
        samples.len(),
        samples[samples.len() - 1]
    );
    p99
}

/// Signal → outcome of `runs` hibernated runs: parents of `one` awaiting
/// their child (`parents`), or runs of `leaf` started directly.
async fn latency(dir: &std::path::Path, runs: usize, parents: bool) -> Vec<Duration> {
    let runtime = runtime(dir.join(format!("latency-{parents}.sqlite"))).await;
    let flow = if parents { "one" } else { "leaf" };
    let mut handles = Vec::with_capacity(runs);
    for _ in 0..runs {
        handles.push(runtime.start(flow).await.expect("start"));
    }
    let hibernating = if parents { 2 * runs } else { runs };
    all_hibernated(&runtime, hibernating).await;
    let mut samples = Vec::with_capacity(runs);
    for handle in &handles {
        let target = if parents {
            let children = children(&runtime, handle.run_id()).await;
            assert_eq!(children.len(), 1);
            children[0]
        } else {
            handle.run_id()
        };
        let sent = Instant::now();
        runtime
            .send_signal(target, None, "go", json!(1))
            .await
            .expect("signal");
        let outcome = handle.wait().await.expect("outcome");
        samples.push(sent.elapsed());
        assert_eq!(outcome.status, troupe::records::RunStatus::Finished);
    }
    drop(handles);
    if let Ok(runtime) = Arc::try_unwrap(runtime) {
        runtime.shutdown().await;
    }
    samples
}

fn main() {
    if support::probing() {
        return;
    }
    let children = support::env::<usize>("TROUPE_FANOUT_CHILDREN", 10_000);
    let parents = support::env::<usize>("TROUPE_CHILD_LATENCY_RUNS", 1_000);
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        if children > 0 {
            // Children first: the heap is not yet grown by the baseline.
            let ours = fan_out(dir.path(), children).await;
            let base = direct(dir.path(), children).await;
            show("direct runs (baseline)", children, &base);
            show("parent + children", children + 1, &ours);
            println!(
                "fan_out: heap per run children / direct = {:.2}; all ended children / direct = {:.2}",
                ours.heap_per_run / base.heap_per_run,
                ours.ended.as_secs_f64() / base.ended.as_secs_f64()
            );
        }
        if parents > 0 {
            let base = latency(dir.path(), parents, false).await;
            let ours = latency(dir.path(), parents, true).await;
            let base = report("signal -> run ended (direct, baseline)", base);
            let ours = report("signal -> child ended -> parent ended", ours);
            println!(
                "fan_out/latency: p99 parent / direct = {:.2}",
                ours.as_secs_f64() / base.as_secs_f64()
            );
        }
    });
}
