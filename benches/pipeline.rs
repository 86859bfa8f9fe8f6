//! Pipeline throughput: 1,000,000 `u64` items through source → transform →
//! sink, in one run:
//! (a) `raw_tokio_chain`: three tokio tasks over bounded mpsc channels
//!     (capacity 1024), one message per item — the baseline;
//! (b) `troupe_pipeline`: the same work as a troupe flow on a runtime with
//!     an SQLite journal (fsync on): three stage actors, batched pipes
//!     (default 256 items × 8 batches), each stage's completion and the run's
//!     lifecycle and outcome recorded durably.
//!
//! Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;
use troupe::flow::FlowDefinition;
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

fn definition(sum: Arc<AtomicU64>) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("bench")
        .source("numbers", || source_iter(0..ITEMS))
        .transform("triple", || {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
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
        runtime
            .register(definition(sum.clone()))
            .await
            .expect("register");
        runtime
    });

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);
    group.bench_function("raw_tokio_chain", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw_chain().await) });
    });
    group.bench_function("troupe_pipeline", |b| {
        b.to_async(&rt).iter(|| async {
            let run = runtime.start("bench").await.expect("start");
            let outcome = run.wait().await.expect("outcome");
            assert_eq!(outcome.status, RunStatus::Finished);
            black_box(outcome)
        });
    });
    group.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
