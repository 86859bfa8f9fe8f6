//! The write path: one transaction per batch on the writer connection,
//! each op but a plain append in its own savepoint (a failing op is rolled
//! back alone), the batch's plain appends inserted together with one
//! `INSERT ... SELECT FROM UNNEST(...)` per flush, the last one sent with
//! the `COMMIT`. A batch of nothing but plain appends to cached runs takes
//! one round trip (`fast.rs`).
//!
//! Every batch's transaction first takes the schema's write lock (a
//! transaction-scoped advisory lock), then reads the last cursor: cursors
//! are assigned here, in commit order, so a reader never sees cursor `n + 1`
//! committed before `n`. One writer per process (the journal actor) is what
//! this store is built for; the lock makes a second writer wait rather than
//! interleave.
//!
//! Per-run sequence numbers come from a cache of committed heads (run id →
//! last seq), filled from the database on a miss; a batch's changes join
//! the cache only once it has committed, and a failed batch empties it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Statement};
use uuid::Uuid;

use super::codec::pg;
use super::lease::LeaseBook;
use super::ops::OpCtx;
use super::schema::{WRITE_LOCK, connect};
use crate::records::{StoreError, WriteOp, WriteOutcome};
use crate::store::sqlite::codec::micros;
use crate::store::{BatchResult, Fence};

mod fast;
mod fence;

/// Past this many cached run heads the cache is emptied (and refills on demand).
const HEAD_CACHE_LIMIT: usize = 100_000;
/// Queued payload bytes past which the buffer is flushed before queueing more.
pub(super) const FLUSH_BYTES: usize = 8 << 20;

/// Prepared statements of one connection, by their SQL.
#[derive(Default)]
pub(super) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// The statement for `sql`, prepared on `client` the first time.
    pub(super) async fn get(
        &mut self,
        client: &Client,
        sql: &'static str,
    ) -> Result<Statement, StoreError> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await.map_err(pg("prepare statement"))?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// The batch's plain appends, column by column, waiting for one insert.
#[derive(Default)]
pub(super) struct EventBuffer {
    cursors: Vec<i64>,
    runs: Vec<Uuid>,
    seqs: Vec<i64>,
    kinds: Vec<String>,
    payloads: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

const INSERT_BUFFERED: &str = "INSERT INTO events(cursor, run_id, seq, kind, at, payload) \
    SELECT t.c, t.r, t.s, t.k, $5, t.p \
    FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], $6::bytea[]) AS t(c, r, s, k, p)";

impl EventBuffer {
    pub(super) fn push(
        &mut self,
        cursor: i64,
        run: Uuid,
        seq: i64,
        kind: &str,
        p: Option<Vec<u8>>,
    ) {
        self.bytes += p.as_ref().map_or(0, Vec::len);
        self.cursors.push(cursor);
        self.runs.push(run);
        self.seqs.push(seq);
        self.kinds.push(kind.to_owned());
        self.payloads.push(p);
    }

    fn clear(&mut self) {
        self.cursors.clear();
        self.runs.clear();
        self.seqs.clear();
        self.kinds.clear();
        self.payloads.clear();
        self.bytes = 0;
    }

    /// Inserts every queued event in one statement. A queued append was
    /// checked before it was queued, so a failure here is the database's
    /// and fails the batch.
    async fn flush(
        &mut self,
        client: &Client,
        statements: &mut Statements,
        at: i64,
    ) -> Result<(), StoreError> {
        if self.cursors.is_empty() {
            return Ok(());
        }
        let statement = statements.get(client, INSERT_BUFFERED).await?;
        let result = self.insert(client, &statement, at).await;
        self.clear();
        result.map_err(pg("insert events"))
    }

    /// The insert of every queued event: sent when first polled.
    async fn insert(
        &self,
        client: &Client,
        statement: &Statement,
        at: i64,
    ) -> Result<(), tokio_postgres::Error> {
        if self.cursors.is_empty() {
            return Ok(());
        }
        let params: [&(dyn ToSql + Sync); 6] = [
            &self.cursors,
            &self.runs,
            &self.seqs,
            &self.kinds,
            &at,
            &self.payloads,
        ];
        client.execute(statement, &params).await.map(|_| ())
    }
}

/// The writer connection and its caches of committed state.
pub(super) struct Writer {
    config: Config,
    schema: Option<String>,
    timeout: Duration,
    lock_key: i32,
    client: Option<Client>,
    statements: Statements,
    /// Committed run heads: run id → its last sequence number.
    heads: HashMap<Uuid, u64>,
    /// A transaction may be open (a batch was cancelled mid-way).
    in_transaction: bool,
    buffer: EventBuffer,
    /// The runs this store holds leases on: their writes are fenced.
    lease: Arc<LeaseBook>,
    /// The connection's `application_name`, naming the worker.
    name: String,
}

impl Writer {
    pub(super) fn new(
        config: Config,
        schema: Option<String>,
        timeout: Duration,
        lock_key: i32,
        client: Client,
        lease: Arc<LeaseBook>,
        name: String,
    ) -> Writer {
        Writer {
            config,
            schema,
            timeout,
            lock_key,
            client: Some(client),
            statements: Statements::default(),
            heads: HashMap::new(),
            in_transaction: false,
            buffer: EventBuffer::default(),
            lease,
            name,
        }
    }

