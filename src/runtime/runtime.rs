//! [`Runtime`]: registers flow definitions and starts runs of them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::{ActorRef, SpawnErr};
use tokio::sync::RwLock;
use tokio::time::Instant;
use uuid::Uuid;

use super::builder::RuntimeBuilder;
use super::launch::{Gate, Launcher};
use super::leases::spawn_keeper;
use super::live::CancelLiveRuns;
use super::registry::Registry;
use super::resume::{ResumeFailure, ResumeReport, resume_runs};
use super::root::RootMsg;
use super::start::Starter;
use super::versions::{record_definitions, sort_runs};
use crate::flow::cell::RunCell;
use crate::flow::{
    ControlEvent, ErasedDefinition, FlowDefinition, HandleError, RecordError, RunHandle, RunOptions,
};
use crate::journal::{JournalError, JournalHandle};
use crate::records::{DamagedRun, LockHolder, Run, RunStatus, StoreError};
use crate::runs::{RecoveryReport, RunManager};
use crate::store::Closer;
use crate::store::{Ownership, Store};

/// Why the runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The journal's directory could not be created.
    #[error("cannot create the journal directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// Another runtime (or another store opened for writing), in this
    /// process or another, owns the SQLite journal: one journal has one
    /// owner at a time, so this runtime would run its runs a second time.
    #[error(
        "the journal {path} is owned by another runtime{}: stop that runtime \
         first (it releases the journal when it has shut down or been dropped, \
         or its process ends), or give this runtime a journal of its own; the \
         journal can be read meanwhile with `SqliteStore::open_read_only`",
        held_by(.holder.as_ref())
    )]
    JournalLocked {
        /// The database file.
        path: PathBuf,
        /// Who holds the journal, where the platform can say.
        holder: Option<LockHolder>,
    },
    /// The store could not be opened.
    #[error("cannot open the journal store: {0}")]
    Store(#[from] StoreError),
    /// The journal actor could not start.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The recovery scan at start could not read or repair the journal.
    #[error("the recovery scan at start failed: {0}")]
    Recovery(#[source] StoreError),
    /// An actor could not be spawned.
    #[error("cannot spawn an actor: {0}")]
    Spawn(#[from] SpawnErr),
    /// A definition with this name and version is already registered.
    #[error("a flow named `{0}` is already registered under this version")]
    AlreadyRegistered(String),
    /// A definition being registered could not be recorded in the journal;
    /// it is not registered.
    #[error("flow `{flow}`: its definition could not be recorded in the journal: {source}")]
    DefinitionNotRecorded {
        /// The flow.
        flow: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// No definition with this name is registered.
    #[error("no flow named `{name}` is registered (registered: {registered:?})")]
    UnknownFlow {
        /// The name asked for.
        name: String,
        /// The names that are registered.
        registered: Vec<String>,
    },
    /// The run record could not be created.
    #[error(transparent)]
    Record(Box<RecordError>),
    /// Operator input for a run was refused (the run has ended, the stage
    /// has completed or takes no such event) or could not be recorded.
    #[error(transparent)]
    Input(#[from] HandleError),
    /// [`Runtime::replay_dead_letters`] found nothing it can replay: the
    /// stage dead-lettered nothing in that run, or `unkept` of its dead
    /// letters did not keep their item (the flow was built without
    /// `serde_items`); nothing was replayed.
    #[error(
        "run {run_id}: stage `{stage}` has no dead letters to replay{}",
        if *unkept > 0 { format!(" ({unkept} did not keep their item: build the flow with `serde_items`)") } else { String::new() }
    )]
    NothingToReplay {
        /// The run the dead letters were asked of.
        run_id: Uuid,
        /// The stage.
        stage: String,
        /// Dead letters without their item.
        unkept: usize,
    },
    /// The journal has no run with this id.
    #[error("run {0} not found")]
    UnknownRun(Uuid),
    /// A new run's input was refused: it could not be turned into JSON,
    /// or it does not decode as the flow's declared input type
    /// ([`FlowBuilder::input`](crate::flow::FlowBuilder::input)). No run
    /// was created.
    #[error("flow `{flow}`: the run's input is refused: {reason}")]
    BadInput {
        /// The flow.
        flow: String,
        /// Why.
        reason: String,
    },
    /// The id chosen for a new run ([`RunOptions::id`]) is not acceptable
    /// (empty, too long or holding control characters). No run was created.
    #[error("flow `{flow}`: the run id is refused: {why}")]
    BadRunId {
        /// The flow.
        flow: String,
        /// Why.
        why: &'static str,
    },
    /// The flow has a run with this id, started with another input, that
    /// a start may not replace (see [`IdReuse`](crate::flow::IdReuse)).
    #[error(
        "flow `{flow}` already has run {existing} with id {id:?}, started with another \
         input: start it with the same input to get that run, choose another id, or (once \
         it has ended) allow a new run with `RunOptions::id_reuse`"
    )]
    RunIdConflict {
        /// The flow.
        flow: String,
        /// The id.
        id: String,
        /// The run holding it.
        existing: Uuid,
    },
    /// The flow has a run with this id that has not ended but is not
    /// running in this runtime (its resume failed or is still to come: see
    /// [`Runtime::unresumed`] and [`Runtime::resume_failures`]).
    #[error(
        "flow `{flow}` has run {existing} with id {id:?}; it has not ended but is not \
         running in this runtime"
    )]
    RunIdNotLive {
        /// The flow.
        flow: String,
        /// The id.
        id: String,
        /// The run holding it.
        existing: Uuid,
    },
    /// The runtime's root supervisor is gone (the runtime is shutting down).
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// A new run's record was created but its flow could not be started.
    /// The run was failed in the journal with this error as its reason —
    /// unless `already_ended` says it had ended otherwise first (through
    /// the control plane), or `not_ended` says why failing it failed: the
    /// run then stays `Created`, and the next start resumes it.
    #[error(
        "run {run_id} was created but its flow could not be started: {cause}{}",
        unended_note(*.already_ended, .not_ended.as_deref())
    )]
    NotStarted {
        /// The run.
        run_id: Uuid,
        /// Why its flow could not be started.
        #[source]
        cause: Box<RuntimeError>,
        /// The status the run already had ended with before it could be
        /// failed (it was left so), if it had.
        already_ended: Option<RunStatus>,
        /// Why the run could not be failed in the journal, if it could not.
        not_ended: Option<Box<RecordError>>,
    },
}

