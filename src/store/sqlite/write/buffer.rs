//! The plain appends of a batch (no event id, not terminal), inserted
//! together in multi-row statements instead of one statement each: SQLite's
//! per-statement work is paid once per 64 rows, not per row (BENCHMARKS.md,
//! "Fewer instructions per event: one-op requests, multi-row appends").
//!
//! A buffered event is told its cursor when it is queued: the writer is the
//! only one inserting events, so the next cursor is the last one plus one,
//! which is what SQLite picks for the row when it is inserted (the insert
//! leaves the numbering to SQLite, which is cheaper than a given key, and
//! the flush checks the last number). The buffer is flushed before
//! anything else touches the events table (every op other than a plain
//! append, the heads write-back, the commit), and forgets its last cursor
//! after such an op, which may have inserted events itself.
//!
//! A plain append cannot fail once queued: its run, kind and payload size
//! are checked first, and nothing else about its row can violate the
//! schema. A failed flush is therefore an I/O-level failure, and fails the
//! whole batch.

use std::sync::LazyLock;

use rusqlite::Connection;

use super::sql;
use crate::records::StoreError;
use crate::store::sqlite::multi_row::MultiRow;
use crate::store::sqlite::read::latest_cursor;

static INSERT: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO events(rid, seq, prev, kind, ekey, at, payload) VALUES",
        "(?, ?, ?, ?, NULL, ?, ?)",
        "",
    )
});

/// SQLite numbered the flushed rows itself (consecutively, from the
/// table's last cursor): checks that it gave them the cursors their ops were
/// told. A mismatch would be a bug of the writer's bookkeeping; it fails the
/// batch, so nothing wrong is committed.
fn check_cursors(conn: &Connection, rows: &[(i64, BufferedEvent)]) -> Result<(), StoreError> {
    let Some(&(expected, _)) = rows.last() else {
        return Ok(());
    };
    let got = conn.last_insert_rowid();
    if got == expected {
        return Ok(());
    }
    let message = format!("the last queued event got cursor {got}, not {expected}");
    Err(sql("insert events")(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
        Some(message),
    )))
}

/// A row of `events` waiting for its insert.
pub(super) struct BufferedEvent {
    pub(super) rid: i64,
    pub(super) seq: i64,
    pub(super) prev: Option<i64>,
    pub(super) kind: i64,
    pub(super) payload: Option<Vec<u8>>,
}

/// The batch's queued plain appends.
#[derive(Default)]
pub(super) struct EventBuffer {
    rows: Vec<(i64, BufferedEvent)>,
    /// The cursor of the last event stored or queued (the next one gets
    /// the one after it); `None` until read from the table (at the start of
    /// a batch, and after an op that may have inserted events without the
    /// buffer).
    last_cursor: Option<i64>,
    /// The batch's time, shared by its events.
    at: i64,
    /// Payload bytes queued.
    bytes: usize,
}

/// Queued payload bytes past which the writer flushes before queueing more,
/// so that a batch of large payloads does not hold a second copy of all.
const FLUSH_BYTES: usize = 1 << 20;

impl EventBuffer {
    /// Starts a batch whose events are stamped `at`.
    pub(super) fn begin(&mut self, at: i64) {
        self.rows.clear();
        self.bytes = 0;
        self.last_cursor = None;
        self.at = at;
    }

    /// Whether enough payload bytes are queued to flush before the next one.
    pub(super) fn is_full(&self) -> bool {
        self.bytes >= FLUSH_BYTES
    }

    /// Queues `event`; returns the cursor it will have once flushed.
    pub(super) fn push(
        &mut self,
        conn: &Connection,
        event: BufferedEvent,
    ) -> Result<i64, StoreError> {
        let last = match self.last_cursor {
            Some(last) => last,
            // Cursors are stored as i64: the round trip through `Cursor` is exact.
            None => latest_cursor(conn)?.0 as i64,
        };
        // Past i64::MAX SQLite would pick free rowids at random, which would
        // break cursor order: refuse instead.
        let cursor = last.checked_add(1).ok_or_else(|| {
            sql("read the last cursor")(rusqlite::Error::IntegralValueOutOfRange(0, last))
        })?;
        self.last_cursor = Some(cursor);
        self.bytes += event.payload.as_ref().map_or(0, Vec::len);
        self.rows.push((cursor, event));
        Ok(cursor)
    }

    /// Inserts every queued event, in cursor order.
    pub(super) fn flush(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let at = self.at;
        let inserted = INSERT.run(conn, &self.rows, "insert events", |stmt, first, (_, e)| {
            stmt.raw_bind_parameter(first, e.rid)?;
            stmt.raw_bind_parameter(first + 1, e.seq)?;
            stmt.raw_bind_parameter(first + 2, e.prev)?;
            stmt.raw_bind_parameter(first + 3, e.kind)?;
            stmt.raw_bind_parameter(first + 4, at)?;
            stmt.raw_bind_parameter(first + 5, &e.payload)
        });
        let inserted = inserted.and_then(|()| check_cursors(conn, &self.rows));
        // Flushed, or failed (which fails the batch): done with either way.
        self.rows.clear();
        self.bytes = 0;
        inserted
    }

    /// Events may have been inserted without the buffer (which was flushed
    /// first): read the last cursor again before queueing another.
    pub(super) fn forget_cursor(&mut self) {
        debug_assert!(self.rows.is_empty(), "unflushed events would collide");
        self.last_cursor = None;
    }
}
