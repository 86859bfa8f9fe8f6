//! Fencing a batch by its runs' lease epochs (see `../lease.rs`): which
//! runs a batch writes for as their owner, which of them this store no
//! longer holds (under the batch's write lock, which claims take too), and
//! the runs a committed batch inserted, which the store now holds.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;
use uuid::Uuid;

use super::super::codec::pg;
use super::Statements;
use crate::records::{StoreError, WriteOp, WriteOutcome};
use crate::store::Fence;
use crate::store::postgres::lease::{FENCE, LeaseBook, Standing, TAKEN, holders};

/// The runs of `ops` this store holds or has lost a lease on, each once:
/// the ones the batch must check. Another process's runs are not fenced.
pub(super) fn fenced_runs(book: &LeaseBook, ops: &[WriteOp]) -> Vec<Uuid> {
    let mut runs = Vec::new();
    for op in ops {
        op.owner_runs(&mut runs);
    }
    let mut seen = HashSet::with_capacity(runs.len());
    runs.retain(|run| seen.insert(*run) && book.standing(*run) != Standing::Unknown);
    runs
}

/// The ops of `ops` that `fences` say were written under a lease epoch
/// this store does not hold their run at (it lost the lease, or holds it
/// again under a later epoch: an execution stopped for a lost lease must
/// commit nothing), each with its refusal. A run this store never held is
/// not fenced here, as in [`fenced_runs`].
pub(super) fn stale_ops(
    book: &LeaseBook,
    ops: &[WriteOp],
    fences: &[Fence],
) -> HashMap<usize, StoreError> {
    let mut stale = HashMap::new();
    let mut runs = Vec::new();
    for fence in fences {
        let current = match book.standing(fence.run_id) {
            Standing::Held(epoch) if epoch == fence.epoch => continue,
            Standing::Unknown => continue,
            Standing::Held(epoch) => Some(epoch),
            Standing::Lost(_) => None,
        };
        for index in fence.ops.clone() {
            let Some(op) = ops.get(index) else { break };
            runs.clear();
            op.owner_runs(&mut runs);
            if runs.contains(&fence.run_id) {
                let holder = current.map(|_| book.worker.clone());
                stale.insert(
                    index,
                    StoreError::LeaseLost {
                        run_id: fence.run_id,
                        epoch: fence.epoch,
                        holder,
                    },
                );
            }
        }
    }
    stale
}

/// The fence of a one-round-trip batch over `fenced` runs (`None` inside
/// when there is nothing to fence), or `None` if one of them is lost
/// already: such a batch goes the general way, which refuses its ops.
pub(super) fn all_held<'a>(
    book: &'a LeaseBook,
    fenced: &[Uuid],
) -> Option<Option<super::fast::Fence<'a>>> {
    if fenced.is_empty() {
        return Some(None);
    }
    let all_held = fenced
        .iter()
        .all(|run| matches!(book.standing(*run), Standing::Held(_)));
    all_held.then(|| {
        Some(super::fast::Fence {
            worker: &book.worker,
            taken_seen: book.taken_seen(),
        })
    })
}

/// The refusals of a batch over `fenced` runs (it holds the write lock, so
/// no claim changes them before it commits): each run whose lease this
/// store lost, with the error its ops get. Reads the worker's count of runs
/// taken; if it moved, checks every run held (those taken are marked lost
/// in `book`) and the book takes the new count.
pub(super) async fn check(
    client: &Client,
    statements: &mut Statements,
    book: &LeaseBook,
    fenced: &[Uuid],
) -> Result<HashMap<Uuid, StoreError>, StoreError> {
    let mut refused = HashMap::new();
    if fenced.is_empty() {
        return Ok(refused);
    }
    let statement = statements.get(client, TAKEN).await?;
    let taken: i64 = client
        .query_one(&statement, &[&book.worker])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(pg("check leases"))?;
    if taken != book.taken_seen() {
        let held = book.held_ids();
        let statement = statements.get(client, FENCE).await?;
        let stored = holders(client, &statement, &held).await?;
        for run_id in held {
            let Standing::Held(epoch) = book.standing(run_id) else {
                continue;
            };
            // A run with no row is not fenced: the op reports it missing.
            let Some((holder, stored_epoch)) = stored.get(&run_id) else {
                continue;
            };
            if holder.as_deref() == Some(book.worker.as_str()) && *stored_epoch == Some(epoch) {
                continue;
            }
            book.lose(run_id);
            let holder = holder.clone().filter(|h| h != &book.worker);
            refused.insert(
                run_id,
                StoreError::LeaseLost {
                    run_id,
                    epoch,
                    holder,
                },
            );
        }
        book.set_taken_seen(taken);
    }
    for run_id in fenced {
        if let Standing::Lost(epoch) = book.standing(*run_id) {
            refused.entry(*run_id).or_insert(StoreError::LeaseLost {
                run_id: *run_id,
                epoch,
                holder: None,
            });
        }
    }
    refused.retain(|run_id, _| fenced.contains(run_id));
    Ok(refused)
}

/// The refusal of `op`, if it writes for a run whose lease is lost.
pub(super) fn refusal(refused: &HashMap<Uuid, StoreError>, op: &WriteOp) -> Option<StoreError> {
    if refused.is_empty() {
        return None;
    }
    let mut runs = Vec::new();
    op.owner_runs(&mut runs);
    runs.iter().find_map(|run| refused.get(run).cloned())
}

/// After a commit: the runs the batch inserted are this store's, at epoch 1.
pub(super) fn hold_inserted(
    book: &LeaseBook,
    ops: &[WriteOp],
    results: &[Result<WriteOutcome, StoreError>],
) {
    fn inserted(op: &WriteOp, out: &mut Vec<(Uuid, u64)>) {
        match op {
            WriteOp::InsertRun { run, .. } => out.push((run.id, 1)),
            WriteOp::Atomic(ops) => ops.iter().for_each(|op| inserted(op, out)),
            _ => {}
        }
    }
    let mut runs = Vec::new();
    for (op, result) in ops.iter().zip(results) {
        if result.is_ok() {
            inserted(op, &mut runs);
        }
    }
    if !runs.is_empty() {
        book.hold(runs);
    }
}