impl From<RecordError> for RuntimeError {
    fn from(error: RecordError) -> Self {
        RuntimeError::Record(Box::new(error))
    }
}

/// " (held by ...)" when the journal's holder is known.
fn held_by(holder: Option<&LockHolder>) -> String {
    holder.map_or_else(String::new, |h| format!(" (held by {h})"))
}

/// What a `NotStarted` error adds when the run was not failed by it.
fn unended_note(already_ended: Option<RunStatus>, not_ended: Option<&RecordError>) -> String {
    match (already_ended, not_ended) {
        (Some(status), _) => format!(
            " (the run had already ended as {} and was left as it is)",
            status.as_str()
        ),
        (None, Some(error)) => format!(
            " (failing the run failed too, so it stays Created until the next start: {error})"
        ),
        (None, None) => String::new(),
    }
}

/// An embedded troupe runtime; see the [module docs](super).
///
/// Dropping it kills the root supervisor, which takes every flow, stage and
/// the journal actor with it (acknowledged writes stay durable); call
/// [`shutdown`](Self::shutdown) to end runs gracefully instead.
///
/// A runtime over an SQLite journal ([`RuntimeBuilder::sqlite`]) owns it:
/// no other runtime can open it until this one has shut down (when
/// `shutdown` returns), been dropped (once the writes already queued are
/// done) or died with its process.
pub struct Runtime {
    journal: JournalHandle,
    pub(crate) root: ActorRef<RootMsg>,
    recovery: RecoveryReport,
    path: Option<PathBuf>,
    /// Closes the SQLite store the runtime opened, releasing its journal.
    closer: Option<Closer>,
    /// Starts runs (the registry, the run list, the starts gate, the key
    /// locks), for the runtime and its runs' stages.
    pub(crate) launcher: Arc<Launcher>,
    /// The runs resumed at start (a handle is made when asked for: its
    /// channels would cost a hibernated run more than the run itself).
    resumed: Vec<Arc<RunCell>>,
    /// Unfinished runs whose flow is not registered; taken out when it is.
    unresumed: Mutex<Vec<Run>>,
    resume_failures: Vec<ResumeFailure>,
    /// Held (write) while `register` resumes runs, until their handles are
    /// live; input for a run that is not live is journaled under it (read),
    /// so such input is either in the journal before a resume reads the
    /// run's inbox, or sent to the live run after it.
    pub(crate) resume_gate: Arc<RwLock<()>>,
}

