//! The data plane between stages: a bounded channel of item batches.
//!
//! A [`PipeSender`] buffers items and sends them downstream a batch at a
//! time, so the per-message cost of the channel is paid once per batch; the
//! channel holds at most `capacity` batches, so a slow consumer makes
//! `send` wait (backpressure) and memory stays bounded by
//! `(capacity + senders) * batch_size` items. Users see items: a
//! [`PipeReceiver`] hands them out one by one (or a batch at a time).
//!
//! End of input is the drain signal: when every sender has finished (or been
//! dropped), the receiver gets every item still in flight, then `None`.
//!
//! A pipe also carries checkpoint barriers, in order with the items: a
//! stage with several inputs (fan-in) has a pipe per input and aligns their
//! barriers (see [`inlet`](super::inlet)).

use std::mem;

use tokio::sync::mpsc;

/// The largest [`PipeConfig::batch_size`].
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// The largest [`PipeConfig::capacity`].
pub const MAX_PIPE_CAPACITY: usize = 1 << 20;

/// Sizes of a pipe, the bounded channel of item batches between two stages.
///
/// An upstream stage buffers items and sends them a batch at a time, so the
/// per-message cost of the channel is paid once per batch; the channel holds
/// at most `capacity` batches, so a slow consumer makes its upstream wait
/// (backpressure) and memory stays bounded by `(capacity + 1) * batch_size`
/// items per edge (a stage with several upstreams has a pipe from each). End of input is the drain
/// signal: when every upstream has finished, the downstream stage gets every
/// item still in flight, then its input ends.
///
/// A flow whose pipes are larger than [`MAX_BATCH_SIZE`] or
/// [`MAX_PIPE_CAPACITY`] is rejected when it is built
/// ([`DefinitionError::PipeSize`](crate::flow::DefinitionError::PipeSize)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeConfig {
    /// Items per batch (at least 1, at most [`MAX_BATCH_SIZE`]).
    pub batch_size: usize,
    /// Batches the channel holds before `send` waits (at least 1, at most
    /// [`MAX_PIPE_CAPACITY`]).
    pub capacity: usize,
}

impl Default for PipeConfig {
    /// 256 items per batch, 8 batches in flight.
    fn default() -> Self {
        PipeConfig {
            batch_size: 256,
            capacity: 8,
        }
    }
}

/// What travels in a pipe: a batch of items, or a checkpoint barrier that
/// follows every item sent before it.
#[derive(Debug)]
pub(crate) enum Packet<T> {
    /// Items, in order.
    Items(Vec<T>),
    /// The barrier of checkpoint `id`.
    Barrier(u64),
}

/// The receiving side is gone; carries the items that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the downstream stage is gone; {} item(s) undelivered", undelivered.len())]
pub struct PipeClosed<T> {
    /// Items that were not delivered, in order.
    pub undelivered: Vec<T>,
}

/// Creates a pipe, its sizes clamped to `1..=`[`MAX_BATCH_SIZE`] and
/// `1..=`[`MAX_PIPE_CAPACITY`].
pub fn pipe<T: Send + 'static>(config: PipeConfig) -> (PipeSender<T>, PipeReceiver<T>) {
    let batch_size = config.batch_size.clamp(1, MAX_BATCH_SIZE);
    let (tx, rx) = mpsc::channel(config.capacity.clamp(1, MAX_PIPE_CAPACITY));
    (
        PipeSender {
            tx,
            buffer: Vec::new(),
            batch_size,
        },
        PipeReceiver { rx },
    )
}

/// The sending side of a pipe. Clone it for fan-in: each clone buffers on its own.
/// A sender allocates its first buffer on its first item, so an idle one costs
/// no batch-sized allocation.
///
/// Call [`finish`](Self::finish) (or [`flush`](Self::flush)) to deliver a
/// partial batch. A sender dropped with buffered items still delivers them:
/// at once if the channel has room, else from a task that waits for room.
#[derive(Debug)]
pub struct PipeSender<T: Send + 'static> {
    tx: mpsc::Sender<Packet<T>>,
    buffer: Vec<T>,
    batch_size: usize,
}

impl<T: Send + 'static> Clone for PipeSender<T> {
    fn clone(&self) -> Self {
        PipeSender {
            tx: self.tx.clone(),
            buffer: Vec::new(),
            batch_size: self.batch_size,
        }
    }
}

