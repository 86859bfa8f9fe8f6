//! A stage's ends of the data plane, kept across restarts.
//!
//! The pipes of a run are built once; each stage's ends ([`Ports`]) live in
//! a [`PortSlot`] owned by the flow. A running stage holds them through a
//! [`PortLease`], which puts them back when it is dropped — also when the
//! stage's actor fails or is killed — so a restarted stage carries on with
//! the same pipes: upstream never sees its downstream vanish, the items of
//! the batch being worked through, the item in hand (the one a failure
//! interrupted) and the items already emitted survive.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::dead_letter::{ItemEncoder, unserializable};
use super::logic::Emitter;
use super::pipe::{PipeReceiver, PipeSender};
use super::replay::Replays;
use crate::records::MAX_DEAD_LETTER_ERRORS;
use crate::supervise::BoxError;

/// A downstream stage went away while items were being sent to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a downstream stage is gone; {undelivered} item(s) undelivered")]
pub struct DownstreamGone {
    /// Items that could not be delivered.
    pub undelivered: usize,
}

/// What waiting for input found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Items are in the inbox.
    Ready,
    /// Every upstream finished and everything was received.
    Ended,
    /// The control doorbell rang: look at the control channel first.
    Interrupted,
}

/// One stage's ends of the data plane and its item counters.
#[derive(Debug)]
pub(crate) struct Ports<T: Send + 'static> {
    input: Option<PipeReceiver<T>>,
    /// The received batch being worked through.
    inbox: std::vec::IntoIter<T>,
    /// The item in hand, in front of the inbox: taken from it and not yet
    /// handled. A copy of what the logic was given stays here while an
    /// attempt runs, so a failed, panicked or killed attempt loses nothing.
    pub(super) held: Option<T>,
    /// The outbox's length when the held item was taken: what its failed
    /// attempts emitted lies beyond it (the outbox is not sent meanwhile).
    held_mark: usize,
    /// Failed attempts at the held item in this start (a restart gives the
    /// item the full retry policy again).
    failed_attempts: u32,
    /// Failed attempts at the held item in every start.
    pub(super) held_failures: u32,
    /// The errors of the held item's last failed attempts (at most
    /// [`MAX_DEAD_LETTER_ERRORS`]), for its dead letter.
    pub(super) held_errors: VecDeque<String>,
    /// How a dead letter keeps an item.
    pub(super) encode: ItemEncoder<T>,
    outputs: Vec<PipeSender<T>>,
    /// Items emitted and not yet sent.
    pub(crate) outbox: Emitter<T>,
    /// How many outputs (in order, all but the last) already hold a copy
    /// of the outbox's front item: kept here, not in a local of
    /// [`send_outbox`](Self::send_outbox), so that a send cut short (by a
    /// drain, or a kill) resumes the fan-out where it stopped.
    fanned: usize,
    pub(crate) items_in: u64,
    pub(crate) items_out: u64,
    /// Attempts at items after a failed one, in every start.
    pub(crate) retried: u64,
    /// Items replayed into this stage, if its flow can replay them.
    pub(crate) replays: Option<Replays<T>>,
}

impl<T: Send + 'static> Ports<T> {
    /// Ports connected to nothing, without allocating: what a lease leaves
    /// behind when it hands its ports back.
    fn detached() -> Self {
        Ports {
            input: None,
            inbox: Vec::new().into_iter(),
            held: None,
            held_mark: 0,
            failed_attempts: 0,
            held_failures: 0,
            held_errors: VecDeque::new(),
            encode: unserializable::<T>,
            outputs: Vec::new(),
            outbox: Emitter::new(0),
            fanned: 0,
            items_in: 0,
            items_out: 0,
            retried: 0,
            replays: None,
        }
    }
}

