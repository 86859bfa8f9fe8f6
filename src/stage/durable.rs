//! Durable operator input, the stage's side: an event accepted into the
//! run's journal inbox travels to the stage with its inbox id, and the stage
//! settles it (reports it handled) once its logic has taken it, so that a
//! crash in between re-delivers it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use uuid::Uuid;

use super::events::EventPort;
use super::supervisor::{Reporter, StageReport};

/// A user event that was accepted durably: it is in the run's journal until
/// its stage has handled it, and is handed to the stage again after a crash
/// if it had not been (at-least-once). A stage whose handling must not
/// happen twice deduplicates by `id`.
///
/// A stage declares such events with
/// [`FlowBuilder::with_durable_events`](crate::flow::FlowBuilder::with_durable_events)
/// and implements [`OnEvent<Durable<E>>`](super::OnEvent); senders use
/// [`RunHandle::durable_stage_events`](crate::flow::RunHandle::durable_stage_events)
/// or, for a run that is not live in this process,
/// [`Runtime::send_event`](crate::runtime::Runtime::send_event).
#[derive(Debug, Clone, PartialEq)]
pub struct Durable<E> {
    /// The event's id in the run's inbox, as its sender was told.
    pub id: Uuid,
    /// The event.
    pub event: E,
}

/// One user event in a stage's queue, with its inbox id if it was accepted
/// durably.
#[derive(Debug)]
pub(crate) struct Envelope<Ev> {
    pub(crate) event: Ev,
    pub(crate) inbox: Option<Uuid>,
}

impl<Ev> Envelope<Ev> {
    /// An event sent without the journal.
    pub(crate) fn plain(event: Ev) -> Self {
        Envelope { event, inbox: None }
    }
}

/// Sends one decoded, re-delivered event into the queue; `false` if the
/// queue is closed.
pub(crate) type Delivery = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Decodes an inbox entry's JSON as the stage's durable event type and
/// returns the send of it (the error says why it does not decode).
pub(crate) type Redeliver = fn(&EventPort, Uuid, &Value) -> Result<Delivery, Undeliverable>;

/// Why an event cannot be handed to its stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Undeliverable {
    /// The stage closed its queue (it completed or was cancelled).
    #[error("the stage takes no more events")]
    Closed,
    /// The event is not one the stage takes.
    #[error("{0}")]
    Refused(String),
}

/// The [`Redeliver`] of a stage taking `Durable<E>`.
pub(crate) fn redeliver_json<E>(
    port: &EventPort,
    id: Uuid,
    payload: &Value,
) -> Result<Delivery, Undeliverable>
where
    E: DeserializeOwned + Send + 'static,
{
    let type_name = std::any::type_name::<E>();
    let event = E::deserialize(payload)
        .map_err(|e| Undeliverable::Refused(format!("does not decode as `{type_name}`: {e}")))?;
    let sender = port
        .sender::<Durable<E>>()
        .ok_or_else(|| Undeliverable::Refused(format!("the stage does not take `{type_name}`")))?;
    let doorbell = port.doorbell.clone();
    // Counted from now (the flow journals the event, then forwards it) until
    // it is in the queue, or the delivery is dropped; refused if the stage
    // is closing its queue (decided under the same lock, so a counted
    // delivery is always waited for), or already closed it (a cancel).
    let transit = port.in_transit.start().ok_or(Undeliverable::Closed)?;
    if sender.is_closed() {
        return Err(Undeliverable::Closed);
    }
    Ok(Box::pin(async move {
        let _transit = transit;
        let envelope = Envelope {
            event: Durable { id, event },
            inbox: Some(id),
        };
        let sent = sender.send(envelope).await.is_ok();
        if sent {
            doorbell.notify_one();
        }
        sent
    }))
}