impl<T: Send + 'static> PipeSender<T> {
    #[cfg(test)] // items move in batches outside tests
    /// Buffers `item`; sends the batch when it is full, waiting while the channel is full.
    pub async fn send(&mut self, item: T) -> Result<(), PipeClosed<T>> {
        self.push(item);
        self.flush_if_full().await
    }

    #[cfg(test)] // stages hand items over a run at a time
    /// Buffers `item` without waiting: the half of [`send`](Self::send)
    /// that cannot be cancelled. Once it returns, the item belongs to the
    /// pipe; [`flush_if_full`](Self::flush_if_full) sends it on.
    pub(crate) fn push(&mut self, item: T) {
        self.buffer.push(item);
    }

    /// How many items fit before the buffered batch is full (0 when it is:
    /// [`flush_if_full`](Self::flush_if_full) makes room).
    pub(crate) fn room(&self) -> usize {
        self.batch_size.saturating_sub(self.buffer.len())
    }

    /// Buffers clones of `items` without waiting (a fan-out copy).
    pub(crate) fn push_clones(&mut self, items: &[T])
    where
        T: Clone,
    {
        self.buffer.extend_from_slice(items);
    }

    /// Buffers the first `n` items of `from`, taking them out of it,
    /// without waiting. When they are all of `from` and nothing is
    /// buffered, the two vectors are swapped: a batch moves downstream
    /// without a copy, and `from` gets the empty buffer back.
    pub(crate) fn push_front_of(&mut self, from: &mut Vec<T>, n: usize) {
        if self.buffer.is_empty() && n == from.len() {
            mem::swap(&mut self.buffer, from);
        } else {
            self.buffer.extend(from.drain(..n));
        }
    }

    /// Sends the buffered batch if it is full, waiting while the channel is
    /// full. Cancel-safe: a cancelled call keeps the batch buffered.
    pub(crate) async fn flush_if_full(&mut self) -> Result<(), PipeClosed<T>> {
        if self.buffer.len() >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the buffered items now, even if fewer than a batch.
    pub async fn flush(&mut self) -> Result<(), PipeClosed<T>> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Wait for room first and move the batch only once it fits: a flush
        // that is cancelled (its stage killed) keeps the batch buffered here,
        // where the sender's drop or the next flush delivers it.
        let Ok(permit) = self.tx.reserve().await else {
            return Err(PipeClosed {
                undelivered: mem::take(&mut self.buffer),
            });
        };
        let batch = mem::replace(&mut self.buffer, Vec::with_capacity(self.batch_size));
        permit.send(Packet::Items(batch));
        Ok(())
    }

    /// Sends the barrier of checkpoint `id` after every item buffered or
    /// sent before it. Cancel-safe: a cancelled call sent no barrier (the
    /// items it flushed stay sent), so calling it again sends it once.
    pub(crate) async fn send_barrier(&mut self, id: u64) -> Result<(), PipeClosed<T>> {
        self.flush().await?;
        let Ok(permit) = self.tx.reserve().await else {
            return Err(PipeClosed {
                undelivered: Vec::new(),
            });
        };
        permit.send(Packet::Barrier(id));
        Ok(())
    }

    #[cfg(test)] // items move in batches outside tests
    /// Items buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    #[cfg(test)] // items move in batches outside tests
    /// Whether the receiving side is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Flushes and closes this sender. The receiver sees the end of input
    /// once every sender has finished or been dropped.
    pub async fn finish(mut self) -> Result<(), PipeClosed<T>> {
        self.flush().await
    }
}

impl<T: Send + 'static> Drop for PipeSender<T> {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let batch = Packet::Items(mem::take(&mut self.buffer));
        let batch = match self.tx.try_send(batch) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(batch)) => batch,
        };
        // The receiver must still get these items before it sees the end of input.
        let tx = self.tx.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _ = tx.send(batch).await;
                });
            }
            Err(_) => tracing::error!(
                items = match &batch {
                    Packet::Items(items) => items.len(),
                    Packet::Barrier(_) => 0,
                },
                "pipe sender dropped outside a tokio runtime with a full channel; items lost"
            ),
        }
    }
}

/// The receiving side of a pipe (one edge: see [`Inlet`](super::inlet::Inlet)
/// for a stage's input, which merges its edges).
#[derive(Debug)]
pub struct PipeReceiver<T> {
    pub(super) rx: mpsc::Receiver<Packet<T>>,
}

impl<T> PipeReceiver<T> {
    #[cfg(test)] // stages receive through their inlet
    /// The next batch, skipping barriers; `None` at the end of input.
    pub async fn recv_batch(&mut self) -> Option<Vec<T>> {
        loop {
            match self.rx.recv().await? {
                Packet::Items(batch) => return Some(batch),
                Packet::Barrier(_) => {}
            }
        }
    }

    #[cfg(test)] // stages receive through their inlet
    /// The next packet, barriers included; `None` at the end of input.
    pub(crate) async fn recv_packet(&mut self) -> Option<Packet<T>> {
        self.rx.recv().await
    }

