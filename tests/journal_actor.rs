//! Behaviour of the journal actor: group commit, per-request results,
//! bounded queue, reads beside writes, commit failures, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;
use troupe::journal::{JournalConfig, JournalHandle};
use troupe::records::{EventKind, NewEvent, Run, StoreError, WriteOp, WriteOutcome};
use troupe::store::{MemoryStore, Store, WriterJob};
use uuid::Uuid;

/// A memory store whose commits wait for the test to open a gate, and which
/// records each commit's size (and can fail a whole commit).
struct GatedStore {
    inner: MemoryStore,
    gate: Semaphore,
    /// Commits started (waiting at the gate or past it).
    entered: AtomicUsize,
    batches: Mutex<Vec<usize>>,
    fail_next_commit: Mutex<bool>,
    /// Claims a writer thread but drops every job posted to it (a thread
    /// that has stopped).
    writer_thread_gone: bool,
}

impl Default for GatedStore {
    fn default() -> Self {
        GatedStore {
            inner: MemoryStore::new(),
            gate: Semaphore::new(0),
            entered: AtomicUsize::new(0),
            batches: Mutex::new(Vec::new()),
            fail_next_commit: Mutex::new(false),
            writer_thread_gone: false,
        }
    }
}

impl GatedStore {
    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

troupe::store_wrapper! {
    GatedStore, reads: inner;
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
        self.batches.lock().unwrap().push(ops.len());
        if std::mem::take(&mut *self.fail_next_commit.lock().unwrap()) {
            return Err(StoreError::Injected { op: "commit" });
        }
        self.inner.apply_batch(ops).await
    }
    fn run_on_writer(&self, job: WriterJob) -> Result<(), WriterJob> {
        if self.writer_thread_gone {
            drop(job);
            Ok(())
        } else {
            Err(job)
        }
    }
}

async fn setup(config: JournalConfig) -> (Arc<GatedStore>, JournalHandle, Run) {
    let store = Arc::new(GatedStore::default());
    let run = Run::new("c", "g", "o");
    store.inner.insert_run(run.clone(), None).await.unwrap();
    let journal = JournalHandle::spawn(store.clone(), config, None)
        .await
        .unwrap();
    (store, journal, run)
}

fn tick(run: Uuid) -> NewEvent {
    NewEvent::new(run, EventKind::custom("tick", Value::Null))
}

