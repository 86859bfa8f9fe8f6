//! A stage's input: the pipes from each of its upstreams, merged, with
//! their checkpoint barriers aligned.
//!
//! Each upstream has a pipe of its own (an edge), so that the inlet can
//! stop reading one of them: when a barrier arrives on an edge, that edge
//! is blocked (its items behind the barrier stay in its pipe, and its
//! upstream feels backpressure) until the same barrier has arrived on every
//! edge that has not ended. Then the inlet hands the stage the barrier, as
//! one, after every item sent before it on any edge: the cut a checkpoint
//! takes (the aligned barriers of Carbone et al., 2015, as Flink has them).
//! Without barriers the inlet is a fair merge of its edges.

use std::future::poll_fn;
use std::task::{Context, Poll};

use super::pipe::{Packet, PipeReceiver};

/// What the stage gets from its inlet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery<T> {
    /// A batch of items from one edge.
    Items(Vec<T>),
    /// Checkpoint `id`'s barrier, aligned over every edge.
    Barrier(u64),
}

/// One upstream's pipe and where it stands.
#[derive(Debug)]
struct Edge<T> {
    pipe: PipeReceiver<T>,
    /// Every sender is gone and everything was received.
    ended: bool,
    /// The barrier it delivered and the inlet has not aligned yet: the edge
    /// is not read until then.
    barrier: Option<u64>,
}

/// The merged, barrier-aligned input of a stage.
#[derive(Debug)]
pub(crate) struct Inlet<T> {
    edges: Vec<Edge<T>>,
    /// The edge read first next time, so that a busy edge cannot starve
    /// the others.
    first: usize,
}

impl<T> Inlet<T> {
    /// An inlet over the pipes from each upstream.
    pub(crate) fn new(pipes: Vec<PipeReceiver<T>>) -> Self {
        Inlet {
            edges: pipes
                .into_iter()
                .map(|pipe| Edge {
                    pipe,
                    ended: false,
                    barrier: None,
                })
                .collect(),
            first: 0,
        }
    }

    /// The next batch or aligned barrier; `None` once every edge ended.
    /// Cancel-safe: what was received stays in the inlet.
    pub(crate) async fn recv(&mut self) -> Option<Delivery<T>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery<T>>> {
        loop {
            if let Some(id) = self.aligned() {
                return Poll::Ready(Some(Delivery::Barrier(id)));
            }
            let count = self.edges.len();
            let mut changed = false;
            for k in 0..count {
                let index = (self.first + k) % count;
                let edge = &mut self.edges[index];
                if edge.ended || edge.barrier.is_some() {
                    continue;
                }
                match edge.pipe.rx.poll_recv(cx) {
                    Poll::Ready(Some(Packet::Items(batch))) => {
                        self.first = (index + 1) % count;
                        return Poll::Ready(Some(Delivery::Items(batch)));
                    }
                    Poll::Ready(Some(Packet::Barrier(id))) => {
                        edge.barrier = Some(id);
                        changed = true;
                    }
                    Poll::Ready(None) => {
                        edge.ended = true;
                        changed = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !changed {
                return if self.edges.iter().all(|e| e.ended) {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            }
        }
    }

    /// The barrier every edge that has not ended delivered, if they all
    /// did (and at least one): the edges are read again from now on.
    fn aligned(&mut self) -> Option<u64> {
        let mut id = None;
        for edge in self.edges.iter().filter(|e| !e.ended) {
            // One checkpoint is in flight at a time, so the ids agree; the
            // newest is taken should they not.
            id = Some(id.unwrap_or(0).max(edge.barrier?));
        }
        if id.is_some() {
            for edge in &mut self.edges {
                edge.barrier = None;
            }
        }
        id
    }

    /// Stops accepting batches on every edge; senders get an error. Items
    /// already in flight can still be received.
    pub(crate) fn close(&mut self) {
        for edge in &mut self.edges {
            edge.pipe.rx.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::pipe::{PipeConfig, PipeSender, pipe};

    fn edges(n: usize) -> (Vec<PipeSender<u32>>, Inlet<u32>) {
        let (senders, pipes) = (0..n)
            .map(|_| {
                pipe(PipeConfig {
                    batch_size: 1,
                    capacity: 8,
                })
            })
            .unzip();
        (senders, Inlet::new(pipes))
    }

    async fn drain(inlet: &mut Inlet<u32>) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(d) = inlet.recv().await {
            got.push(match d {
                Delivery::Items(items) => format!("{items:?}"),
                Delivery::Barrier(id) => format!("|{id}|"),
            });
        }
        got
    }

    #[tokio::test]
    async fn a_barrier_waits_for_every_edge_and_holds_back_what_follows_it() {
        let (mut tx, mut inlet) = edges(2);
        // The fast edge sends its barrier and items behind it at once.
        tx[0].send(1).await.unwrap();
        tx[0].send_barrier(1).await.unwrap();
        tx[0].send(2).await.unwrap();
        // The slow edge has items before its barrier.
        tx[1].send(10).await.unwrap();
        tx[1].send(11).await.unwrap();
        tx[1].send_barrier(1).await.unwrap();
        tx[1].send(12).await.unwrap();
        drop(tx);
        let got = drain(&mut inlet).await;
        let barrier = got.iter().position(|d| d == "|1|").unwrap();
        let (before, after) = got.split_at(barrier);
        let mut before = before.to_vec();
        before.sort();
        assert_eq!(before, ["[10]", "[11]", "[1]"]);
        let mut after = after[1..].to_vec();
        after.sort();
        assert_eq!(after, ["[12]", "[2]"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_edge_is_not_read_until_the_barrier_aligns() {
        let (mut tx, mut inlet) = edges(2);
        tx[0].send_barrier(3).await.unwrap();
        tx[0].send(1).await.unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), inlet.recv()).await;
        assert!(waited.is_err(), "an item behind a barrier was taken early");
        tx[1].send_barrier(3).await.unwrap();
        assert_eq!(inlet.recv().await, Some(Delivery::Barrier(3)));
        assert_eq!(inlet.recv().await, Some(Delivery::Items(vec![1])));
    }

    #[tokio::test]
    async fn an_ended_edge_does_not_hold_a_barrier_back() {
        let (mut tx, mut inlet) = edges(2);
        tx[0].send(1).await.unwrap();
        tx[0].send_barrier(2).await.unwrap();
        let last = tx.pop().unwrap();
        last.finish().await.unwrap();
        drop(tx);
        assert_eq!(drain(&mut inlet).await, ["[1]", "|2|"]);
    }

    #[tokio::test]
    async fn one_edge_passes_items_and_barriers_in_order() {
        let (mut tx, mut inlet) = edges(1);
        tx[0].send(1).await.unwrap();
        tx[0].send_barrier(1).await.unwrap();
        tx[0].send_barrier(2).await.unwrap();
        tx[0].send(2).await.unwrap();
        drop(tx);
        assert_eq!(drain(&mut inlet).await, ["[1]", "|1|", "|2|", "[2]"]);
    }

    #[tokio::test]
    async fn no_edge_is_starved_by_a_busy_one() {
        let (mut tx, mut inlet) = edges(2);
        for i in 0..4 {
            tx[0].send(i).await.unwrap();
            tx[1].send(100 + i).await.unwrap();
        }
        let first_two = [inlet.recv().await.unwrap(), inlet.recv().await.unwrap()];
        assert!(first_two.contains(&Delivery::Items(vec![0])));
        assert!(first_two.contains(&Delivery::Items(vec![100])));
    }
}
