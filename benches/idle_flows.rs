//! Memory per idle flow: starts N runs of a 3-stage flow (source → transform
//! → sink) whose source waits forever, on an SQLite journal, and reads the
//! process RSS before and after. Each run is one flow actor, three stage
//! actors, two pipes and its durable run record.
//!
//! Run: `cargo bench --bench idle_flows` (N from `TROUPE_IDLE_FLOWS`, default 20,000).

mod support;

use std::time::Instant;

use troupe::runtime::Runtime;

fn main() {
    if support::probing() {
        return;
    }
    let flows: usize = std::env::var("TROUPE_IDLE_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.path().join("journal.sqlite"))
            .start()
            .await
            .expect("runtime");
        runtime
            .register(support::idle_flow())
            .await.expect("register");
        let before = support::rss_kib();
        let started = Instant::now();
        let mut runs = Vec::with_capacity(flows);
        for _ in 0..flows {
            runs.push(runtime.start("idle").await.expect("start"));
        }
        let elapsed = started.elapsed();
        // Let every flow actor record `Running` and start its stages.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let after = support::rss_kib();
        let per_flow = (after.saturating_sub(before)) as f64 * 1024.0 / flows as f64;
        println!(
            "idle_flows: {flows} flows started in {elapsed:.2?}; RSS {before} KiB -> {after} KiB; {:.1} KB per flow",
            per_flow / 1000.0
        );
        drop(runs);
        drop(runtime);
    });
}
