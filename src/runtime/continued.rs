//! The runtime's side of continue-as-new: a run's flow asks its host
//! ([`RunHost::continue_as_new`](crate::flow::cell::RunHost::continue_as_new))
//! to end the run and create the next one in one write, on the definition a
//! fresh start gets, and the host starts the next run here; a
//! [`RunHandle::wait`](crate::flow::RunHandle::wait) asks it for the next
//! run's handle.

use std::sync::{Arc, PoisonError};

use serde_json::Value;
use uuid::Uuid;

use super::launch::Launcher;
use crate::flow::RunHandle;
use crate::flow::record::recorded_outcome;
use crate::records::Run;
use crate::runs::{RunError, RunManager};
use crate::store::Store;

impl Launcher {
    /// See [`RunHost::continue_as_new`](crate::flow::cell::RunHost::continue_as_new).
    pub(crate) async fn continue_run(
        self: Arc<Self>,
        run_id: Uuid,
        flow: String,
        input: Value,
    ) -> Result<Run, RunError> {
        let definition = self.registry.get(&flow);
        let on = definition
            .as_ref()
            .map(|d| (d.fingerprint().to_owned(), d.version()));
        let manager = RunManager::new(Arc::new(self.journal.clone()));
        let next = manager.continue_as_new_on(run_id, input, on).await?;
        let Some(definition) = definition else {
            // Registered flows are never removed: a run of this flow runs
            // here, so this is a runtime without it (a tool's); its next
            // start with the flow registered resumes the new run.
            return Ok(next);
        };
        // The write is durable: the new run is `Created` and resumed by the
        // next start if it cannot be started now (a shutdown holds the
        // gate, which waits for this run's flow).
        let Ok(in_flight) = self.starts.clone().try_read_owned() else {
            tracing::info!(run_id = %next.id, "shutting down; the continued run starts with the next start");
            return Ok(next);
        };
        let starter = self.starter();
        let (request, pending) =
            starter.request_flow(next.clone(), &*definition, None, false, None);
        let started = match self
            .root
            .send_message(super::root::RootMsg::StartFlows(vec![request]))
        {
            Ok(()) => starter.collect(pending).await.map(|_| ()),
            Err(_) => Err(super::RuntimeError::ShuttingDown),
        };
        drop(in_flight);
        if let Err(error) = started {
            // Left `Created`: the next start resumes it, as after a crash.
            tracing::error!(run_id = %next.id, %error,
                "the continued run could not be started; the next start resumes it");
        }
        Ok(next)
    }

    /// See [`RunHost::handle`](crate::flow::cell::RunHost::handle).
    pub(crate) async fn run_handle(self: Arc<Self>, run_id: Uuid) -> Option<RunHandle> {
        let kept = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find(run_id);
        if kept.is_some() {
            return kept;
        }
        let run = self.journal.get_run(run_id).await.ok()??;
        if !run.status.is_terminal() {
            return None;
        }
        let outcome = recorded_outcome(&self.journal, run_id, run.status)
            .await
            .ok()?;
        let stages = self
            .registry
            .get(&run.controller_id)
            .map(|d| d.stage_names())
            .unwrap_or_default();
        Some(RunHandle::ended(outcome, stages))
    }
}
