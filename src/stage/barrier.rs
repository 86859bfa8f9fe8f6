//! What a stage does with a checkpoint barrier (see
//! [`checkpoint`](crate::checkpoint)): take its logic's snapshot, report
//! it, pass the barrier on; and, for a two-phase sink, commit what it
//! pre-committed once the checkpoint is durable.

use super::StageKind;
use super::ports::Ports;
use super::work::Work;
use crate::supervise::BoxError;

/// Commits a sink's pending pre-commit once its checkpoint is durable; a
/// pre-commit whose checkpoint was abandoned stays pending, for the next
/// one to commit.
pub(super) async fn commit_settled<T, W>(work: &mut W, ports: &mut Ports<T>) -> Result<(), BoxError>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    let Some(link) = ports.checkpoint.as_mut() else {
        return Ok(());
    };
    let Some((lowest, highest)) = link.pre_committed else {
        return Ok(());
    };
    let committed = link.settled().committed;
    if committed >= lowest {
        // Commits every pre-commit up to it; later ones stay pending.
        let upto = committed.min(highest);
        work.commit(upto).await?;
        link.pre_committed = (upto < highest).then_some((upto + 1, highest));
    }
    Ok(())
}

/// Passes checkpoint `id`'s barrier: takes the logic's snapshot, reports
/// it (with the item counts at the cut: the outbox's items precede the
/// barrier) and sends the barrier on after the outbox.
pub(super) async fn pass_barrier<T, W>(
    work: &mut W,
    ports: &mut Ports<T>,
    id: u64,
) -> Result<(), BoxError>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    let mut snapshot = work.snapshot().map_err(|e| e.to_string());
    if W::KIND == StageKind::Sink && snapshot.is_ok() {
        match work.pre_commit(id).await {
            Ok(()) => {
                if let Some(link) = ports.checkpoint.as_mut() {
                    let lowest = link.pre_committed.map_or(id, |(lowest, _)| lowest);
                    link.pre_committed = Some((lowest, id));
                }
            }
            Err(error) => snapshot = Err(format!("its pre-commit failed: {error}")),
        }
    }
    let items_out = ports.items_out + ports.outbox.len() as u64;
    let items_in = ports.items_in;
    if let (Some(counters), true) = (&ports.counters, snapshot.is_ok()) {
        counters.passed_barrier(id);
    }
    if let Some(link) = ports.checkpoint.as_mut() {
        link.passed(id, snapshot, items_in, items_out);
    }
    ports.pass_barrier(id);
    ports.send_outbox().await?;
    Ok(())
}

/// Before a sink's completion hook: its last pre-commit is committed (or
/// its checkpoint abandoned) first, so the hook commits only what came
/// after it.
pub(super) async fn settle_last_pre_commit<T, W>(
    work: &mut W,
    ports: &mut Ports<T>,
) -> Result<(), BoxError>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    loop {
        commit_settled(work, ports).await?;
        let Some(link) = ports.checkpoint.as_mut() else {
            return Ok(());
        };
        match link.pre_committed {
            // A coordinator that is gone settles nothing more.
            Some((_, highest)) if link.settled().aborted < highest => {
                if !link.settle_changed().await {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        }
    }
}
