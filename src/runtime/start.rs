//! Starting a new run's flow as a task of its own, so that a caller that
//! gives up on [`Runtime::start_with`](super::Runtime::start_with) (drops
//! its future) cannot leave a flow running untracked or a run `Created`.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::OwnedRwLockReadGuard;
use uuid::Uuid;

use super::RuntimeError;
use super::live::RunList;
use super::root::RootMsg;
use super::spawn::PendingFlow;
use crate::flow::ErasedDefinition;
use crate::flow::cell::RunHost;
use crate::flow::record::{self, Orphaned};
use crate::flow::{RunHandle, RunOptions};
use crate::journal::JournalHandle;
use crate::records::InboxEntry;
use crate::stage::child::RunLauncher;
use crate::store::Store;

/// What starting a flow needs of the runtime (cheap to clone into a task).
#[derive(Clone)]
pub(crate) struct Starter {
    pub(crate) journal: JournalHandle,
    pub(crate) root: ActorRef<RootMsg>,
    pub(crate) runs: Arc<Mutex<RunList>>,
    /// How the started runs' stages start child runs.
    pub(crate) launcher: Option<Arc<dyn RunLauncher>>,
    /// Where the started runs hibernate and who wakes them.
    pub(crate) host: Option<Weak<dyn RunHost>>,
    /// How long a run whose stages all wait stays live (`None`: always).
    pub(crate) hibernate_after: Option<Duration>,
}

impl Starter {
    /// Creates a run of `definition` and starts its flow; a run whose flow
    /// cannot be started is failed. Meant to run as its own task, holding
    /// `in_flight` (a shutdown waits for every start that holds one) until
    /// the run's handle is in the run list or the run is failed.
    /// `inbox` is input for the new run's stages (their `run_id` is set
    /// here), accepted into its inbox before its flow starts (a run that
    /// cannot take it is failed).
    pub(crate) async fn start_new(
        self,
        definition: Arc<dyn ErasedDefinition>,
        options: RunOptions,
        inbox: Vec<InboxEntry>,
        in_flight: OwnedRwLockReadGuard<()>,
    ) -> Result<RunHandle, RuntimeError> {
        let run = record::create(&self.journal, &*definition, options).await?;
        let run_id = run.id;
        let inbox_waiting = !inbox.is_empty();
        let started = match self.accept(run_id, inbox).await {
            Ok(()) => {
                let (request, pending) =
                    self.request_flow(run, &*definition, None, inbox_waiting, None);
                match self.root.send_message(RootMsg::StartFlows(vec![request])) {
                    Ok(()) => self.collect(pending).await,
                    Err(_) => Err(RuntimeError::ShuttingDown),
                }
            }
            Err(error) => Err(error),
        };
        let result = match started {
            Ok(handle) => Ok(handle),
            Err(cause) => Err(self.not_started(run_id, cause).await),
        };
        drop(in_flight);
        result
    }

    /// Accepts a new run's first input into its inbox.
    async fn accept(&self, run_id: Uuid, mut inbox: Vec<InboxEntry>) -> Result<(), RuntimeError> {
        if inbox.is_empty() {
            return Ok(());
        }
        for entry in &mut inbox {
            entry.run_id = run_id;
        }
        self.journal.accept_inbox(inbox).await?;
        Ok(())
    }

    /// Waits for a requested flow actor; its handle, also kept in the run list.
    pub(crate) async fn collect(&self, pending: PendingFlow) -> Result<RunHandle, RuntimeError> {
        let run_id = pending.run_id();
        let cell = pending.cell().clone();
        let handle = pending.spawned().await.inspect_err(|error| {
            tracing::error!(%run_id, %error, "the flow actor could not be spawned");
        })?;
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cell);
        Ok(handle)
    }

    /// Fails a created run whose flow could not be started, so that it does
    /// not wait as `Created` for the next start; the error to return.
    async fn not_started(&self, run_id: Uuid, cause: RuntimeError) -> RuntimeError {
        let reason = format!("the runtime could not start the run's flow: {cause}");
        tracing::error!(%run_id, %reason, "flow not started");
        let (already_ended, not_ended) =
            match record::fail_orphaned(&self.journal, run_id, reason).await {
                Ok(Orphaned::Failed) => (None, None),
                Ok(Orphaned::AlreadyEnded(outcome)) => {
                    tracing::info!(%run_id, status = outcome.status.as_str(),
                    "the run had already ended; left so");
                    (Some(outcome.status), None)
                }
                Err(error) => {
                    tracing::error!(%run_id, %error,
                    "failing the run failed; it stays Created and the next start resumes it");
                    (None, Some(Box::new(error)))
                }
            };
        RuntimeError::NotStarted {
            run_id,
            cause: Box::new(cause),
            already_ended,
            not_ended,
        }
    }
}
