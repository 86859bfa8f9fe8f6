//! What the control plane costs per change: `FlowManager::update_state`
//! (read, check the rules, merge, CAS write with an audit event, in one
//! atomic op) against the same work done by hand on the store (read, merge,
//! `update_run` with the audit event), on a memory store and an in-memory
//! SQLite store, in the same run.
//!
//! Run: `cargo bench --bench runs_manager`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use troupe::runs::{CreateManagedInput, FlowManager, merge_state};
use troupe::store::{EventKind, FlowStore, MemoryStore, SqliteStore};
use uuid::Uuid;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The baseline: one state change done by hand on the store.
async fn raw_change(store: &dyn FlowStore, id: Uuid, i: u64) {
    let mut run = store.get_run(id).await.expect("read").expect("run");
    let patch = json!({ "n": i });
    merge_state(&mut run.state_json, patch.clone());
    let audit = EventKind::custom("state_updated", json!({ "patch": patch }));
    store
        .update_run(run.clone(), run.revision, audit)
        .await
        .expect("update");
}

fn bench_store(c: &mut Criterion, name: &str, store: Arc<dyn FlowStore>) {
    let rt = runtime();
    let manager = FlowManager::new(store.clone());
    let input = CreateManagedInput::new("bench", "goal", "owner");
    let id = rt
        .block_on(manager.create_managed(input))
        .expect("create")
        .id;
    let mut group = c.benchmark_group(format!("runs_change/{name}"));
    // Every change appends an audit event the store keeps: short runs keep the log small.
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut i = 0u64;
    group.bench_function("raw_store_cas", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            raw_change(store.as_ref(), id, i)
        })
    });
    group.bench_function("manager_update_state", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let manager = manager.clone();
            async move {
                manager
                    .update_state(id, json!({ "n": i }), None)
                    .await
                    .expect("update")
            }
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    bench_store(c, "memory", Arc::new(MemoryStore::new()));
    let sqlite = runtime()
        .block_on(SqliteStore::open(":memory:"))
        .expect("open");
    bench_store(c, "sqlite_in_memory", Arc::new(sqlite));
}

criterion_group!(benches, bench);
criterion_main!(benches);
