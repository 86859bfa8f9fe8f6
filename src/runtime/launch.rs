//! [`Launcher`]: what starting a run needs of a runtime, shared by the
//! runtime's own starts ([`Runtime::start_with`](super::Runtime::start_with))
//! and its runs' stages, which start child runs through it
//! ([`RunLauncher`]).

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::RuntimeError;
use super::keyed::{self, KeyLocks, Keyed};
use super::live::RunList;
use super::registry::{Registry, Resolved};
use super::root::RootMsg;
use super::sleepers::{Sleepers, run_timer};
use super::start::Starter;
use crate::flow::cell::RunHost;
use crate::flow::{ControlEvent, RunHandle, RunOptions};
use crate::journal::JournalHandle;
use crate::records::{EventKind, InboxEntry, NewEvent, Run, RunStatus, StoreError};
use crate::runs::RunManager;
use crate::stage::ChildError;
use crate::stage::RunContext;
use crate::stage::child::{ChildStart, LaunchFuture, RunLauncher, close_children};
use crate::store::Store;
use crate::supervise::BoxError;

/// How a start waits for the starts gate a shutdown closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Waits for it (a caller's start: a shutdown waits for it in turn).
    Wait,
    /// Refuses the start if a shutdown holds it (a stage's: the shutdown
    /// waits for the stage's run, so waiting for the gate would deadlock).
    Try,
}

/// What starting a run needs of the runtime; one per runtime, shared.
pub(crate) struct Launcher {
    pub(crate) journal: JournalHandle,
    pub(crate) root: ActorRef<RootMsg>,
    pub(crate) registry: Registry,
    pub(crate) runs: Arc<Mutex<RunList>>,
    /// Each start in flight holds a read guard; a shutdown takes the write
    /// side, so it waits for them.
    pub(crate) starts: Arc<RwLock<()>>,
    /// One lock per (flow, id) a start with an id is looking up.
    pub(crate) key_locks: Arc<KeyLocks>,
    /// The runs that hibernate.
    pub(crate) sleepers: Sleepers,
    /// How long a run whose stages all wait stays live (`None`: always).
    pub(crate) hibernate_after: Option<Duration>,
    /// Claims stop while this many unended runs are held (a shared journal).
    pub(crate) claim_cap: AtomicUsize,
    /// Claimed runs refused for a changed definition: not claimed again
    /// until a definition is registered.
    pub(crate) refused: Mutex<HashSet<Uuid>>,
    pub(crate) myself: Weak<Launcher>,
}

impl Launcher {
    pub(crate) fn new(
        journal: JournalHandle,
        root: ActorRef<RootMsg>,
        registry: Registry,
        hibernate_after: Option<Duration>,
    ) -> Arc<Launcher> {
        let launcher = Arc::new_cyclic(|myself| Launcher {
            journal,
            root,
            registry,
            runs: Arc::default(),
            starts: Arc::default(),
            key_locks: Arc::default(),
            sleepers: Sleepers::default(),
            hibernate_after,
            claim_cap: AtomicUsize::new(usize::MAX),
            refused: Mutex::default(),
            myself: myself.clone(),
        });
        let timer = launcher.sleepers.timer();
        tokio::spawn(run_timer(Arc::downgrade(&launcher), timer));
        launcher
    }

    /// What a start needs, to run apart from its caller.
    pub(crate) fn starter(&self) -> Starter {
        Starter {
            journal: self.journal.clone(),
            root: self.root.clone(),
            runs: self.runs.clone(),
            launcher: self
                .myself
                .upgrade()
                .map(|launcher| launcher as Arc<dyn RunLauncher>),
            host: Some(self.myself.clone() as Weak<dyn RunHost>),
            hibernate_after: self.hibernate_after,
        }
    }

