//! What checkpoints cost a pipeline: 200,000,000 `u64` items through
//! source → transform → sink on a runtime with an SQLite journal (fsync
//! on), in one run, where the source keeps a position and the sink a state
//! (both checkpointable), compared in the same process:
//! (a) `checkpoints_off`: `Checkpoints::off()`;
//! (b) `checkpoints_every_100ms`: a checkpoint every 100 ms (barriers
//!     through every pipe, a snapshot per stage, one journal write each).
//! The same flow and the same logic; only the checkpoint setting differs.
//!
//! Run: `cargo bench --bench pipeline_checkpoints`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use troupe::checkpoint::Checkpoints;
use troupe::flow::FlowDefinition;
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{Attempted, Emitter, Produced, Sink, Source, transform_fn};
use troupe::store::Store;
use troupe::supervise::BoxError;

mod support;

const ITEMS: u64 = 200_000_000;

/// `0..end`, a batch per call, resumable from `next`.
struct Numbers {
    next: u64,
    end: u64,
}

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        let stop = (self.next + out.room() as u64).min(self.end);
        out.extend(self.next..stop);
        self.next = stop;
        Ok(if stop == self.end {
            Produced::Done
        } else {
            Produced::More
        })
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!(self.next)))
    }

    fn restore(&mut self, position: Value) -> Result<(), BoxError> {
        self.next = serde_json::from_value(position)?;
        Ok(())
    }
}

/// Sums what it sees; the sum is its state.
struct Sum(u64);

impl Sink<u64> for Sum {
    async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
        self.0 = self.0.wrapping_add(x);
        Ok(())
    }

    fn consume_now(&mut self, x: u64) -> Attempted<u64> {
        self.0 = self.0.wrapping_add(x);
        Attempted::Done(Ok(()))
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!(self.0)))
    }

    fn restore(&mut self, state: Value) -> Result<(), BoxError> {
        self.0 = serde_json::from_value(state)?;
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!(self.0)))
    }
}

fn flow(name: &str, checkpoints: Checkpoints) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder(name)
        .source("numbers", |_| Numbers {
            next: 0,
            end: ITEMS,
        })
        .transform("triple", |_| {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                out.push(x.wrapping_mul(3));
                Ok(())
            })
        })
        .sink("sum", |_| Sum(0))
        .pipeline(["numbers", "triple", "sum"])
        .checkpoints(checkpoints)
        .build()
        .expect("valid flow")
}

fn pipeline_checkpoints(c: &mut Criterion) {
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.path().join("journal.sqlite"))
            .start()
            .await
            .expect("runtime");
        let every = Checkpoints::every(Duration::from_millis(100));
        for (name, checkpoints) in [("off", Checkpoints::off()), ("every-100ms", every)] {
            runtime
                .register(flow(name, checkpoints))
                .await
                .expect("register");
        }
        runtime
    });
    let run_flow = |name: &'static str| {
        let runtime = &runtime;
        move || async move {
            let run = runtime.start(name).await.expect("start");
            let outcome = run.wait().await.expect("outcome");
            assert_eq!(outcome.status, RunStatus::Finished);
            let taken = runtime
                .journal()
                .last_checkpoint(run.run_id())
                .await
                .expect("read");
            black_box((outcome, taken))
        }
    };
    let mut group = c.benchmark_group("pipeline_checkpoints");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);
    group.bench_function("checkpoints_off", |b| b.to_async(&rt).iter(run_flow("off")));
    group.bench_function("checkpoints_every_100ms", |b| {
        b.to_async(&rt).iter(run_flow("every-100ms"))
    });
    group.finish();

    // How many checkpoints a run takes, so the figure says what it paid for.
    rt.block_on(async {
        let run = runtime.start("every-100ms").await.expect("start");
        run.wait().await.expect("outcome");
        let taken = runtime
            .journal()
            .last_checkpoint(run.run_id())
            .await
            .expect("read")
            .map_or(0, |c| c.id);
        println!("pipeline_checkpoints: one run of {ITEMS} items took {taken} checkpoints");
    });
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, pipeline_checkpoints);
criterion_main!(benches);
