//! [`RunManager`]: the run control plane over any [`Store`].

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::error::RunError;
use super::input::{CreateManagedInput, CreateMirroredInput, StepObservation};
use super::lifecycle::{Change, Planned, created_audit, plan, stored_now};
use crate::records::{
    DeadLetter, NewEvent, Run, RunEvent, RunStatus, RunStep, StoreError, WriteOp, WriteOutcome,
};
use crate::store::Store;

/// How many times a change is tried against a run other writers keep
/// changing before [`RunError::RevisionMismatch`] is returned.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The first retry waits up to this long; each further retry doubles it.
const RETRY_BASE: Duration = Duration::from_micros(250);
/// No retry waits longer than this.
const RETRY_CAP: Duration = Duration::from_millis(20);

/// The control plane of runs: creates them, moves them through their
/// lifecycle, merges state patches, handles cancellation and records the
/// observed steps of mirrored runs. See the [module docs](super) for the rules
/// and examples.
///
/// Every change reads the run, checks it against the lifecycle rules, and
/// writes the new record with a compare-and-set on its revision together with
/// exactly one audit event (and, for `finish`, `fail` and `cancel`, the run's
/// terminal event) in one atomic store write. When another writer got there
/// first, the change is re-read, re-checked and retried, up to
/// [`DEFAULT_MAX_ATTEMPTS`] times with a short jittered backoff.
///
/// Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct RunManager {
    store: Arc<dyn Store>,
    max_attempts: u32,
    observer: Option<Arc<dyn RunObserver>>,
}