    /// The writer's backend process id, if it is connected (for tests and
    /// operators: `pg_terminate_backend` on it simulates a lost connection).
    pub(super) async fn backend_pid(&mut self) -> Result<i32, StoreError> {
        self.connected().await?;
        let client = self.client.as_ref().ok_or_else(|| lost("connect"))?;
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(pg("read backend pid"))?;
        row.try_get(0).map_err(pg("read backend pid"))
    }

    /// Reconnects if the connection is gone, and ends a transaction a
    /// cancelled batch left open.
    async fn connected(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.disconnect();
        }
        if self.client.is_none() {
            let client = connect(
                &self.config,
                self.schema.as_deref(),
                &self.name,
                self.timeout,
            )
            .await?;
            self.client = Some(client);
            self.in_transaction = false;
        }
        if self.in_transaction {
            self.end_failed().await;
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.client = None;
        self.statements = Statements::default();
        self.heads.clear();
        self.in_transaction = false;
    }

    /// Rolls back after a failed batch; drops the connection if even that fails.
    async fn end_failed(&mut self) {
        self.heads.clear();
        let rolled_back = match &self.client {
            Some(client) => client.batch_execute("ROLLBACK").await.is_ok(),
            None => false,
        };
        if rolled_back {
            self.in_transaction = false;
        } else {
            self.disconnect();
        }
    }

    /// Applies `ops` in one transaction; see [`Store::apply_batch`](crate::store::Store::apply_batch).
    /// A transaction the server rolled back for a deadlock or a
    /// serialization failure (SQLSTATE class 40: nothing of it committed)
    /// is tried again, a few times, before its error is returned; so is one
    /// that numbered an event after a stale cached head.
    pub(super) async fn apply_batch(&mut self, ops: &[WriteOp], fences: &[Fence]) -> BatchResult {
        let mut attempt = 0;
        loop {
            let result = self.apply_batch_once(ops, fences).await;
            match &result {
                // The failure emptied the head cache: again at once.
                Err(error) if attempt < ROLLBACK_RETRIES && stale_head(error) => attempt += 1,
                Err(error) if attempt < ROLLBACK_RETRIES && rolled_back(error) => {
                    attempt += 1;
                    tracing::debug!(%error, attempt, "batch rolled back by the server; again");
                    tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
                }
                _ => return result,
            }
        }
    }

    async fn apply_batch_once(&mut self, ops: &[WriteOp], fences: &[Fence]) -> BatchResult {
        self.connected().await?;
        let mut heads = HashMap::with_capacity(ops.len());
        let fenced = fence::fenced_runs(&self.lease, ops);
        // Ops of an execution whose lease epoch is not the one held now.
        let stale = fence::stale_ops(&self.lease, ops, fences);
        let lease = self.lease.clone();
        let mut outcome = Ok(None);
        if stale.is_empty()
            && let Some(rows) = fast::plain_appends(ops, &self.heads)
            && let Some(fence) = fence::all_held(&lease, &fenced)
        {
            outcome = self.run_plain_appends(rows, fence, &mut heads).await;
        }
        let outcome = match outcome {
            Ok(Some(results)) => Ok(results),
            Ok(None) => self.run_batch(ops, &fenced, &stale, &mut heads).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(results) => {
                if self.heads.len() + heads.len() > HEAD_CACHE_LIMIT {
                    self.heads.clear();
                }
                self.heads.extend(heads);
                fence::hold_inserted(&self.lease, ops, &results);
                Ok(results)
            }
            Err(e) => {
                match e {
                    StoreError::ConnectionLost { .. } | StoreError::CommitUnknown { .. } => {
                        self.disconnect()
                    }
                    _ => self.end_failed().await,
                }
                self.buffer.clear();
                Err(e)
            }
        }
    }

