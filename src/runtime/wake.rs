//! The runtime's side of hibernation: [`Launcher`] is every run's
//! [`RunHost`]. A run that hibernates is listed in its [`Sleepers`]; one
//! that is woken (its deadline, a child's end, a message to it) gets a new
//! flow actor through the path a process restart takes: its record and
//! recorded outputs are read again, its steps run again, their memos
//! answer, their timers re-arm.
//!
//! [`Sleepers`]: super::sleepers::Sleepers

use std::sync::Arc;

use uuid::Uuid;

use super::RuntimeError;
use super::launch::Launcher;
use super::registry::Resolved;
use super::root::RootMsg;
use super::sleepers::Sleeper;
use crate::flow::cell::{HostFuture, Route, RunCell, RunHost, Sleep};
use crate::flow::record::{self, Orphaned, RecordError};
use crate::flow::{RunHandle, RunOutcome};
use crate::records::{Run, RunStatus, StoreError};
use crate::runs::RunError;
use crate::store::Store;

impl RunHost for Launcher {
    fn may_hibernate(&self, sleep: &Sleep) -> bool {
        // On a shared journal the doorbell tells of a child's end wherever
        // it runs. Elsewhere a child that does not run here ends unheard
        // of: its parent stays awake, reading the store with backoff.
        if self.shares_journal() {
            return true;
        }
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        sleep.children.iter().all(|c| runs.cell(*c).is_some())
    }

    fn hibernate(&self, cell: &Arc<RunCell>, sleep: Sleep) {
        let resolved =
            self.registry
                .resolve(&sleep.flow, sleep.fingerprint.as_deref(), sleep.version);
        let Resolved::On(definition) = resolved else {
            // Registered flows are never removed; kept for the next start.
            tracing::error!(run_id = %cell.run_id, flow = %sleep.flow,
                "a hibernating run's flow is not registered; it resumes at the next start");
            cell.set_route(Route::Hibernated);
            return;
        };
        let runs = self.runs.clone();
        let shared = self.shares_journal();
        let children = sleep.children.clone();
        let ended = move |child: Uuid| {
            let runs = runs.lock().unwrap_or_else(|e| e.into_inner());
            // Not here: on a shared journal, the store says (below).
            runs.cell(child).is_none() && !shared
        };
        self.sleepers.put(cell, definition, sleep, ended);
        if shared {
            // A child that ended before the parent was listed rang nobody.
            self.wake_if_ended(cell.run_id, children);
        }
    }

    fn wake(&self, run_id: Uuid) -> bool {
        self.wake_by(run_id, "message")
    }

    fn ended(&self, run_id: Uuid) {
        for parent in self.sleepers.awaiting(run_id) {
            self.wake_by(parent, "child");
        }
    }

    fn continue_as_new(
        &self,
        run_id: Uuid,
        flow: String,
        input: serde_json::Value,
    ) -> HostFuture<Result<Run, RunError>> {
        let Some(launcher) = self.myself.upgrade() else {
            return Box::pin(async { Err(RunError::Store(StoreError::JournalClosed)) });
        };
        Box::pin(launcher.continue_run(run_id, flow, input))
    }

    fn handle(&self, run_id: Uuid) -> HostFuture<Option<RunHandle>> {
        let Some(launcher) = self.myself.upgrade() else {
            return Box::pin(async { None });
        };
        Box::pin(launcher.run_handle(run_id))
    }
}

impl Launcher {
    /// Whether other processes share this journal (its runs are leased):
    /// a child may run in one of them.
    fn shares_journal(&self) -> bool {
        self.journal.ownership() != crate::store::Ownership::Single
    }

