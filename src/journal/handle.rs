//! [`JournalHandle`]: how the rest of troupe talks to the journal actor. It
//! is itself a [`Store`]: writes go into the journal's commit queue
//! (bounded, group commit; the actor runs its drains), reads go straight to
//! the store's read side.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use super::actor::{JournalActor, JournalArgs, JournalMsg};
use super::committer::{CommitQueue, Pushed};
use super::request::{Request, Work};
use super::stats::{Counters, JournalStats};
use crate::records::{
    Appended, Checkpoint, NewEvent, StepOutput, StoreError, WriteOp, WriteOutcome, appended,
};
use crate::store::Store;

/// The store a journal is spawned over and becomes the only writer of.
/// Whoever hands one to [`JournalHandle::spawn`] (the runtime's builder,
/// a test, a tool) keeps no writing copy of it.
pub type JournalBackend = Arc<dyn Store>;

/// Options for the journal actor.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The most write ops one commit takes (a request's ops are never split).
    pub max_batch_ops: usize,
    /// How many write ops may wait in the commit queue (queued or in a
    /// commit not yet answered); further writers wait (backpressure).
    pub queue_capacity: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_batch_ops: 4096,
            queue_capacity: 16_384,
        }
    }
}

/// Why the journal could not start.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The actor failed to spawn.
    #[error("journal actor failed to start: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// A cheap, cloneable handle to the journal actor, usable as a [`Store`].
#[derive(Clone)]
pub struct JournalHandle {
    actor: ActorRef<JournalMsg>,
    queue: Arc<CommitQueue>,
    permits: Arc<Semaphore>,
    capacity: u32,
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    /// The run execution this handle writes for, on a store that leases
    /// runs: the run and the lease epoch it executes under.
    fence: Option<(Uuid, u64)>,
}

impl JournalHandle {
    /// Spawns the journal actor over `store`, which it becomes the only writer
    /// of; link it under `supervisor` if given.
    pub async fn spawn(
        store: JournalBackend,
        config: JournalConfig,
        supervisor: Option<ActorCell>,
    ) -> Result<JournalHandle, JournalError> {
        let counters = Arc::new(Counters::default());
        let queue = Arc::new(CommitQueue::new(config.max_batch_ops));
        let args = JournalArgs {
            store: store.clone(),
            queue: queue.clone(),
            counters: counters.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let (actor, _join) = match supervisor {
            Some(sup) => Actor::spawn_linked(None, JournalActor, args, sup).await?,
            None => Actor::spawn(None, JournalActor, args).await?,
        };
        let capacity = u32::try_from(config.queue_capacity.max(1)).unwrap_or(u32::MAX);
        Ok(JournalHandle {
            actor,
            queue,
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            store,
            counters,
            fence: None,
        })
    }

    /// The actor, e.g. to link or monitor it.
    pub fn actor(&self) -> &ActorRef<JournalMsg> {
        &self.actor
    }

    /// A snapshot of the journal's counters.
    pub fn stats(&self) -> JournalStats {
        self.counters.snapshot()
    }

    /// Commits everything already queued, refuses later writes with
    /// [`StoreError::JournalClosed`], and stops the actor.
    pub async fn shutdown(&self) {
        let (tx, rx) = ractor::concurrency::oneshot();
        if self.actor.cast(JournalMsg::Shutdown(tx.into())).is_ok() {
            // An error means the actor is already gone, which is what we want.
            let _ = rx.await;
        }
    }

    /// This handle, for the execution of `run` here: on a store that leases
    /// runs, its writes for the run carry the lease epoch the run is held
    /// at (a new run's is 1), and the store refuses them once this process
    /// no longer holds the run at that epoch, even if it holds it again
    /// later. A single owner's writes need no fence.
    pub(crate) fn for_execution(&self, run: &crate::records::Run) -> JournalHandle {
        let mut handle = self.clone();
        if let crate::store::Ownership::Leased { .. } = self.store.ownership() {
            let epoch = run.lease.as_ref().map_or(1, |lease| lease.epoch);
            handle.fence = Some((run.id, epoch));
        }
        handle
    }

    /// Queues `work` once it has its queue slots (backpressure); has a drain
    /// started if the queue was idle.
    async fn enqueue(&self, work: Work) -> Result<(), StoreError> {
        let slots = u32::try_from(work.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(slots)
            .await
            .map_err(|_| StoreError::JournalClosed)?;
        // Queued directly: the actor is messaged only to start a drain of an
        // idle queue, and if it is gone nothing would commit what is queued.
        let request = Request {
            work,
            permit,
            fence: self.fence,
        };
        if let Pushed::StartDrain = self.queue.submit(request, &self.counters)
            && self.actor.cast(JournalMsg::Drain).is_err()
        {
            self.queue.break_down(&self.counters);
        }
        Ok(())
    }

    /// One op as a request of its own (no vector of ops or results).
    async fn apply_one(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Work::One { op, reply }).await?;
        answer.await.map_err(|_| StoreError::AckDropped)?
    }
}

crate::store_wrapper! {
    JournalHandle, reads: store;
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let (reply, answer) = ractor::concurrency::oneshot();
        self.enqueue(Work::Many {
            ops,
            reply: reply.into(),
        })
        .await?;
        answer.await.map_err(|_| StoreError::AckDropped)?
    }

    async fn apply(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.apply_one(op).await
    }

    async fn append(&self, event: NewEvent) -> Result<Appended, StoreError> {
        appended(self.apply_one(WriteOp::Append(event)).await?)
    }

    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        self.store.list_step_outputs_for(run_ids).await
    }

    async fn runs_with_unsettled_inbox(&self, run_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        self.store.runs_with_unsettled_inbox(run_ids).await
    }

    async fn last_checkpoints_for(&self, run_ids: &[Uuid]) -> Result<Vec<Checkpoint>, StoreError> {
        self.store.last_checkpoints_for(run_ids).await
    }

}
