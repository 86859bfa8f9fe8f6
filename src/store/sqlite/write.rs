//! The write path: applies a batch of [`WriteOp`]s in one transaction, each
//! op that needs one inside its own savepoint so that a failing op is rolled
//! back alone. Plain appends need none: they are queued and inserted
//! together (`buffer.rs`).
//!
//! Per-run counters (`run_heads`) are kept in memory while the batch runs;
//! the in-memory copies become the writer's cache only after the commit
//! succeeds. They reach the disk lazily: the heads changed since the last
//! write-back stay pinned in the cache and are written (with a new mark) in
//! the commit that makes the event tail long enough (see `heads.rs`).

use chrono::Utc;
use rusqlite::Connection;
use rusqlite::limits::Limit;

use super::checkpoint::Checkpoints;
use super::codec::{Kinds, micros};
use super::fast_hash::{IdMap, IdSet};
use super::heads::{fold_tail, write_heads, write_mark};
use crate::records::StoreError;
use crate::records::{WriteOp, WriteOutcome};

mod buffer;
mod checkpoint;
mod definition;
mod inbox;
mod ops;

use self::buffer::EventBuffer;
use self::ops::{INSERT_EVENT, OpCtx};

/// Past this many cached run heads the cache keeps only the unwritten ones
/// and refills the rest on demand.
const HEAD_CACHE_LIMIT: usize = 100_000;
/// Heads are written back once this many runs changed since the last write-back,
/// whatever the tail's length, so that the pinned part of the cache stays bounded.
const MAX_UNWRITTEN_RUNS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Head {
    rid: i64,
    last_seq: u64,
    last_cursor: Option<i64>,
}

/// Changes made by one op (or one batch) that are not committed yet.
#[derive(Default)]
struct Scratch {
    /// Run heads read or changed; `true` when changed.
    heads: IdMap<(Head, bool)>,
    /// Kind names added to the dictionary.
    kinds: Vec<(String, i64)>,
    /// Events appended.
    appended: usize,
}

impl Scratch {
    /// Room for the runs of `ops` ops (one each at most, for plain
    /// appends), so the batch's map never grows while the batch runs.
    fn for_ops(ops: usize) -> Scratch {
        Scratch {
            heads: IdMap::with_capacity_and_hasher(ops, Default::default()),
            ..Scratch::default()
        }
    }

    /// Moves an op's changes into the batch, leaving `op` empty (with its
    /// capacity, for the next op).
    fn absorb(&mut self, op: &mut Scratch) {
        for (id, (head, dirty)) in op.heads.drain() {
            let entry = self.heads.entry(id).or_insert((head, false));
            *entry = (head, entry.1 || dirty);
        }
        self.kinds.append(&mut op.kinds);
        self.appended += std::mem::take(&mut op.appended);
    }

    fn clear(&mut self) {
        self.heads.clear();
        self.kinds.clear();
        self.appended = 0;
    }
}

/// The writer connection and its caches of committed state.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    kinds: Kinds,
    /// Committed run heads, exact.
    heads: IdMap<Head>,
    /// Runs whose head changed since the last write-back: pinned in `heads`,
    /// since their `run_heads` rows are stale.
    unwritten: IdSet,
    /// Events committed since the last write-back (the tail).
    tail: usize,
    /// Write heads back once the tail reaches this many events.
    write_back_events: usize,
    /// The background checkpointer (file databases only).
    checkpoints: Option<Checkpoints>,
    /// The batch's plain appends; kept for its capacity.
    buffer: EventBuffer,
    /// See [`OpCtx::max_payload`].
    max_payload: usize,
}

/// Room left in a row for the columns other than the payload.
const ROW_OVERHEAD: usize = 1024;

impl Writer {
    /// Takes over the writer connection; folds the event tail a crash may
    /// have left into `run_heads` first, so that the stored heads are exact.
    pub(crate) fn new(
        conn: Connection,
        checkpoints: Option<Checkpoints>,
        write_back_events: u32,
    ) -> Result<Writer, StoreError> {
        conn.set_prepared_statement_cache_capacity(64);
        let mut kinds = Kinds::default();
        kinds.reload(&conn)?;
        fold_tail(&conn)?;
        let max_length = conn
            .limit(Limit::SQLITE_LIMIT_LENGTH)
            .map_err(sql("read the length limit"))?;
        Ok(Writer {
            buffer: EventBuffer::default(),
            max_payload: usize::try_from(max_length)
                .unwrap_or(0)
                .saturating_sub(ROW_OVERHEAD),
            conn,
            kinds,
            heads: IdMap::default(),
            unwritten: IdSet::default(),
            tail: 0,
            write_back_events: write_back_events.max(1) as usize,
            checkpoints,
        })
    }

    fn exec(&self, sql: &'static str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(StoreError::sqlite(sql))
    }

