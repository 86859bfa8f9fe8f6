//! A stage's link to its run's checkpoint coordinator: how a source learns
//! a checkpoint is due, how every stage reports passing a barrier, and how
//! a sink learns its checkpoint is durable. Kept in the stage's ports, so
//! it outlives the stage's restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

/// What the coordinator and a run's stages share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The newest checkpoint the sources are asked for (0: none yet).
    pub(super) requested: AtomicU64,
    /// Items the sources emitted, together.
    emitted: AtomicU64,
    /// The `emitted` count at which a checkpoint is due by items
    /// (`u64::MAX`: never).
    pub(super) due_at: AtomicU64,
    /// Rung when `emitted` reaches `due_at`.
    pub(super) items_due: Notify,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Shared {
            requested: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            due_at: AtomicU64::new(u64::MAX),
            items_due: Notify::new(),
        })
    }

    pub(super) fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

/// What a stage tells the coordinator.
#[derive(Debug)]
pub(crate) enum Note {
    /// Stage `stage` passed the barrier of checkpoint `id`, with this
    /// snapshot (or why it could not take one).
    Passed {
        stage: usize,
        id: u64,
        snapshot: Result<Option<Value>, String>,
        items_in: u64,
        items_out: u64,
    },
    /// Stage `stage` is done (its completion is recorded, or it was
    /// abandoned): it passes no more barriers.
    Ended { stage: usize },
}

/// Where checkpoints stand, as the coordinator publishes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// The newest checkpoint committed to the journal.
    pub(crate) committed: u64,
    /// The newest checkpoint abandoned.
    pub(crate) aborted: u64,
}

/// One stage's link to the coordinator.
#[derive(Debug)]
pub(crate) struct CheckpointLink {
    stage: usize,
    shared: Arc<Shared>,
    notes: mpsc::UnboundedSender<Note>,
    settled: watch::Receiver<Settled>,
    /// The newest barrier this stage put into its outputs (a source).
    injected: u64,
    /// The snapshot to hand the logic before it first works (a resumed run).
    pub(crate) restore: Option<Value>,
    /// The checkpoints a two-phase sink pre-committed and has not
    /// committed yet: the lowest such id (at least) and the highest.
    pub(crate) pre_committed: Option<(u64, u64)>,
}

impl CheckpointLink {
    pub(super) fn new(
        stage: usize,
        shared: Arc<Shared>,
        notes: mpsc::UnboundedSender<Note>,
        settled: watch::Receiver<Settled>,
    ) -> Self {
        CheckpointLink {
            stage,
            shared,
            notes,
            settled,
            injected: 0,
            restore: None,
            pre_committed: None,
        }
    }

    /// The next checkpoint a source should put a barrier in for now, if
    /// one is due: one atomic load per call. Every id asked for gets its
    /// barrier, in order (one skipped would never align downstream).
    #[inline]
    pub(crate) fn due(&self) -> Option<u64> {
        let requested = self.shared.requested.load(Ordering::Acquire);
        (requested > self.injected).then_some(self.injected + 1)
    }

    /// A source counts the items it emitted (for checkpoints by items).
    #[inline]
    pub(crate) fn count_emitted(&self, items: usize) {
        let items = items as u64;
        if items == 0 {
            return;
        }
        let now = self.shared.emitted.fetch_add(items, Ordering::Relaxed) + items;
        if now >= self.shared.due_at.load(Ordering::Relaxed) {
            self.shared.items_due.notify_one();
        }
    }

    /// The stage passed the barrier of checkpoint `id` with `snapshot`.
    pub(crate) fn passed(
        &mut self,
        id: u64,
        snapshot: Result<Option<Value>, String>,
        items_in: u64,
        items_out: u64,
    ) {
        self.injected = self.injected.max(id);
        // A coordinator that is gone took checkpoints off: nothing to tell.
        let _ = self.notes.send(Note::Passed {
            stage: self.stage,
            id,
            snapshot,
            items_in,
            items_out,
        });
    }

    /// Where checkpoints stand now.
    pub(crate) fn settled(&self) -> Settled {
        *self.settled.borrow()
    }

    /// Waits for a checkpoint to settle; `false` once the coordinator is
    /// gone. Cancel-safe.
    pub(crate) async fn settle_changed(&mut self) -> bool {
        self.settled.changed().await.is_ok()
    }

    /// Sets where the run resumes: the checkpoint the stage's snapshot
    /// comes from counts as injected (a source starts after it).
    pub(crate) fn resume_at(&mut self, id: u64, snapshot: Option<Value>) {
        self.injected = id;
        self.restore = snapshot;
        // A sink commits the checkpoint it resumes from again (it may not
        // have before the crash); other stages never look.
        self.pre_committed = Some((id, id));
    }
}