/// Lets spawned tasks and the actor run until `done` holds (no wall-clock waiting).
async fn settle(done: impl Fn() -> bool) {
    while !done() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn queued_requests_share_one_commit_with_their_own_results() {
    let (store, journal, run) = setup(JournalConfig::default()).await;
    let first = tokio::spawn({
        let j = journal.clone();
        async move { j.append(tick(run.id)).await }
    });
    settle(|| store.entered() == 1).await;
    let mut writers = Vec::new();
    for i in 0..50 {
        let j = journal.clone();
        let target = if i % 5 == 0 { Uuid::now_v7() } else { run.id };
        writers.push(tokio::spawn(async move { j.append(tick(target)).await }));
    }
    settle(|| journal.stats().queued_requests == 50).await;
    store.gate.add_permits(2);
    assert!(first.await.unwrap().is_ok());
    let mut seqs = Vec::new();
    for (i, w) in writers.into_iter().enumerate() {
        match w.await.unwrap() {
            Ok(a) => seqs.push(a.seq),
            Err(StoreError::RunNotFound(_)) => assert_eq!(i % 5, 0),
            Err(e) => panic!("writer {i}: {e}"),
        }
    }
    assert_eq!(
        store.batches(),
        vec![1, 50],
        "everything queued went into the next commit"
    );
    assert_eq!(seqs, (2..=41).collect::<Vec<_>>(), "acks in send order");
    let stats = journal.stats();
    assert_eq!((stats.commits, stats.ops, stats.max_batch_ops), (2, 51, 50));
}

/// One-op requests (`append`, `apply`) and batch requests (`apply_batch`)
/// share a commit; each gets exactly its own results, in order, and a failed
/// commit fails both kinds.
#[tokio::test(start_paused = true)]
async fn one_op_and_batch_requests_share_a_commit_with_their_own_results() {
    let (store, journal, run) = setup(JournalConfig::default()).await;
    let first = tokio::spawn({
        let j = journal.clone();
        async move { j.append(tick(run.id)).await }
    });
    settle(|| store.entered() == 1).await;
    let one = tokio::spawn({
        let j = journal.clone();
        async move { j.append(tick(run.id)).await }
    });
    settle(|| journal.stats().queued_requests == 1).await;
    let many = tokio::spawn({
        let j = journal.clone();
        async move {
            j.apply_batch(vec![
                WriteOp::Append(tick(run.id)),
                WriteOp::Append(tick(Uuid::now_v7())),
                WriteOp::Append(tick(run.id)),
            ])
            .await
        }
    });
    settle(|| journal.stats().queued_requests == 2).await;
    let last = tokio::spawn({
        let j = journal.clone();
        async move { j.append_batch(vec![tick(run.id), tick(run.id)]).await }
    });
    settle(|| journal.stats().queued_requests == 3).await;
    store.gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap().seq, 1);
    assert_eq!(one.await.unwrap().unwrap().seq, 2);
    let results = many.await.unwrap().unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[0], Ok(WriteOutcome::Appended(a)) if a.seq == 3),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Err(StoreError::RunNotFound(_))),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Ok(WriteOutcome::Appended(a)) if a.seq == 4),
        "{results:?}"
    );
    let seqs: Vec<u64> = last.await.unwrap().unwrap().iter().map(|a| a.seq).collect();
    assert_eq!(seqs, vec![5, 6]);
    assert_eq!(store.batches(), vec![1, 5]);

    // A failed commit: both kinds hear of it.
    let blocker = tokio::spawn({
        let j = journal.clone();
        async move { j.append(tick(run.id)).await }
    });
    settle(|| store.entered() == 3).await;
    let one = tokio::spawn({
        let j = journal.clone();
        async move { j.append(tick(run.id)).await }
    });
    let many = tokio::spawn({
        let j = journal.clone();
        async move { j.apply_batch(vec![WriteOp::Append(tick(run.id))]).await }
    });
    settle(|| journal.stats().queued_requests == 2).await;
    store.gate.add_permits(1);
    assert_eq!(blocker.await.unwrap().unwrap().seq, 7);
    settle(|| store.entered() == 4).await;
    *store.fail_next_commit.lock().unwrap() = true;
    store.gate.add_permits(1);
    let failed = |e: &StoreError| matches!(e, StoreError::BatchFailed { batch_len: 2, .. });
    assert!(failed(&one.await.unwrap().unwrap_err()));
    assert!(failed(&many.await.unwrap().unwrap_err()));
    assert_eq!(store.batches(), vec![1, 5, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn full_queue_makes_writers_wait() {
    let (store, journal, run) = setup(JournalConfig {
        queue_capacity: 4,
        max_batch_ops: 2,
    })
    .await;
    let mut writers = Vec::new();
    for _ in 0..12 {
        let j = journal.clone();
        writers.push(tokio::spawn(async move { j.append(tick(run.id)).await }));
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    // Four requests got a slot and were queued before the drain started: two
    // (the batch bound) are in the blocked commit, two wait in the queue, and
    // eight wait for a slot.
    assert_eq!(journal.stats().queued_requests, 2);
    store.gate.add_permits(100);
    for w in writers {
        w.await.unwrap().unwrap();
    }
    assert!(
        store.batches().iter().all(|&n| n <= 2),
        "{:?}",
        store.batches()
    );
    assert_eq!(store.inner.replay(run.id).await.unwrap().len(), 12);
}

#[tokio::test(start_paused = true)]
async fn reads_do_not_wait_for_writes() {
    let (store, journal, run) = setup(JournalConfig::default()).await;
    let blocked = tokio::spawn({
        let j = journal.clone();
        async move { j.append(tick(run.id)).await }
    });
    let read = tokio::time::timeout(Duration::from_secs(1), journal.get_run(run.id)).await;
    assert_eq!(
        read.expect("read answered while a commit is blocked")
            .unwrap(),
        Some(run.clone())
    );
    assert!(!blocked.is_finished());
    store.gate.add_permits(1);
    blocked.await.unwrap().unwrap();
}

#[tokio::test]
async fn failed_commit_fails_every_request_in_it() {
    let (store, journal, run) = setup(JournalConfig::default()).await;
    *store.fail_next_commit.lock().unwrap() = true;
    store.gate.add_permits(10);
    let err = journal.append(tick(run.id)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::BatchFailed { batch_len: 1, .. }),
        "{err}"
    );
    assert_eq!(journal.stats().failed_commits, 1);
    // The journal keeps serving after a failed commit.
    assert_eq!(journal.append(tick(run.id)).await.unwrap().seq, 1);
}

#[tokio::test]
async fn shutdown_commits_queued_writes_then_refuses() {
    let (store, journal, run) = setup(JournalConfig::default()).await;
    let mut writers = Vec::new();
    for i in 0..5 {
        let j = journal.clone();
        writers.push(tokio::spawn(async move { j.append(tick(run.id)).await }));
        if i == 0 {
            settle(|| store.entered() == 1).await;
        }
    }
    settle(|| journal.stats().queued_requests == 4).await;
    store.gate.add_permits(10);
    journal.shutdown().await;
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let err = journal.append(tick(run.id)).await.unwrap_err();
    assert!(matches!(err, StoreError::JournalClosed), "{err}");
    assert_eq!(store.inner.replay(run.id).await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_stopped_writer_thread_fails_writes_instead_of_stranding_them() {
    let store = Arc::new(GatedStore {
        writer_thread_gone: true,
        ..GatedStore::default()
    });
    let run = Run::new("c", "g", "o");
    store.inner.insert_run(run.clone(), None).await.unwrap();
    let journal = JournalHandle::spawn(store.clone(), JournalConfig::default(), None)
        .await
        .unwrap();
    // The batch in the dropped job loses its ack; later writes are refused.
    let err = journal.append(tick(run.id)).await.unwrap_err();
    assert!(matches!(err, StoreError::AckDropped), "{err}");
    let err = journal.append(tick(run.id)).await.unwrap_err();
    assert!(matches!(err, StoreError::JournalClosed), "{err}");
    assert_eq!(journal.stats().queued_requests, 0);
    journal.shutdown().await;
    assert!(store.batches().is_empty());
}

/// A write queued just before the journal actor is killed (its `Drain`
/// message dies with the mailbox) is answered with an error, and so is every
/// later write: none hangs.
#[tokio::test(start_paused = true)]
async fn writes_racing_a_killed_journal_actor_are_answered() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let store = Arc::new(MemoryStore::new());
    let run = Run::new("c", "g", "o");
    store.insert_run(run.clone(), None).await.unwrap();
    let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
        .await
        .unwrap();
    let tick = || NewEvent::new(run.id, EventKind::custom("tick", Value::Null));
    journal
        .append(tick())
        .await
        .expect("a write before the kill");
    journal.actor().kill();
    // Polled once before the actor's task runs: queued, `Drain` sent.
    let mut racing = Box::pin(journal.append(tick()));
    let first = racing
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(matches!(first, Poll::Pending));
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(journal.actor().get_status(), ractor::ActorStatus::Stopped);
    let later = tokio::time::timeout(Duration::from_secs(60), journal.append(tick())).await;
    let racing = tokio::time::timeout(Duration::from_secs(60), racing).await;
    assert!(
        matches!(racing, Ok(Err(_))) && matches!(later, Ok(Err(StoreError::JournalClosed))),
        "racing write: {racing:?}; a later write: {later:?}"
    );
}

/// A finished shutdown has answered every write it committed: the replies of
/// the last batch go out before the actor hears that the queue is drained.
/// (The race this guards against needs a second worker, hence many rounds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_shutdown_has_answered_every_write() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    // Writes still unanswered when `shutdown` was called, over all rounds:
    // the ones this test is about.
    let mut outstanding = 0;
    for round in 0..50 {
        let store = Arc::new(troupe::store::SqliteStore::open(":memory:").await.unwrap());
        let run = Run::new("c", "g", "o");
        store.insert_run(run.clone(), None).await.unwrap();
        let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
            .await
            .unwrap();
        let mut writes: Vec<_> = (0..32)
            .map(|_| Box::pin(journal.append(tick(run.id))))
            .collect();
        // Polled by hand outside tokio's cooperative budget, which would
        // make a ready reply look pending. The writer thread and the other
        // worker may commit and answer a write while later ones are being
        // queued: such a write is done (and must not be polled again).
        let mut answered = [false; 32];
        tokio::task::unconstrained(async {
            let mut cx = Context::from_waker(Waker::noop());
            for (i, write) in writes.iter_mut().enumerate() {
                match write.as_mut().poll(&mut cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(_)) => answered[i] = true,
                    other => panic!("round {round}, write {i}: {other:?} before shutdown"),
                }
            }
        })
        .await;
        outstanding += answered.iter().filter(|done| !**done).count();
        journal.shutdown().await;
        tokio::task::unconstrained(async {
            let mut cx = Context::from_waker(Waker::noop());
            for (i, write) in writes.iter_mut().enumerate() {
                if answered[i] {
                    continue;
                }
                match write.as_mut().poll(&mut cx) {
                    Poll::Ready(Ok(_)) => {}
                    other => panic!("round {round}, write {i}: {other:?} after shutdown"),
                }
            }
        })
        .await;
    }
    assert!(
        outstanding > 0,
        "every write was answered before shutdown: nothing checked"
    );
}
