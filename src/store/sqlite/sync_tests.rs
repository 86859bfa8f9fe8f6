//! Acks wait for the WAL sync: a blocked sync holds every ack back, a
//! failed one fails its commits and poisons the store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::journal::{JournalConfig, JournalHandle};
use crate::store::{
    EventKind, Flow, FlowStore, NewEvent, SqliteConfig, SqliteStore, StoreError, WriteOp,
};

/// The sync hook: passes until armed, then blocks until opened (or fails).
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    fail: bool,
    calls: AtomicUsize,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn hook(self: &Arc<Self>) -> super::SyncHook {
        let gate = self.clone();
        Arc::new(move || {
            if !gate.armed.load(Ordering::SeqCst) {
                return Ok(());
            }
            gate.calls.fetch_add(1, Ordering::SeqCst);
            if gate.fail {
                return Err(std::io::Error::other("injected sync failure"));
            }
            let mut open = gate.open.lock().expect("gate lock");
            while !*open {
                open = gate.opened.wait(open).expect("gate lock");
            }
            Ok(())
        })
    }

    fn release(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.opened.notify_all();
    }
}

async fn open(gate: &Arc<Gate>) -> (tempfile::TempDir, Arc<SqliteStore>, Flow) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_with_sync_hook(
        dir.path().join("journal.sqlite"),
        SqliteConfig::default(),
        gate.hook(),
    )
    .await
    .expect("open");
    let run = Flow::new("c", "g", "o");
    store.insert_run(run.clone(), None).await.expect("run");
    gate.armed.store(true, Ordering::SeqCst);
    (dir, Arc::new(store), run)
}

fn tick(run: &Flow) -> Vec<WriteOp> {
    vec![WriteOp::Append(NewEvent::new(
        run.id,
        EventKind::custom("tick", serde_json::Value::Null),
    ))]
}

/// Returns once every job posted to the writer thread before it has run,
/// i.e. every commit asked for so far has finished.
async fn writer_barrier(store: &SqliteStore) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let posted = store.run_on_writer(Box::new(move |_| {
        let _ = tx.send(());
    }));
    assert!(posted.is_ok(), "sqlite has a writer thread");
    rx.await.expect("writer thread alive");
}

/// Waits (without wall time) until `n` events of `run` are readable: committed.
async fn committed(store: &SqliteStore, run: &Flow, n: usize) {
    while store.list_events(run.id, 100).await.expect("read").len() < n {
        tokio::task::yield_now().await;
    }
}

/// Whether `task` is still unanswered once everything runnable has run
/// (the paused clock jumps ahead only when nothing else can run).
async fn still_pending<T>(task: &mut tokio::task::JoinHandle<T>) -> bool {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .is_err()
}

#[tokio::test(start_paused = true)]
async fn a_blocked_sync_holds_back_every_ack_until_it_returns() {
    let gate = Arc::new(Gate::default());
    let (_dir, store, run) = open(&gate).await;
    let journal = JournalHandle::spawn(store.clone(), JournalConfig::default(), None)
        .await
        .expect("journal");

    let j = journal.clone();
    let ops = tick(&run);
    let mut via_journal = tokio::spawn(async move { j.apply_batch(ops).await });
    committed(&store, &run, 1).await;
    let s = store.clone();
    let ops = tick(&run);
    let mut direct = tokio::spawn(async move { s.apply_batch(ops).await });
    committed(&store, &run, 2).await;
    // Both commits have finished and been handed on; only the sync is missing.
    writer_barrier(&store).await;
    assert!(
        still_pending(&mut via_journal).await,
        "journal acked before the sync"
    );
    assert!(
        still_pending(&mut direct).await,
        "store returned before the sync"
    );
    assert!(gate.calls.load(Ordering::SeqCst) >= 1);

    gate.release();
    let acked = via_journal.await.expect("task").expect("journal write");
    assert!(acked[0].is_ok());
    let acked = direct.await.expect("task").expect("direct write");
    assert!(acked[0].is_ok());
    journal.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_fails_its_commits_and_every_later_write() {
    let gate = Arc::new(Gate {
        fail: true,
        ..Gate::default()
    });
    let (_dir, store, run) = open(&gate).await;
    let journal = JournalHandle::spawn(store.clone(), JournalConfig::default(), None)
        .await
        .expect("journal");

    let failed = journal.apply_batch(tick(&run)).await;
    assert!(
        matches!(&failed, Err(StoreError::BatchFailed { source, .. })
            if matches!(**source, StoreError::WalSyncFailed { .. })),
        "{failed:?}"
    );
    let later = journal.apply_batch(tick(&run)).await;
    assert!(
        matches!(&later, Err(StoreError::BatchFailed { source, .. })
            if matches!(**source, StoreError::WalSyncFailed { .. })),
        "{later:?}"
    );
    let direct = store.apply_batch(tick(&run)).await;
    assert!(
        matches!(direct, Err(StoreError::WalSyncFailed { .. })),
        "{direct:?}"
    );
    // Poisoned: no retried sync, and the later writes were not committed.
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.list_events(run.id, 100).await.expect("read").len(), 1);
    journal.shutdown().await;
}