impl<T: Clone + Send + 'static> Ports<T> {
    pub(crate) fn new(
        input: Option<PipeReceiver<T>>,
        outputs: Vec<PipeSender<T>>,
        batch_size: usize,
        encode: ItemEncoder<T>,
    ) -> Self {
        Ports {
            input,
            inbox: Vec::new().into_iter(),
            held: None,
            held_mark: 0,
            failed_attempts: 0,
            held_failures: 0,
            held_errors: VecDeque::new(),
            encode,
            outputs,
            outbox: Emitter::new(batch_size),
            fanned: 0,
            items_in: 0,
            items_out: 0,
            retried: 0,
            replays: None,
        }
    }

    /// The replayed items this stage is done with since the last call.
    pub(crate) fn take_replayed(&mut self) -> Vec<uuid::Uuid> {
        let batch_done = !self.has_input();
        self.replays
            .as_mut()
            .map_or_else(Vec::new, |r| r.take_done(batch_done))
    }

    /// Whether items wait to be worked on (the held one or the inbox's).
    fn has_input(&self) -> bool {
        self.held.is_some() || self.inbox.len() > 0
    }

    /// The item to attempt next: the held one again if an attempt at it
    /// did not succeed (a retry: what that attempt emitted is dropped),
    /// else the inbox's next, counted in `items_in` and held until
    /// [`settle`](Self::settle). `None` once the inbox is empty.
    pub(crate) fn begin_attempt(&mut self) -> Option<T> {
        if let Some(item) = &self.held {
            self.retried += 1;
            self.outbox.truncate(self.held_mark);
            return Some(item.clone());
        }
        let item = self.inbox.next()?;
        self.items_in += 1;
        self.held = Some(item.clone());
        self.held_mark = self.outbox.len();
        self.failed_attempts = 0;
        self.held_failures = 0;
        self.held_errors.clear();
        Some(item)
    }

    /// Drops the held item and the inbox: for a stage that is abandoned,
    /// whose pending items have nowhere to go.
    pub(crate) fn drop_pending(&mut self) {
        self.held = None;
        self.inbox = Vec::new().into_iter();
        if let Some(replays) = self.replays.as_mut() {
            replays.drop_in_hand();
        }
    }

    /// The attempt at the held item succeeded: it is done with.
    pub(crate) fn settle(&mut self) {
        self.held = None;
        self.failed_attempts = 0;
        self.held_failures = 0;
        self.held_errors.clear();
    }

    /// The attempt at the held item failed with `error`; how many have in
    /// this start.
    pub(crate) fn attempt_failed(&mut self, error: &BoxError) -> u32 {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        self.held_failures = self.held_failures.saturating_add(1);
        if self.held_errors.len() == MAX_DEAD_LETTER_ERRORS {
            self.held_errors.pop_front();
        }
        self.held_errors.push_back(error.to_string());
        self.failed_attempts
    }

    /// Makes sure the inbox has items, waiting for the next batch if needed;
    /// the wait ends early (without losing anything) when `doorbell` rings.
    /// A replayed item goes first, as a batch of its own.
    pub(crate) async fn next_input(&mut self, doorbell: &Notify) -> Input {
        if self.has_input() {
            return Input::Ready;
        }
        if let Some(item) = self.replays.as_mut().and_then(Replays::next) {
            self.inbox = vec![item].into_iter();
            return Input::Ready;
        }
        let Some(rx) = self.input.as_mut() else {
            return Input::Ended;
        };
        let replayed = async {
            match self.replays.as_mut() {
                Some(replays) => replays.wait().await,
                None => std::future::pending().await,
            }
        };
        // A batch that is there is taken even if the doorbell rang: the
        // bell ends a wait (the control channel is looked at between units
        // of work anyway), and a stale ring must not cost a unit of work.
        tokio::select! {
            biased;
            batch = rx.recv_batch() => match batch {
                Some(batch) => {
                    self.inbox = batch.into_iter();
                    Input::Ready
                }
                None => Input::Ended,
            },
            Some(item) = replayed => {
                self.inbox = vec![item].into_iter();
                Input::Ready
            }
            () = doorbell.notified() => Input::Interrupted,
        }
    }

    /// Resolves once the stage has no input left to work through: every
    /// upstream finished and every item was received and taken from the
    /// inbox (at once for a stage without input). Batches that arrive
    /// meanwhile wait in the inbox. Cancel-safe.
    pub(crate) async fn input_end(&mut self) {
        loop {
            if self.has_input() {
                return std::future::pending().await;
            }
            if let Some(item) = self.replays.as_mut().and_then(Replays::next) {
                self.inbox = vec![item].into_iter();
                continue;
            }
            let Some(rx) = self.input.as_mut() else {
                return;
            };
            match rx.recv_batch().await {
                Some(batch) => self.inbox = batch.into_iter(),
                None => return,
            }
        }
    }

    /// Sends every emitted item to every downstream (fan-out clones it),
    /// waiting while a downstream pipe is full, and flushes partial batches.
    ///
    /// Cancel-safe (a drain drops a source's pending send, a one-for-all
    /// restart kills a stage mid-send): each output takes its copy of an
    /// item synchronously, and the fan-out cursor moves past it before the
    /// send awaits room, so a send resumed after a cancel goes on with the
    /// next output; the item leaves the outbox as it is handed to the last
    /// one. Nothing is lost and nothing is delivered twice.
    pub(crate) async fn send_outbox(&mut self) -> Result<(), DownstreamGone> {
        let Ports {
            outputs,
            outbox,
            fanned,
            items_out,
            ..
        } = self;
        let Some((last, rest)) = outputs.split_last_mut() else {
            outbox.clear();
            return Ok(());
        };
        while !outbox.is_empty() {
            while let Some(tx) = rest.get_mut(*fanned) {
                // No borrow of the outbox lives across the await (`T` need not be `Sync`).
                let Some(copy) = outbox.front().cloned() else {
                    break;
                };
                tx.push(copy);
                *fanned += 1;
                if let Err(closed) = tx.flush_if_full().await {
                    // The refused batch ends with this output's copy of the
                    // front item, which is still in the outbox.
                    return Err(DownstreamGone {
                        undelivered: closed.undelivered.len().saturating_sub(1) + outbox.len(),
                    });
                }
            }
            let Some(item) = outbox.pop() else { break };
            *fanned = 0;
            *items_out += 1;
            last.push(item);
            if let Err(closed) = last.flush_if_full().await {
                return Err(lost_on_last(
                    items_out,
                    closed.undelivered.len(),
                    outbox.len(),
                ));
            }
        }
        // A partial batch goes now too: a slow source or a selective
        // transform must not hold items back until a batch fills. Full
        // batches went out above, so a busy pipeline pays nothing here.
        for tx in rest.iter_mut() {
            if let Err(closed) = tx.flush().await {
                return Err(DownstreamGone {
                    undelivered: closed.undelivered.len(),
                });
            }
        }
        if let Err(closed) = last.flush().await {
            return Err(lost_on_last(items_out, closed.undelivered.len(), 0));
        }
        Ok(())
    }

    /// Flushes and closes every output, in order: downstream sees the end
    /// of input once all of its upstreams did this. On a failure the
    /// outputs not reached yet stay, so a restarted stage still has them.
    pub(crate) async fn finish_outputs(&mut self) -> Result<(), DownstreamGone> {
        while !self.outputs.is_empty() {
            let tx = self.outputs.remove(0);
            if let Err(closed) = tx.finish().await {
                let undelivered = closed.undelivered.len();
                if self.outputs.is_empty() {
                    return Err(lost_on_last(&mut self.items_out, undelivered, 0));
                }
                return Err(DownstreamGone { undelivered });
            }
        }
        Ok(())
    }

    /// Stops accepting input (upstream senders get an error) and drops the
    /// outputs: what a cancelled stage does so that nobody waits on it.
    pub(crate) fn abandon(&mut self) {
        if let Some(rx) = self.input.as_mut() {
            rx.close();
        }
        self.outputs.clear();
        self.outbox.clear();
        self.fanned = 0;
    }
}

