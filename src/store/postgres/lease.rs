//! Run leases on PostgreSQL (see [`Ownership`](crate::store::Ownership)):
//! the [`LeaseBook`] of the runs this store holds, with their epochs, and
//! the statements that claim, renew, release and fence them.
//!
//! Time is the database's (`clock_timestamp()`), never a process's: the
//! processes sharing a journal need not agree on the time, only the
//! database with itself.
//!
//! **Fencing.** Every statement here runs in a transaction that first takes
//! the schema's write lock, the one every batch takes: a claim commits
//! wholly before a batch or wholly after it. A batch, once it holds the
//! lock, reads each of its runs' owner and epoch and checks them against
//! the book; no claim can change them before it commits. So no write
//! commits after its run changed hands, and since everything that writes
//! `runs` rows takes that one lock first, none of them can deadlock on
//! row locks.
//!
//! A batch need not read every run's row: each claim that takes runs from
//! a worker adds their number to that worker's row of `lease_takeovers`,
//! in the claim's own statement. A batch reads its worker's count; while it
//! is the one the book last saw, nothing was taken. When it moved, every
//! run held is checked once (those taken are marked lost) and the book
//! takes the new count. (Checking each run of each batch instead cost a
//! third of the journal's throughput; see BENCHMARKS.md.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::Client;
use uuid::Uuid;

use super::codec::{RUN_COLUMNS, decode_run, pg};
use crate::records::{Run, StoreError};
use crate::store::Renewal;

/// The database's clock, in microseconds since the epoch (how the schema
/// keeps times).
const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// The runs this store's worker holds or has lost, shared by the store and
/// its writer.
pub(crate) struct LeaseBook {
    pub(crate) worker: String,
    pub(crate) lease: Duration,
    /// The `LISTEN`/`NOTIFY` channel of this schema's inbox doorbell.
    pub(crate) doorbell: String,
    runs: Mutex<Book>,
    /// Rung when a fenced write finds a lease lost.
    lost_now: Arc<Notify>,
    /// How many runs claims had taken from this worker when its held runs
    /// were last all checked (`lease_takeovers`): while the count stays,
    /// none was taken since.
    taken_seen: AtomicI64,
}

#[derive(Default)]
struct Book {
    /// Held runs and their epochs.
    held: HashMap<Uuid, u64>,
    /// Runs lost, with the epoch they were held at: their writes stay
    /// refused (a straggler must not slip through once the run is gone
    /// from `held`).
    lost: HashMap<Uuid, u64>,
    /// Lost since the last renewal, for its report.
    newly_lost: Vec<Uuid>,
}

/// What the book says of one run a write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Held at this epoch: the write is fenced by it.
    Held(u64),
    /// Lost (held at this epoch): the write is refused.
    Lost(u64),
    /// Not this store's business (another process's run, or one no one
    /// leases): the write is not fenced.
    Unknown,
}