impl Runtime {
    /// A builder with the default journal location ([`super::DEFAULT_JOURNAL_PATH`]).
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    pub(crate) fn new(
        journal: JournalHandle,
        root: ActorRef<RootMsg>,
        registry: Registry,
        recovery: RecoveryReport,
        path: Option<PathBuf>,
        hibernate_after: Option<Duration>,
    ) -> Self {
        Runtime {
            launcher: Launcher::new(journal.clone(), root.clone(), registry, hibernate_after),
            journal,
            root,
            recovery,
            path,
            closer: None,
            resumed: Vec::new(),
            unresumed: Mutex::default(),
            resume_failures: Vec::new(),
            resume_gate: Arc::default(),
        }
    }

    /// The runtime closes the store behind `closer` when it stops.
    pub(crate) fn with_closer(mut self, closer: Option<Closer>) -> Self {
        self.closer = closer;
        self
    }

    /// Registers `definition` under its name (the `controller_id` of its
    /// runs), then resumes the unfinished runs of it that the journal holds
    /// and that were not resumed at start (their flow was not registered on
    /// the builder): the report says which resumed and which could not.
    /// Registering on the [builder](RuntimeBuilder::register) resumes them
    /// with every other run at start instead.
    ///
    /// Cancel safe like [`start_with`](Self::start_with): once polled, the
    /// resume runs to its end as a task of its own.
    pub async fn register<T: Clone + Send + 'static>(
        &self,
        definition: FlowDefinition<T>,
    ) -> Result<ResumeReport, RuntimeError> {
        let name = definition.name().to_owned();
        let definition: Arc<dyn ErasedDefinition> = Arc::new(definition);
        let gate = self.resume_gate.clone().write_owned().await;
        // Under the gate: nothing registers between the check and the insert.
        if self.launcher.registry.has(&name, definition.version()) {
            return Err(RuntimeError::AlreadyRegistered(name));
        }
        record_definitions(&self.journal, std::slice::from_ref(&definition)).await?;
        // A refused run may resume on this one: claimable again.
        self.launcher
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if !self.launcher.registry.register(definition.clone()) {
            return Err(RuntimeError::AlreadyRegistered(name));
        }
        let runs: Vec<Run> = {
            let mut unresumed = self
                .unresumed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (theirs, others) = std::mem::take(&mut *unresumed)
                .into_iter()
                .partition(|run| run.controller_id == name);
            *unresumed = others;
            theirs
        };
        if runs.is_empty() {
            return Ok(ResumeReport::default());
        }
        let sorted = sort_runs(&self.launcher.registry, &self.journal, runs).await;
        // Refused runs wait for the definition they started on.
        let held: Vec<Run> = sorted
            .refused
            .iter()
            .map(|f| f.run.clone())
            .chain(sorted.unregistered)
            .collect();
        self.unresumed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(held);
        let refused = sorted.refused;
        let runs: Vec<Run> = sorted
            .resumable
            .iter()
            .map(|(run, _)| run.clone())
            .collect();
        if runs.is_empty() {
            return Ok(ResumeReport {
                resumed: Vec::new(),
                failures: refused,
            });
        }
        let in_flight = self.launcher.starts.clone().read_owned().await;
        let starter = self.starter();
        let to_resume = sorted.resumable;
        let resume = async move {
            let _in_flight = in_flight;
            let _gate = gate;
            resume_runs(&starter, to_resume).await
        };
        let resumed = match tokio::spawn(resume).await {
            Ok(resumed) => resumed.map(|resumed| {
                let mut report = resumed.report();
                report.failures.extend(refused);
                report
            }),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(RuntimeError::ShuttingDown),
        };
        if resumed.is_ok() {
            self.launcher.close_orphans(&runs);
        }
        if resumed.is_err() {
            // Nothing was started: the runs wait for the next start.
            let mut unresumed = self
                .unresumed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            unresumed.extend(runs);
        }
        resumed
    }

    /// The names of the registered definitions, sorted.
    pub fn registered(&self) -> Vec<String> {
        self.launcher.registry.names()
    }

    /// Starts a run of the flow registered as `name` (cancel safe: see
    /// [`start_with`](Self::start_with)).
    pub async fn start(&self, name: &str) -> Result<RunHandle, RuntimeError> {
        self.start_with(name, RunOptions::default()).await
    }

    /// Starts a run of the flow registered as `name`: creates its run
    /// record (`Created`), then spawns its flow actor, which records
    /// `Running` and starts the stages. If the flow cannot be started once
    /// the record exists, the run is failed in the journal with the reason
    /// and [`RuntimeError::NotStarted`] says so.
    ///
    /// Cancel safety: once polled, the start runs to its end as a task of
    /// its own. Dropping this future (a `timeout`, a `select!`) only stops
    /// waiting for it: the run is still started and tracked (in
    /// [`live_runs`](Self::live_runs), by [`shutdown`](Self::shutdown) and
    /// control-plane cancels), or failed if its flow cannot be started; it
    /// is never left `Created` or running untracked. A start with an id
    /// ([`RunOptions::id`]) first looks the id up; dropped during that
    /// look-up, it starts nothing.
    pub async fn start_with(
        &self,
        name: &str,
        options: RunOptions,
    ) -> Result<RunHandle, RuntimeError> {
        self.start_with_inbox(name, options, Vec::new()).await
    }

    /// [`start_with`](Self::start_with), the run's inbox holding `inbox`
    /// before its flow starts.
    pub(crate) async fn start_with_inbox(
        &self,
        name: &str,
        options: RunOptions,
        inbox: Vec<crate::records::InboxEntry>,
    ) -> Result<RunHandle, RuntimeError> {
        self.launcher.start(name, options, inbox, Gate::Wait).await
    }

    /// What a start needs of the runtime, to run apart from its caller.
    fn starter(&self) -> Starter {
        self.launcher.starter()
    }

    /// Resumes every unfinished run the recovery scan found whose flow is
    /// registered; the others are kept in [`Self::unresumed`], untouched
    /// until their flow is registered. A run that cannot be resumed (its
    /// outputs unreadable, its flow not started) goes to
    /// [`Self::resume_failures`]; the others resume.
    pub(crate) async fn resume_unfinished(&mut self) -> Result<(), RuntimeError> {
        let registered = self.launcher.registry.all();
        record_definitions(&self.journal, &registered).await?;
        if self.journal.ownership() != Ownership::Single {
            // A shared journal: only the runs this runtime claims are its own.
            let (claimed, report) = self.launcher.claim_and_resume(&self.resume_gate).await?;
            tracing::info!(claimed = claimed.len(), "claimed lapsed runs at start");
            self.resumed = report.cells;
            self.resume_failures = report.failures;
            spawn_keeper(&self.launcher, self.resume_gate.clone());
            return Ok(());
        }
        let sorted = sort_runs(
            &self.launcher.registry,
            &self.journal,
            self.recovery.unfinished.clone(),
        )
        .await;
        let resumable = sorted.resumable;
        // Refused runs wait for the definition they started on.
        let mut unresumed = sorted.unregistered;
        unresumed.extend(sorted.refused.iter().map(|f| f.run.clone()));
        *self
            .unresumed
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = unresumed;
        let resumed: Vec<Run> = resumable.iter().map(|(run, _)| run.clone()).collect();
        let report = resume_runs(&self.starter(), resumable).await?;
        self.launcher.close_orphans(&resumed);
        self.resumed = report.cells;
        self.resume_failures = sorted.refused;
        self.resume_failures.extend(report.failures);
        Ok(())
    }

    /// Handles of the unfinished runs resumed at start (ended or not;
    /// live, or hibernated at once when their record said they may);
    /// [`register`](Self::register) reports those it resumes later.
    pub fn resumed(&self) -> Vec<RunHandle> {
        self.resumed.iter().map(RunHandle::new).collect()
    }

    /// Unfinished runs in the journal whose flow is not registered (yet),
    /// or whose definition changed and was refused
    /// ([`ResumeError::DefinitionChanged`](super::ResumeError::DefinitionChanged)):
    /// reported, not touched. Registering their flow (the definition they
    /// started on) resumes them.
    pub fn unresumed(&self) -> Vec<Run> {
        self.unresumed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Unfinished runs of flows registered on the builder that could not be
    /// resumed at start, with why; their records are left as they were.
    pub fn resume_failures(&self) -> &[ResumeFailure] {
        &self.resume_failures
    }

    /// Run rows the recovery scan at start could not read (an unknown
    /// status code, a corrupt column, an id that is not a uuid), with where
    /// they are and why: they were neither repaired nor resumed, and did
    /// not keep the other runs from resuming. Each one whose run id could
    /// be read also has an entry in that run's failure ledger. The same as
    /// [`recovery().damaged`](RecoveryReport::damaged).
    pub fn damaged_runs(&self) -> &[DamagedRun] {
        &self.recovery.damaged
    }

    /// Handles of the runs started (or resumed) here that have not ended.
    pub fn live_runs(&self) -> Vec<RunHandle> {
        self.launcher
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live()
    }

    /// The journal: a [`Store`](crate::store::Store) whose writes go through the journal actor.
    pub fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    /// The run control plane over this runtime's journal (one writer): lists
    /// and inspects every run — managed, mirrored and actor-driven — and
    /// drives managed ones. A cancel requested (or a run ended) through it on
    /// a live actor-driven run is passed on to that run's flow at once: the
    /// flow cancels cooperatively and publishes the persisted status.
    pub fn runs(&self) -> RunManager {
        let live = CancelLiveRuns(Arc::downgrade(&self.launcher.runs));
        RunManager::new(Arc::new(self.journal.clone())).with_observer(Arc::new(live))
    }

    /// What the recovery scan at start found: repaired terminal records and
    /// the unfinished runs (resumed if their flow was registered on the builder).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The SQLite journal's path (`None` for an in-memory journal).
    pub fn journal_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Ends gracefully: drains every live run (sources stop, in-flight
    /// items are worked off, outcomes recorded), commits what the journal
    /// holds, stops every actor and releases an SQLite journal to its next
    /// owner (the handles left keep reading it). A run whose unfinished
    /// stages all wait durably (a timer, a signal, a child run) is not
    /// drained: it stops as it is, `Waiting` in the journal, and the next
    /// start resumes it asleep. A run that does not finish draining (a
    /// source blocked inside `produce`) keeps this waiting: see
    /// [`shutdown_within`](Self::shutdown_within).
    pub async fn shutdown(self) {
        self.end_runs(None).await;
        self.stop().await;
    }

    /// Like [`shutdown`](Self::shutdown), but runs still draining after
    /// `deadline` are cancelled (and their stages killed after the flow's
    /// cancel grace), so ending the runs takes bounded time. The journal's
    /// last commit is still awaited (a stalled disk holds it); a run still
    /// starting at the deadline is stopped with the actors and resumed by
    /// the next start.
    pub async fn shutdown_within(self, deadline: Duration) {
        self.end_runs(Some(Instant::now() + deadline)).await;
        self.stop().await;
    }

    async fn end_runs(&self, deadline: Option<Instant>) {
        self.launcher.sleepers.close();
        // Starts still in flight (their callers gave up on them) finish
        // first, so that their runs are ended too; not past the deadline
        // (a start waits on the journal), after which the root's stop ends
        // whatever they started.
        let _all_started = match deadline {
            None => Some(self.launcher.starts.write().await),
            Some(deadline) => {
                let started = tokio::time::timeout_at(deadline, self.launcher.starts.write()).await;
                if started.is_err() {
                    tracing::warn!("runs still starting at the shutdown deadline; stopping anyway");
                }
                started.ok()
            }
        };
        // Hibernated runs stay so (no wake starts once the starts gate is
        // taken): the journal has them `Waiting`, for the next start.
        let runs = self
            .launcher
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .awake();
        for run in &runs {
            // A run whose stages all wait durably stops as if asleep: its
            // wait may outlast any shutdown.
            if run.park().await {
                continue;
            }
            // A run that is cancelling, ending or hibernating rejects the
            // drain; it ends or sleeps anyway.
            let _ = run.send(ControlEvent::Drain).await;
        }
        for run in &runs {
            let Some(deadline) = deadline else {
                run.settled().await;
                continue;
            };
            if tokio::time::timeout_at(deadline, run.settled())
                .await
                .is_err()
            {
                tracing::warn!(run_id = %run.run_id(), "run still draining at the shutdown deadline; cancelling");
                let reason = "runtime shutdown deadline passed".to_owned();
                let _ = run.send(ControlEvent::Cancel { reason }).await;
                run.settled().await;
            }
        }
    }

    async fn stop(self) {
        self.journal.shutdown().await;
        self.root.stop_and_wait(None, None).await.ok();
        // Nothing of this runtime writes any more: the runs it did not end
        // are let go for other processes to take at once.
        self.launcher.release_leases().await;
        // Handles may keep the store alive; the journal is released now.
        if let Some(closer) = &self.closer {
            closer.close().await;
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Hibernated runs stay so: their next start has them.
        self.launcher.sleepers.close();
        // Killing the root terminates its children (flows, their stages,
        // the journal) recursively; idempotent after `shutdown`.
        self.root.kill();
        // Released once the writes already queued are done (a no-op after
        // `shutdown`); later writes of the dying actors are refused.
        if let Some(closer) = &self.closer {
            closer.close_soon();
        }
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