/// The error for items the last output buffered and could not deliver,
/// plus `queued` items still in the outbox. An item counts in `items_out`
/// when the last output takes it (every other output took its copy
/// first), so the ones the last output's downstream refused are taken back
/// out: `items_out` counts the items handed on by the last output.
fn lost_on_last(items_out: &mut u64, lost: usize, queued: usize) -> DownstreamGone {
    *items_out = items_out.saturating_sub(lost as u64);
    DownstreamGone {
        undelivered: lost + queued,
    }
}

/// Where a stage's [`Ports`] wait between stage generations.
#[derive(Debug)]
pub(crate) struct PortSlot<T: Send + 'static> {
    ports: Mutex<Option<Ports<T>>>,
    returned: Notify,
}

impl<T: Send + 'static> PortSlot<T> {
    pub(crate) fn new(ports: Ports<T>) -> Arc<Self> {
        Arc::new(PortSlot {
            ports: Mutex::new(Some(ports)),
            returned: Notify::new(),
        })
    }

    /// Takes the ports, waiting until a previous holder has put them back.
    /// A lease begins a start of the stage: the held item, if any, gets
    /// the full retry policy again.
    pub(crate) async fn lease(self: &Arc<Self>) -> PortLease<T> {
        loop {
            let notified = self.returned.notified();
            if let Some(mut ports) = self.take() {
                ports.failed_attempts = 0;
                return PortLease {
                    ports,
                    slot: self.clone(),
                };
            }
            notified.await;
        }
    }

    /// Takes the ports out, if no stage holds them.
    pub(crate) fn take(&self) -> Option<Ports<T>> {
        self.ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn put_back(&self, ports: Ports<T>) {
        *self.ports.lock().unwrap_or_else(PoisonError::into_inner) = Some(ports);
        self.returned.notify_waiters();
        self.returned.notify_one();
    }
}

