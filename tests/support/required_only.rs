//! [`RequiredOnly`]: a store that forwards only the required `FlowStore`
//! methods to its inner store, so every provided method (e.g. the run-by-run
//! `list_step_outputs_for`) runs its default implementation.

use std::sync::Arc;

use async_trait::async_trait;
use troupe::store::{
    BatchResult, Cursor, FailureEntry, Flow, FlowStatus, FlowStep, FlowStore, RunEvent, StepOutput,
    StoreError, WriteOp,
};
use uuid::Uuid;

pub struct RequiredOnly(pub Arc<dyn FlowStore>);

#[async_trait]
impl FlowStore for RequiredOnly {
    async fn apply_batch(&self, ops: Vec<WriteOp>) -> BatchResult {
        self.0.apply_batch(ops).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<Flow>, StoreError> {
        self.0.get_run(id).await
    }

    async fn list_runs_by_owner(&self, owner: &str) -> Result<Vec<Flow>, StoreError> {
        self.0.list_runs_by_owner(owner).await
    }

    async fn list_runs_by_status(&self, status: FlowStatus) -> Result<Vec<Flow>, StoreError> {
        self.0.list_runs_by_status(status).await
    }

    async fn list_runs_missing_terminal_event(&self) -> Result<Vec<Flow>, StoreError> {
        self.0.list_runs_missing_terminal_event().await
    }

    async fn list_events(&self, run_id: Uuid, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        self.0.list_events(run_id, limit).await
    }

    async fn poll(&self, after: Cursor, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        self.0.poll(after, limit).await
    }

    async fn latest_cursor(&self) -> Result<Cursor, StoreError> {
        self.0.latest_cursor().await
    }

    async fn terminal_event(&self, run_id: Uuid) -> Result<Option<RunEvent>, StoreError> {
        self.0.terminal_event(run_id).await
    }

    async fn list_step_outputs(&self, run_id: Uuid) -> Result<Vec<StepOutput>, StoreError> {
        self.0.list_step_outputs(run_id).await
    }

    async fn list_failures(&self, run_id: Uuid) -> Result<Vec<FailureEntry>, StoreError> {
        self.0.list_failures(run_id).await
    }

    async fn list_steps(&self, flow_id: Uuid) -> Result<Vec<FlowStep>, StoreError> {
        self.0.list_steps(flow_id).await
    }
}
