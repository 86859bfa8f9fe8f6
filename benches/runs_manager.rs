//! What the control plane costs per change: `RunManager::update_state`
//! (read, check the rules, merge, CAS write with an audit event, in one
//! atomic op) against the same work done by hand on the store (read, merge,
//! `update_run` with the audit event), on a memory store and an in-memory
//! SQLite store.
//!
//! The two alternate in blocks on the same run, so that machine noise and the
//! growing event log hit both alike; each round gives one ratio, and the
//! table reports medians.
//!
//! Run: `cargo bench --bench runs_manager` (prints a Markdown table).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use troupe::records::EventKind;
use troupe::runs::{CreateManagedInput, RunManager, merge_state};
use troupe::store::{MemoryStore, SqliteStore, Store};
use uuid::Uuid;

const ROUNDS: usize = 31;
const BLOCK: u32 = 1000;

/// The baseline: one state change done by hand on the store.
async fn raw_change(store: &dyn Store, id: Uuid, i: u64) {
    let mut run = store.get_run(id).await.expect("read").expect("run");
    let patch = json!({ "n": i });
    merge_state(&mut run.state_json, patch.clone());
    let audit = EventKind::custom("state_updated", json!({ "patch": patch }));
    store
        .update_run(run.clone(), run.revision, audit)
        .await
        .expect("update");
}

fn median<T: PartialOrd + Copy>(mut xs: Vec<T>) -> T {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    xs[xs.len() / 2]
}

async fn measure(name: &str, store: Arc<dyn Store>) {
    let manager = RunManager::new(store.clone());
    let input = CreateManagedInput::new("bench", "goal", "owner");
    let id = manager.create_managed(input).await.expect("create").id;
    let (mut raw, mut managed, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0u64;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..BLOCK {
            i += 1;
            raw_change(store.as_ref(), id, i).await;
        }
        let r: Duration = start.elapsed() / BLOCK;
        let start = Instant::now();
        for _ in 0..BLOCK {
            i += 1;
            manager
                .update_state(id, json!({ "n": i }), None)
                .await
                .expect("update");
        }
        let m: Duration = start.elapsed() / BLOCK;
        raw.push(r);
        managed.push(m);
        ratios.push(m.as_secs_f64() / r.as_secs_f64());
    }
    println!(
        "| {name} | {:.2} µs | {:.2} µs | {:.2}× |",
        median(raw).as_secs_f64() * 1e6,
        median(managed).as_secs_f64() * 1e6,
        median(ratios)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| store | hand-written CAS change | RunManager::update_state | ratio |");
    println!("|---|---|---|---|");
    rt.block_on(async {
        measure("MemoryStore", Arc::new(MemoryStore::new())).await;
        let sqlite = SqliteStore::open(":memory:").await.expect("open");
        measure("SqliteStore(\":memory:\")", Arc::new(sqlite)).await;
    });
}
