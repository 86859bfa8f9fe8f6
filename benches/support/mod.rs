//! Flows and runtimes shared by the runtime benchmarks.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod recorder;

use troupe::flow::{Backoff, FlowDefinition, RetryPolicy};
use troupe::stage::{
    Attempted, Emitter, Produced, Sink, Source, sink_fn, source_iter, transform_fn,
};
use troupe::supervise::BoxError;

/// A tokio runtime with two workers (the machine's cores).
pub fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A source with nothing to say, ever (it waits without spinning).
pub struct Silent;

impl Source<u64> for Silent {
    async fn produce(&mut self, _: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        std::future::pending().await
    }
}

/// `idle`: silent source → pass-through transform → discarding sink.
pub fn idle_flow() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("idle")
        .source("silent", |_| Silent)
        .transform("same", |_| {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                out.push(x);
                Ok(())
            })
        })
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["silent", "same", "discard"])
        .build()
        .expect("flow")
}

/// Whether cargo only probes the bench binary (`--list`, `--test`).
pub fn probing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}

/// Sums its items into a local and adds the sum to `total` when its input
/// ends: the raw chains' sink, which returns its sum, does the same work
/// (an atomic add per item would cost a locked instruction per item that
/// the baseline does not pay).
pub struct SumSink {
    sum: u64,
    total: Arc<AtomicU64>,
}

impl Sink<u64> for SumSink {
    async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
        self.sum = self.sum.wrapping_add(x);
        Ok(())
    }

    fn consume_now(&mut self, x: u64) -> Attempted<u64> {
        self.sum = self.sum.wrapping_add(x);
        Attempted::Done(Ok(()))
    }

    async fn complete(&mut self) -> Result<Option<serde_json::Value>, BoxError> {
        self.total.fetch_add(self.sum, Ordering::Relaxed);
        Ok(None)
    }
}

/// The pipeline benches' flow `name`: `items` numbers → `x * 3` → a sum
/// into `sum`, with per-item retries (no backoff); with `fail_one_in`,
/// every `n`th item fails its first attempt in the transform.
pub fn numbers_flow(
    name: &str,
    items: u64,
    sum: Arc<AtomicU64>,
    fail_one_in: Option<u64>,
) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder(name)
        .source("numbers", move |_| source_iter(0..items))
        .transform("triple", move |_| {
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
        .sink("sum", move |_| SumSink {
            sum: 0,
            total: sum.clone(),
        })
        .pipeline(["numbers", "triple", "sum"])
        .default_retry(RetryPolicy::default().backoff(Backoff::NONE))
        .build()
        .expect("valid flow")
}

const BATCH: usize = 256;

/// The baseline of the pipeline benches: three tokio tasks moving `Vec`
/// batches of 256 items over channels of 8 batches (troupe's default pipe
/// shape), `items` numbers → `x * 3` (a new batch per batch) → their sum.
pub async fn raw_batched_chain(items: u64) -> u64 {
    let (tx1, mut rx1) = tokio::sync::mpsc::channel::<Vec<u64>>(8);
    let (tx2, mut rx2) = tokio::sync::mpsc::channel::<Vec<u64>>(8);
    let source = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..items {
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

/// The process's resident set (`VmRSS`), in KiB; 0 where `/proc` has none.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The environment variable `name` parsed, or `default` when unset or
/// unparsable (a bench's size knob).
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
