//! A stage's ends of the data plane, kept across restarts.
//!
//! The pipes of a run are built once; each stage's ends ([`Ports`]) live in
//! a [`PortSlot`] owned by the flow. A running stage holds them through a
//! [`PortLease`], which puts them back when it is dropped — also when the
//! stage's actor fails or is killed — so a restarted stage carries on with
//! the same pipes: upstream never sees its downstream vanish, the items of
//! the batch being worked through, the item in hand (the one a failure
//! interrupted) and the items already emitted survive.
//!
//! Items move a run at a time: a batch received whole is walked with a
//! cursor ([`Received`]), and emitted items go to each output as a slice (a
//! full batch to the last output is handed over without a copy).

use std::sync::Arc;

use tokio::sync::Notify;

use super::dead_letter::{ItemEncoder, unserializable};
use super::inlet::{Delivery, Inlet};
use super::logic::{Attempted, Emitter};
use super::pipe::PipeSender;
use super::received::{Attempt, Received};
use super::replay::Replays;
pub(crate) use super::slot::{PortLease, PortSlot};
use crate::checkpoint::link::CheckpointLink;
use crate::progress::StageCounters;
use crate::records::StageCheckpoint;
use crate::supervise::BoxError;

/// A downstream stage went away while items were being sent to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a downstream stage is gone; {undelivered} item(s) undelivered")]
pub struct DownstreamGone {
    /// Items that could not be delivered.
    pub undelivered: usize,
}

/// Where [`Ports::attempt_while_now`] stopped.
pub(crate) enum Stopped<T> {
    /// The received batch is worked off.
    Empty,
    /// The attempt at the held item failed.
    Failed(BoxError),
    /// The logic handed the held item back: it needs its async form.
    Later(T),
}

/// What waiting for input found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Items are in the received batch.
    Ready,
    /// Every upstream finished and everything was received.
    Ended,
    /// The control doorbell rang: look at the control channel first.
    Interrupted,
    /// Checkpoint `id`'s barrier came in on every input, after every item
    /// before it: the stage takes its snapshot and passes it on.
    Barrier(u64),
}

/// One stage's ends of the data plane and its item counters.
#[derive(Debug)]
pub(crate) struct Ports<T: Send + 'static> {
    input: Option<Inlet<T>>,
    /// A barrier received and not yet passed (snapshot taken and reported):
    /// kept here so that a stage killed in between passes it on restart.
    pub(crate) barrier_in: Option<u64>,
    /// A barrier to send after the outbox, and how many outputs (in order)
    /// already have it: a send cut short resumes where it stopped.
    barrier_out: Option<(u64, usize)>,
    /// The stage's link to its run's checkpoints, if the flow takes them.
    pub(crate) checkpoint: Option<CheckpointLink>,
    /// The received batch being worked through and the item in hand (the
    /// one taken and not yet handled).
    pub(super) received: Received<T>,
    /// How a dead letter keeps an item.
    pub(super) encode: ItemEncoder<T>,
    outputs: Vec<PipeSender<T>>,
    /// Items emitted and not yet sent.
    pub(crate) outbox: Emitter<T>,
    /// How many outputs (in order, all but the last) already hold a copy
    /// of the outbox's first `fanned_run` items: kept here, not in locals
    /// of [`send_outbox`](Self::send_outbox), so that a send cut short (by
    /// a drain, or a kill) resumes the fan-out where it stopped.
    fanned: usize,
    /// How many items the fan-out in progress moves (while `fanned > 0`).
    fanned_run: usize,
    pub(crate) items_in: u64,
    pub(crate) items_out: u64,
    /// Attempts at items after a failed one, in every start.
    pub(crate) retried: u64,
    /// Items replayed into this stage, if its flow can replay them.
    pub(crate) replays: Option<Replays<T>>,
    /// Where the counts above are published for the run's progress.
    pub(crate) counters: Option<Arc<StageCounters>>,
}

impl<T: Send + 'static> Ports<T> {
    /// Ports connected to nothing, without allocating: what a lease leaves
    /// behind when it hands its ports back.
    pub(super) fn detached() -> Self {
        Ports {
            input: None,
            barrier_in: None,
            barrier_out: None,
            checkpoint: None,
            received: Received::new(),
            encode: unserializable::<T>,
            outputs: Vec::new(),
            outbox: Emitter::new(0),
            fanned: 0,
            fanned_run: 0,
            items_in: 0,
            items_out: 0,
            retried: 0,
            replays: None,
            counters: None,
        }
    }

    /// Publishes the item counts for the run's progress: three relaxed
    /// stores, once per unit of work (not per item).
    #[inline]
    pub(crate) fn publish_counts(&self) {
        if let Some(counters) = &self.counters {
            counters.publish_items(self.items_in, self.items_out, self.retried);
        }
    }
}

