//! Items replayed into a stage's input: dead letters (of this run or
//! another) sent again through the run's inbox. Each travels with its inbox
//! id and is taken as a batch of its own, before the next batch from
//! upstream; once the stage is done with it (handled, or dead-lettered
//! again) its id is settled. It all happens at batch boundaries: the
//! per-item path does not change.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Turns a stored item back into an item.
pub(crate) type ItemDecoder<T> = fn(&Value) -> Result<T, String>;

/// The decoder [`FlowBuilder::serde_items`](crate::flow::FlowBuilder::serde_items) installs.
pub(crate) fn serde_decode<T: DeserializeOwned>(item: &Value) -> Result<T, String> {
    T::deserialize(item)
        .map_err(|e| format!("does not decode as `{}`: {e}", std::any::type_name::<T>()))
}

/// Whether an item decodes (why not, if not).
type Check = Box<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;
/// Decodes an item and queues it with its inbox id.
type Queue = Box<dyn Fn(Uuid, &Value) -> Result<(), String> + Send + Sync>;

/// The flow's end of a stage's replay queue.
pub(crate) struct ReplayPort {
    check: Check,
    queue: Queue,
}

impl ReplayPort {
    /// Whether `item` decodes as the stage's items (why not, if not).
    pub(crate) fn check(&self, item: &Value) -> Result<(), String> {
        (self.check)(item)
    }

    /// Decodes `item` and queues it, with its inbox id (why not, if not:
    /// it does not decode, or the stage's ports are gone).
    pub(crate) fn queue(&self, id: Uuid, item: &Value) -> Result<(), String> {
        (self.queue)(id, item)
    }
}

/// A shared [`ReplayPort`].
pub(crate) type ItemReplay = Arc<ReplayPort>;

/// The stage's end: replayed items waiting, the one in hand, those done.
#[derive(Debug)]
pub(crate) struct Replays<T> {
    queue: mpsc::UnboundedReceiver<(Uuid, T)>,
    /// The replayed item in the stage's batch (a batch of one) until the
    /// stage is done with it.
    in_hand: Option<Uuid>,
    /// Replayed items the stage is done with, to settle.
    done: Vec<Uuid>,
}

/// A stage's replay queue: the flow's end and the stage's.
pub(crate) fn replay_queue<T: Send + 'static>(decode: ItemDecoder<T>) -> (ItemReplay, Replays<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let replay = Arc::new(ReplayPort {
        check: Box::new(move |item| decode(item).map(drop)),
        queue: Box::new(move |id, item| {
            let item = decode(item)?;
            tx.send((id, item))
                .map_err(|_| "the stage's input is gone".to_owned())
        }),
    });
    let replays = Replays {
        queue: rx,
        in_hand: None,
        done: Vec::new(),
    };
    (replay, replays)
}

impl<T> Replays<T> {
    /// Called when the stage's batch is worked off: the replayed item in
    /// it, if any, is done; the next replayed item, if one waits.
    pub(crate) fn next(&mut self) -> Option<T> {
        if let Some(id) = self.in_hand.take() {
            self.done.push(id);
        }
        let (id, item) = self.queue.try_recv().ok()?;
        self.in_hand = Some(id);
        Some(item)
    }

    /// Waits for a replayed item (the batch is worked off); cancel-safe.
    pub(crate) async fn wait(&mut self) -> Option<T> {
        if let Some(id) = self.in_hand.take() {
            self.done.push(id);
        }
        let (id, item) = self.queue.recv().await?;
        self.in_hand = Some(id);
        Some(item)
    }

    /// The replayed items done with since the last call; `batch_done`:
    /// the stage's batch is worked off, so the item in hand is done too.
    pub(crate) fn take_done(&mut self, batch_done: bool) -> Vec<Uuid> {
        if batch_done && let Some(id) = self.in_hand.take() {
            self.done.push(id);
        }
        std::mem::take(&mut self.done)
    }

    /// Forgets the item in hand without settling it (an abandoned stage
    /// dropped it: it stays unsettled in the inbox).
    pub(crate) fn drop_in_hand(&mut self) {
        self.in_hand = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn replayed_items_come_one_at_a_time_and_are_done_when_the_next_is_asked_for() {
        let (replay, mut replays) = replay_queue::<u64>(serde_decode::<u64>);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        replay.queue(a, &json!(1)).unwrap();
        replay.queue(b, &json!(2)).unwrap();
        assert!(replay.check(&json!(3)).is_ok());
        assert!(replay.check(&json!("x")).is_err());
        let refused = replay.queue(Uuid::now_v7(), &json!("x")).unwrap_err();
        assert!(refused.contains("u64"), "{refused}");
        assert_eq!(replays.next(), Some(1));
        assert!(replays.take_done(false).is_empty(), "1 is still in hand");
        assert_eq!(replays.wait().await, Some(2));
        assert_eq!(replays.take_done(false), [a]);
        assert_eq!(replays.take_done(true), [b]);
        assert_eq!(replays.next(), None);
        assert!(replays.take_done(true).is_empty());
        drop(replays);
        assert!(replay.queue(Uuid::now_v7(), &json!(3)).is_err());
    }
}
