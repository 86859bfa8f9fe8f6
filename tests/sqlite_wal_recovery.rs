//! Recovery from a preallocated, restarted WAL: the database and `-wal`
//! files are copied while the store is open (what a killed process leaves
//! on disk: no checkpoint at close, no `-shm`), at moments between WAL
//! restarts, and each copy must open with every acknowledged event and no
//! other, although its WAL holds frames of older generations and a zero tail
//! after its valid frames.

use std::path::Path;

use serde_json::json;
use troupe::store::{
    Cursor, EventKind, Flow, FlowStore, IntegrityCheck, NewEvent, SqliteConfig, SqliteStore,
};

fn wal(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// The WAL header's checkpoint sequence number: how often it has restarted.
fn restarts(db: &Path) -> u32 {
    let bytes = std::fs::read(wal(db)).expect("read wal");
    u32::from_be_bytes(bytes[12..16].try_into().expect("header"))
}

fn copy_files(db: &Path, to: &Path) {
    std::fs::copy(wal(db), wal(to)).expect("copy wal");
    std::fs::copy(db, to).expect("copy db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_copy_of_a_restarted_preallocated_wal_recovers_every_acked_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let config = SqliteConfig {
        checkpoint_pages: 8,
        wal_restart_pages: 48,
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open_with(&path, config.clone())
        .await
        .expect("open");
    let preallocated = std::fs::metadata(wal(&path)).expect("wal").len();
    let runs: Vec<Flow> = (0..3).map(|_| Flow::new("wal", "g", "o")).collect();
    for run in &runs {
        store.insert_run(run.clone(), None).await.expect("run");
    }
    let padding = "p".repeat(2500);
    let mut copies = Vec::new();
    for i in 0..400u64 {
        let run = &runs[i as usize % runs.len()];
        let payload = json!({ "i": i, "pad": padding });
        store
            .append(NewEvent::new(run.id, EventKind::custom("tick", payload)))
            .await
            .expect("append");
        if i == 4 || i % 57 == 56 {
            let copy = dir.path().join(format!("copy-{i}.sqlite"));
            copy_files(&path, &copy);
            copies.push((copy, i + 1));
        }
    }
    assert!(restarts(&path) >= 2, "the WAL never restarted");
    // Restarts overwrite the file from its start; nothing shrinks it.
    assert!(std::fs::metadata(wal(&path)).expect("wal").len() >= preallocated);
    drop(store);
    let check = SqliteConfig {
        integrity_check: IntegrityCheck::Full,
        ..config
    };
    for (copy, acked) in copies {
        let reopened = SqliteStore::open_with(&copy, check.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
        let events = reopened
            .poll(Cursor(0), usize::MAX)
            .await
            .expect("read log");
        let seen: Vec<u64> = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Custom { payload, .. } => payload["i"].as_u64().expect("i"),
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            (0..acked).collect::<Vec<_>>(),
            "{}: events differ",
            copy.display()
        );
    }
}