    /// Applies `ops` in one transaction; see [`Store::apply_batch`](crate::store::Store::apply_batch).
    /// Only reads them: the caller drops them, off this thread if it can.
    pub(crate) fn apply_batch(
        &mut self,
        ops: &[WriteOp],
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let mut batch = Scratch::for_ops(ops.len());
        let mut buffer = std::mem::take(&mut self.buffer);
        let outcome = self.run_batch(ops, &mut batch, &mut buffer);
        self.buffer = buffer;
        let (results, wrote_back) = match outcome {
            Ok(done) => done,
            Err(e) => {
                // The transaction may be half-open; nothing of it is durable.
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        if wrote_back {
            self.unwritten.clear();
            self.tail = 0;
        } else {
            self.tail += batch.appended;
        }
        if self.heads.len() > HEAD_CACHE_LIMIT {
            let unwritten = &self.unwritten;
            self.heads.retain(|id, _| unwritten.contains(id));
        }
        for (id, (head, dirty)) in batch.heads {
            if dirty && !wrote_back {
                self.unwritten.insert(id);
            }
            self.heads.insert(id, head);
        }
        for (name, code) in batch.kinds {
            self.kinds.insert(code, &name);
        }
        Ok(results)
    }

    /// Before the commit: writes back every head changed since the last
    /// write-back, and the mark, when the tail has grown long enough.
    /// Returns whether it did.
    fn write_back(&self, batch: &Scratch) -> Result<bool, StoreError> {
        let changed = batch.heads.values().filter(|(_, dirty)| *dirty);
        if self.tail + batch.appended < self.write_back_events
            && self.unwritten.len() + changed.clone().count() < MAX_UNWRITTEN_RUNS
        {
            return Ok(false);
        }
        let mut earlier = Vec::with_capacity(self.unwritten.len());
        for id in self
            .unwritten
            .iter()
            .filter(|id| !matches!(batch.heads.get(id), Some((_, true))))
        {
            let Some(head) = self.heads.get(id) else {
                // Unwritten heads stay pinned in the cache; if one were
                // missing, moving the mark would leave its stored head stale.
                // Keep the mark instead: the tail grows until the next open
                // folds it back in.
                debug_assert!(false, "unwritten head of run {id} is not cached");
                tracing::error!(run_id = %id, "unwritten run head missing from the cache; write-back skipped");
                return Ok(false);
            };
            earlier.push(*head);
        }
        let rows: Vec<_> = changed
            .map(|(h, _)| *h)
            .chain(earlier)
            .map(|h| (h.rid, h.last_seq, h.last_cursor))
            .collect();
        write_heads(&self.conn, &rows)?;
        write_mark(&self.conn)?;
        Ok(true)
    }

    /// Runs the batch's transaction; also says whether it wrote heads back.
    fn run_batch(
        &mut self,
        ops: &[WriteOp],
        batch: &mut Scratch,
        buffer: &mut EventBuffer,
    ) -> Result<(Vec<Result<WriteOutcome, StoreError>>, bool), StoreError> {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.catch_up(&self.conn);
        }
        self.exec("BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(ops.len());
        // One op's scratch, reused: no map allocation per op.
        let mut op_scratch = Scratch::default();
        let now = micros(Utc::now());
        buffer.begin(now);
        let mut insert_event = self
            .conn
            .prepare_cached(INSERT_EVENT)
            .map_err(sql("prepare event insert"))?;
        for op in ops {
            // A plain append (no event id, not terminal) changes nothing
            // but its run's head until it is queued in the buffer, and cannot
            // fail after that (a kind name it interns first is harmless to
            // keep), so it needs no savepoint. Every other op may read or
            // insert events itself: the buffer is flushed before it, and
            // it runs in a savepoint, so that it stands or falls whole.
            let plain = matches!(op, WriteOp::Append(ev)
                if ev.event_id.is_none() && ev.kind.as_terminal().is_none());
            if !plain || buffer.is_full() {
                buffer.flush(&self.conn)?;
            }
            if !plain {
                self.exec("SAVEPOINT op")?;
            }
            // A plain append records straight into the batch: it has no
            // savepoint to roll back, so nothing to keep apart.
            let (seen, scratch) = if plain {
                (None, &mut *batch)
            } else {
                (Some(&*batch), &mut op_scratch)
            };
            let mut ctx = OpCtx {
                conn: &self.conn,
                insert_event: &mut insert_event,
                committed: &self.heads,
                kinds: &self.kinds,
                batch: seen,
                op: scratch,
                now,
                buffer: plain.then_some(&mut *buffer),
                max_payload: self.max_payload,
            };
            let result = match ctx.apply(op) {
                // Some errors (I/O, out of memory, a full disk outside a
                // statement journal) make SQLite roll back the whole
                // transaction. Going on would run the rest of the batch in
                // autocommit, committing it piecemeal while its callers are
                // told it failed: the batch fails here instead.
                Err(e) if self.conn.is_autocommit() => return Err(e),
                result => result,
            };
            if !plain {
                buffer.forget_cursor();
                if result.is_ok() {
                    batch.absorb(&mut op_scratch);
                } else {
                    op_scratch.clear();
                    self.exec("ROLLBACK TO op")?;
                }
                self.exec("RELEASE op")?;
            }
            results.push(result);
        }
        drop(insert_event);
        buffer.flush(&self.conn)?;
        let wrote_back = self.write_back(batch)?;
        let syncing = std::time::Instant::now();
        self.exec("COMMIT")?;
        metrics::histogram!(crate::metrics::JOURNAL_SYNC_SECONDS)
            .record(syncing.elapsed().as_secs_f64());
        Ok((results, wrote_back))
    }
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(op)
}

#[cfg(test)]
mod tests;
