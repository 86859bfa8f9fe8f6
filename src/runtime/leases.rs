//! Runs leased from a shared journal ([`Ownership::Leased`], PostgreSQL):
//! the runtime executes only the runs it holds a lease on. At start it
//! claims the lapsed runs of its registered flows and resumes them (instead
//! of every unfinished run, as the single owner of an SQLite journal does);
//! then a keeper task, every third of a lease (or at once when a fenced
//! write finds a lease lost):
//! - renews every lease it holds, in one statement;
//! - stops the runs whose lease was lost: their actors are killed (the
//!   store refuses anything they still try to write), hibernated ones are
//!   forgotten, and their handles answer [`HandleError::Moved`](crate::flow::HandleError::Moved);
//! - passes cancels written by other processes to the runs they are for;
//! - claims runs whose owner stopped renewing, and resumes them as after a
//!   crash (checkpoints, memos, waits and timers included).
//!
//! And input another process journals for a run held here (a signal, an
//! event, a cancel) rings the journal's doorbell (`LISTEN`/`NOTIFY`): the
//! run reads its inbox, or is cancelled, at once. After a missed doorbell,
//! every run held with unsettled input reads it (a cancel still arrives
//! with the next renewal). The end of a child run rings the same doorbell
//! for its parent's watcher, wherever that runs.
//!
//! A runtime that shuts down lets its leases go at once, so that the runs
//! it did not end are taken over without waiting for them to lapse.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, RwLock, broadcast};
use uuid::Uuid;

use super::RuntimeError;
use super::launch::Launcher;
use super::resume::{ResumeFailure, Resumed, resume_runs};
use super::versions::sort_runs;
use crate::flow::ControlEvent;
use crate::flow::actor::FlowMsg;
use crate::flow::cell::RunHost;
use crate::records::Run;
use crate::store::{Ownership, Store};

/// How many runs one claim takes; a claim that fills it claims again.
const CLAIM_BATCH: usize = 512;

impl Launcher {
    /// Claims every lapsed run of the registered flows and resumes it
    /// (under the resume gate, as [`register`](super::Runtime::register)
    /// resumes). The claimed runs; a claim that fails is logged and left
    /// for the keeper's next round.
    pub(crate) async fn claim_and_resume(
        &self,
        gate: &RwLock<()>,
    ) -> Result<(Vec<Run>, Resumed), RuntimeError> {
        let flows = self.registry.names();
        let mut report = Resumed::default();
        let mut claimed_all = Vec::new();
        loop {
            let held = self
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unended();
            let room = self.claim_cap.load(Ordering::Relaxed).saturating_sub(held);
            let limit = room.min(CLAIM_BATCH);
            if limit == 0 {
                break;
            }
            let skip: Vec<Uuid> = self.refused_runs().iter().copied().collect();
            let claimed = match self.journal.claim_runs(&flows, &skip, limit).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming lapsed runs failed; trying again later");
                    metrics::counter!(crate::metrics::LEASE_FAILURES, "op" => "claim").increment(1);
                    break;
                }
            };
            let full = claimed.len() == limit;
            if claimed.is_empty() {
                break;
            }
            tracing::info!(runs = claimed.len(), "claimed runs whose lease had lapsed");
            metrics::counter!(crate::metrics::RUNS_CLAIMED).increment(claimed.len() as u64);
            // Each on the definition it started on, as at a restart.
            let sorted = sort_runs(&self.registry, &self.journal, claimed.clone()).await;
            self.refuse(&sorted.refused).await;
            let resumed = {
                let _gate = gate.write().await;
                resume_runs(&self.starter(), sorted.resumable).await?
            };
            report.failures.extend(sorted.refused);
            self.close_orphans(&claimed);
            report.cells.extend(resumed.cells);
            report.failures.extend(resumed.failures);
            claimed_all.extend(claimed);
            if !full {
                break;
            }
        }
        Ok((claimed_all, report))
    }

    /// The runs this runtime claimed and could not resume (their definition
    /// changed, see [`ChangePolicy`](crate::flow::ChangePolicy)): it lets
    /// them go for a runtime that has their version, and claims them no
    /// more until a definition is registered.
    fn refused_runs(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn refuse(&self, refused: &[ResumeFailure]) {
        if refused.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = refused.iter().map(|f| f.run.id).collect();
        self.refused_runs().extend(ids.iter().copied());
        if let Err(error) = self.journal.release_leases(&ids).await {
            tracing::warn!(%error, "letting refused runs go failed; their leases lapse instead");
        }
    }

    /// One round of the keeper: renew, stop what was lost, pass cancels
    /// on, claim what lapsed.
    async fn keep_leases(&self, gate: &RwLock<()>) {
        match self.journal.renew_leases().await {
            Ok(renewal) => {
                for run_id in renewal.lost {
                    self.hand_over(run_id);
                }
                for run_id in renewal.cancel_requested {
                    self.cancel_from_elsewhere(run_id);
                }
            }
            Err(error) => {
                // The leases lapse if this goes on; the fence keeps their
                // runs' writes out once another process has them. No claim
                // either: runs lost meanwhile are not stopped here yet.
                tracing::warn!(%error, "renewing leases failed; trying again");
                metrics::counter!(crate::metrics::LEASE_FAILURES, "op" => "renew").increment(1);
                return;
            }
        }
        // Not while shutting down: a claimed run would not be ended.
        let Ok(_starting) = self.starts.clone().try_read_owned() else {
            return;
        };
        if let Err(error) = self.claim_and_resume(gate).await {
            tracing::warn!(%error, "resuming claimed runs failed");
        }
    }

    /// Run `run_id` is executed by another process now: stops it here
    /// without writing anything for it.
    pub(crate) fn hand_over(&self, run_id: Uuid) {
        let cell = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cell(run_id)
            .cloned();
        let Some(cell) = cell else { return };
        self.sleepers.take(run_id);
        if let Some(actor) = cell.hand_over() {
            // Its stages go with it (ractor kills a dead supervisor's children).
            actor.kill();
        }
        metrics::counter!(crate::metrics::LEASES_LOST).increment(1);
        tracing::warn!(%run_id, "lease lost: the run goes on in another process; stopped here");
    }

    /// A cancel another process wrote into the record of a run held here.
    fn cancel_from_elsewhere(&self, run_id: Uuid) {
        let handle = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find(run_id);
        let Some(handle) = handle else { return };
        tokio::spawn(async move {
            let reason = "cancel requested in the journal".to_owned();
            let _ = handle.send(ControlEvent::Cancel { reason }).await;
        });
    }

    /// Lets the leases of the runs not ended here go (a shutdown), so that
    /// other processes take them over at once.
    pub(crate) async fn release_leases(&self) {
        if self.journal.ownership() == Ownership::Single {
            return;
        }
        let unended = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unended_ids();
        if let Err(error) = self.journal.release_leases(&unended).await {
            tracing::warn!(%error, runs = unended.len(),
                "releasing leases failed; they lapse instead");
        }
    }
}