impl LeaseBook {
    pub(crate) fn new(worker: String, lease: Duration, doorbell: String) -> LeaseBook {
        LeaseBook {
            worker,
            lease,
            doorbell,
            runs: Mutex::default(),
            lost_now: Arc::new(Notify::new()),
            taken_seen: AtomicI64::new(0),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lost_now(&self) -> Arc<Notify> {
        self.lost_now.clone()
    }

    /// The lease's length in microseconds, as the schema keeps times.
    pub(crate) fn lease_micros(&self) -> i64 {
        i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX)
    }

    pub(crate) fn standing(&self, run_id: Uuid) -> Standing {
        let book = self.book();
        match (book.held.get(&run_id), book.lost.get(&run_id)) {
            (Some(epoch), _) => Standing::Held(*epoch),
            (None, Some(epoch)) => Standing::Lost(*epoch),
            (None, None) => Standing::Unknown,
        }
    }

    /// Runs this store now holds at `epoch` (inserted, or claimed).
    pub(crate) fn hold(&self, runs: impl IntoIterator<Item = (Uuid, u64)>) {
        let mut book = self.book();
        for (run_id, epoch) in runs {
            book.lost.remove(&run_id);
            book.held.insert(run_id, epoch);
        }
    }

    /// Run `run_id` was found taken over; rings the doorbell.
    pub(crate) fn lose(&self, run_id: Uuid) {
        let mut book = self.book();
        if let Some(epoch) = book.held.remove(&run_id) {
            book.lost.insert(run_id, epoch);
            book.newly_lost.push(run_id);
            drop(book);
            self.lost_now.notify_one();
        }
    }

    pub(crate) fn taken_seen(&self) -> i64 {
        self.taken_seen.load(Ordering::SeqCst)
    }

    pub(crate) fn set_taken_seen(&self, taken: i64) {
        self.taken_seen.store(taken, Ordering::SeqCst);
    }

    /// The ids of the runs held.
    pub(crate) fn held_ids(&self) -> Vec<Uuid> {
        self.book().held.keys().copied().collect()
    }

    /// Held runs with their epochs.
    fn held(&self) -> (Vec<Uuid>, Vec<i64>) {
        self.book()
            .held
            .iter()
            .map(|(id, epoch)| (*id, *epoch as i64))
            .unzip()
    }
}

/// Claims up to `limit` runs of `flows` whose lease is free or lapsed (and
/// not `book`'s own unless released), none of `skip`, oldest first,
/// skipping rows another claim holds.
pub(crate) async fn claim(
    client: &mut Client,
    lock: &str,
    book: &LeaseBook,
    flows: &[String],
    skip: &[Uuid],
    limit: usize,
) -> Result<Vec<Run>, StoreError> {
    if flows.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    // Each run taken from another worker counts against it, in the same
    // statement: that worker's batches see its count move.
    let returning: Vec<String> = RUN_COLUMNS
        .split(',')
        .map(|column| format!("runs.{}", column.trim()))
        .collect();
    let sql = format!(
        "WITH picked AS (SELECT id, lease_owner AS was FROM runs WHERE status NOT IN (3, 4, 5, 6) \
           AND controller_id = ANY($3) AND NOT (id = ANY($5)) \
           AND (lease_owner IS DISTINCT FROM $1 OR lease_expires_at = 0) \
           AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < {NOW}) \
           ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), \
         claimed AS (UPDATE runs SET lease_owner = $1, \
           lease_epoch = coalesce(lease_epoch, 0) + 1, lease_expires_at = {NOW} + $2 \
           FROM picked WHERE runs.id = picked.id RETURNING {}, picked.was), \
         counted AS (INSERT INTO lease_takeovers(worker, taken) \
           SELECT was, count(*) FROM claimed WHERE was IS NOT NULL AND was <> $1 GROUP BY was \
           ON CONFLICT (worker) DO UPDATE SET taken = lease_takeovers.taken + EXCLUDED.taken) \
         SELECT {RUN_COLUMNS} FROM claimed",
        returning.join(", ")
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Not a run lost since the last renewal: the runtime has not stopped
    // its execution here yet (a renewal reports it).
    let skip: Vec<Uuid> = skip
        .iter()
        .copied()
        .chain(book.book().newly_lost.iter().copied())
        .collect();
    let tx = locked(client, lock, "claim runs").await?;
    let rows = tx
        .query(
            &sql,
            &[&book.worker, &book.lease_micros(), &flows, &limit, &skip],
        )
        .await
        .map_err(pg("claim runs"))?;
    tx.commit().await.map_err(pg("claim runs"))?;
    let mut runs = rows
        .iter()
        .map(decode_run)
        .collect::<Result<Vec<Run>, _>>()?;
    runs.sort_by_key(|run| (run.created_at, run.id));
    book.hold(
        runs.iter()
            .filter_map(|run| run.lease.as_ref().map(|l| (run.id, l.epoch))),
    );
    Ok(runs)
}

/// Renews every lease `book` holds in one statement; those it no longer
/// holds are lost.
pub(crate) async fn renew(
    client: &mut Client,
    lock: &str,
    book: &LeaseBook,
) -> Result<Renewal, StoreError> {
    let (ids, epochs) = book.held();
    let mut renewal = Renewal::default();
    if !ids.is_empty() {
        let sql = format!(
            "UPDATE runs r SET lease_expires_at = {NOW} + $2 \
             FROM UNNEST($3::uuid[], $4::bigint[]) AS b(id, epoch) \
             WHERE r.id = b.id AND r.lease_owner = $1 AND r.lease_epoch = b.epoch \
             RETURNING r.id, r.status IN (3, 4, 5, 6), r.cancel_requested"
        );
        let tx = locked(client, lock, "renew leases").await?;
        let rows = tx
            .query(&sql, &[&book.worker, &book.lease_micros(), &ids, &epochs])
            .await
            .map_err(pg("renew leases"))?;
        tx.commit().await.map_err(pg("renew leases"))?;
        let mut kept = std::collections::HashSet::with_capacity(rows.len());
        let mut ended = Vec::new();
        for row in &rows {
            let id: Uuid = row.try_get(0).map_err(pg("renew leases"))?;
            let is_ended: bool = row.try_get(1).map_err(pg("renew leases"))?;
            let cancel: bool = row.try_get(2).map_err(pg("renew leases"))?;
            kept.insert(id);
            if is_ended {
                ended.push(id);
            } else if cancel {
                renewal.cancel_requested.push(id);
            }
        }
        renewal.renewed = kept.len() - ended.len();
        for id in ids.iter().filter(|id| !kept.contains(id)) {
            book.lose(*id);
        }
        // An ended run needs no lease: nobody claims it.
        let mut b = book.book();
        for id in ended {
            b.held.remove(&id);
        }
    }
    renewal.lost = std::mem::take(&mut book.book().newly_lost);
    Ok(renewal)
}

/// Lets the leases of `runs` that `book` holds lapse now.
pub(crate) async fn release(
    client: &mut Client,
    lock: &str,
    book: &LeaseBook,
    runs: &[Uuid],
) -> Result<(), StoreError> {
    let (ids, epochs): (Vec<Uuid>, Vec<i64>) = {
        let b = book.book();
        runs.iter()
            .filter_map(|id| b.held.get(id).map(|epoch| (*id, *epoch as i64)))
            .unzip()
    };
    if ids.is_empty() {
        return Ok(());
    }
    let tx = locked(client, lock, "release leases").await?;
    tx.execute(
        "UPDATE runs r SET lease_expires_at = 0 \
         FROM UNNEST($2::uuid[], $3::bigint[]) AS b(id, epoch) \
         WHERE r.id = b.id AND r.lease_owner = $1 AND r.lease_epoch = b.epoch",
        &[&book.worker, &ids, &epochs],
    )
    .await
    .map_err(pg("release leases"))?;
    tx.commit().await.map_err(pg("release leases"))?;
    // Released is as good as lost: a write that comes later is refused.
    let mut b = book.book();
    for id in &ids {
        if let Some(epoch) = b.held.remove(id) {
            b.lost.insert(*id, epoch);
        }
    }
    Ok(())
}

/// A transaction on `client` holding the schema's write lock (`lock` is
/// the statement that takes it), so that it commits wholly before or after
/// any batch.
async fn locked<'c>(
    client: &'c mut Client,
    lock: &str,
    op: &'static str,
) -> Result<tokio_postgres::Transaction<'c>, StoreError> {
    let tx = client.transaction().await.map_err(pg(op))?;
    tx.batch_execute(lock).await.map_err(pg(op))?;
    Ok(tx)
}

/// How many runs claims have taken from worker `$1`.
pub(crate) const TAKEN: &str =
    "SELECT coalesce((SELECT taken FROM lease_takeovers WHERE worker = $1), 0)";

/// The fence query of a batch, under the write lock: the owner and epoch
/// of each run in `$1`.
pub(crate) const FENCE: &str = "SELECT id, lease_owner, lease_epoch FROM runs WHERE id = ANY($1)";

/// Who holds each run in `runs` now, as the locked rows say.
pub(crate) async fn holders(
    client: &Client,
    statement: &tokio_postgres::Statement,
    runs: &[Uuid],
) -> Result<HashMap<Uuid, (Option<String>, Option<u64>)>, StoreError> {
    let rows = client
        .query(statement, &[&runs])
        .await
        .map_err(pg("check leases"))?;
    rows.iter()
        .map(|row| {
            let id: Uuid = row.try_get(0).map_err(pg("check leases"))?;
            let owner: Option<String> = row.try_get(1).map_err(pg("check leases"))?;
            let epoch: Option<i64> = row.try_get(2).map_err(pg("check leases"))?;
            Ok((id, (owner, epoch.map(|e| e as u64))))
        })
        .collect()
}
