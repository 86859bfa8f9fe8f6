//! Group commit: the queue between the journal actor and the store, and the
//! committer that drains it.
//!
//! Journal handles push each write request straight into a [`CommitQueue`]
//! (no actor message per request); the actor, which owns the committer, is
//! asked to start a drain only when the queue was idle. The committer
//! takes everything queued (up to the batch bound, never splitting a
//! request) whenever it is free, commits it as one batch and replies to each
//! request with its own results. When the store has a writer thread of its
//! own ([`Store::run_on_writer`], e.g. SQLite), the committer runs there:
//! it commits a batch, hands the batch's replies to one tokio task and takes
//! the next batch, so under load it never sleeps or waits for a tokio task
//! between commits. Otherwise it runs as a tokio task over [`Store::apply_batch`].
//!
//! At most one drain runs at a time, so batches commit in queue order. The
//! queue counts as idle for a shutdown only when no drain runs and every
//! committed batch's replies are out, so a finished shutdown has answered
//! every write it committed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ractor::ActorRef;
use tokio::sync::OwnedSemaphorePermit;

use super::actor::JournalMsg;
use super::request::{Answer, Ops, Request};
use super::stats::Counters;
use crate::records::{StoreError, WriteOp};
use crate::store::Fence;
use crate::store::{BatchResult, Store, WriterJob};

#[derive(Default)]
struct State {
    items: VecDeque<Request>,
    /// A drain is scheduled or running.
    draining: bool,
    /// Reply tasks of committed batches not yet done: the queue is idle
    /// (for a shutdown) only once they are, so a finished shutdown has
    /// answered every write it committed.
    replying: usize,
    /// Shutdown asked: the actor wants [`JournalMsg::Drained`] once idle.
    closed: bool,
    /// The drain died (its thread stopped): nothing will commit any more.
    broken: bool,
}

impl State {
    /// A shutdown is waiting and nothing is left to answer: no drain runs
    /// and every committed batch's replies are out.
    fn drained(&self) -> bool {
        self.closed && !self.draining && self.replying == 0
    }
}

/// Requests waiting for a commit.
pub(crate) struct CommitQueue {
    state: Mutex<State>,
    max_batch_ops: usize,
}

/// What [`CommitQueue::push`] asks of the caller.
pub(crate) enum Pushed {
    /// A drain is already under way and will take the request.
    Queued,
    /// The queue was idle: start a drain.
    StartDrain,
}

impl CommitQueue {
    pub(crate) fn new(max_batch_ops: usize) -> CommitQueue {
        CommitQueue {
            state: Mutex::new(State::default()),
            max_batch_ops: max_batch_ops.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `req`, or answers it with [`StoreError::JournalClosed`] when
    /// the journal is shutting down or its committer died. Returns whether
    /// the queue was idle, so that the caller must have a drain started.
    pub(crate) fn submit(&self, req: Request, counters: &Counters) -> Pushed {
        counters.queued(1);
        match self.push(req) {
            Ok(pushed) => pushed,
            Err(req) => {
                counters.queued(-1);
                req.refuse(StoreError::JournalClosed);
                Pushed::Queued
            }
        }
    }

    /// Queues `req`; hands it back (boxed: a rare path, and a request is
    /// large) when nothing will commit it any more.
    fn push(&self, req: Request) -> Result<Pushed, Box<Request>> {
        let mut state = self.lock();
        if state.broken || state.closed {
            return Err(Box::new(req));
        }
        state.items.push_back(req);
        if state.draining {
            Ok(Pushed::Queued)
        } else {
            state.draining = true;
            Ok(Pushed::StartDrain)
        }
    }

    /// Marks the queue closing; `true` when it is already idle (nothing
    /// queued or committing), else the committer reports `Drained` later.
    pub(crate) fn close(&self) -> bool {
        let mut state = self.lock();
        state.closed = true;
        state.drained()
    }

    /// The next batch, or `None` after marking the drain finished (the
    /// second value says whether the actor waits for that).
    fn take(&self) -> Result<Vec<Request>, bool> {
        let mut state = self.lock();
        let mut ops = 0;
        let mut batch = Vec::new();
        while let Some(next) = state.items.front() {
            if !batch.is_empty() && ops + next.work.len() > self.max_batch_ops {
                break;
            }
            ops += next.work.len();
            batch.extend(state.items.pop_front());
        }
        if batch.is_empty() {
            state.draining = false;
            return Err(state.drained());
        }
        Ok(batch)
    }

    /// A committed batch's replies are about to go out on a task of their own.
    fn replies_started(&self) {
        self.lock().replying += 1;
    }

    /// A batch's replies are out (or dropped): whether that left a closing
    /// queue idle, so the actor must be told `Drained`.
    fn replies_done(&self) -> bool {
        let mut state = self.lock();
        state.replying -= 1;
        state.drained()
    }

    /// Nothing will commit any more (the drain died, or the actor that
    /// starts drains is gone): refuses further requests and answers the
    /// queued ones with [`StoreError::JournalClosed`]. Returns whether a
    /// shutdown is waiting for the queue to empty.
    pub(crate) fn break_down(&self, counters: &Counters) -> bool {
        let (stranded, closing) = {
            let mut state = self.lock();
            state.broken = true;
            state.draining = false;
            (state.items.drain(..).collect::<Vec<_>>(), state.drained())
        };
        counters.queued(-(stranded.len() as i64));
        if !stranded.is_empty() {
            tracing::error!(
                requests = stranded.len(),
                "journal committer stopped; queued writes refused"
            );
        }
        for req in stranded {
            req.refuse(StoreError::JournalClosed);
        }
        closing
    }
}

/// Drains a [`CommitQueue`] into the store.
pub(crate) struct Committer {
    pub(crate) queue: Arc<CommitQueue>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) actor: ActorRef<JournalMsg>,
    /// Where the task-based drain runs when started off the runtime.
    pub(crate) runtime: tokio::runtime::Handle,
    /// See [`Committer::has_writer_thread`].
    pub(crate) on_writer: bool,
}

impl Committer {
    /// Whether `store` runs jobs on a writer thread of its own.
    pub(crate) fn has_writer_thread(store: &dyn Store) -> bool {
        store.run_on_writer(Box::new(|_| {})).is_ok()
    }