    #[cfg(test)] // stages receive through their inlet
    /// Stops accepting batches; senders get [`PipeClosed`].
    pub fn close(&mut self) {
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    /// Every item left, in order, barriers skipped.
    async fn rest<T>(rx: &mut PipeReceiver<T>) -> Vec<T> {
        let mut got = Vec::new();
        while let Some(batch) = rx.recv_batch().await {
            got.extend(batch);
        }
        got
    }

    #[tokio::test]
    async fn items_arrive_in_order_and_the_last_partial_batch_is_flushed() {
        let (mut tx, mut rx) = pipe::<u32>(PipeConfig {
            batch_size: 2,
            capacity: 4,
        });
        tokio::spawn(async move {
            for i in 0..5 {
                tx.send(i).await.unwrap();
            }
            tx.finish().await.unwrap();
        });
        assert_eq!(rest(&mut rx).await, [0, 1, 2, 3, 4]);
    }

    use super::*;

    fn small() -> PipeConfig {
        PipeConfig {
            batch_size: 3,
            capacity: 2,
        }
    }

    #[tokio::test]
    async fn items_arrive_in_order_in_batches() {
        let (mut tx, mut rx) = pipe(PipeConfig {
            batch_size: 3,
            capacity: 4,
        });
        for i in 0..7 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(tx.buffered(), 1);
        tx.finish().await.unwrap();
        assert_eq!(rx.recv_batch().await, Some(vec![0, 1, 2]));
        assert_eq!(rx.recv_batch().await, Some(vec![3, 4, 5]));
        assert_eq!(rx.recv_batch().await, Some(vec![6]));
        assert_eq!(rx.recv_batch().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pipe_makes_send_wait_and_an_interrupted_send_loses_nothing() {
        let (mut tx, mut rx) = pipe(small());
        for i in 0..6 {
            tx.send(i).await.unwrap(); // two full batches: the channel is full
        }
        tx.send(6).await.unwrap();
        tx.send(7).await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_secs(60), tx.send(8)).await;
        assert!(third.is_err(), "send did not wait for room");
        // Cancel-safe: the interrupted send's batch is still buffered...
        assert_eq!(tx.buffered(), 3);
        assert_eq!(rx.recv_batch().await, Some(vec![0, 1, 2]));
        // ...and goes out with the next flush, after what was queued before it.
        tx.finish().await.unwrap();
        assert_eq!(rx.recv_batch().await, Some(vec![3, 4, 5]));
        assert_eq!(rx.recv_batch().await, Some(vec![6, 7, 8]));
        assert_eq!(rx.recv_batch().await, None);
    }

    #[tokio::test]
    async fn fan_in_ends_when_every_sender_is_done() {
        let (mut a, mut rx) = pipe(small());
        let mut b = a.clone();
        a.send("a").await.unwrap();
        b.send("b").await.unwrap();
        a.finish().await.unwrap();
        let mut got = rx.recv_batch().await.unwrap();
        b.finish().await.unwrap();
        got.extend(rx.recv_batch().await.unwrap());
        got.sort();
        assert_eq!(got, ["a", "b"]);
        assert_eq!(rx.recv_batch().await, None);
    }

    #[tokio::test]
    async fn dropping_a_sender_still_delivers_its_buffer() {
        let (mut tx, mut rx) = pipe(small());
        for i in 0..8 {
            tx.send(i).await.unwrap();
        }
        drop(tx); // 2 batches queued (full channel) + 2 buffered items
        assert_eq!(rest(&mut rx).await, (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_closed_receiver_returns_undelivered_items() {
        let (mut tx, mut rx) = pipe(small());
        rx.close();
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let err = tx.send(3).await.unwrap_err();
        assert_eq!(err.undelivered, vec![1, 2, 3]);
        assert!(tx.is_closed());
        assert_eq!(
            err.to_string(),
            "the downstream stage is gone; 3 item(s) undelivered"
        );
    }

    #[tokio::test]
    async fn a_barrier_follows_every_item_sent_before_it() {
        let (mut tx, mut rx) = pipe(PipeConfig {
            batch_size: 3,
            capacity: 4,
        });
        tx.send(1).await.unwrap();
        tx.send_barrier(7).await.unwrap();
        tx.send(2).await.unwrap();
        tx.finish().await.unwrap();
        let mut got = Vec::new();
        while let Some(packet) = rx.recv_packet().await {
            got.push(match packet {
                Packet::Items(items) => format!("{items:?}"),
                Packet::Barrier(id) => format!("|{id}|"),
            });
        }
        assert_eq!(got, ["[1]", "|7|", "[2]"]);
    }
}
