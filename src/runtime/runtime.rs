//! [`Runtime`]: registers flow definitions and starts runs of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use ractor::{ActorRef, SpawnErr};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::builder::RuntimeBuilder;
use super::registry::Registry;
use super::root::{FlowRequest, RootMsg};
use crate::flow::actor::{FlowArgs, FlowMsg};
use crate::flow::definition::ErasedDefinition;
use crate::flow::{ControlEvent, FlowDefinition, FlowHandle, FlowState, RecordError, RunOptions};
use crate::journal::{JournalError, JournalHandle};
use crate::runs::{FlowManager, RecoveryReport, RunObserver};
use crate::store::{Flow, FlowStore, StepOutput, StoreError};

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
    /// The store could not be opened.
    #[error("cannot open the journal store: {0}")]
    Store(#[from] StoreError),
    /// The journal actor could not start.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// An actor could not be spawned.
    #[error("cannot spawn an actor: {0}")]
    Spawn(#[from] SpawnErr),
    /// A definition with this name is already registered.
    #[error("a flow named `{0}` is already registered")]
    AlreadyRegistered(String),
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
    /// The runtime's root supervisor is gone (the runtime is shutting down).
    #[error("the runtime is shutting down")]
    ShuttingDown,
}

/// A flow actor asked of the root supervisor, not yet collected.
struct PendingFlow {
    run_id: uuid::Uuid,
    spawned: oneshot::Receiver<Result<ActorRef<FlowMsg>, SpawnErr>>,
    state: watch::Receiver<FlowState>,
    outcome: watch::Receiver<Option<crate::flow::FlowOutcome>>,
    stage_names: Arc<[String]>,
}

/// Handles of the runs started here. Ended runs are dropped when the list
/// has doubled since the last sweep, so a push costs amortized O(1) (a sweep
/// on every push made resuming n runs O(n²)).
#[derive(Default)]
struct RunList {
    handles: Vec<FlowHandle>,
    sweep_at: usize,
}

impl RunList {
    /// The fewest handles worth a sweep.
    const MIN_SWEEP: usize = 64;

    fn push(&mut self, handle: FlowHandle) {
        if self.handles.len() >= self.sweep_at {
            self.handles.retain(|h| !h.has_ended());
            self.sweep_at = (self.handles.len() * 2).max(Self::MIN_SWEEP);
        }
        self.handles.push(handle);
    }
}

impl From<RecordError> for RuntimeError {
    fn from(error: RecordError) -> Self {
        RuntimeError::Record(Box::new(error))
    }
}

/// An embedded troupe runtime; see the [module docs](super).
///
/// Dropping it kills the root supervisor, which takes every flow, stage and
/// the journal actor with it (acknowledged writes stay durable); call
/// [`shutdown`](Self::shutdown) to end runs gracefully instead.
pub struct Runtime {
    journal: JournalHandle,
    root: ActorRef<RootMsg>,
    registry: Registry,
    recovery: RecoveryReport,
    path: Option<PathBuf>,
    runs: Arc<Mutex<RunList>>,
    resumed: Vec<FlowHandle>,
    unresumed: Vec<Flow>,
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
    ) -> Self {
        Runtime {
            journal,
            root,
            registry,
            recovery,
            path,
            runs: Arc::default(),
            resumed: Vec::new(),
            unresumed: Vec::new(),
        }
    }

    /// Registers `definition` under its name (the `controller_id` of its runs).
    pub fn register<T: Clone + Send + 'static>(
        &self,
        definition: FlowDefinition<T>,
    ) -> Result<(), RuntimeError> {
        let name = definition.name().to_owned();
        if self.registry.register(Arc::new(definition)) {
            Ok(())
        } else {
            Err(RuntimeError::AlreadyRegistered(name))
        }
    }

    /// The names of the registered definitions, sorted.
    pub fn registered(&self) -> Vec<String> {
        self.registry.names()
    }

    /// Starts a run of the flow registered as `name`.
    pub async fn start(&self, name: &str) -> Result<FlowHandle, RuntimeError> {
        self.start_with(name, RunOptions::default()).await
    }

    /// Starts a run of the flow registered as `name`: creates its run
    /// record (`Created`), then spawns its flow actor, which records
    /// `Running` and starts the stages.
    pub async fn start_with(
        &self,
        name: &str,
        options: RunOptions,
    ) -> Result<FlowHandle, RuntimeError> {
        let definition = self
            .registry
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownFlow {
                name: name.to_owned(),
                registered: self.registry.names(),
            })?;
        let run = crate::flow::record::create(&self.store(), name, options).await?;
        self.spawn_flow(run, &*definition).await
    }

    /// Resumes every unfinished run the recovery scan found whose flow is
    /// registered; the others are kept in [`Self::unresumed`], untouched.
    pub(crate) async fn resume_unfinished(&mut self) -> Result<(), RuntimeError> {
        let unfinished = std::mem::take(&mut self.recovery.unfinished);
        let mut resumable = Vec::new();
        for run in &unfinished {
            match self.registry.get(&run.controller_id) {
                Some(definition) => resumable.push((run, definition)),
                None => {
                    tracing::warn!(run_id = %run.id, flow = %run.controller_id,
                        "unfinished run of an unregistered flow; left as it is");
                    self.unresumed.push(run.clone());
                }
            }
        }
        // One read for the recorded outputs of every run to resume.
        let ids: Vec<uuid::Uuid> = resumable.iter().map(|(run, _)| run.id).collect();
        let mut recorded: HashMap<uuid::Uuid, Vec<StepOutput>> = HashMap::new();
        for output in self.journal.list_step_outputs_for(&ids).await? {
            recorded.entry(output.run_id).or_default().push(output);
        }
        // Plan every run, ask the root for all the flows in one message (it
        // spawns them concurrently), then collect them.
        let mut pending = Vec::with_capacity(resumable.len());
        let mut requests = Vec::with_capacity(resumable.len());
        for (run, definition) in resumable {
            tracing::info!(run_id = %run.id, flow = %run.controller_id, "resuming unfinished run");
            let outputs = recorded.remove(&run.id).unwrap_or_default();
            let (request, flow) = self.prepare_flow(run.clone(), &*definition, Some(&outputs));
            requests.push(request);
            pending.push(flow);
        }
        self.root
            .send_message(RootMsg::StartFlows(requests))
            .map_err(|_| RuntimeError::ShuttingDown)?;
        for flow in pending {
            let handle = self.collect_flow(flow).await?;
            self.resumed.push(handle);
        }
        self.recovery.unfinished = unfinished;
        Ok(())
    }

    /// Spawns the flow actor of a new run under the root supervisor.
    async fn spawn_flow(
        &self,
        run: Flow,
        definition: &dyn ErasedDefinition,
    ) -> Result<FlowHandle, RuntimeError> {
        let (request, pending) = self.prepare_flow(run, definition, None);
        self.root
            .send_message(RootMsg::StartFlows(vec![request]))
            .map_err(|_| RuntimeError::ShuttingDown)?;
        self.collect_flow(pending).await
    }

    /// Plans `run`: the request for the root supervisor to spawn its flow
    /// actor, and what waits for it; `recorded` holds the outputs of a
    /// recovered run (`None`: a new run).
    fn prepare_flow(
        &self,
        run: Flow,
        definition: &dyn ErasedDefinition,
        recorded: Option<&[StepOutput]>,
    ) -> (FlowRequest, PendingFlow) {
        let run_id = run.id;
        let mut plan = definition.plan();
        if let Some(outputs) = recorded {
            plan.resume_from(outputs);
        }
        let stage_names = plan.stages.iter().map(|s| s.name.clone()).collect();
        let (state, state_rx) = watch::channel(FlowState::Created);
        let (outcome, outcome_rx) = watch::channel(None);
        let args = FlowArgs {
            run,
            store: Arc::new(self.journal.clone()),
            plan,
            state,
            outcome: Arc::new(outcome),
            recovering: recorded.is_some(),
        };
        let (reply, spawned) = oneshot::channel();
        let pending = PendingFlow {
            run_id,
            spawned,
            state: state_rx,
            outcome: outcome_rx,
            stage_names,
        };
        (FlowRequest { args, reply }, pending)
    }

    /// Waits for a requested flow actor; its handle, also kept in [`Self::live_runs`].
    async fn collect_flow(&self, pending: PendingFlow) -> Result<FlowHandle, RuntimeError> {
        let PendingFlow {
            run_id,
            spawned,
            state,
            outcome,
            stage_names,
        } = pending;
        let actor = spawned.await.map_err(|_| RuntimeError::ShuttingDown)??;
        let handle = FlowHandle::new(run_id, actor, state, outcome, stage_names);
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle.clone());
        Ok(handle)
    }

    /// Handles of the unfinished runs resumed at start (ended or not).
    pub fn resumed(&self) -> &[FlowHandle] {
        &self.resumed
    }

    /// Unfinished runs found at start whose flow is not registered: reported, not touched.
    pub fn unresumed(&self) -> &[Flow] {
        &self.unresumed
    }

    /// Handles of the runs started (or resumed) here that have not ended.
    pub fn live_runs(&self) -> Vec<FlowHandle> {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.handles
            .iter()
            .filter(|h| !h.has_ended())
            .cloned()
            .collect()
    }

    /// The journal: a [`FlowStore`] whose writes go through the journal actor.
    pub fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    /// The run control plane over this runtime's journal (one writer): lists
    /// and inspects every run — managed, mirrored and actor-driven — and
    /// drives managed ones. A cancel requested (or a run ended) through it on
    /// a live actor-driven run is passed on to that run's flow at once: the
    /// flow cancels cooperatively and publishes the persisted status.
    pub fn runs(&self) -> FlowManager {
        let live = CancelLiveRuns(Arc::downgrade(&self.runs));
        FlowManager::new(self.store()).with_observer(Arc::new(live))
    }

    /// The journal as a shareable store.
    pub fn store(&self) -> Arc<dyn FlowStore> {
        Arc::new(self.journal.clone())
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
    /// holds, and stops every actor. A run that does not finish draining
    /// (a source blocked inside `produce`) keeps this waiting: see
    /// [`shutdown_within`](Self::shutdown_within).
    pub async fn shutdown(self) {
        self.end_runs(None).await;
        self.stop().await;
    }

    /// Like [`shutdown`](Self::shutdown), but runs still draining after
    /// `deadline` are cancelled (and their stages killed after the flow's
    /// cancel grace), so this returns in bounded time.
    pub async fn shutdown_within(self, deadline: Duration) {
        self.end_runs(Some(Instant::now() + deadline)).await;
        self.stop().await;
    }

    async fn end_runs(&self, deadline: Option<Instant>) {
        let runs = self.live_runs();
        for run in &runs {
            // A run that is cancelling or ending rejects the drain; it ends anyway.
            let _ = run.send(ControlEvent::Drain).await;
        }
        for run in &runs {
            let Some(deadline) = deadline else {
                let _ = run.wait().await;
                continue;
            };
            if tokio::time::timeout_at(deadline, run.wait()).await.is_err() {
                tracing::warn!(run_id = %run.run_id(), "run still draining at the shutdown deadline; cancelling");
                let reason = "runtime shutdown deadline passed".to_owned();
                let _ = run.send(ControlEvent::Cancel { reason }).await;
                let _ = run.wait().await;
            }
        }
    }

    async fn stop(self) {
        self.journal.shutdown().await;
        self.root.stop_and_wait(None, None).await.ok();
    }
}