    async fn run_batch(
        &mut self,
        ops: &[WriteOp],
        fenced: &[Uuid],
        stale: &HashMap<usize, StoreError>,
        batch_heads: &mut HashMap<Uuid, u64>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let client = self.client.as_ref().ok_or_else(|| lost("begin"))?;
        let statements = &mut self.statements;
        let buffer = &mut self.buffer;
        // Rows a cancelled batch left queued were never inserted.
        buffer.clear();
        self.in_transaction = true;
        let mut next_cursor = begin(client, self.lock_key).await? + 1;
        let refused = fence::check(client, statements, &self.lease, fenced).await?;
        let now = micros(Utc::now());
        let mut op_heads = HashMap::new();
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            if let Some(error) = stale
                .get(&index)
                .cloned()
                .or_else(|| fence::refusal(&refused, op))
            {
                results.push(Err(error));
                continue;
            }
            // A plain append (no event id, not terminal) reads only its
            // run's head before it is queued, and cannot fail after that:
            // no savepoint. Every other op may read events: the buffer is
            // flushed first, and the op runs in a savepoint.
            let plain = matches!(op, WriteOp::Append(ev)
                if ev.event_id.is_none() && ev.kind.as_terminal().is_none());
            if !plain || buffer.bytes >= FLUSH_BYTES {
                buffer.flush(client, statements, now).await?;
            }
            if !plain {
                client
                    .batch_execute("SAVEPOINT op")
                    .await
                    .map_err(pg("savepoint"))?;
            }
            let cursor_before = next_cursor;
            let (reads, writes) = if plain {
                (None, &mut *batch_heads)
            } else {
                (Some(&*batch_heads), &mut op_heads)
            };
            let mut ctx = OpCtx {
                client,
                statements: &mut *statements,
                committed: &self.heads,
                batch: reads,
                heads: writes,
                next_cursor: &mut next_cursor,
                buffer: plain.then_some(&mut *buffer),
                now,
                lease: &self.lease,
            };
            let result = ctx.apply(op).await;
            match &result {
                // The connection is gone: the transaction with it.
                Err(e @ StoreError::ConnectionLost { .. }) => return Err(e.clone()),
                // A plain append has no savepoint: a database error left
                // the transaction aborted.
                Err(e @ StoreError::Postgres { .. }) if plain => return Err(e.clone()),
                // A stale cached head: the whole batch is tried again.
                Err(e) if stale_head(e) => return Err(e.clone()),
                _ => {}
            }
            if !plain {
                if result.is_ok() {
                    batch_heads.extend(op_heads.drain());
                    client
                        .batch_execute("RELEASE op")
                        .await
                        .map_err(pg("release savepoint"))?;
                } else {
                    op_heads.clear();
                    next_cursor = cursor_before;
                    client
                        .batch_execute("ROLLBACK TO op; RELEASE op")
                        .await
                        .map_err(pg("roll back to savepoint"))?;
                }
            }
            results.push(result);
        }
        // The last insert and the COMMIT go out together (one round trip):
        // if the insert fails, the server answers the COMMIT with a
        // rollback, and the insert's error fails the batch.
        let insert = statements.get(client, INSERT_BUFFERED).await?;
        let (inserted, committed) = tokio::join!(
            buffer.insert(client, &insert, now),
            client.batch_execute("COMMIT")
        );
        buffer.clear();
        // Once COMMIT is sent, a lost connection leaves the outcome unknown
        // (the server may have committed): never acknowledged.
        for result in [inserted, committed] {
            if let Err(e) = result {
                return Err(if super::codec::is_lost(&e) {
                    StoreError::CommitUnknown {
                        batch_len: ops.len(),
                        source: std::sync::Arc::new(e),
                    }
                } else {
                    pg("commit")(e)
                });
            }
        }
        self.in_transaction = false;
        Ok(results)
    }
}

/// Opens the batch's transaction, takes the schema's write lock and reads
/// the last cursor, in one round trip; returns the last cursor.
async fn begin(client: &Client, lock_key: i32) -> Result<i64, StoreError> {
    let messages = client
        .simple_query(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}, {lock_key}); \
             SELECT coalesce(max(cursor), 0) FROM events"
        ))
        .await
        .map_err(pg("begin"))?;
    let last = messages.iter().rev().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    });
    last.and_then(|text| text.parse().ok()).ok_or_else(|| {
        super::codec::own_error(
            "read the last cursor",
            format!("unexpected answer {last:?}"),
        )
    })
}

/// How many times a batch the server rolled back is tried again.
const ROLLBACK_RETRIES: u32 = 5;

/// Whether the server rolled the batch's transaction back by itself
/// (SQLSTATE class 40: a deadlock, a serialization failure): nothing of it
/// committed, and the same batch may well commit next time.
fn rolled_back(error: &StoreError) -> bool {
    server_error(error).is_some_and(|db| db.code().code().starts_with("40"))
}

/// Whether `error` is an event numbered after a stale cached head (unique
/// `(run_id, seq)` violated): another process appended to the run since
/// this store cached its head (input it journaled, a lease it held for a
/// while). The failed batch emptied the cache; tried again, the heads are
/// read afresh under the write lock, so the batch commits.
fn stale_head(error: &StoreError) -> bool {
    server_error(error).is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("events_by_run")
    })
}

/// The server's error behind `error`, if the server refused something.
fn server_error(error: &StoreError) -> Option<&tokio_postgres::error::DbError> {
    let StoreError::Postgres { source, .. } = error else {
        return None;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
}

/// The connection is gone before `op` could start.
fn lost(op: &'static str) -> StoreError {
    StoreError::ConnectionLost {
        op,
        source: std::sync::Arc::new(super::codec::Message("not connected".into())),
    }
}
