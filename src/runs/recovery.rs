//! The recovery scan run when a journal opens.

use uuid::Uuid;

use super::terminal::{TerminalizationError, repair_persisted_terminalization};
use crate::records::{Run, RunStatus, StoreError};
use crate::store::Store;

/// What the recovery scan found and did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Runs with a terminal status but no terminal event, now repaired.
    pub repaired: Vec<Uuid>,
    /// Runs whose repair failed, with why (they stay listed for the next scan).
    pub repair_failures: Vec<(Uuid, TerminalizationError)>,
    /// Runs that are not terminal, oldest first: the caller decides whether to resume them.
    pub unfinished: Vec<Run>,
}

/// Repairs every run whose persisted status is terminal but that lacks its
/// terminal event (see [`repair_persisted_terminalization`]: a failed append
/// is also in the failure ledger), and lists the runs that are not terminal.
pub async fn recover(store: &dyn Store) -> Result<RecoveryReport, StoreError> {
    let mut report = RecoveryReport::default();
    for run in store.list_runs_missing_terminal_event().await? {
        match repair_persisted_terminalization(store, run.id, &run.controller_id, None).await {
            Ok(_) => report.repaired.push(run.id),
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %e, "recovery: repair failed");
                report.repair_failures.push((run.id, e));
            }
        }
    }
    for status in [RunStatus::Created, RunStatus::Running, RunStatus::Waiting] {
        report
            .unfinished
            .extend(store.list_runs_by_status(status).await?);
    }
    report.unfinished.sort_by_key(|f| f.created_at);
    tracing::info!(
        repaired = report.repaired.len(),
        failed = report.repair_failures.len(),
        unfinished = report.unfinished.len(),
        "journal recovery scan done"
    );
    Ok(report)
}