/// Passes a cancel (or an end) written through [`Runtime::runs`] on to the
/// run's live flow, so a control-plane cancel does not wait for the flow to
/// finish on its own (and no stage output is recorded after it).
struct CancelLiveRuns(Weak<Mutex<RunList>>);

impl RunObserver for CancelLiveRuns {
    fn changed(&self, run: &Flow) {
        if !(run.cancel_requested || run.status.is_terminal()) {
            return;
        }
        let Some(runs) = self.0.upgrade() else { return };
        let live = runs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(handle) = live
            .handles
            .iter()
            .find(|h| h.run_id() == run.id && !h.has_ended())
            .cloned()
        else {
            return;
        };
        drop(live);
        let reason = "cancel requested through the control plane".to_owned();
        tokio::spawn(async move {
            // A flow that is already ending rejects it; it ends anyway.
            let _ = handle.send(ControlEvent::Cancel { reason }).await;
        });
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Killing the root terminates its children (flows, their stages,
        // the journal) recursively; idempotent after `shutdown`.
        self.root.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{sink_fn, source_iter};
    use crate::store::{EventKind, FlowStatus, TerminalEvent};

    #[tokio::test]
    async fn a_flow_actor_that_dies_without_an_outcome_has_its_run_failed() {
        let runtime = Runtime::builder().memory().start().await.unwrap();
        runtime
            .register(
                FlowDefinition::<u64>::builder("endless")
                    .source("numbers", || source_iter(0_u64..))
                    .sink("discard", || sink_fn(|_: u64| Ok(())))
                    .pipeline(["numbers", "discard"])
                    .build()
                    .unwrap(),
            )
            .unwrap();
        let run = runtime.start("endless").await.unwrap();
        run.actor_ref().kill();
        let outcome = run.wait().await.unwrap();
        assert_eq!(outcome.status, FlowStatus::Failed);
        let reason = outcome.reason.unwrap();
        assert!(
            reason.starts_with("the flow actor stopped without an outcome in state Running"),
            "{reason}"
        );
        let store = runtime.journal();
        let record = store.get_run(run.run_id()).await.unwrap().unwrap();
        assert_eq!(record.status, FlowStatus::Failed);
        let terminal = store.terminal_event(run.run_id()).await.unwrap().unwrap();
        assert_eq!(
            terminal.kind,
            EventKind::Terminal(TerminalEvent::FlowFailed { reason })
        );
        assert!(runtime.live_runs().is_empty());
        runtime.shutdown().await;
    }
}