    /// Wakes hibernated run `parent` if the store says one of `children`
    /// ended (read apart from the caller).
    pub(crate) fn wake_if_ended(&self, parent: Uuid, children: Vec<Uuid>) {
        let Some(launcher) = self.myself.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            for child in children {
                let ended = match launcher.journal.get_run(child).await {
                    Ok(run) => run.is_some_and(|run| run.status.is_terminal()),
                    // Unreadable now: woken, its watcher reads with backoff.
                    Err(_) => true,
                };
                if ended {
                    launcher.wake_by(parent, "child");
                    return;
                }
            }
        });
    }

    /// Wakes run `run_id` for its deadline.
    pub(crate) fn wake_run(&self, run_id: Uuid) {
        self.wake_by(run_id, "timer");
    }

    /// Wakes run `run_id` if it hibernates (`by` says what woke it);
    /// whether a wake is under way. None once a shutdown has begun: the
    /// run stays as the journal has it, for the next start.
    fn wake_by(&self, run_id: Uuid, by: &'static str) -> bool {
        // A shutdown waits for the wakes under way, and starts no other.
        if self.sleepers.is_closed() {
            return false;
        }
        let Ok(in_flight) = self.starts.clone().try_read_owned() else {
            return false;
        };
        let Some(launcher) = self.myself.upgrade() else {
            return false;
        };
        let Some(sleeper) = self.sleepers.take(run_id) else {
            // Not listed: live, or being woken already, unless it was left
            // hibernated unlisted (nothing here can wake it).
            let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            return runs.cell(run_id).is_some_and(|c| !c.is_hibernated());
        };
        metrics::counter!(crate::metrics::RUNS_WOKEN, "by" => by).increment(1);
        tracing::debug!(%run_id, by, "waking a hibernated run");
        tokio::spawn(async move {
            let _in_flight = in_flight;
            launcher.reactivate(sleeper).await;
        });
        true
    }

    /// Starts a new flow actor for a woken run; a run that cannot be
    /// started again is failed (and its outcome published), as a flow
    /// actor lost is.
    async fn reactivate(&self, sleeper: Sleeper) {
        let cell = sleeper.cell.clone();
        let run_id = cell.run_id;
        let error = match self.restart(sleeper).await {
            Ok(()) => return,
            Err(RuntimeError::ShuttingDown) => {
                // The journal still has it `Waiting`: the next start has it.
                cell.set_route(Route::Hibernated);
                return;
            }
            Err(error) => error,
        };
        let reason = format!("the hibernated run could not be woken: {error}");
        tracing::error!(%run_id, %reason, "run not woken");
        let failed = |reason, recorded| RunOutcome {
            run_id,
            status: RunStatus::Failed,
            structured_output: None,
            reason: Some(reason),
            recorded,
            next_run_id: None,
        };
        let outcome = match record::fail_orphaned(&self.journal, run_id, reason.clone()).await {
            Ok(Orphaned::Failed) => failed(reason, true),
            Ok(Orphaned::AlreadyEnded(recorded)) => recorded,
            Err(error) => failed(format!("{reason}; recording it failed: {error}"), false),
        };
        cell.publish(outcome);
    }

    async fn restart(&self, sleeper: Sleeper) -> Result<(), RuntimeError> {
        let Sleeper {
            cell, definition, ..
        } = sleeper;
        let run_id = cell.run_id;
        let run = self
            .journal
            .get_run(run_id)
            .await?
            .ok_or(RuntimeError::UnknownRun(run_id))?;
        if run.status.is_terminal() {
            // Ended through the control plane while it hibernated.
            let outcome = record::recorded_outcome(&self.journal, run_id, run.status)
                .await
                .map_err(|e: RecordError| RuntimeError::Record(Box::new(e)))?;
            cell.publish(outcome);
            return Ok(());
        }
        let outputs = self.journal.list_step_outputs_for(&[run_id]).await?;
        let starter = self.starter();
        // Only runs of steps hibernate: no checkpoint to take over.
        let recovered = super::spawn::Recovered {
            outputs: &outputs,
            checkpoint: None,
        };
        let (request, pending) =
            starter.request_flow(run, &*definition, Some(recovered), false, Some(cell));
        self.root
            .send_message(RootMsg::StartFlows(vec![request]))
            .map_err(|_| RuntimeError::ShuttingDown)?;
        pending.spawned().await?;
        Ok(())
    }
}
