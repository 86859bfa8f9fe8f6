//! The SQLite store's WAL file: allocated at open, restarted once per
//! `wal_restart_pages` (not after every background checkpoint pass), and
//! recoverable after a crash although it holds frames of older generations
//! and a zero tail after its valid frames.
//!
//! A crash is simulated by copying the database and `-wal` files while the
//! store is open: what a killed process leaves on disk (no checkpoint at
//! close, no `-shm`). `tests/journal_crash.rs` kills real processes.

#![cfg(unix)] // reads the WAL file's allocated blocks (`MetadataExt::blocks`)

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use troupe::records::{Cursor, EventKind, NewEvent, Run};
use troupe::store::{IntegrityCheck, SqliteConfig, SqliteStore, Store};

fn wal(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// How many times the WAL has restarted since its file was created: the
/// checkpoint sequence number in its header (big-endian, bytes 12..16),
/// which SQLite increments at each restart.
fn restarts(db: &Path) -> u32 {
    let bytes = std::fs::read(wal(db)).expect("read wal");
    u32::from_be_bytes(bytes[12..16].try_into().expect("header"))
}

/// Size of a WAL of `frames` 4 KiB pages: 32-byte header, 24 bytes per frame.
fn wal_bytes(frames: u64) -> u64 {
    32 + frames * (24 + 4096)
}

fn small_wal(checkpoint_pages: u32, wal_restart_pages: u32) -> SqliteConfig {
    SqliteConfig {
        checkpoint_pages,
        wal_restart_pages,
        ..SqliteConfig::default()
    }
}

/// Appends `commits` one-event transactions of at least one 4 KiB page each
/// over three runs, calling `after(i)` once event `i` is acknowledged.
async fn append(store: &SqliteStore, commits: u64, mut after: impl FnMut(u64)) {
    let runs: Vec<Run> = (0..3).map(|_| Run::new("wal", "g", "o")).collect();
    for run in &runs {
        store.insert_run(run.clone(), None).await.expect("run");
    }
    let padding = "p".repeat(3000);
    for i in 0..commits {
        let run = &runs[i as usize % runs.len()];
        let payload = json!({ "i": i, "pad": padding });
        store
            .append(NewEvent::new(run.id, EventKind::custom("tick", payload)))
            .await
            .expect("append");
        after(i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_allocates_the_wal_file_to_restart_plus_pass_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open_with(&path, small_wal(100, 300))
        .await
        .expect("open");
    let meta = std::fs::metadata(wal(&path)).expect("wal");
    assert_eq!(meta.len(), wal_bytes(300 + 100));
    // Allocated, not a sparse tail: `blocks` counts 512-byte units on disk.
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "{} blocks",
        meta.blocks()
    );
    drop(store);
    // A restart size below the pass size restarts after every pass.
    let path = dir.path().join("small.sqlite");
    let _store = SqliteStore::open_with(&path, small_wal(100, 10))
        .await
        .expect("open");
    assert_eq!(
        std::fs::metadata(wal(&path)).expect("wal").len(),
        wal_bytes(200)
    );
}

/// The writer catches up (and so the WAL restarts) once per
/// `wal_restart_pages`, not after every background pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_restarts_once_per_restart_size_not_per_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut counts = Vec::new();
    for restart_pages in [8, 256] {
        let path = dir.path().join(format!("restart-{restart_pages}.sqlite"));
        let store = SqliteStore::open_with(&path, small_wal(8, restart_pages))
            .await
            .expect("open");
        append(&store, 300, |_| {}).await;
        counts.push(restarts(&path));
    }
    let (every_pass, every_256) = (counts[0], counts[1]);
    // 300 commits of 1-4 pages: at most ~1200 frames, so about 5 catch-up
    // restarts at 256 frames, and at least 1. SQLite also restarts a WAL on
    // its own when a pass happened to copy every frame before the next
    // write, which a loaded machine makes likelier: the bound leaves room
    // for that, and the restarts still follow the restart size, not the
    // passes.
    assert!((1..=12).contains(&every_256), "{counts:?}");
    assert!(every_pass >= 2 * every_256, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_copy_of_a_restarted_preallocated_wal_recovers_every_acked_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let config = small_wal(8, 48);
    let store = SqliteStore::open_with(&path, config.clone())
        .await
        .expect("open");
    let preallocated = std::fs::metadata(wal(&path)).expect("wal").len();
    // The first copy has valid frames then zeros; later ones, restarted
    // WALs with older frames after the valid ones.
    let mut copies = Vec::new();
    append(&store, 400, |i| {
        if i == 4 || i % 57 == 56 {
            let copy = dir.path().join(format!("copy-{i}.sqlite"));
            std::fs::copy(wal(&path), wal(&copy)).expect("copy wal");
            std::fs::copy(&path, &copy).expect("copy db");
            copies.push((copy, i + 1));
        }
    })
    .await;
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

/// A clean close leaves the database file whole: the WAL is checkpointed
/// into it and truncated (or deleted), so a copy of the database file alone
/// holds every acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_leaves_every_event_in_the_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open_with(&path, small_wal(8, 4000))
        .await
        .expect("open");
    append(&store, 40, |_| {}).await;
    assert!(std::fs::metadata(wal(&path)).expect("wal").len() > 0);
    store.close().await;
    let left = std::fs::metadata(wal(&path)).map(|m| m.len()).unwrap_or(0);
    assert_eq!(left, 0, "the WAL still holds frames after a clean close");
    drop(store);

    // The database file alone, without its WAL.
    let copy = dir.path().join("copy.sqlite");
    std::fs::copy(&path, &copy).expect("copy db");
    let events: i64 = rusqlite::Connection::open(&copy)
        .expect("open copy")
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(events, 40);
}