/// How many durable events are on their way into a stage's queue: decoded
/// for the flow's forwarder, not yet queued (the forwarder waits while the
/// queue is full, e.g. while the stage ignores events). A completing stage
/// takes them before it closes its queue: closed, their sends would fail
/// and accepted events be settled undeliverable instead of handled.
#[derive(Debug, Default)]
pub(crate) struct InTransit {
    /// Deliveries on their way, and whether the stage is closing its queue:
    /// one lock, so a delivery is either counted before the stage decides
    /// to close (which then waits for it) or refused.
    state: Mutex<Transit>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Transit {
    count: usize,
    closing: bool,
}

impl InTransit {
    fn state(&self) -> std::sync::MutexGuard<'_, Transit> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one delivery until the guard drops; `None` once the stage
    /// is closing its queue.
    fn start(self: &Arc<Self>) -> Option<TransitGuard> {
        let mut state = self.state();
        if state.closing {
            return None;
        }
        state.count += 1;
        Some(TransitGuard(self.clone()))
    }

    /// If no delivery is on its way, marks the queue closing (no delivery
    /// starts from then on) and says so.
    pub(crate) fn close_if_empty(&self) -> bool {
        let mut state = self.state();
        if state.count == 0 {
            state.closing = true;
        }
        state.closing
    }

    /// Resolves when a delivery ends; `enable` it before
    /// [`close_if_empty`](Self::close_if_empty), so that no ending is missed.
    pub(crate) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }
}

/// One delivery on its way; dropped once its event is queued (or its send
/// failed, or it was dropped unsent).
struct TransitGuard(Arc<InTransit>);

impl Drop for TransitGuard {
    fn drop(&mut self) {
        self.0.state().count -= 1;
        self.0.changed.notify_waiters();
    }
}

/// A stage's report that its logic took an inbox entry (or could not).
#[derive(Debug)]
pub(crate) struct Settlement {
    /// The stage's index in its flow.
    pub(crate) stage: usize,
    /// The entry.
    pub(crate) id: Uuid,
    /// `None`: handled; `Some(why)`: its handling failed.
    pub(crate) undeliverable: Option<String>,
}

/// How a stage settles the inbox entries its logic takes.
#[derive(Clone)]
pub(crate) struct Settler {
    pub(crate) stage: usize,
    pub(crate) report: Reporter,
}

/// Settles an inbox entry undeliverable when dropped before
/// [`handled`](Self::handled): its handling panicked, or was cut short by a
/// kill, so it is not handed to the restarted stage again (a poisonous
/// event must not loop through restarts). A crash runs no drop: then the
/// entry is handed over again on resume.
pub(crate) struct Handling<'a> {
    settler: &'a Settler,
    id: Option<Uuid>,
}

impl Handling<'_> {
    /// The logic took the entry: settles it (undeliverable if `failed`).
    pub(crate) fn handled(mut self, failed: Option<String>) {
        if let Some(id) = self.id.take() {
            self.settler.settle(id, failed);
        }
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let why = "its handling did not finish (it panicked or the stage was stopped)";
            self.settler.settle(id, Some(why.to_owned()));
        }
    }
}

impl Settler {
    /// Watches the handling of inbox entry `id`, if any (see [`Handling`]).
    pub(crate) fn handling(&self, id: Option<Uuid>) -> Handling<'_> {
        Handling { settler: self, id }
    }

    /// Reports that the stage waits durably (`Some(what for)`) or no
    /// longer does; the flow records the run `Waiting` while a stage waits.
    pub(crate) fn waiting(&self, token: u64, wait: Option<Value>) {
        let stage = self.stage;
        let report = StageReport::Waiting(super::StageWait { stage, token, wait });
        if !(self.report)(report) {
            tracing::debug!(stage, "flow gone; the stage's wait is not reported");
        }
    }

    /// Reports `id` settled; the flow records it. Not waited for: a
    /// settlement lost to a crash only means the entry is handed over again.
    pub(crate) fn settle(&self, id: Uuid, undeliverable: Option<String>) {
        let settled = (self.report)(StageReport::Settled(Settlement {
            stage: self.stage,
            id,
            undeliverable,
        }));
        if !settled {
            tracing::debug!(%id, "flow gone; inbox entry left to be re-delivered");
        }
    }
}
