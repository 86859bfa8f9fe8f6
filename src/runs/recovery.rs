//! The recovery scan run when a journal opens.

use serde_json::json;
use uuid::Uuid;

use super::terminal::{
    TerminalizationError, derive_terminal_event, repair_persisted_terminalization,
};
use crate::records::{
    DamagedRun, FailureEntry, Run, RunStatus, SYSTEM_STEP_ID, StoreError, TerminalEvent,
};
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
    /// Run rows the scan could not read (an unknown status code, a corrupt
    /// column, an id that is not a uuid), with where and why: neither
    /// repaired nor resumed, and listed again by every scan until they are
    /// mended. Each one whose run id could be read also has an entry in
    /// that run's failure ledger (step [`SYSTEM_STEP_ID`]).
    pub damaged: Vec<DamagedRun>,
}

/// Repairs every run whose persisted status is terminal but that lacks its
/// terminal event (see [`repair_persisted_terminalization`]: a failed append
/// is also in the failure ledger), lists the runs that are not terminal,
/// and reports the run rows it could not read (see
/// [`RecoveryReport::damaged`]) without letting them stop the scan. The
/// error is the scan's own failure (the store could not list runs at all).
pub async fn recover(store: &dyn Store) -> Result<RecoveryReport, StoreError> {
    let mut report = RecoveryReport::default();
    for row in store.list_runs_to_recover().await? {
        let run = match row {
            Ok(run) => run,
            Err(damaged) => {
                tracing::error!(row = %damaged.row, error = %damaged.error,
                    "recovery: run row unreadable; neither repaired nor resumed");
                record_damage(store, &damaged).await;
                report.damaged.push(damaged);
                continue;
            }
        };
        if !run.status.is_terminal() {
            report.unfinished.push(run);
            continue;
        }
        match repair_persisted_terminalization(store, run.id, &run.controller_id, None).await {
            Ok(_) => report.repaired.push(run.id),
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %e, "recovery: repair failed");
                report.repair_failures.push((run.id, e));
            }
        }
    }
    report.unfinished.sort_by_key(|f| f.created_at);
    tracing::info!(
        repaired = report.repaired.len(),
        failed = report.repair_failures.len(),
        unfinished = report.unfinished.len(),
        damaged = report.damaged.len(),
        "journal recovery scan done"
    );
    Ok(report)
}

/// What [`recover`] would repair in a journal, read without writing
/// anything (a dry run).
#[derive(Debug, Default)]
pub struct RepairPlan {
    /// Runs with a terminal status but no terminal event, oldest first,
    /// each with the event a repair appends.
    pub repairs: Vec<PlannedRepair>,
    /// Runs whose event could not be derived (their outputs or ledger
    /// could not be read), with why.
    pub unplannable: Vec<(Uuid, StoreError)>,
    /// Run rows that cannot be read (see [`RecoveryReport::damaged`]): no
    /// repair mends them; a scan records each in its run's failure ledger.
    pub damaged: Vec<DamagedRun>,
    /// Runs that are not terminal: a runtime resumes them, repair does not
    /// touch them.
    pub unfinished: usize,
}

/// One repair [`recover`] would make.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRepair {
    /// The run.
    pub run_id: Uuid,
    /// Its flow (`controller_id`).
    pub flow: String,
    /// Its persisted (terminal) status.
    pub status: RunStatus,
    /// The terminal event the repair appends, derived from the status.
    pub event: TerminalEvent,
}

/// What [`recover`] would repair, read only: the same runs, each with the
/// event [`repair_persisted_terminalization`] would append. The error is
/// the store's failure to list the runs at all.
pub async fn plan_repairs(store: &dyn Store) -> Result<RepairPlan, StoreError> {
    let mut plan = RepairPlan::default();
    let mut runs = Vec::new();
    for row in store.list_runs_to_recover().await? {
        match row {
            Ok(run) if run.status.is_terminal() => runs.push(run),
            Ok(_) => plan.unfinished += 1,
            Err(damaged) => plan.damaged.push(damaged),
        }
    }
    runs.sort_by_key(|r| r.created_at);
    for run in runs {
        match derive_terminal_event(store, &run, None).await {
            Ok(Some(event)) => plan.repairs.push(PlannedRepair {
                run_id: run.id,
                flow: run.controller_id,
                status: run.status,
                event,
            }),
            Ok(None) => {}
            Err(error) => plan.unplannable.push((run.id, error)),
        }
    }
    Ok(plan)
}

/// Puts a damaged run in its failure ledger when its id is known, once: a
/// scan that finds the same damage again (the next start) adds nothing.
/// Best effort: the report lists the damage whether or not this succeeds.
async fn record_damage(store: &dyn Store, damaged: &DamagedRun) {
    let Some(run_id) = damaged.row.run_id else {
        return;
    };
    let reason = format!("run record unreadable at recovery: {damaged}");
    let known = store.list_failures(run_id).await.is_ok_and(|entries| {
        entries
            .iter()
            .any(|e| e.step_id == SYSTEM_STEP_ID && e.reason == reason)
    });
    if known {
        return;
    }
    let entry = FailureEntry {
        run_id,
        step_id: SYSTEM_STEP_ID.to_owned(),
        reason,
        error_json: Some(json!({
            "table": damaged.row.table,
            "rowid": damaged.row.rowid,
        })),
        at: chrono::Utc::now(),
    };
    if let Err(error) = store.record_failure(entry).await {
        tracing::error!(%run_id, %error, "recovery: could not record a damaged run in its ledger");
    }
}
