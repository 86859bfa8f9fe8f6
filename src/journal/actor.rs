//! The journal actor: the single writer. It takes write requests in mailbox
//! order and queues them for the committer, which commits everything queued
//! as the next batch (group commit) and replies to each request with its own
//! result (see `committer.rs`).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::OwnedSemaphorePermit;

use super::committer::{CommitQueue, Committer, Pushed, Request};
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
    /// The committer has answered everything queued before a shutdown.
    Drained,
    /// Finish queued and in-flight writes, refuse new ones, then stop.
    Shutdown(RpcReplyPort<()>),
}

/// The actor. Its state owns the write side of the store.
pub(crate) struct JournalActor;

pub(crate) struct JournalArgs {
    pub(crate) store: Arc<dyn FlowStore>,
    pub(crate) max_batch_ops: usize,
    pub(crate) counters: Arc<Counters>,
    pub(crate) runtime: tokio::runtime::Handle,
}

pub(crate) struct JournalState {
    committer: Arc<Committer>,
    counters: Arc<Counters>,
    shutdown: Option<Vec<RpcReplyPort<()>>>,
    drained: bool,
}

impl Actor for JournalActor {
    type Msg = JournalMsg;
    type State = JournalState;
    type Arguments = JournalArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JournalMsg>,
        args: JournalArgs,
    ) -> Result<JournalState, ActorProcessingErr> {
        let on_writer = Committer::has_writer_thread(args.store.as_ref());
        Ok(JournalState {
            committer: Arc::new(Committer {
                queue: Arc::new(CommitQueue::new(args.max_batch_ops)),
                store: args.store,
                counters: args.counters.clone(),
                actor: myself,
                runtime: args.runtime,
                on_writer,
            }),
            counters: args.counters,
            shutdown: None,
            drained: false,
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
                match state.committer.queue.push(Request { ops, reply, permit }) {
                    Ok(Pushed::Queued) => {}
                    Ok(Pushed::StartDrain) => state.committer.start(),
                    Err(req) => {
                        state.counters.queued(-1);
                        let _ = req.reply.send(Err(StoreError::JournalClosed));
                    }
                }
            }
            JournalMsg::Drained => state.drained = true,
            JournalMsg::Shutdown(reply) => {
                if state.shutdown.is_none() && state.committer.queue.close() {
                    state.drained = true;
                }
                state.shutdown.get_or_insert_with(Vec::new).push(reply);
            }
        }
        if state.drained {
            for reply in state.shutdown.take().into_iter().flatten() {
                let _ = reply.send(());
            }
            myself.stop(Some("journal shut down".into()));
        }
        Ok(())
    }
}
