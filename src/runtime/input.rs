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
        // `None` is how every stage is addressed.
        stage.map(|s| not_reserved(run_id, s)).transpose()?;
        let _gate = match self.route(run_id).await {
            Route::Live(run) => {
                let index = stage.map(|s| run.stage_index(s)).transpose()?;
                return Ok(accept_signal(&run, index, name.to_owned(), payload).await?);
            }
            Route::Journal(gate) => gate,
        };
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
        not_reserved(run_id, stage)?;
        let payload = serde_json::to_value(event).map_err(|e| HandleError::EventRefused {
            run_id,
            stage: stage.to_owned(),
            reason: format!("does not encode as JSON: {e}"),
        })?;
        let _gate = match self.route(run_id).await {
            Route::Live(run) => {
                let index = run.stage_index(stage)?;
                return Ok(accept_event(&run, index, payload).await?);
            }
            Route::Journal(gate) => gate,
        };
        let message = InboxMessage::Event { payload };
        self.accept_offline(run_id, stage, message, "a durable event")
            .await
    }

    /// Where input for run `run_id` goes: to its flow, if it is live here,
    /// or into the journal, written under the returned resume gate (see
    /// `Runtime::resume_gate`).
    async fn route(&self, run_id: Uuid) -> Route<'_> {
        let gate = self.resume_gate.read().await;
        let live = self
            .launcher
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .find_live(run_id);
        live.map_or(Route::Journal(gate), Route::Live)
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

/// Where [`Runtime::route`] sends a run's input.
enum Route<'a> {
    /// To the run's flow, live here.
    Live(RunHandle),
    /// Into the journal, under the resume gate.
    Journal(tokio::sync::RwLockReadGuard<'a, ()>),
}

/// Refuses input addressed to a reserved stage name (`*`, or empty).
fn not_reserved(run_id: Uuid, stage: &str) -> Result<(), HandleError> {
    if stage.is_empty() || stage == EVERY_STAGE {
        let stage = stage.to_owned();
        return Err(HandleError::UnknownStage { run_id, stage });
    }
    Ok(())
}

/// One `Item` entry of run `run_id` per item, for `stage`, and their ids.
fn item_entries(run_id: Uuid, stage: &str, items: Vec<Value>) -> (Vec<InboxEntry>, Vec<Uuid>) {
    let entries: Vec<InboxEntry> = items
        .into_iter()
        .map(|payload| InboxEntry::new(run_id, stage, InboxMessage::Item { payload }))
        .collect();
    let ids = entries.iter().map(|e| e.id).collect();
    (entries, ids)
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
        let _gate = match self.route(target).await {
            Route::Live(run) => {
                let index = run.stage_index(stage)?;
                let ids = accept_items(&run, index, items).await?;
                return Ok(Replayed {
                    run_id: target,
                    ids,
                    run: Some(run),
                });
            }
            Route::Journal(gate) => gate,
        };
        let (entries, ids) = item_entries(target, stage, items);
        self.accept_entries(target, entries, "replayed items")
            .await?;
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
        // The new run's id is set as it is created. It has the source run's
        // input (not its key, which the source run may still hold).
        let (entries, ids) = item_entries(Uuid::nil(), stage, items);
        let options = RunOptions::new().input(source.input.clone());
        let run = self
            .start_with_inbox(&source.controller_id, options, entries)
            .await?;
        Ok(Replayed {
            run_id: run.run_id(),
            ids,
            run: Some(run),
        })
    }
}
