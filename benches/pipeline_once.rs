//! One run of the pipeline bench's flow, for profilers: no criterion, no
//! warm-up, so that a run with N items against one with 0 gives the
//! instructions per item.
//!
//! Run: `cargo bench --bench pipeline_once -- [raw] [items]` (default
//! 1,000,000 items; `raw` runs the batched raw chain instead), or its
//! binary under `valgrind --tool=callgrind` (see BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use troupe::records::RunStatus;
use troupe::runtime::Runtime;

mod support;

fn main() {
    if support::probing() {
        return;
    }
    let items = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(1_000_000);
    let rt = support::two_workers();
    if std::env::args().any(|a| a == "raw") {
        let started = std::time::Instant::now();
        let sum = rt.block_on(support::raw_batched_chain(items));
        println!("raw: {items} items in {:?} (sum {sum})", started.elapsed());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sum = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.path().join("journal.sqlite"))
            .start()
            .await
            .expect("runtime");
        runtime
            .register(support::numbers_flow("once", items, sum.clone(), None))
            .await
            .expect("register");
        let started = std::time::Instant::now();
        let run = runtime.start("once").await.expect("start");
        let outcome = run.wait().await.expect("outcome");
        let took = started.elapsed();
        assert_eq!(outcome.status, RunStatus::Finished);
        let expected = (0..items).fold(0_u64, |s, x| s.wrapping_add(x.wrapping_mul(3)));
        assert_eq!(sum.load(Ordering::Relaxed), expected, "every item summed");
        println!("{items} items in {took:?}");
        runtime.shutdown().await;
    });
}