    /// Takes the next batch now and commits it: as a job on the store's
    /// writer thread, which then takes the following one, or on a task that
    /// keeps taking batches. Ends the drain when nothing is queued.
    pub(crate) fn start(self: &Arc<Self>) {
        let guard = DrainGuard {
            committer: self.clone(),
            armed: true,
        };
        let Some(batch) = self.next_batch() else {
            guard.disarm();
            return;
        };
        if self.on_writer {
            let job: WriterJob = Box::new(move |apply| guard.commit_on_writer(batch, apply));
            // A job refused against the store's word is dropped: its guard
            // then refuses the queued writes instead of stranding them.
            let _ = self.store.run_on_writer(job);
        } else {
            self.runtime.spawn(guard.drain_async(batch));
        }
    }

    /// Takes the next batch, or reports the drain finished.
    fn next_batch(&self) -> Option<Batch> {
        match self.queue.take() {
            Ok(requests) => Some(Batch::new(requests, &self.counters)),
            Err(closing) => {
                if closing {
                    let _ = self.actor.cast(JournalMsg::Drained);
                }
                None
            }
        }
    }
}

/// Fails what is queued if a drain ends without finishing (its writer thread
/// stopped, the job was dropped unrun or the task was cancelled).
struct DrainGuard {
    committer: Arc<Committer>,
    armed: bool,
}

impl DrainGuard {
    fn disarm(mut self) -> Arc<Committer> {
        self.armed = false;
        self.committer.clone()
    }

    /// On the writer thread: commits one batch, hands its replies to a tokio
    /// task, then posts the next batch behind any other jobs of that thread
    /// (so reads or direct writes sharing it are not starved).
    ///
    /// The replies go out from a task because each reply wakes its writer:
    /// woken from this thread, every wake-up is a remote schedule into tokio
    /// (a shared queue, often a worker unpark); woken from a worker, they
    /// are local. One spawn per commit keeps the batch's wake-ups (one per
    /// request) and the reply work off the writer thread, the journal's
    /// critical path.
    fn commit_on_writer(self, batch: Batch, apply: &mut dyn FnMut(&[WriteOp]) -> BatchResult) {
        // Only a single owner's store has a writer thread: nothing to fence.
        let (ops, _fences, pending) = batch.split();
        let result = pending.span.in_scope(|| apply(&ops));
        pending.record(&result);
        let committer = self.disarm();
        // A reply dropped unsent (the runtime shutting down) reaches its
        // caller as `AckDropped`, never as a false success.
        committer.queue.replies_started();
        let task = ReplyTask {
            pending,
            result,
            spent: ops,
            replying: Replying(committer.clone()),
        };
        committer.runtime.spawn(async move {
            let ReplyTask {
                pending,
                result,
                spent,
                replying,
            } = task;
            pending.reply(result);
            drop(spent);
            drop(replying);
        });
        committer.start();
    }

