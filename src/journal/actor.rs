//! The journal actor: the single writer. It queues write requests while a
//! commit is in flight and commits everything queued as the next batch
//! (group commit), replying to each request with its own result.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::stats::Counters;
use crate::store::{FlowStore, StoreError, WriteOp, WriteOutcome};

/// What a write request gets back: the batch-level result, then one result per op.
pub(crate) type WriteReply = Result<Vec<Result<WriteOutcome, StoreError>>, StoreError>;

/// Messages of the journal actor.
pub enum JournalMsg {
    /// Apply these ops (atomically each) and reply once they are durable.
    Write {
        /// The ops, kept together in one commit.
        ops: Vec<WriteOp>,
        /// Where the result goes.
        reply: RpcReplyPort<WriteReply>,
        /// The request's queue slot, released when the reply is sent.
        permit: OwnedSemaphorePermit,
    },
    /// The commit in flight has finished and replied.
    Committed,
    /// Finish queued and in-flight writes, refuse new ones, then stop.
    Shutdown(RpcReplyPort<()>),
}

struct Request {
    ops: Vec<WriteOp>,
    reply: RpcReplyPort<WriteReply>,
    permit: OwnedSemaphorePermit,
}

/// The actor. Its state owns the write side of the store.
pub(crate) struct JournalActor;

pub(crate) struct JournalArgs {
    pub(crate) store: Arc<dyn FlowStore>,
    pub(crate) max_batch_ops: usize,
    pub(crate) counters: Arc<Counters>,
}

pub(crate) struct JournalState {
    store: Arc<dyn FlowStore>,
    max_batch_ops: usize,
    counters: Arc<Counters>,
    pending: VecDeque<Request>,
    in_flight: bool,
    shutdown: Option<Vec<RpcReplyPort<()>>>,
}

impl Actor for JournalActor {
    type Msg = JournalMsg;
    type State = JournalState;
    type Arguments = JournalArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<JournalMsg>,
        args: JournalArgs,
    ) -> Result<JournalState, ActorProcessingErr> {
        Ok(JournalState {
            store: args.store,
            max_batch_ops: args.max_batch_ops.max(1),
            counters: args.counters,
            pending: VecDeque::new(),
            in_flight: false,
            shutdown: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<JournalMsg>,
        message: JournalMsg,
        state: &mut JournalState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JournalMsg::Write { ops, reply, permit } => {
                if state.shutdown.is_some() {
                    let _ = reply.send(Err(StoreError::JournalClosed));
                    return Ok(());
                }
                state.counters.queued(1);
                state.pending.push_back(Request { ops, reply, permit });
                if !state.in_flight {
                    state.start_commit(&myself);
                }
            }
            JournalMsg::Committed => {
                state.in_flight = false;
                if !state.pending.is_empty() {
                    state.start_commit(&myself);
                }
            }
            JournalMsg::Shutdown(reply) => {
                state.shutdown.get_or_insert_with(Vec::new).push(reply);
            }
        }
        if state.shutdown.is_some() && !state.in_flight && state.pending.is_empty() {
            for reply in state.shutdown.take().into_iter().flatten() {
                let _ = reply.send(());
            }
            myself.stop(Some("journal shut down".into()));
        }
        Ok(())
    }
}

impl JournalState {
    /// Takes queued requests up to the batch bound (never splitting one) and
    /// commits them on a task, which replies and then reports `Committed`.
    fn start_commit(&mut self, myself: &ActorRef<JournalMsg>) {
        let mut batch = Vec::new();
        let mut ops_len = 0;
        while let Some(next) = self.pending.front() {
            if !batch.is_empty() && ops_len + next.ops.len() > self.max_batch_ops {
                break;
            }
            ops_len += next.ops.len();
            batch.extend(self.pending.pop_front());
        }
        if batch.is_empty() {
            return;
        }
        self.in_flight = true;
        let queue_depth = self.counters.queued(-(batch.len() as i64));
        let store = self.store.clone();
        let counters = self.counters.clone();
        let myself = myself.clone();
        let span = tracing::debug_span!(
            "journal.commit",
            requests = batch.len(),
            ops = ops_len,
            queue_depth
        );
        tokio::spawn(
            async move {
                let started = Instant::now();
                let mut sizes = Vec::with_capacity(batch.len());
                let mut ops = Vec::with_capacity(ops_len);
                let mut replies = Vec::with_capacity(batch.len());
                // Queue slots are held until the replies are sent.
                let mut permits = Vec::with_capacity(batch.len());
                for req in batch {
                    sizes.push(req.ops.len());
                    ops.extend(req.ops);
                    replies.push(req.reply);
                    permits.push(req.permit);
                }
                let result = store.apply_batch(ops).await;
                let took = started.elapsed();
                counters.commit(ops_len, took, result.is_ok());
                match result {
                    Ok(results) => {
                        tracing::debug!(micros = took.as_micros() as u64, "journal commit");
                        let mut results = results.into_iter();
                        for (reply, n) in replies.into_iter().zip(sizes) {
                            let mine: Vec<_> = results.by_ref().take(n).collect();
                            let _ = reply.send(Ok(mine));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "journal commit failed; every request in the batch gets the error");
                        let shared = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::BatchFailed {
                                batch_len: ops_len,
                                source: shared.clone(),
                            }));
                        }
                    }
                }
                drop(permits);
                let _ = myself.cast(JournalMsg::Committed);
            }
            .instrument(span),
        );
    }
}
