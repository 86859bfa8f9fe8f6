//! [`RivalStore`]: a store wrapper that plays another writer. Right after the
//! manager reads a run, the rival changes it behind the manager's back (while
//! it has turns left), so the manager's compare-and-set sees a newer revision.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::json;
use troupe::records::{
    Cursor, DamagedRun, DeadLetter, EventKind, FailureEntry, InboxEntry, Run, RunEvent, RunFilter,
    RunStatus, RunStep, StepOutput, StoreError, WriteOp, WriteOutcome,
};
use troupe::store::Store;
use uuid::Uuid;

/// What the rival does to the run it interferes with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RivalMove {
    /// Bumps a counter in the state (audit `rival_write`).
    Touch,
    /// Cancels the run (audit `rival_cancel`).
    Cancel,
}

pub struct RivalStore {
    inner: Arc<dyn Store>,
    turns: AtomicUsize,
    writes: AtomicUsize,
    rival: RivalMove,
}

impl RivalStore {
    pub fn new(inner: Arc<dyn Store>, turns: usize, rival: RivalMove) -> Arc<RivalStore> {
        Arc::new(RivalStore {
            inner,
            turns: AtomicUsize::new(turns),
            writes: AtomicUsize::new(0),
            rival,
        })
    }

    /// How many times the rival wrote.
    pub fn rival_writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    async fn interfere(&self, run: &Run) -> Result<(), StoreError> {
        let take = self
            .turns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1));
        if take.is_err() || run.status.is_terminal() {
            return Ok(());
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut changed = run.clone();
        let kind = match self.rival {
            RivalMove::Touch => {
                changed.state_json["rival"] = json!(n);
                "rival_write"
            }
            RivalMove::Cancel => {
                changed.status = RunStatus::Cancelled;
                "rival_cancel"
            }
        };
        self.inner
            .update_run(changed, run.revision, EventKind::custom(kind, json!(n)))
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Store for RivalStore {
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        self.inner.apply_batch(ops).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<Run>, StoreError> {
        let run = self.inner.get_run(id).await?;
        if let Some(run) = &run {
            self.interfere(run).await?;
        }
        Ok(run)
    }

    async fn list_memos(
        &self,
        run_id: Uuid,
        stage: &str,
    ) -> Result<Vec<troupe::records::Memo>, StoreError> {
        self.inner.list_memos(run_id, stage).await
    }

    async fn last_checkpoint(
        &self,
        run_id: Uuid,
    ) -> Result<Option<troupe::records::Checkpoint>, StoreError> {
        self.inner.last_checkpoint(run_id).await
    }

    async fn list_definitions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<troupe::records::DefinitionRecord>, StoreError> {
        self.inner.list_definitions(name).await
    }

    async fn find_run_by_key(&self, flow: &str, key: &str) -> Result<Option<Run>, StoreError> {
        self.inner.find_run_by_key(flow, key).await
    }

    async fn list_runs_by_owner(&self, owner: &str) -> Result<Vec<Run>, StoreError> {
        self.inner.list_runs_by_owner(owner).await
    }

    async fn list_runs_by_status(&self, status: RunStatus) -> Result<Vec<Run>, StoreError> {
        self.inner.list_runs_by_status(status).await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        self.inner.list_runs(filter, before, limit).await
    }

    async fn list_runs_missing_terminal_event(&self) -> Result<Vec<Run>, StoreError> {
        self.inner.list_runs_missing_terminal_event().await
    }

    async fn list_runs_to_recover(&self) -> Result<Vec<Result<Run, DamagedRun>>, StoreError> {
        self.inner.list_runs_to_recover().await
    }

    async fn list_events(&self, run_id: Uuid, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        self.inner.list_events(run_id, limit).await
    }

    async fn poll(&self, after: Cursor, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        self.inner.poll(after, limit).await
    }

    async fn latest_cursor(&self) -> Result<Cursor, StoreError> {
        self.inner.latest_cursor().await
    }

    async fn terminal_event(&self, run_id: Uuid) -> Result<Option<RunEvent>, StoreError> {
        self.inner.terminal_event(run_id).await
    }

    async fn list_step_outputs(&self, run_id: Uuid) -> Result<Vec<StepOutput>, StoreError> {
        self.inner.list_step_outputs(run_id).await
    }

    async fn list_failures(&self, run_id: Uuid) -> Result<Vec<FailureEntry>, StoreError> {
        self.inner.list_failures(run_id).await
    }

    async fn list_dead_letters(&self, run_id: Uuid) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.list_dead_letters(run_id).await
    }

    async fn list_inbox(&self, run_id: Uuid) -> Result<Vec<InboxEntry>, StoreError> {
        self.inner.list_inbox(run_id).await
    }

    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
        self.inner.list_steps(run_id).await
    }
}