/// Told about every change a [`RunManager`] wrote, once it is durable: how
/// a host that runs the work (e.g. the runtime, for actor-driven runs)
/// learns of a cancel requested through the control plane at once.
pub trait RunObserver: Send + Sync {
    /// `run` as it was just written. Called on the writer's task: keep it
    /// short and never block (spawn any async follow-up).
    fn changed(&self, run: &Run);
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl RunManager {
    /// A manager over `store` (a bare store, or a
    /// [`JournalHandle`](crate::journal::JournalHandle) inside a runtime).
    pub fn new(store: Arc<dyn Store>) -> RunManager {
        RunManager {
            store,
            observer: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The same manager, trying each change at most `attempts` times (at least once).
    pub fn with_max_attempts(mut self, attempts: u32) -> RunManager {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Calls `observer` after each change this manager writes.
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> RunManager {
        self.observer = Some(observer);
        self
    }

    /// The store this manager writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates a `Created` run at revision 0 with a `created` audit event.
    pub async fn create_managed(&self, input: CreateManagedInput) -> Result<Run, RunError> {
        self.insert_managed(input.into_run()?).await
    }

    /// [`create_managed`](Self::create_managed), the run recording the
    /// fingerprint and version of the definition it starts with.
    pub(crate) async fn create_managed_on(
        &self,
        input: CreateManagedInput,
        fingerprint: String,
        version: Option<u32>,
    ) -> Result<Run, RunError> {
        let mut run = input.into_run()?;
        run.fingerprint = Some(fingerprint);
        run.flow_version = version;
        self.insert_managed(run).await
    }

    async fn insert_managed(&self, run: Run) -> Result<Run, RunError> {
        let audit = created_audit(&run, "managed");
        self.store
            .insert_run(run.clone(), Some(audit))
            .instrument(
                tracing::info_span!("flow_manager.create", run_id = %run.id, runtime = "managed"),
            )
            .await?;
        Ok(run)
    }

    /// Creates a mirrored run — one whose work runs elsewhere and whose steps
    /// are recorded with [`record_step_observation`](Self::record_step_observation) —
    /// created and started at once: it is `Running` at revision 1, with a
    /// `created` and a `started` audit event, all in one atomic write.
    pub async fn create_mirrored(&self, input: CreateMirroredInput) -> Result<Run, RunError> {
        let run = input.into_run()?;
        let span =
            tracing::info_span!("flow_manager.create", run_id = %run.id, runtime = "mirrored");
        let mut ops = vec![WriteOp::InsertRun {
            audit: Some(created_audit(&run, "mirrored")),
            run: Box::new(run.clone()),
        }];
        let mut created = run.clone();
        if let Some(started) = plan(&run, &Change::Start, stored_now())? {
            created = started.run.clone();
            ops.extend(write_ops(started, run.revision));
        }
        self.store
            .apply(WriteOp::Atomic(ops))
            .instrument(span)
            .await?;
        Ok(created)
    }

    /// The run, if it exists.
    pub async fn get(&self, id: Uuid) -> Result<Option<Run>, RunError> {
        Ok(self.store.get_run(id).await?)
    }

    /// The runs a session owns, oldest first.
    pub async fn list_by_owner(&self, owner_session_key: &str) -> Result<Vec<Run>, RunError> {
        Ok(self.store.list_runs_by_owner(owner_session_key).await?)
    }

    /// The runs with `status`, oldest first.
    pub async fn list_by_status(&self, status: RunStatus) -> Result<Vec<Run>, RunError> {
        Ok(self.store.list_runs_by_status(status).await?)
    }

    /// The run's most recent `limit` events (audit events and its terminal
    /// event), in log order.
    pub async fn list_events(&self, id: Uuid, limit: usize) -> Result<Vec<RunEvent>, RunError> {
        Ok(self.store.list_events(id, limit).await?)
    }

    /// `Created → Running` (audit `started`).
    pub async fn start_running(&self, id: Uuid) -> Result<Run, RunError> {
        self.change(id, Change::Start, None)
            .await
            .map(|(run, _)| run)
    }

    /// `Running → Waiting`, recording what the run waits for (audit
    /// `waiting`); on a run already `Waiting`, records what it waits for now.
    pub async fn set_waiting(&self, id: Uuid, wait_json: Value) -> Result<Run, RunError> {
        let change = Change::Wait { wait_json };
        self.change(id, change, None).await.map(|(run, _)| run)
    }

    /// `Waiting → Running`, merging `state_patch` into the state and clearing
    /// the wait (audit `resumed`).
    pub async fn resume(&self, id: Uuid, state_patch: Option<Value>) -> Result<Run, RunError> {
        let change = Change::Resume { patch: state_patch };
        self.change(id, change, None).await.map(|(run, _)| run)
    }

    /// `Running | Waiting → Finished`, merging `final_state`, if given, into
    /// the state (shallowly, see [`merge_state`](super::merge_state)).
    /// Records `RunCompleted` with the state the run ends with as its output
    /// (audit `finished`). Refused with [`RunError::CancelPending`] once
    /// cancellation was requested.
    pub async fn finish(&self, id: Uuid, final_state: Option<Value>) -> Result<Run, RunError> {
        let change = Change::Finish { final_state };
        self.change(id, change, None).await.map(|(run, _)| run)
    }

    /// `Created | Running | Waiting → Failed`, merging
    /// `{"failure": {"reason", "at"}}` into the state and recording
    /// `RunFailed { reason }` (audit `failed`).
    pub async fn fail(&self, id: Uuid, reason: impl Into<String>) -> Result<Run, RunError> {
        let change = Change::Fail {
            reason: reason.into(),
        };
        self.change(id, change, None).await.map(|(run, _)| run)
    }

    /// Sets the sticky cancellation request (audit `cancel_requested`): from
    /// then on `finish` and `update_state` are refused and the controller is
    /// expected to [`cancel`](Self::cancel). Requesting again changes nothing.
    pub async fn request_cancel(&self, id: Uuid) -> Result<Run, RunError> {
        self.change(id, Change::RequestCancel, None)
            .await
            .map(|(run, _)| run)
    }

    /// `Created | Running | Waiting → Cancelled`, recording `RunCancelled`
    /// (audit `cancelled`). Needs no prior request.
    pub async fn cancel(&self, id: Uuid) -> Result<Run, RunError> {
        self.change(id, Change::Cancel, None)
            .await
            .map(|(run, _)| run)
    }

    /// Merges `patch` into the state of a run that is not terminal and, if
    /// given, moves it to `next_step` (audit `state_updated`). Refused with
    /// [`RunError::CancelPending`] once cancellation was requested.
    pub async fn update_state(
        &self,
        id: Uuid,
        patch: Value,
        next_step: Option<String>,
    ) -> Result<Run, RunError> {
        let change = Change::UpdateState { patch, next_step };
        self.change(id, change, None).await.map(|(run, _)| run)
    }

    /// Records what was seen of a step of work running elsewhere: inserts the
    /// step, or updates the one with the same `external_run_id` (keeping its
    /// id, creation time and, when the new one is absent, its
    /// `child_session_key`). On a run that is not terminal this is one
    /// change (a new revision, a `step_observed` audit event); on a terminal
    /// run the step is recorded alone and the run record, its revision and
    /// its log stay as they are. Returns the step as stored.
    pub async fn record_step_observation(
        &self,
        observation: StepObservation,
    ) -> Result<RunStep, RunError> {
        let id = observation.run_id;
        let step = observation.into_step(stored_now())?;
        let change = Change::ObserveStep {
            external_run_id: step.external_run_id.clone(),
            status: step.status,
        };
        let (_, outcomes) = self
            .change(id, change, Some(WriteOp::UpsertStep(Box::new(step))))
            .await?;
        outcomes
            .into_iter()
            .find_map(|o| match o {
                WriteOutcome::StepUpserted(step) => Some(step),
                _ => None,
            })
            .ok_or(RunError::Store(StoreError::OutcomeMismatch {
                op: "upsert_step",
            }))
    }

    /// The run's steps, oldest first.
    pub async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, RunError> {
        Ok(self.store.list_steps(run_id).await?)
    }

    /// The run's dead letters (items its stages gave up on), oldest first.
    pub async fn list_dead_letters(&self, run_id: Uuid) -> Result<Vec<DeadLetter>, RunError> {
        Ok(self.store.list_dead_letters(run_id).await?)
    }

    /// Applies `change` (plus `extra`, in the same atomic write) with a
    /// compare-and-set, re-reading and re-checking the run after each
    /// revision conflict. When the run record needs no change, `extra` is
    /// written alone. Returns the run as written and the write's outcomes
    /// (none when there was nothing to write).
    pub(super) async fn change(
        &self,
        id: Uuid,
        change: Change,
        extra: Option<WriteOp>,
    ) -> Result<(Run, Vec<WriteOutcome>), RunError> {
        let kind = change.audit_kind().as_str();
        let span = tracing::info_span!("flow_manager.change", run_id = %id, change = kind);
        async move {
            let mut conflict = (0, 0);
            for attempt in 0..self.max_attempts {
                if attempt > 0 {
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                let run = self
                    .store
                    .get_run(id)
                    .await?
                    .ok_or(RunError::NotFound(id))?;
                let Some(planned) = plan(&run, &change, stored_now())? else {
                    let Some(extra) = extra else {
                        return Ok((run, Vec::new()));
                    };
                    let outcomes = match self.store.apply(WriteOp::Atomic(vec![extra])).await? {
                        WriteOutcome::Atomic(outcomes) => outcomes,
                        _ => return Err(StoreError::OutcomeMismatch { op: "atomic" }.into()),
                    };
                    return Ok((run, outcomes));
                };
                let next = planned.run.clone();
                let mut ops = write_ops(planned, run.revision);
                ops.extend(extra.clone());
                match self.store.apply(WriteOp::Atomic(ops)).await {
                    Ok(WriteOutcome::Atomic(outcomes)) => {
                        if let Some(observer) = &self.observer {
                            observer.changed(&next);
                        }
                        return Ok((next, outcomes));
                    }
                    Ok(_) => return Err(StoreError::OutcomeMismatch { op: "atomic" }.into()),
                    Err(StoreError::RevisionMismatch {
                        expected, actual, ..
                    }) => {
                        tracing::debug!(attempt, expected, actual, "revision conflict, retrying");
                        conflict = (expected, actual);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let (expected, actual) = conflict;
            tracing::warn!(
                attempts = self.max_attempts,
                expected,
                actual,
                "gave up after revision conflicts"
            );
            Err(RunError::RevisionMismatch { expected, actual })
        }
        .instrument(span)
        .await
    }
}

/// The writes of one planned change based on `expected_revision`: the
/// compare-and-set with its audit event, then the run's outcome for terminal
/// moves. A plain append (not "if absent") makes the store's one-terminal-
/// event-per-run rule refuse the whole change if an outcome is already
/// recorded, instead of persisting a status the outcome contradicts.
fn write_ops(planned: Planned, expected_revision: u64) -> Vec<WriteOp> {
    let id = planned.run.id;
    let mut ops = vec![WriteOp::UpdateRun {
        run: Box::new(planned.run),
        expected_revision,
        audit: planned.audit,
    }];
    if let Some(outcome) = planned.outcome {
        ops.push(WriteOp::Append(NewEvent::new(id, outcome)));
    }
    ops
}

/// The longest wait before retry `attempt`: doubling from [`RETRY_BASE`], capped.
fn retry_ceiling(attempt: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(RETRY_CAP)
}

/// How long to wait before retry `attempt` (from 1): a random duration up to
/// a ceiling that doubles per attempt ("full jitter"), so that writers that
/// collided do not collide again in lockstep.
fn retry_delay(attempt: u32) -> Duration {
    let ceiling = retry_ceiling(attempt);
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    // A freshly keyed hasher is std's cheapest source of randomness.
    let random = RandomState::new().hash_one(attempt);
    Duration::from_micros(random % ceiling_us.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_stay_under_a_doubling_capped_ceiling() {
        for attempt in 1..40 {
            for _ in 0..20 {
                assert!(retry_delay(attempt) <= retry_ceiling(attempt));
            }
        }
        assert_eq!(retry_ceiling(1), RETRY_BASE * 2);
        assert_eq!(retry_ceiling(30), RETRY_CAP);
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| retry_delay(7)).collect();
        assert!(distinct.len() > 1, "delays are jittered");
    }
}
