//! The one-round-trip batch: a batch of plain appends only (no event id,
//! not terminal, valid) to runs whose heads are cached needs no read before
//! its insert, so `BEGIN` with the write lock, one insert that numbers its
//! rows after the table's last cursor, and `COMMIT` go out together. The
//! insert reads the last cursor in its own snapshot, taken after the lock:
//! cursors still follow commit order. Any other batch takes the general
//! path (`run_batch`), which gives each op its own result.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{FLUSH_BYTES, Writer, lost};
use crate::records::{Appended, Cursor, StoreError, WriteOp, WriteOutcome};
use crate::store::postgres::codec::{check_event_text, is_lost, pg};
use crate::store::postgres::ops::MAX_PAYLOAD;
use crate::store::postgres::schema::WRITE_LOCK;
use crate::store::sqlite::codec::{micros, payload};

const INSERT_NUMBERED: &str = "WITH base AS (SELECT coalesce(max(cursor), 0) AS b FROM events), \
    ins AS (INSERT INTO events(cursor, run_id, seq, kind, at, payload) \
      SELECT base.b + t.n, t.r, t.s, t.k, $4, t.p FROM base, \
      UNNEST($1::uuid[], $2::bigint[], $3::text[], $5::bytea[]) WITH ORDINALITY AS t(r, s, k, p, n)) \
    SELECT b FROM base";

/// [`INSERT_NUMBERED`] when the batch writes for runs this store leases:
/// the rows are inserted only if no claim has taken a run from worker `$6`
/// since the count `$7` the store last checked (read under the write lock,
/// which claims take too; see `../lease.rs`); `ok` says whether they were.
const INSERT_NUMBERED_FENCED: &str = "WITH ok AS (SELECT coalesce((SELECT taken \
      FROM lease_takeovers WHERE worker = $6), 0) = $7 AS ok), \
    base AS (SELECT coalesce(max(cursor), 0) AS b FROM events), \
    ins AS (INSERT INTO events(cursor, run_id, seq, kind, at, payload) \
      SELECT base.b + t.n, t.r, t.s, t.k, $4, t.p FROM base, ok, \
      UNNEST($1::uuid[], $2::bigint[], $3::text[], $5::bytea[]) WITH ORDINALITY AS t(r, s, k, p, n) \
      WHERE ok.ok) \
    SELECT base.b, ok.ok FROM base, ok";

/// What a one-round-trip batch is fenced by: its worker, and how many of
/// its runs claims had taken when the store last checked them all.
pub(super) struct Fence<'a> {
    pub(super) worker: &'a str,
    pub(super) taken_seen: i64,
}

/// A batch ready for the one-round-trip path: its rows, column by column,
/// and the heads they leave.
pub(super) struct Appends {
    runs: Vec<Uuid>,
    seqs: Vec<i64>,
    kinds: Vec<String>,
    payloads: Vec<Option<Vec<u8>>>,
    heads: HashMap<Uuid, u64>,
}

/// The batch's rows, if every op is a plain append that will succeed and
/// every run's head is cached; `None` sends the batch the general way.
pub(super) fn plain_appends(ops: &[WriteOp], committed: &HashMap<Uuid, u64>) -> Option<Appends> {
    let mut rows = Appends {
        runs: Vec::with_capacity(ops.len()),
        seqs: Vec::with_capacity(ops.len()),
        kinds: Vec::with_capacity(ops.len()),
        payloads: Vec::with_capacity(ops.len()),
        heads: HashMap::new(),
    };
    let mut bytes = 0;
    for op in ops {
        let WriteOp::Append(ev) = op else {
            return None;
        };
        if ev.event_id.is_some() || ev.kind.as_terminal().is_some() {
            return None;
        }
        if ev.validate().is_err() || check_event_text(ev).is_err() {
            return None;
        }
        let last = *rows
            .heads
            .get(&ev.run_id)
            .or_else(|| committed.get(&ev.run_id))?;
        let seq = last.checked_add(1).filter(|s| i64::try_from(*s).is_ok())?;
        let body = payload(&ev.kind);
        let size = body.as_ref().map_or(0, Vec::len);
        bytes += size;
        if size > MAX_PAYLOAD || bytes > FLUSH_BYTES {
            return None;
        }
        rows.runs.push(ev.run_id);
        rows.seqs.push(seq as i64);
        rows.kinds.push(ev.kind.name().to_owned());
        rows.payloads.push(body);
        rows.heads.insert(ev.run_id, seq);
    }
    Some(rows)
}

impl Writer {
    /// Commits `rows` in one round trip; the heads they leave go to
    /// `batch_heads`. `Ok(None)` when `fence` refused them (a lease was
    /// lost): nothing was inserted, and the batch must go the general way,
    /// which says which ops are refused.
    pub(super) async fn run_plain_appends(
        &mut self,
        rows: Appends,
        fence: Option<Fence<'_>>,
        batch_heads: &mut HashMap<Uuid, u64>,
    ) -> Result<Option<Vec<Result<WriteOutcome, StoreError>>>, StoreError> {
        let client = self.client.as_ref().ok_or_else(|| lost("begin"))?;
        // Prepared first: the three requests below must leave in order.
        let sql = match fence {
            Some(_) => INSERT_NUMBERED_FENCED,
            None => INSERT_NUMBERED,
        };
        let insert = self.statements.get(client, sql).await?;
        let begin = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}, {})",
            self.lock_key
        );
        let now = micros(Utc::now());
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&rows.runs, &rows.seqs, &rows.kinds, &now, &rows.payloads];
        if let Some(fence) = &fence {
            params.extend([&fence.worker as &(dyn ToSql + Sync), &fence.taken_seen]);
        }
        self.in_transaction = true;
        // Polled in order, so sent in order: if BEGIN or the insert fails,
        // the server answers the COMMIT with a rollback.
        let (begun, inserted, committed) = tokio::join!(
            client.batch_execute(&begin),
            client.query_one(&insert, &params),
            client.batch_execute("COMMIT")
        );
        let (base, fenced_ok) = begun
            .and(inserted)
            .and_then(|row| committed.map(|()| row))
            .and_then(|row| {
                let base = row.try_get::<_, i64>(0)?;
                Ok((base, fence.is_none() || row.try_get::<_, bool>(1)?))
            })
            .map_err(|e| {
                // COMMIT was sent: with the connection gone, its outcome is unknown.
                if is_lost(&e) {
                    StoreError::CommitUnknown {
                        batch_len: rows.runs.len(),
                        source: Arc::new(e),
                    }
                } else {
                    pg("commit")(e)
                }
            })?;
        self.in_transaction = false;
        if !fenced_ok {
            return Ok(None);
        }
        batch_heads.extend(rows.heads);
        Ok(Some(
            (0..rows.seqs.len())
                .map(|i| {
                    Ok(WriteOutcome::Appended(Appended {
                        cursor: Cursor((base + i as i64 + 1) as u64),
                        seq: rows.seqs[i] as u64,
                        duplicate: false,
                    }))
                })
                .collect(),
        ))
    }
}
