//! Fencing a batch by its runs' lease epochs (see `../lease.rs`): which
//! runs a batch writes for as their owner, which of them this store no
//! longer holds (read under the batch's write lock, which claims take too), and
//! the runs a committed batch inserted, which the store now holds.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;
use uuid::Uuid;

use super::Statements;
use crate::records::{StoreError, WriteOp, WriteOutcome};
use crate::store::postgres::lease::{FENCE, LeaseBook, Standing, holders};

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
    let mut epochs = Vec::with_capacity(fenced.len());
    for run in fenced {
        match book.standing(*run) {
            Standing::Held(epoch) => epochs.push(epoch as i64),
            Standing::Lost(_) | Standing::Unknown => return None,
        }
    }
    Some(Some(super::fast::Fence {
        runs: fenced.to_vec(),
        worker: &book.worker,
        epochs,
    }))
}

/// Reads the owners of `fenced` runs (the batch holds the write lock, so
/// they cannot change before it commits) and returns the refusals: each run whose lease this store lost, with the
/// error its ops get. A run found lost is marked so in `book`.
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
    let statement = statements.get(client, FENCE).await?;
    let stored = holders(client, &statement, fenced).await?;
    for run_id in fenced {
        let epoch = match book.standing(*run_id) {
            Standing::Held(epoch) | Standing::Lost(epoch) => epoch,
            Standing::Unknown => continue,
        };
        let (holder, stored_epoch) = stored.get(run_id).cloned().unwrap_or((None, None));
        let held = book.standing(*run_id) == Standing::Held(epoch)
            && holder.as_deref() == Some(book.worker.as_str())
            && stored_epoch == Some(epoch);
        // A run with no row is not fenced: the op reports it missing.
        if held || !stored.contains_key(run_id) {
            continue;
        }
        book.lose(*run_id);
        let holder = holder.filter(|h| h != &book.worker);
        refused.insert(
            *run_id,
            StoreError::LeaseLost {
                run_id: *run_id,
                epoch,
                holder,
            },
        );
    }
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
