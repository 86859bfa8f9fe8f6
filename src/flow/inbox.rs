//! The run's inbox, the flow's side: operator input (signals and durable
//! stage events) is accepted into the journal before any stage sees it,
//! handed to its stage with its inbox id, and settled once the stage's
//! logic took it; a recovered run is handed every entry still unsettled.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::actor::FlowMsg;
use super::context::FlowCtx;
use super::control::HandleError;
use super::record::{self, RecordError};
use crate::records::{InboxEntry, InboxMessage};
use crate::stage::StageSignal;
use crate::stage::durable::{Delivery, Settlement, Undeliverable};
use crate::store::Store;

pub(crate) use crate::records::EVERY_STAGE;

/// Why a stage cannot take replayed items.
const NO_REPLAY: &str = "takes no replayed items (only a transform or sink of a flow built with \
     `serde_items` does)";

/// Re-delivered events on their way into one stage's queue, in order.
pub(crate) type Forwarder = mpsc::UnboundedSender<(Uuid, Delivery)>;

impl FlowCtx {
    /// Accepts a signal for stage `only`, or for every stage not done, into
    /// the inbox, then sends it to them (a stage between a failure and its
    /// restart gets it when it restarts). Its inbox id.
    pub(crate) async fn accept_signal(
        &mut self,
        only: Option<usize>,
        name: &str,
        payload: Value,
    ) -> Result<Uuid, RecordError> {
        let targets = self.not_done(only);
        let message = InboxMessage::Signal {
            name: name.to_owned(),
            payload: payload.clone(),
        };
        let template = InboxEntry::new(self.run.id, EVERY_STAGE, message);
        let id = template.id;
        let entries = self.per_stage(&targets, &template);
        let stage = only.map(|i| self.stages[i].name.clone());
        let audit =
            json!({ "name": name, "payload": payload, "id": id.to_string(), "stage": stage });
        self.handed
            .extend(entries.iter().map(|e| (e.id, e.stage.clone())));
        record::accept_inbox(self.journal(), self.run.id, entries, ("signal", audit)).await?;
        let signal = Arc::new(StageSignal {
            name: name.to_owned(),
            payload,
            id: Some(id),
        });
        for i in targets {
            self.stages[i].send_signal(signal.clone()).await;
        }
        Ok(id)
    }

    /// Accepts a durable event (as JSON) for stage `index` into the inbox
    /// and forwards it into the stage's queue. Its inbox id.
    pub(crate) async fn accept_event(
        &mut self,
        index: usize,
        payload: Value,
    ) -> Result<Uuid, HandleError> {
        let run_id = self.run.id;
        let stage = match self.stages.get(index) {
            Some(stage) if !stage.done() => stage,
            _ => return Err(self.stage_not_running(index)),
        };
        let entry = InboxEntry::new(run_id, stage.name.clone(), InboxMessage::Event { payload });
        let id = entry.id;
        // Decoded before it is journaled: an event its stage cannot take is
        // refused to its sender, not accepted and then dropped.
        let delivery = match stage.redeliver(id, entry.message.payload()) {
            None => {
                return Err(HandleError::EventType {
                    run_id,
                    stage: stage.name.clone(),
                    declared: "no durable events".to_owned(),
                    asked: "a durable event",
                });
            }
            Some(Ok(delivery)) => delivery,
            Some(Err(Undeliverable::Closed)) => return Err(self.stage_not_running(index)),
            Some(Err(Undeliverable::Refused(reason))) => {
                return Err(HandleError::EventRefused {
                    run_id,
                    stage: stage.name.clone(),
                    reason,
                });
            }
        };
        let audit = json!({ "id": id.to_string(), "stage": stage.name });
        record::accept_inbox(
            self.journal(),
            run_id,
            vec![entry],
            ("event_accepted", audit),
        )
        .await
        .map_err(|e| not_recorded(run_id, "a durable event", e))?;
        self.handed.insert((id, self.stages[index].name.clone()));
        self.forward(index, id, delivery);
        Ok(id)
    }