    async fn drain_async(self, first: Batch) {
        let mut next = Some(first);
        while let Some(batch) = next {
            let (ops, fences, pending) = batch.split();
            let result = if fences.is_empty() {
                self.committer.store.apply_batch(ops).await
            } else {
                self.committer.store.apply_fenced_batch(ops, fences).await
            };
            pending.answer(result);
            next = self.committer.next_batch();
        }
        self.disarm();
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let committer = &self.committer;
        if committer.queue.break_down(&committer.counters) {
            let _ = committer.actor.cast(JournalMsg::Drained);
        }
    }
}

/// What a batch's reply task owns. Fields drop in order, so a task dropped
/// unrun (the runtime shutting down) drops its replies (`AckDropped`)
/// before its `Replying` may report the queue drained.
struct ReplyTask {
    pending: Pending,
    result: BatchResult,
    /// The committed ops: dropped here, after the replies, because freeing
    /// their payloads would cost the writer thread (the journal's critical
    /// path), and memory allocated on a tokio worker is cheaper to free on
    /// one (BENCHMARKS.md, "Spent ops dropped off the writer thread").
    spent: Vec<WriteOp>,
    replying: Replying,
}

/// Held by a batch's reply task: counts it out when the replies are sent or
/// the task is dropped unrun.
struct Replying(Arc<Committer>);

impl Drop for Replying {
    fn drop(&mut self) {
        if self.0.queue.replies_done() {
            let _ = self.0.actor.cast(JournalMsg::Drained);
        }
    }
}

/// One commit's requests.
struct Batch {
    requests: Vec<Request>,
    ops: usize,
    span: tracing::Span,
    counters: Arc<Counters>,
}

/// A batch whose ops went to the store, waiting for the result.
struct Pending {
    answers: Vec<Answer>,
    /// Queue slots stay taken until the replies are sent.
    permits: Vec<OwnedSemaphorePermit>,
    ops: usize,
    started: Instant,
    span: tracing::Span,
    counters: Arc<Counters>,
}

impl Batch {
    fn new(requests: Vec<Request>, counters: &Arc<Counters>) -> Batch {
        let ops = requests.iter().map(|r| r.work.len()).sum();
        let queue_depth = counters.queued(-(requests.len() as i64));
        let span = tracing::debug_span!(
            "journal.commit",
            requests = requests.len(),
            ops,
            queue_depth
        );
        Batch {
            requests,
            ops,
            span,
            counters: counters.clone(),
        }
    }

    /// The batch's ops, the fences of the requests that carry one, and
    /// where the results go.
    fn split(self) -> (Vec<WriteOp>, Vec<Fence>, Pending) {
        let n = self.requests.len();
        let mut pending = Pending {
            answers: Vec::with_capacity(n),
            permits: Vec::with_capacity(n),
            ops: self.ops,
            started: Instant::now(),
            span: self.span,
            counters: self.counters,
        };
        let mut ops = Vec::with_capacity(self.ops);
        let mut fences = Vec::new();
        for req in self.requests {
            let fence = req.fence;
            let start = ops.len();
            let (answer, mine, permit) = req.split();
            match mine {
                Ops::One(op) => ops.push(op),
                Ops::Many(many) => ops.extend(many),
            }
            if let Some((run_id, epoch)) = fence {
                fences.push(Fence {
                    run_id,
                    epoch,
                    ops: start..ops.len(),
                });
            }
            pending.answers.push(answer);
            pending.permits.push(permit);
        }
        (ops, fences, pending)
    }
}

impl Pending {
    /// Counts the finished commit and replies to each request.
    fn answer(self, result: BatchResult) {
        self.record(&result);
        self.reply(result);
    }

    /// Counts the finished commit (its time ends now).
    fn record(&self, result: &BatchResult) {
        let _entered = self.span.enter();
        let took = self.started.elapsed();
        self.counters.commit(self.ops, took, result.is_ok());
        if result.is_ok() {
            tracing::debug!(micros = took.as_micros() as u64, "journal commit");
        }
    }

    /// Replies to every request of the batch with its own results.
    fn reply(self, result: BatchResult) {
        let _entered = self.span.enter();
        match result {
            Ok(results) => {
                let mut results = results.into_iter();
                for answer in self.answers {
                    answer.succeed(&mut results);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal commit failed; every request in the batch gets the error");
                let shared = Arc::new(e);
                for answer in self.answers {
                    answer.fail(StoreError::BatchFailed {
                        batch_len: self.ops,
                        source: shared.clone(),
                    });
                }
            }
        }
        drop(self.permits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::request::Work;
    use tokio::sync::Semaphore;

    fn request() -> Request {
        let (reply, _answer) = ractor::concurrency::oneshot();
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        Request {
            work: Work::Many {
                ops: Vec::new(),
                reply: reply.into(),
            },
            permit,
            fence: None,
        }
    }

    /// A closing queue reports itself idle (so a shutdown may return) only
    /// once no drain runs and every committed batch's replies are out, and
    /// exactly one of the parties that can make it so reports it.
    #[test]
    fn a_closing_queue_is_idle_only_once_every_reply_is_out() {
        // The last reply goes out after the close.
        let queue = CommitQueue::new(16);
        assert!(matches!(queue.push(request()), Ok(Pushed::StartDrain)));
        assert_eq!(queue.take().map(|batch| batch.len()).ok(), Some(1));
        queue.replies_started();
        assert!(!queue.close(), "a drain is running");
        assert_eq!(queue.take().err(), Some(false), "replies are still out");
        assert!(
            queue.replies_done(),
            "the last reply reports the queue idle"
        );

        // The last reply goes out before the close.
        let queue = CommitQueue::new(16);
        assert!(matches!(queue.push(request()), Ok(Pushed::StartDrain)));
        assert!(queue.take().is_ok());
        queue.replies_started();
        assert_eq!(queue.take().err(), Some(false));
        assert!(!queue.replies_done(), "not closing: nobody waits");
        assert!(queue.close(), "idle at the close");
    }
}
