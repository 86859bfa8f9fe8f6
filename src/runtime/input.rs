//! Operator input by run id: signals and durable stage events for any run
//! of the journal, live in this process or not (yet).

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Runtime;
use super::runtime::RuntimeError;
use crate::flow::{HandleError, RunHandle, accept_event, accept_signal};
use crate::records::{InboxEntry, InboxMessage, StoreError};
use crate::store::Store;

use crate::flow::EVERY_STAGE;

impl Runtime {
    /// Sends a signal durably to stage `stage` of run `run_id`, or to every
    /// stage (`None`); its inbox id once it is in the journal. Each stage
    /// gets it in its `on_signal`, at least once: a stage that had not
    /// handled it when the process stopped gets it again when the run
    /// resumes (and a stage restarted after a failure, if it had not).
    ///
    /// A run live in this process gets it at once; any other unfinished run
    /// of the journal gets it when it resumes (here or in a later process).
    /// Refused with [`HandleError::Finished`] (as [`RuntimeError::Input`])
    /// for a run that has ended or is being cancelled, and
    /// [`RuntimeError::UnknownRun`] for an id the journal does not know.
    pub async fn send_signal(
        &self,
        run_id: Uuid,
        stage: Option<&str>,
        name: &str,
        payload: Value,
    ) -> Result<Uuid, RuntimeError> {
        if let Some(run) = self.live_run(run_id) {
            let index = stage.map(|s| run.stage_index(s)).transpose()?;
            return Ok(accept_signal(&run, index, name.to_owned(), payload).await?);
        }
        let message = InboxMessage::Signal {
            name: name.to_owned(),
            payload,
        };
        self.accept_offline(run_id, stage.unwrap_or(EVERY_STAGE), message, "Signal")
            .await
    }

    /// Sends `event` durably to stage `stage` of run `run_id`, which takes
    /// [`Durable`](crate::stage::Durable) events of a type `event`'s JSON
    /// decodes as (see
    /// [`FlowBuilder::with_durable_events`](crate::flow::FlowBuilder::with_durable_events));
    /// its inbox id once it is in the journal. A run live in this process
    /// checks the event against the stage's type before accepting it
    /// ([`HandleError::EventRefused`]); for a run that is not live, the
    /// check happens when it resumes, and an event its stage cannot take is
    /// settled undeliverable then (listed by [`Store::list_inbox`] and in the
    /// failure ledger). Refused as [`send_signal`](Self::send_signal) is.
    pub async fn send_event<E: Serialize>(
        &self,
        run_id: Uuid,
        stage: &str,
        event: &E,
    ) -> Result<Uuid, RuntimeError> {
        let payload = serde_json::to_value(event).map_err(|e| HandleError::EventRefused {
            run_id,
            stage: stage.to_owned(),
            reason: format!("does not encode as JSON: {e}"),
        })?;
        if let Some(run) = self.live_run(run_id) {
            let index = run.stage_index(stage)?;
            return Ok(accept_event(&run, index, payload).await?);
        }
        let message = InboxMessage::Event { payload };
        self.accept_offline(run_id, stage, message, "a durable event")
            .await
    }

    fn live_run(&self, run_id: Uuid) -> Option<RunHandle> {
        self.live_runs().into_iter().find(|r| r.run_id() == run_id)
    }

    /// Accepts input for a run that is not live here: its resume hands it over.
    async fn accept_offline(
        &self,
        run_id: Uuid,
        stage: &str,
        message: InboxMessage,
        event: &'static str,
    ) -> Result<Uuid, RuntimeError> {
        let entry = InboxEntry::new(run_id, stage, message);
        let id = entry.id;
        match self.journal().accept_inbox(vec![entry]).await {
            Ok(()) => Ok(id),
            Err(StoreError::RunNotFound(_)) => Err(RuntimeError::UnknownRun(run_id)),
            Err(StoreError::RunEnded { .. }) => Err(HandleError::Finished { run_id, event }.into()),
            Err(other) => Err(RuntimeError::Store(other)),
        }
    }
}
