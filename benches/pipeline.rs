//! Pipeline throughput: 1,000,000 `u64` items through source → transform →
//! sink, in one run:
//! (a) `raw_tokio_chain`: three tokio tasks over bounded mpsc channels
//!     (capacity 1024), one message per item;
//! (b) `raw_tokio_batched_chain`: the same three tasks moving `Vec` batches
//!     of 256 items over channels of 8 batches — the same batching as
//!     troupe's default pipes, so the baseline for (c);
//! (c) `troupe_pipeline`: the same work as a troupe flow on a runtime with
//!     an SQLite journal (fsync on): three stage actors, batched pipes
//!     (default 256 items × 8 batches), per-item retry bookkeeping on (the
//!     default `RetryPolicy`), each stage's completion and the run's
//!     lifecycle and outcome recorded durably;
//! (d) `troupe_pipeline_1pct_fail_once`: (c) where 1% of the items fail
//!     once in the transform and succeed on their retry (retried at once:
//!     a backoff is a wait, not work);
//! (e) `troupe_pipeline_empty`: (c) with no items: the fixed cost of a run
//!     (its start, its durable lifecycle writes, three stage actors), to
//!     tell per-run from per-item cost;
//! (f) `*_10m`: (b) and (c) over 10,000,000 items, where the fixed cost of
//!     a run weighs a tenth as much;
//! (g) `pipeline_observed`: (f)'s troupe run unobserved (no metrics
//!     recorder records, nobody reads the progress) against observed: a
//!     metrics recorder keeping every series, and the run's progress read
//!     as a progress bar reads it (`watch_progress().next(100 ms)`: at each
//!     change of a stage's state and every 100 ms). The stages count items
//!     for the progress in both (that is always on); the difference is
//!     what watching costs.
//!
//! Run: `cargo bench --bench pipeline` (only (g): `cargo bench --bench
//! pipeline -- pipeline_observed`).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;
use troupe::records::RunStatus;
use troupe::runtime::Runtime;

mod support;

const ITEMS: u64 = 1_000_000;
const ITEMS_10M: u64 = 10_000_000;

async fn raw_chain() -> u64 {
    let (tx1, mut rx1) = mpsc::channel::<u64>(1024);
    let (tx2, mut rx2) = mpsc::channel::<u64>(1024);
    let source = tokio::spawn(async move {
        for i in 0..ITEMS {
            if tx1.send(i).await.is_err() {
                break;
            }
        }
    });
    let transform = tokio::spawn(async move {
        while let Some(x) = rx1.recv().await {
            if tx2.send(x.wrapping_mul(3)).await.is_err() {
                break;
            }
        }
    });
    let sink = tokio::spawn(async move {
        let mut sum = 0_u64;
        while let Some(x) = rx2.recv().await {
            sum = sum.wrapping_add(x);
        }
        sum
    });
    source.await.expect("source");
    transform.await.expect("transform");
    sink.await.expect("sink")
}

fn pipeline(c: &mut Criterion) {
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    let sum = Arc::new(AtomicU64::new(0));
    let runtime = rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.path().join("journal.sqlite"))
            .start()
            .await
            .expect("runtime");
        for (name, items, fail_one_in) in [
            ("bench", ITEMS, None),
            ("bench-1pct", ITEMS, Some(100)),
            ("bench-empty", 0, None),
            ("bench-10m", ITEMS_10M, None),
        ] {
            runtime
                .register(support::numbers_flow(name, items, sum.clone(), fail_one_in))
                .await
                .expect("register");
        }
        runtime
    });

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);
    group.bench_function("raw_tokio_chain", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw_chain().await) });
    });
    group.bench_function("raw_tokio_batched_chain", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(support::raw_batched_chain(ITEMS).await) });
    });
    let run_flow = |flow: &'static str| {
        let runtime = &runtime;
        move || async move {
            let run = runtime.start(flow).await.expect("start");
            let outcome = run.wait().await.expect("outcome");
            assert_eq!(outcome.status, RunStatus::Finished);
            black_box(outcome)
        }
    };
    for (bench, flow) in [
        ("troupe_pipeline", "bench"),
        ("troupe_pipeline_1pct_fail_once", "bench-1pct"),
    ] {
        group.bench_function(bench, |b| b.to_async(&rt).iter(run_flow(flow)));
    }
    group.finish();

    // The fixed cost of a run: no items (throughput is not per item here).
    let mut group = c.benchmark_group("pipeline_fixed");
    group.sample_size(10);
    group.bench_function("troupe_pipeline_empty", |b| {
        b.to_async(&rt).iter(run_flow("bench-empty"))
    });
    group.finish();

    // Ten times the items: the fixed cost of a run weighs a tenth as much.
    let mut group = c.benchmark_group("pipeline_10m");
    group.throughput(Throughput::Elements(ITEMS_10M));
    group.sample_size(10);
    group.bench_function("raw_tokio_batched_chain_10m", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(support::raw_batched_chain(ITEMS_10M).await) });
    });
    group.bench_function("troupe_pipeline_10m", |b| {
        b.to_async(&rt).iter(run_flow("bench-10m"))
    });
    group.finish();

    // Watched or not: a metrics recorder and a progress bar's reads.
    let recorder = support::recorder::Switch::global();
    let mut group = c.benchmark_group("pipeline_observed");
    group.throughput(Throughput::Elements(ITEMS_10M));
    group.sample_size(10);
    group.bench_function("troupe_pipeline_10m_unobserved", |b| {
        recorder.set(false);
        b.to_async(&rt).iter(run_flow("bench-10m"))
    });
    group.bench_function("troupe_pipeline_10m_observed", |b| {
        recorder.set(true);
        b.to_async(&rt).iter(|| async {
            let run = runtime.start("bench-10m").await.expect("start");
            let mut watch = run.watch_progress();
            let bar = tokio::spawn(async move {
                let mut reads = 0_u64;
                while let Some(progress) = watch.next(Duration::from_millis(100)).await {
                    black_box(progress);
                    reads += 1;
                }
                reads
            });
            let outcome = run.wait().await.expect("outcome");
            assert_eq!(outcome.status, RunStatus::Finished);
            black_box(bar.await.expect("progress reads"));
            black_box(outcome)
        })
    });
    recorder.set(false);
    assert!(
        support::probing() || recorder.series() > 0,
        "the recorder recorded"
    );
    group.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
