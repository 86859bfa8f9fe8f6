//! A runtime whose journal is in PostgreSQL (`Runtime::builder().postgres`):
//! a flow runs to its end, and a second runtime over the same database
//! finds the run's record and outcome there.

#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use troupe::flow::FlowDefinition;
use troupe::records::{RunStatus, TerminalEvent};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, sink_fn, source_iter, transform_fn};
use troupe::store::Store;

fn flow(consumed: &Arc<AtomicU64>) -> FlowDefinition<u64> {
    let sink_count = consumed.clone();
    FlowDefinition::<u64>::builder("evens")
        .source("numbers", |_| source_iter(0..2_000_u64))
        .transform("keep-even", |_| {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                if x.is_multiple_of(2) {
                    out.push(x);
                }
                Ok(())
            })
        })
        .sink("count", move |_| {
            let count = sink_count.clone();
            sink_fn(move |_: u64| {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
        .pipeline(["numbers", "keep-even", "count"])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_runs_to_its_end_with_its_journal_in_postgres() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    schema.create().await;
    let consumed = Arc::new(AtomicU64::new(0));
    let runtime = Runtime::builder()
        .postgres(schema.url_with_search_path())
        .register(flow(&consumed))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("evens").await.unwrap();
    let outcome = run.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(consumed.load(Ordering::SeqCst), 1_000);
    let id = run.run_id();
    runtime.shutdown().await;

    // What the journal holds, read by a store of its own.
    let store = schema.store().await;
    let record = store.get_run(id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.controller_id.as_str()),
        (RunStatus::Finished, "evens")
    );
    let terminal = store.terminal_event(id).await.unwrap().unwrap();
    assert!(
        matches!(
            terminal.kind.as_terminal(),
            Some(TerminalEvent::RunCompleted { .. })
        ),
        "{terminal:?}"
    );
    assert!(store.list_runs_to_recover().await.unwrap().is_empty());

    // A second runtime over the same database: nothing to resume.
    let again = Runtime::builder()
        .postgres(schema.url_with_search_path())
        .start()
        .await
        .unwrap();
    assert!(again.recovery().unfinished.is_empty());
    assert_eq!(
        again.journal().get_run(id).await.unwrap().map(|r| r.status),
        Some(RunStatus::Finished)
    );
    again.shutdown().await;
}
