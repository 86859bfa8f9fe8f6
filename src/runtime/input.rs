//! Operator input by run id: signals and durable stage events for any run
//! of the journal, live in this process or not (yet).

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Runtime;
use super::runtime::RuntimeError;
use crate::flow::{HandleError, RunHandle, RunOptions, accept_event, accept_items, accept_signal};
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
        if let Some(reserved) = stage.filter(|s| s.is_empty() || *s == EVERY_STAGE) {
            // Reserved names: `None` is how every stage is addressed.
            return Err(HandleError::UnknownStage {
                run_id,
                stage: reserved.to_owned(),
            }
            .into());
        }
        let gate = self.resume_gate.read().await;
        if let Some(run) = self.live_run(run_id) {
            drop(gate);
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
        if stage.is_empty() || stage == EVERY_STAGE {
            let stage = stage.to_owned();
            return Err(HandleError::UnknownStage { run_id, stage }.into());
        }
        let payload = serde_json::to_value(event).map_err(|e| HandleError::EventRefused {
            run_id,
            stage: stage.to_owned(),
            reason: format!("does not encode as JSON: {e}"),
        })?;
        let gate = self.resume_gate.read().await;
        if let Some(run) = self.live_run(run_id) {
            drop(gate);
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
        self.accept_entries(run_id, vec![entry], event).await?;
        Ok(id)
    }

    /// Accepts entries for run `run_id` straight into the journal.
    async fn accept_entries(
        &self,
        run_id: Uuid,
        entries: Vec<InboxEntry>,
        event: &'static str,
    ) -> Result<(), RuntimeError> {
        match self.journal().accept_inbox(entries).await {
            Ok(()) => Ok(()),
            Err(StoreError::RunNotFound(_)) => Err(RuntimeError::UnknownRun(run_id)),
            Err(StoreError::RunEnded { .. }) => Err(HandleError::Finished { run_id, event }.into()),
            Err(other) => Err(RuntimeError::Store(other)),
        }
    }
}

/// Where [`Runtime::replay_dead_letters`] sends the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayInto {
    /// The run the dead letters came from (it must not have ended).
    SameRun,
    /// Another run with a stage of the same name (it must not have ended).
    Run(Uuid),
    /// A new run of the flow the dead letters came from (registered here),
    /// whose stage has the items before it starts.
    NewRun,
}

/// What [`Runtime::replay_dead_letters`] did.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The run the items went to.
    pub run_id: Uuid,
    /// Their inbox ids, in the order of the dead letters.
    pub ids: Vec<Uuid>,
    /// The run's handle, if it is live here (always for a new run).
    pub run: Option<RunHandle>,
}

impl Runtime {
    /// Replays the dead letters stage `stage` of run `from` recorded: their
    /// items go into the input of the stage of the same name of the run
    /// `into` says, through its inbox (durable: a crash before the stage is
    /// done with one hands it over again when the run resumes). Each is
    /// taken as an item of its own before the next batch from upstream;
    /// its entry is settled once the stage is done with it (handled, or
    /// dead-lettered again).
    ///
    /// Only a transform or sink of a flow built with
    /// [`serde_items`](crate::flow::FlowBuilder::serde_items) takes replayed
    /// items, whose dead letters hold them as JSON. Refused, and nothing is
    /// replayed, with [`RuntimeError::NothingToReplay`] if the stage
    /// dead-lettered nothing or an item was not kept; for a run live here,
    /// with [`HandleError::EventRefused`] (as [`RuntimeError::Input`]) if an
    /// item does not decode as its items or the stage takes none; as
    /// [`send_signal`](Self::send_signal) is for an ended run. A new run, or
    /// one not live here, checks its items as it starts or resumes: one its
    /// stage cannot take is settled undeliverable (and ledgered) then, as is
    /// every item still waiting when the stage ends.
    pub async fn replay_dead_letters(
        &self,
        from: Uuid,
        stage: &str,
        into: ReplayInto,
    ) -> Result<Replayed, RuntimeError> {
        let letters = self.journal().list_dead_letters(from).await?;
        let letters: Vec<_> = letters.into_iter().filter(|d| d.stage == stage).collect();
        let unkept = letters
            .iter()
            .filter(|d| d.item.get("unserializable").is_some())
            .count();
        if letters.is_empty() || unkept > 0 {
            return Err(RuntimeError::NothingToReplay {
                run_id: from,
                stage: stage.to_owned(),
                unkept,
            });
        }
        let items: Vec<Value> = letters.into_iter().map(|d| d.item).collect();
        let target = match into {
            ReplayInto::SameRun => from,
            ReplayInto::Run(id) => id,
            ReplayInto::NewRun => return self.replay_into_new_run(from, stage, items).await,
        };
        let gate = self.resume_gate.read().await;
        if let Some(run) = self.live_run(target) {
            drop(gate);
            let index = run.stage_index(stage)?;
            let ids = accept_items(&run, index, items).await?;
            return Ok(Replayed {
                run_id: target,
                ids,
                run: Some(run),
            });
        }
        let entries: Vec<InboxEntry> = items
            .into_iter()
            .map(|payload| InboxEntry::new(target, stage, InboxMessage::Item { payload }))
            .collect();
        let ids = entries.iter().map(|e| e.id).collect();
        self.accept_entries(target, entries, "items").await?;
        Ok(Replayed {
            run_id: target,
            ids,
            run: None,
        })
    }

    async fn replay_into_new_run(
        &self,
        from: Uuid,
        stage: &str,
        items: Vec<Value>,
    ) -> Result<Replayed, RuntimeError> {
        let source = self
            .journal()
            .get_run(from)
            .await?
            .ok_or(RuntimeError::UnknownRun(from))?;
        let placeholder = Uuid::nil();
        let entries: Vec<InboxEntry> = items
            .into_iter()
            .map(|payload| InboxEntry::new(placeholder, stage, InboxMessage::Item { payload }))
            .collect();
        let ids = entries.iter().map(|e| e.id).collect();
        let run = self
            .start_with_inbox(&source.controller_id, RunOptions::default(), entries)
            .await?;
        Ok(Replayed {
            run_id: run.run_id(),
            ids,
            run: Some(run),
        })
    }
}