impl Launcher {
    /// Input for run `run_id` was journaled by another process, or a
    /// cancel: if the run is held here, it is cancelled if its record asks
    /// so, and its flow reads its inbox (a hibernated run is woken, and
    /// reads it as it resumes).
    fn ring(&self, run_id: Uuid) {
        let cell = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cell(run_id)
            .cloned();
        let Some(cell) = cell else { return };
        let launcher = self.myself.clone();
        tokio::spawn(async move {
            if let Some(launcher) = launcher.upgrade()
                && let Ok(Some(run)) = launcher.journal.get_run(run_id).await
                && run.cancel_requested
                && !run.status.is_terminal()
            {
                launcher.cancel_from_elsewhere(run_id);
            }
            // Held: the run does not hibernate before the message is in.
            let _hold = cell.hold();
            // A flow that stopped to hibernate meanwhile is woken instead.
            for _ in 0..3 {
                let Some(actor) = cell.actor().await else {
                    return;
                };
                if actor.send_message(FlowMsg::CheckInbox).is_ok() {
                    return;
                }
            }
        });
    }

    /// Some doorbells may have been missed: every run held here with
    /// unsettled input reads its inbox (one read finds them), and every
    /// hibernated parent whose child ended meanwhile wakes.
    async fn ring_all(&self) {
        for (parent, children) in self.sleepers.parents() {
            self.wake_if_ended(parent, children);
        }
        let held = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unended_ids();
        match self.journal.runs_with_unsettled_inbox(&held).await {
            Ok(found) => found.into_iter().for_each(|run_id| self.ring(run_id)),
            Err(error) => tracing::warn!(%error, "reading which runs have input failed"),
        }
    }
}

/// Spawns the keeper of `launcher`'s leases, if its store leases runs, and
/// the listener of its inbox doorbell; they end with the launcher or once
/// the runtime shuts down.
pub(crate) fn spawn_keeper(launcher: &Arc<Launcher>, gate: Arc<RwLock<()>>) {
    let Some(every) = launcher.journal.ownership().renew_every() else {
        return;
    };
    let lost = launcher.journal.lease_lost();
    tokio::spawn(keeper(Arc::downgrade(launcher), gate, every, lost));
    if let Some(doorbell) = launcher.journal.inbox_doorbell() {
        tokio::spawn(answer_doorbell(Arc::downgrade(launcher), doorbell));
    }
}

/// Rings each run the doorbell names, until the launcher is gone.
async fn answer_doorbell(launcher: Weak<Launcher>, mut doorbell: broadcast::Receiver<Uuid>) {
    loop {
        let rung = doorbell.recv().await;
        let Some(launcher) = launcher.upgrade() else {
            return;
        };
        if launcher.sleepers.is_closed() {
            return;
        }
        match rung {
            Ok(run_id) if run_id.is_nil() => launcher.ring_all().await,
            Ok(run_id) => {
                launcher.ring(run_id);
                // A child that ended: its hibernated parents here wake.
                launcher.ended(run_id);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => launcher.ring_all().await,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn keeper(
    launcher: Weak<Launcher>,
    gate: Arc<RwLock<()>>,
    every: Duration,
    doorbell: Option<Arc<Notify>>,
) {
    let never = Arc::new(Notify::new());
    let doorbell = doorbell.unwrap_or(never);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = doorbell.notified() => {}
        }
        let Some(launcher) = launcher.upgrade() else {
            return;
        };
        if launcher.sleepers.is_closed() {
            return;
        }
        launcher.keep_leases(&gate).await;
    }
}