impl<T: Clone + Send + 'static> Ports<T> {
    pub(crate) fn new(
        input: Option<Inlet<T>>,
        outputs: Vec<PipeSender<T>>,
        batch_size: usize,
        encode: ItemEncoder<T>,
    ) -> Self {
        Ports {
            input,
            barrier_in: None,
            barrier_out: None,
            checkpoint: None,
            received: Received::new(),
            encode,
            outputs,
            outbox: Emitter::new(batch_size),
            fanned: 0,
            fanned_run: 0,
            items_in: 0,
            items_out: 0,
            retried: 0,
            replays: None,
            counters: None,
        }
    }

    /// The stage resumes from checkpoint `id`: its counters and snapshot
    /// as they were at the cut.
    pub(crate) fn resume_at(&mut self, id: u64, part: &StageCheckpoint) {
        self.items_in = part.items_in;
        self.items_out = part.items_out;
        if let Some(link) = self.checkpoint.as_mut() {
            link.resume_at(id, part.state.clone());
        }
    }

    /// The replayed items this stage is done with since the last call.
    pub(crate) fn take_replayed(&mut self) -> Vec<uuid::Uuid> {
        let batch_done = !self.received.has_items();
        self.replays
            .as_mut()
            .map_or_else(Vec::new, |r| r.take_done(batch_done))
    }

    /// The item to attempt next: the held one again if an attempt at it
    /// did not succeed (a retry: what that attempt emitted is dropped),
    /// else the received batch's next, counted in `items_in` and held until
    /// [`settle`](Self::settle). `None` once the received batch is worked off.
    #[inline]
    pub(crate) fn begin_attempt(&mut self) -> Option<T> {
        match self.received.begin_attempt(self.outbox.len())? {
            Attempt::First(item) => {
                self.items_in += 1;
                Some(item)
            }
            Attempt::Retry { item, mark } => {
                self.retried += 1;
                self.outbox.truncate(mark);
                Some(item)
            }
        }
    }

    /// Attempts items with `now` (a logic's synchronous form) while it
    /// handles them and they succeed, each held as [`begin_attempt`]
    /// (Self::begin_attempt) holds it; stops at the first one it hands
    /// back or fails (still held), or when the received batch is worked off. A plain
    /// loop, no future per item: the fast path of a unit of work.
    #[inline]
    pub(crate) fn attempt_while_now(
        &mut self,
        mut now: impl FnMut(T, &mut Emitter<T>) -> Attempted<T>,
    ) -> Stopped<T> {
        loop {
            let Some(item) = self.begin_attempt() else {
                return Stopped::Empty;
            };
            match now(item, &mut self.outbox) {
                Attempted::Done(Ok(())) => self.settle(),
                Attempted::Done(Err(error)) => return Stopped::Failed(error),
                Attempted::Later(item) => return Stopped::Later(item),
            }
        }
    }

    /// Drops the held item and the received batch: for a stage that is abandoned,
    /// whose pending items have nowhere to go.
    pub(crate) fn drop_pending(&mut self) {
        self.received.clear();
        self.barrier_in = None;
        if let Some(replays) = self.replays.as_mut() {
            replays.drop_in_hand();
        }
    }

    /// The attempt at the held item succeeded: it is done with.
    #[inline]
    pub(crate) fn settle(&mut self) {
        self.received.settle();
    }

    /// The attempt at the held item failed with `error`; how many have in
    /// this start.
    pub(crate) fn attempt_failed(&mut self, error: &BoxError) -> u32 {
        self.received.attempt_failed(error)
    }

    /// Makes sure the received batch has items, waiting for the next batch if needed;
    /// the wait ends early (without losing anything) when `doorbell` rings.
    /// A replayed item goes first, as a batch of its own.
    pub(crate) async fn next_input(&mut self, doorbell: &Notify) -> Input {
        if self.received.has_items() {
            return Input::Ready;
        }
        if let Some(id) = self.barrier_in {
            return Input::Barrier(id);
        }
        // The worked-off batch's items are not kept while waiting.
        self.received.clear();
        if let Some(item) = self.replays.as_mut().and_then(Replays::next) {
            self.received.refill(vec![item]);
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
            delivery = rx.recv() => match delivery {
                Some(Delivery::Items(batch)) => {
                    self.received.refill(batch);
                    Input::Ready
                }
                Some(Delivery::Barrier(id)) => {
                    self.barrier_in = Some(id);
                    Input::Barrier(id)
                }
                None => Input::Ended,
            },
            Some(item) = replayed => {
                self.received.refill(vec![item]);
                Input::Ready
            }
            () = doorbell.notified() => Input::Interrupted,
        }
    }

    /// Resolves once the stage has no input left to work through: every
    /// upstream finished and every item was received and taken from the
    /// received batch (at once for a stage without input). Batches that
    /// arrive meanwhile wait there. Cancel-safe.
    pub(crate) async fn input_end(&mut self) {
        loop {
            if self.received.has_items() || self.barrier_in.is_some() {
                return std::future::pending().await;
            }
            if let Some(item) = self.replays.as_mut().and_then(Replays::next) {
                self.received.refill(vec![item]);
                continue;
            }
            let Some(rx) = self.input.as_mut() else {
                return;
            };
            match rx.recv().await {
                Some(Delivery::Items(batch)) => self.received.refill(batch),
                Some(Delivery::Barrier(id)) => self.barrier_in = Some(id),
                None => return,
            }
        }
    }

    /// Sends every emitted item to every downstream (fan-out clones it),
    /// waiting while a downstream pipe is full, and flushes partial batches.
    ///
    /// Items go a run at a time, as many as every output's batch has room
    /// for: each output but the last takes clones of the run, then the last
    /// takes the run itself out of the outbox.
    ///
    /// Cancel-safe (a drain drops a source's pending send, a one-for-all
    /// restart kills a stage mid-send): each output takes its copy of a run
    /// synchronously, and the fan-out cursor moves past it before the send
    /// awaits room, so a send resumed after a cancel goes on with the next
    /// output and the same run; the run leaves the outbox as it is handed
    /// to the last one. Nothing is lost and nothing is delivered twice.
    pub(crate) async fn send_outbox(&mut self) -> Result<(), DownstreamGone> {
        let Ports {
            outputs,
            outbox,
            fanned,
            fanned_run,
            items_out,
            ..
        } = self;
        let Some((last, rest)) = outputs.split_last_mut() else {
            outbox.clear();
            return Ok(());
        };
        while !outbox.is_empty() {
            if *fanned == 0 {
                *fanned_run = next_run(rest, last, outbox.len(), items_out).await?;
            }
            let run = *fanned_run;
            while let Some(tx) = rest.get_mut(*fanned) {
                tx.push_clones(&outbox.items_mut()[..run]);
                *fanned += 1;
                if let Err(closed) = tx.flush_if_full().await {
                    // The refused batch ends with this output's copy of
                    // the run, which is still in the outbox.
                    return Err(DownstreamGone {
                        undelivered: closed.undelivered.len().saturating_sub(run) + outbox.len(),
                    });
                }
            }
            last.push_front_of(outbox.items_mut(), run);
            *fanned = 0;
            *items_out += run as u64;
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
        self.send_barrier_out().await
    }

    /// The stage passed the barrier it holds (`barrier_in`), or a source
    /// put one in: `id` goes to every output after the outbox's items, with
    /// the next [`send_outbox`](Self::send_outbox).
    pub(crate) fn pass_barrier(&mut self, id: u64) {
        self.barrier_in = None;
        self.barrier_out = Some((id, 0));
    }

    /// Sends the pending barrier to the outputs that lack it. Cancel-safe.
    async fn send_barrier_out(&mut self) -> Result<(), DownstreamGone> {
        while let Some((id, sent)) = self.barrier_out {
            let Some(tx) = self.outputs.get_mut(sent) else {
                self.barrier_out = None;
                break;
            };
            if let Err(closed) = tx.send_barrier(id).await {
                return Err(DownstreamGone {
                    undelivered: closed.undelivered.len(),
                });
            }
            self.barrier_out = Some((id, sent + 1));
        }
        Ok(())
    }

    /// Flushes and closes every output, in order: downstream sees the end
    /// of input once all of its upstreams did this. On a failure the
    /// outputs not reached yet stay, so a restarted stage still has them.
    pub(crate) async fn finish_outputs(&mut self) -> Result<(), DownstreamGone> {
        // A barrier passed last goes out before the end of input.
        self.send_barrier_out().await?;
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
        self.barrier_in = None;
        self.barrier_out = None;
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

/// The length of the next run of `waiting` outbox items to send: as many
/// as every output's batch has room for. A full batch left by a send cut
/// short is flushed first, so that the run is never empty.
async fn next_run<T: Send + 'static>(
    rest: &mut [PipeSender<T>],
    last: &mut PipeSender<T>,
    waiting: usize,
    items_out: &mut u64,
) -> Result<usize, DownstreamGone> {
    let mut run = waiting;
    for tx in rest.iter_mut() {
        if let Err(closed) = tx.flush_if_full().await {
            return Err(DownstreamGone {
                undelivered: closed.undelivered.len() + waiting,
            });
        }
        run = run.min(tx.room());
    }
    if let Err(closed) = last.flush_if_full().await {
        return Err(lost_on_last(items_out, closed.undelivered.len(), waiting));
    }
    Ok(run.min(last.room()))
}

#[cfg(test)]
#[path = "ports_tests.rs"]
mod tests;