    /// Accepts items (as JSON) replayed into stage `index`'s input, all or
    /// none, then queues them there; their inbox ids, in order.
    pub(crate) async fn accept_items(
        &mut self,
        index: usize,
        items: Vec<Value>,
    ) -> Result<Vec<Uuid>, HandleError> {
        let run_id = self.run.id;
        let stage = match self.stages.get(index) {
            Some(stage) if !stage.done() => stage,
            _ => return Err(self.stage_not_running(index)),
        };
        let refused = |reason: String| HandleError::EventRefused {
            run_id,
            stage: stage.name.clone(),
            reason,
        };
        let Some(replay) = stage.replay.clone() else {
            return Err(refused(NO_REPLAY.to_owned()));
        };
        // Checked before any is journaled: all or none.
        if let Some(why) = items.iter().find_map(|item| replay.check(item).err()) {
            return Err(refused(why));
        }
        let entries: Vec<InboxEntry> = items
            .into_iter()
            .map(|payload| {
                InboxEntry::new(run_id, stage.name.clone(), InboxMessage::Item { payload })
            })
            .collect();
        let audit = json!({ "stage": stage.name, "items": entries.len() });
        record::accept_inbox(
            self.journal(),
            run_id,
            entries.clone(),
            ("items_replayed", audit),
        )
        .await
        .map_err(|e| not_recorded(run_id, "replayed items", e))?;
        self.stages[index].inbox_used = true;
        let name = self.stages[index].name.clone();
        self.handed
            .extend(entries.iter().map(|e| (e.id, name.clone())));
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Err(why) = replay.queue(entry.id, entry.message.payload()) {
                // Checked by the caller before it asked; a race with the
                // stage's end leaves the entry to be settled here.
                let name = self.stages[index].name.clone();
                record::settle_inbox(self.journal(), run_id, entry.id, &name, Some(why))
                    .await
                    .map_err(|e| not_recorded(run_id, "replayed items", e))?;
            }
            ids.push(entry.id);
        }
        Ok(ids)
    }

    /// Hands `delivery` to stage `index`'s forwarder, which sends its events
    /// one after the other (a full queue holds up only that stage's
    /// forwarder, never the flow actor) and reports one whose queue closed
    /// as undeliverable.
    pub(crate) fn forward(&mut self, index: usize, id: Uuid, delivery: Delivery) {
        let myself = self.myself.clone();
        let stage = &mut self.stages[index];
        stage.inbox_used = true;
        let forwarder = stage.forwarder.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(Uuid, Delivery)>();
            let task = tokio::spawn(async move {
                while let Some((id, delivery)) = rx.recv().await {
                    if !delivery.await {
                        let settled = Settlement {
                            stage: index,
                            id,
                            undeliverable: Some("the stage had ended".to_owned()),
                        };
                        let _ = myself.send_message(FlowMsg::Settled(settled));
                    }
                }
            });
            stage.forwarding = Some(task);
            tx
        });
        // The receiver lives as long as the stage runtime that holds both.
        let _ = forwarder.send((id, delivery));
    }

    /// Records that stage `s.stage` took (or could not take) inbox entry
    /// `s.id`. A settlement that cannot be recorded leaves the entry to be
    /// handed over again after a restart (at-least-once), so it is traced,
    /// not fatal.
    pub(crate) async fn settle(&mut self, s: Settlement) {
        let Some(stage) = self.stages.get_mut(s.stage) else {
            return;
        };
        stage.forget_signal(s.id);
        let name = stage.name.clone();
        self.handed.remove(&(s.id, name.clone()));
        let run_id = self.run.id;
        if let Err(error) =
            record::settle_inbox(self.journal(), run_id, s.id, &name, s.undeliverable).await
        {
            tracing::warn!(%run_id, stage = %name, id = %s.id, %error, "settling an inbox entry failed; it will be handed over again after a restart");
        }
    }

    /// Hands a recovered run the inbox entries still unsettled: signals wait
    /// for their stage's start, durable events go into their stage's queue
    /// in the order they were accepted; an entry no stage can take is
    /// settled undeliverable (and goes into the failure ledger). Read again
    /// (input journaled by another process), it skips what this flow
    /// actor handed over already.
    pub(crate) async fn load_inbox(&mut self) -> Result<(), RecordError> {
        let run_id = self.run.id;
        let entries = self
            .journal()
            .list_inbox(run_id)
            .await
            .map_err(|source| RecordError::Store { run_id, source })?;
        let fresh =
            |e: &InboxEntry| e.settled.is_none() && !self.handed.contains(&(e.id, e.stage.clone()));
        let entries: Vec<InboxEntry> = entries.into_iter().filter(fresh).collect();
        for entry in entries {
            if entry.stage == EVERY_STAGE {
                self.spread(entry).await?;
                continue;
            }
            let index = self.stages.iter().position(|s| s.name == entry.stage);
            let refused = match index {
                None => Some("the flow has no such stage".to_owned()),
                Some(i) if self.stages[i].done() => {
                    Some("the stage had completed before it was handed over".to_owned())
                }
                Some(i) => {
                    let refused = self.hand_over(i, &entry);
                    if refused.is_none() {
                        self.handed.insert((entry.id, entry.stage.clone()));
                    }
                    refused
                }
            };
            if let Some(why) = refused {
                record::settle_inbox(self.journal(), run_id, entry.id, &entry.stage, Some(why))
                    .await?;
            }
        }
        Ok(())
    }

    /// Settles undeliverable the inbox entries left unsettled by every stage
    /// that has ended (completed or abandoned) since the last sweep: nothing
    /// will take them (signals it kept, events and replayed items still
    /// queued, input accepted while it was finishing). Only stages that were
    /// handed input in this process are looked at (one inbox read per
    /// sweep). A sweep that cannot be recorded leaves them to the next
    /// resume, which settles them the same way.
    pub(crate) async fn sweep_inbox(&mut self) {
        let run_id = self.run.id;
        let mut ended = Vec::new();
        for stage in &mut self.stages {
            if !stage.done() || stage.inbox_swept || !stage.inbox_used {
                continue;
            }
            stage.inbox_swept = true;
            stage.forget_signals();
            let why = match &stage.abandoned {
                Some(_) => "the stage was abandoned before it took it",
                None => "the stage had completed before it took it",
            };
            ended.push((stage.name.clone(), why));
        }
        if ended.is_empty() {
            return;
        }
        let entries = match self.journal().list_inbox(run_id).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%run_id, %error, "reading the inbox to settle what ended stages left failed");
                return;
            }
        };
        for entry in entries.into_iter().filter(|e| e.settled.is_none()) {
            let Some((name, why)) = ended.iter().find(|(name, _)| *name == entry.stage) else {
                continue;
            };
            let why = Some((*why).to_owned());
            self.handed.remove(&(entry.id, name.to_string()));
            let settled = record::settle_inbox(self.journal(), run_id, entry.id, name, why).await;
            if let Err(error) = settled {
                tracing::warn!(%run_id, stage = %name, id = %entry.id, %error, "settling an inbox entry an ended stage left failed");
            }
        }
    }

    /// The stages not done: stage `only`, or every one.
    fn not_done(&self, only: Option<usize>) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&i| only.is_none_or(|o| o == i) && !self.stages[i].done())
            .collect()
    }

    /// `entry` once for each stage of `targets`, all with its id.
    fn per_stage(&self, targets: &[usize], entry: &InboxEntry) -> Vec<InboxEntry> {
        let for_stage = |i: &usize| InboxEntry {
            stage: self.stages[*i].name.clone(),
            ..entry.clone()
        };
        targets.iter().map(for_stage).collect()
    }

    /// Hands a recovered entry to stage `index`; why it cannot, if so.
    fn hand_over(&mut self, index: usize, entry: &InboxEntry) -> Option<String> {
        match &entry.message {
            InboxMessage::Signal { name, payload } => {
                self.stages[index].keep_signal(Arc::new(StageSignal {
                    name: name.clone(),
                    payload: payload.clone(),
                    id: Some(entry.id),
                }));
                None
            }
            InboxMessage::Event { payload } => {
                match self.stages[index].redeliver(entry.id, payload) {
                    None => Some("the stage takes no durable events".to_owned()),
                    Some(Ok(delivery)) => {
                        self.forward(index, entry.id, delivery);
                        None
                    }
                    Some(Err(why)) => Some(why.to_string()),
                }
            }
            InboxMessage::Item { payload } => match self.stages[index].replay.clone() {
                Some(replay) => {
                    self.stages[index].inbox_used = true;
                    replay.queue(entry.id, payload).err()
                }
                None => Some(NO_REPLAY.to_owned()),
            },
        }
    }

    /// Turns a run-wide signal accepted while the run was not live into one
    /// entry per stage not done (same id), settling the run-wide one, in one
    /// write, and hands them over.
    async fn spread(&mut self, entry: InboxEntry) -> Result<(), RecordError> {
        let run_id = self.run.id;
        let InboxMessage::Signal { name, payload } = entry.message.clone() else {
            let why = "only signals are addressed to every stage".to_owned();
            return record::settle_inbox(self.journal(), run_id, entry.id, EVERY_STAGE, Some(why))
                .await;
        };
        let targets = self.not_done(None);
        if targets.is_empty() {
            let why = "every stage had completed".to_owned();
            return record::settle_inbox(self.journal(), run_id, entry.id, EVERY_STAGE, Some(why))
                .await;
        }
        let entries = self.per_stage(&targets, &entry);
        self.handed
            .extend(entries.iter().map(|e| (e.id, e.stage.clone())));
        record::spread_inbox(self.journal(), run_id, entry.id, EVERY_STAGE, entries).await?;
        let signal = Arc::new(StageSignal {
            name,
            payload,
            id: Some(entry.id),
        });
        for i in targets {
            self.stages[i].keep_signal(signal.clone());
        }
        Ok(())
    }
}

/// A journal failure as the sender of an event sees it.
pub(crate) fn not_recorded(run_id: Uuid, event: &'static str, error: RecordError) -> HandleError {
    match error {
        RecordError::Store {
            source: crate::records::StoreError::RunEnded { .. },
            ..
        } => HandleError::Finished { run_id, event },
        other => HandleError::NotRecorded {
            run_id,
            event,
            reason: other.to_string(),
        },
    }
}