/// A stage's hold on its ports; dropping it puts them back into the slot.
#[derive(Debug)]
pub(crate) struct PortLease<T: Send + 'static> {
    ports: Ports<T>,
    slot: Arc<PortSlot<T>>,
}

impl<T: Send + 'static> Deref for PortLease<T> {
    type Target = Ports<T>;
    fn deref(&self) -> &Ports<T> {
        &self.ports
    }
}

impl<T: Send + 'static> DerefMut for PortLease<T> {
    fn deref_mut(&mut self) -> &mut Ports<T> {
        &mut self.ports
    }
}

impl<T: Send + 'static> Drop for PortLease<T> {
    fn drop(&mut self) {
        let ports = std::mem::replace(&mut self.ports, Ports::detached());
        self.slot.put_back(ports);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::pipe::{PipeConfig, pipe};

    fn ports_to(batch_size: usize, outputs: usize) -> (Ports<u32>, Vec<PipeReceiver<u32>>) {
        let (senders, receivers) = (0..outputs)
            .map(|_| {
                pipe(PipeConfig {
                    batch_size,
                    capacity: 4,
                })
            })
            .unzip();
        (
            Ports::new(None, senders, 16, unserializable::<u32>),
            receivers,
        )
    }

    #[tokio::test]
    async fn items_lost_to_a_gone_downstream_are_not_counted_as_sent() {
        let (mut ports, mut receivers) = ports_to(2, 1);
        ports.outbox.push(1);
        ports.send_outbox().await.unwrap();
        assert_eq!(ports.items_out, 1);
        assert_eq!(receivers[0].recv_batch().await, Some(vec![1]));

        receivers[0].close();
        // 2 and 3 fill a batch the closed pipe refuses; 4 never leaves the outbox.
        for item in [2, 3, 4] {
            ports.outbox.push(item);
        }
        let gone = ports.send_outbox().await.unwrap_err();
        assert_eq!(gone, DownstreamGone { undelivered: 3 });
        assert_eq!(ports.items_out, 1);
    }

    #[tokio::test]
    async fn a_gone_first_output_counts_what_it_refused_and_what_waits() {
        let (mut ports, mut receivers) = ports_to(2, 2);
        receivers[0].close();
        for item in [1, 2, 3] {
            ports.outbox.push(item);
        }
        // Output 0 refuses its batch [1, 2] when 2 fills it: 1 (which
        // output 1 took) is lost to it, 2 and 3 still wait in the outbox.
        let gone = ports.send_outbox().await.unwrap_err();
        assert_eq!(gone, DownstreamGone { undelivered: 3 });
        assert_eq!(ports.outbox.len(), 2);
        assert_eq!(ports.items_out, 1);
    }

    #[tokio::test]
    async fn finishing_into_a_gone_last_output_takes_its_items_back_out() {
        let (mut ports, mut receivers) = ports_to(8, 2);
        ports.outbox.push(5);
        // A partial batch stays buffered when the send is cut short after
        // the items were handed over (as a drain does): simulated by
        // pushing to the outputs directly.
        let item = ports.outbox.pop().unwrap();
        ports.outputs[0].push(item);
        ports.outputs[1].push(item);
        ports.items_out += 1;
        receivers[1].close();
        let gone = ports.finish_outputs().await.unwrap_err();
        assert_eq!(gone, DownstreamGone { undelivered: 1 });
        assert_eq!(ports.items_out, 0);
        assert_eq!(receivers[0].recv_batch().await, Some(vec![5]));
    }

    #[tokio::test]
    async fn a_failed_finish_keeps_the_outputs_it_did_not_reach() {
        let (mut ports, mut receivers) = ports_to(8, 3);
        receivers[0].close();
        ports.outputs[0].push(1);
        let gone = ports.finish_outputs().await.unwrap_err();
        assert_eq!(gone, DownstreamGone { undelivered: 1 });
        assert_eq!(ports.outputs.len(), 2);
        ports.finish_outputs().await.unwrap();
        assert_eq!(receivers[1].recv_batch().await, None);
        assert_eq!(receivers[2].recv_batch().await, None);
    }

    #[tokio::test]
    async fn a_partial_batch_refused_at_the_end_is_not_counted_either() {
        let (mut ports, mut receivers) = ports_to(8, 2);
        receivers[1].close();
        ports.outbox.push(7);
        let gone = ports.send_outbox().await.unwrap_err();
        assert_eq!(gone, DownstreamGone { undelivered: 1 });
        assert_eq!(ports.items_out, 0);
        // The first output took its copy.
        assert_eq!(receivers[0].recv_batch().await, Some(vec![7]));
    }
}