    /// Starts a run of the flow registered as `name` (see
    /// [`Runtime::start_with`](super::Runtime::start_with)), its inbox
    /// holding `inbox` before its flow starts.
    pub(crate) async fn start(
        &self,
        name: &str,
        options: RunOptions,
        inbox: Vec<InboxEntry>,
        gate: Gate,
    ) -> Result<RunHandle, RuntimeError> {
        let definition = self
            .registry
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownFlow {
                name: name.to_owned(),
                registered: self.registry.names(),
            })?;
        let flow = definition.name().to_owned();
        let bad_input = |reason| RuntimeError::BadInput {
            flow: flow.clone(),
            reason,
        };
        if let Some(reason) = options.input_error.clone() {
            return Err(bad_input(reason));
        }
        if let Err(StoreError::InvalidInput { value, .. }) =
            crate::records::check_json_depth(Uuid::nil(), "input", &options.input)
        {
            return Err(bad_input(value));
        }
        definition.check_input(&options.input).map_err(bad_input)?;
        let starter = self.starter();
        let key_guard =
            match keyed::look_up(&starter, &self.key_locks, &*definition, &options).await? {
                Some(Keyed::Existing(handle)) => return Ok(handle),
                Some(Keyed::New(guard)) => Some(guard),
                None => None,
            };
        // The start runs as a task of its own, so that dropping this future
        // does not cut it short (see the cancel-safety note of `start_with`).
        let in_flight = match gate {
            Gate::Wait => self.starts.clone().read_owned().await,
            Gate::Try => self
                .starts
                .clone()
                .try_read_owned()
                .map_err(|_| RuntimeError::ShuttingDown)?,
        };
        let start = starter.start_new(definition, options, inbox, in_flight);
        let start = async move {
            let started = start.await;
            // Only once the run is listed (or failed) may another start of
            // its id look it up.
            drop(key_guard);
            started
        };
        match tokio::spawn(start).await {
            Ok(started) => started,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(RuntimeError::ShuttingDown),
        }
    }

    /// The live handle of run `run_id`, if it runs here and has not ended.
    fn live(&self, run_id: Uuid) -> Option<RunHandle> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find(run_id)
            .filter(|handle| !handle.has_ended())
    }

    async fn start_child_run(&self, request: ChildStart) -> Result<Uuid, ChildError> {
        let ChildStart {
            parent,
            flow,
            input,
            id,
        } = request;
        let options = RunOptions::new().input(input).id(id.clone()).parent(parent);
        match self.start(&flow, options, Vec::new(), Gate::Try).await {
            Ok(handle) => Ok(handle.run_id()),
            // Started before a crash and not resumed yet (its flow is
            // registered later): that is the child.
            Err(RuntimeError::RunIdNotLive { existing, .. }) => Ok(existing),
            Err(RuntimeError::UnknownFlow { name, registered }) => Err(ChildError::UnknownFlow {
                parent,
                flow: name,
                registered,
            }),
            Err(RuntimeError::RunIdConflict { existing, .. }) => Err(ChildError::KeyConflict {
                parent,
                flow,
                key: id,
                existing,
            }),
            Err(RuntimeError::BadInput { reason, .. }) => Err(ChildError::BadInput {
                parent,
                flow,
                key: id,
                reason,
            }),
            Err(error) => Err(ChildError::NotStarted {
                parent,
                flow,
                key: id,
                source: Box::new(error),
            }),
        }
    }

    async fn cancel_run(&self, run_id: Uuid, reason: String) -> Result<(), BoxError> {
        if let Some(handle) = self.live(run_id) {
            // A flow that is already ending refuses it; it ends anyway.
            let _ = handle.send(ControlEvent::Cancel { reason }).await;
            return Ok(());
        }
        // Not running here (its flow is not registered, or it never
        // resumed): ended in the journal, with why.
        let event = NewEvent::new(
            run_id,
            EventKind::custom("cancel_reason", serde_json::json!({ "reason": reason })),
        );
        self.journal.append(event).await?;
        RunManager::new(Arc::new(self.journal.clone()))
            .cancel(run_id)
            .await?;
        Ok(())
    }
}

impl Launcher {
    /// Applies the parent-close policy of the ended parents of `resumed`
    /// runs (a parent that failed or was cancelled while the process went
    /// down before its children were closed): in a task of its own, so the
    /// resume does not wait for it. A parent whose flow is not registered
    /// is left for a later start (its children's policies live in its
    /// stages' memos).
    pub(crate) fn close_orphans(&self, resumed: &[Run]) {
        let parents: HashSet<Uuid> = resumed.iter().filter_map(|r| r.parent_run_id).collect();
        let Some(launcher) = self.myself.upgrade() else {
            return;
        };
        if parents.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for parent in parents {
                let run = match launcher.journal.get_run(parent).await {
                    Ok(Some(run)) => run,
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(%parent, %error,
                            "reading a resumed child's parent failed; its parent-close policy waits for the next start");
                        continue;
                    }
                };
                if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
                    continue;
                }
                let resolved = launcher.registry.resolve(
                    &run.controller_id,
                    run.fingerprint.as_deref(),
                    run.flow_version,
                );
                // Only its stage names are read: the newest will do if refused.
                let definition = match resolved {
                    Resolved::On(definition) | Resolved::Refused { newest: definition } => {
                        Some(definition)
                    }
                    Resolved::NotRegistered => None,
                };
                let Some(definition) = definition else {
                    tracing::warn!(%parent, flow = %run.controller_id,
                        "an ended parent's flow is not registered; its children are closed once it is");
                    continue;
                };
                let stages = definition.stage_names();
                let why = run.status.as_str().to_owned();
                let this: Arc<dyn RunLauncher> = launcher.clone();
                let context = RunContext::of(&run, launcher.journal.clone(), Some(this));
                close_children(&context, &stages, &why).await;
            }
        });
    }
}

impl RunLauncher for Launcher {
    fn start_child(&self, request: ChildStart) -> LaunchFuture<'_, Result<Uuid, ChildError>> {
        Box::pin(self.start_child_run(request))
    }

    fn doorbell(&self, run_id: Uuid) -> Option<LaunchFuture<'static, ()>> {
        let handle = self.live(run_id);
        // A run in another process: the journal's doorbell rings when it
        // ends (or when doorbells may have been missed).
        let elsewhere = self.journal.inbox_doorbell();
        if handle.is_none() && elsewhere.is_none() {
            return None;
        }
        Some(Box::pin(async move {
            let here = async {
                match handle {
                    // An error means the flow is gone: the store says how it ended.
                    Some(handle) => drop(handle.wait().await),
                    None => std::future::pending().await,
                }
            };
            let elsewhere = async {
                match elsewhere {
                    Some(doorbell) => rung_for(doorbell, run_id).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = here => {}
                () = elsewhere => {}
            }
        }))
    }

    fn cancel(&self, run_id: Uuid, reason: String) -> LaunchFuture<'_, Result<(), BoxError>> {
        Box::pin(self.cancel_run(run_id, reason))
    }
}

/// Returns once `doorbell` rings for `run_id`, or says that rings may have
/// been missed (a resync, a lagging receiver); never if it closes.
async fn rung_for(mut doorbell: tokio::sync::broadcast::Receiver<Uuid>, run_id: Uuid) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match doorbell.recv().await {
            Ok(rung) if rung == run_id || rung.is_nil() => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}
