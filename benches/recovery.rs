//! Recovery time: a journal holds N unfinished runs of a registered 3-stage
//! flow (status `Running`, no stage completed); time `RuntimeBuilder::start`,
//! which runs the recovery scan and resumes every run (one batched read of
//! every run's recorded outputs, then a flow actor spawned per run), then the
//! time until every flow actor has taken its `Recover` event.
//!
//! Run: `cargo bench --bench recovery` (N from `TROUPE_RECOVERY_RUNS`, default 10,000).

mod support;

use std::time::Instant;

use troupe::flow::RunState;
use troupe::records::{Run, RunStatus, WriteOp};
use troupe::runtime::Runtime;
use troupe::store::{SqliteStore, Store};

fn main() {
    if support::probing() {
        return;
    }
    let runs: usize = std::env::var("TROUPE_RECOVERY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = support::two_workers();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    rt.block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let ops: Vec<WriteOp> = (0..runs)
            .map(|_| {
                let mut run = Run::new("idle", "recover me", "bench");
                run.status = RunStatus::Running;
                WriteOp::InsertRun {
                    run: Box::new(run),
                    audit: None,
                }
            })
            .collect();
        for chunk in ops.chunks(1_000) {
            for result in store.apply_batch(chunk.to_vec()).await.expect("insert") {
                result.expect("insert run");
            }
        }
        drop(store);

        let started = Instant::now();
        let runtime = Runtime::builder()
            .sqlite(&path)
            .register(support::idle_flow())
            .expect("register")
            .start()
            .await
            .expect("start");
        let resumed_in = started.elapsed();
        assert_eq!(runtime.resumed().len(), runs);
        for run in runtime.resumed() {
            let mut state = run.watch();
            state
                .wait_for(|s| *s == RunState::Running)
                .await
                .expect("running");
        }
        let recorded_in = started.elapsed();
        println!(
            "recovery: {runs} unfinished runs resumed in {resumed_in:.2?} \
             (every flow Running after {recorded_in:.2?})"
        );
        drop(runtime);
    });
}
