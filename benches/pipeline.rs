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
//!     a backoff is a wait, not work).
//!
//! Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;
use troupe::flow::{Backoff, FlowDefinition, RetryPolicy};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, sink_fn, source_iter, transform_fn};

mod support;

const ITEMS: u64 = 1_000_000;

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

const BATCH: usize = 256;

async fn raw_batched_chain() -> u64 {
    let (tx1, mut rx1) = mpsc::channel::<Vec<u64>>(8);
    let (tx2, mut rx2) = mpsc::channel::<Vec<u64>>(8);
    let source = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..ITEMS {
            batch.push(i);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx1.send(full).await.is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx1.send(batch).await;
        }
    });
    let transform = tokio::spawn(async move {
        while let Some(batch) = rx1.recv().await {
            // A new batch per batch, as a transform emits into its outbox.
            let out: Vec<u64> = batch.into_iter().map(|x| x.wrapping_mul(3)).collect();
            if tx2.send(out).await.is_err() {
                break;
            }
        }
    });
    let sink = tokio::spawn(async move {
        let mut sum = 0_u64;
        while let Some(batch) = rx2.recv().await {
            for x in batch {
                sum = sum.wrapping_add(x);
            }
        }
        sum
    });
    source.await.expect("source");
    transform.await.expect("transform");
    sink.await.expect("sink")
}

fn definition(name: &str, sum: Arc<AtomicU64>, fail_one_in: Option<u64>) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder(name)
        .source("numbers", || source_iter(0..ITEMS))
        .transform("triple", move || {
            // Fails the first attempt at every `n`th item: a retry takes it
            // again at once (this start's own record of what failed).
            let mut failed_last = u64::MAX;
            transform_fn(move |x: u64, out: &mut Emitter<u64>| {
                if let Some(n) = fail_one_in
                    && x.is_multiple_of(n)
                    && failed_last != x
                {
                    failed_last = x;
                    return Err("injected: fails once".into());
                }
                out.push(x.wrapping_mul(3));
                Ok(())
            })
        })
        .sink("sum", move || {
            let sum = sum.clone();
            sink_fn(move |x: u64| {
                sum.fetch_add(x, Ordering::Relaxed);
                Ok(())
            })
        })
        .pipeline(["numbers", "triple", "sum"])
        .default_retry(RetryPolicy::default().backoff(Backoff::NONE))
        .build()
        .expect("valid flow")
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
        for (name, fail_one_in) in [("bench", None), ("bench-1pct", Some(100))] {
            runtime
                .register(definition(name, sum.clone(), fail_one_in))
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
            .iter(|| async { black_box(raw_batched_chain().await) });
    });
    for (bench, flow) in [
        ("troupe_pipeline", "bench"),
        ("troupe_pipeline_1pct_fail_once", "bench-1pct"),
    ] {
        group.bench_function(bench, |b| {
            b.to_async(&rt).iter(|| async {
                let run = runtime.start(flow).await.expect("start");
                let outcome = run.wait().await.expect("outcome");
                assert_eq!(outcome.status, RunStatus::Finished);
                black_box(outcome)
            });
        });
    }
    group.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
