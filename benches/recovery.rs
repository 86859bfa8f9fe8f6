//! Recovery time: a journal holds N unfinished runs of a registered 3-stage
//! flow (status `Running`, no stage completed); time `RuntimeBuilder::start`,
//! which runs the recovery scan and resumes every run (one batched read of
//! every run's recorded outputs, then a flow actor spawned per run), then the
//! time until every flow actor has taken its `Recover` event.
//!
//! With `TROUPE_RECOVERY_CHECKPOINTS=1` every run also has a checkpoint
//! (its stages unfinished, no state kept), read at resume in one batch.
//!
//! Run: `cargo bench --bench recovery` (N from `TROUPE_RECOVERY_RUNS`, default 10,000).

mod support;

use std::time::Instant;

use troupe::flow::RunState;
use troupe::records::{Checkpoint, Run, RunStatus, StageCheckpoint, WriteOp};
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
        let checkpoints = std::env::var_os("TROUPE_RECOVERY_CHECKPOINTS").is_some();
        let ops: Vec<WriteOp> = (0..runs)
            .flat_map(|_| {
                let mut run = Run::new("idle", "recover me", "bench");
                run.status = RunStatus::Running;
                let checkpoint = checkpoints.then(|| {
                    let stages = ["silent", "same", "discard"].map(|stage| {
                        let part = StageCheckpoint {
                            finished: false,
                            state: None,
                            items_in: 7,
                            items_out: 7,
                        };
                        (stage.to_owned(), part)
                    });
                    WriteOp::RecordCheckpoint(Box::new(Checkpoint::new(run.id, 1, stages.into())))
                });
                let insert = WriteOp::InsertRun {
                    run: Box::new(run),
                    audit: None,
                };
                std::iter::once(insert).chain(checkpoint)
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
        let with = if checkpoints {
            " (each with a checkpoint)"
        } else {
            ""
        };
        println!(
            "recovery{with}: {runs} unfinished runs resumed in {resumed_in:.2?} \
             (every flow Running after {recorded_in:.2?})"
        );
        drop(runtime);
    });
}
