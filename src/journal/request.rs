//! A write request as the journal queues it: its ops, where their results
//! go, and its queue slot. A request carries one op (`Work::One`, what
//! `Store::apply` and the calls built on it send) or several kept
//! together (`Work::Many`, `apply_batch`); once its batch is committed it is
//! answered through an [`Answer`].

use ractor::RpcReplyPort;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use uuid::Uuid;

use super::actor::WriteReply;
use crate::records::{StoreError, WriteOp, WriteOutcome, mismatch};

/// One write request waiting for its commit.
pub(crate) struct Request {
    pub(crate) work: Work,
    /// The request's queue slot, released once it is answered.
    pub(crate) permit: OwnedSemaphorePermit,
    /// The run and lease epoch its writer executes the run under, if the
    /// store leases runs: the store refuses its ops for that run unless it
    /// still holds the run at that epoch.
    pub(crate) fence: Option<(Uuid, u64)>,
}

/// A request's ops and where their results go. Most requests carry one op
/// ([`Store::apply`], and the calls built on it): they need no vector
/// of ops nor of results, so an append costs its caller two allocations
/// fewer than a one-op batch.
pub(crate) enum Work {
    /// One op, answered with its own result (or the batch's error).
    One {
        op: WriteOp,
        reply: oneshot::Sender<OpReply>,
    },
    /// Ops kept together in one commit, answered with one result each.
    Many {
        ops: Vec<WriteOp>,
        reply: RpcReplyPort<WriteReply>,
    },
}

/// What a one-op request gets back.
pub(crate) type OpReply = Result<WriteOutcome, StoreError>;

impl Work {
    /// How many ops the request carries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Work::One { .. } => 1,
            Work::Many { ops, .. } => ops.len(),
        }
    }
}

/// Where a committed request's results go: a one-op reply, or a batch
/// reply taking the next `n` results.
pub(super) enum Answer {
    /// The op's name, for a backend that returns no result for it.
    One(&'static str, oneshot::Sender<OpReply>),
    Many(usize, RpcReplyPort<WriteReply>),
}

impl Answer {
    /// Answers with `e` (for a one-op request) or `Err(e)` (for a batch).
    pub(super) fn fail(self, e: StoreError) {
        match self {
            Answer::One(_, reply) => {
                let _ = reply.send(Err(e));
            }
            Answer::Many(_, reply) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers with this request's share of a committed batch's results.
    pub(super) fn succeed(self, results: &mut impl Iterator<Item = OpReply>) {
        match self {
            Answer::One(name, reply) => {
                let _ = reply.send(results.next().unwrap_or(Err(mismatch(name))));
            }
            Answer::Many(n, reply) => {
                let _ = reply.send(Ok(results.take(n).collect()));
            }
        }
    }
}

impl Request {
    /// Parts the ops from where their results go.
    pub(super) fn split(self) -> (Answer, Ops, OwnedSemaphorePermit) {
        match self.work {
            Work::One { op, reply } => (Answer::One(op.name(), reply), Ops::One(op), self.permit),
            Work::Many { ops, reply } => {
                (Answer::Many(ops.len(), reply), Ops::Many(ops), self.permit)
            }
        }
    }

    /// Answers the request unsent to the store.
    pub(super) fn refuse(self, e: StoreError) {
        self.split().0.fail(e);
    }
}

/// A request's ops, parted from its reply.
pub(super) enum Ops {
    One(WriteOp),
    Many(Vec<WriteOp>),
}
