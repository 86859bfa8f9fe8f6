//! Flows and runtimes shared by the runtime benchmarks.
#![allow(dead_code)]

use troupe::flow::FlowDefinition;
use troupe::stage::{Emitter, Produced, Source, sink_fn, transform_fn};
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
        .source("silent", || Silent)
        .transform("same", || {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                out.push(x);
                Ok(())
            })
        })
        .sink("discard", || sink_fn(|_: u64| Ok(())))
        .pipeline(["silent", "same", "discard"])
        .build()
        .expect("flow")
}

/// Whether cargo only probes the bench binary (`--list`, `--test`).
pub fn probing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}
