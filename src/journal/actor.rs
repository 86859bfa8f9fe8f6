//! The journal actor: the single writer. It owns the committer, which commits
//! everything queued as the next batch (group commit) and replies to each
//! request with its own result (see `committer.rs`). Handles queue requests
//! directly and message the actor only to start a drain of an idle queue.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::OwnedSemaphorePermit;

use super::committer::{CommitQueue, Committer, Pushed};
use super::request::{Request, Work};
use super::stats::Counters;
use crate::records::{StoreError, WriteOp, WriteOutcome};
use crate::store::Store;

/// What a write request gets back: the batch-level result, then one result per op.
pub(crate) type WriteReply = Result<Vec<Result<WriteOutcome, StoreError>>, StoreError>;

/// Messages of the journal actor.
pub enum JournalMsg {
    /// Apply these ops (atomically each) and reply once they are durable.
    /// ([`JournalHandle`](super::JournalHandle) queues its writes without
    /// this message; it is for holders of the bare actor reference.)
    Write {
        /// The ops, kept together in one commit.
        ops: Vec<WriteOp>,
        /// Where the result goes.
        reply: RpcReplyPort<WriteReply>,
        /// The request's queue slot, released when the reply is sent.
        permit: OwnedSemaphorePermit,
    },
    /// Writes were queued while no drain was running: start one.
    Drain,
    /// The committer has answered everything queued before a shutdown.
    Drained,
    /// Finish queued and in-flight writes, refuse new ones, then stop.
    Shutdown(RpcReplyPort<()>),
}

/// The actor. Its state owns the write side of the store.
pub(crate) struct JournalActor;

pub(crate) struct JournalArgs {
    pub(crate) store: Arc<dyn Store>,
    /// Shared with the handles, which queue their writes into it.
    pub(crate) queue: Arc<CommitQueue>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) runtime: tokio::runtime::Handle,
}

pub(crate) struct JournalState {
    committer: Arc<Committer>,
    counters: Arc<Counters>,
    shutdown: Option<Vec<RpcReplyPort<()>>>,
    drained: bool,
}

impl Drop for JournalState {
    fn drop(&mut self) {
        // A killed or failed actor runs no `post_stop`, but its state is
        // dropped: nothing will start a drain any more, so the queue refuses
        // its requests (and every later one) instead of stranding writers
        // whose `Drain` message died in the mailbox. A drain already running
        // finishes its batch; requests still queued behind it are refused
        // (truthfully: they were not committed).
        self.committer.queue.break_down(&self.counters);
    }
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
                queue: args.queue,
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
                let req = Request {
                    work: Work::Many { ops, reply },
                    permit,
                    fence: None,
                };
                if let Pushed::StartDrain = state.committer.queue.submit(req, &state.counters) {
                    state.committer.start();
                }
            }
            // A drain asked for before a shutdown still runs: its requests
            // were accepted.
            JournalMsg::Drain => state.committer.start(),
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
