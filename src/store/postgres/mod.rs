//! [`PostgresStore`]: the PostgreSQL backend (cargo feature `postgres`), for
//! a journal that lives outside the process. It keeps every rule the SQLite
//! store keeps (the conformance suite runs against both), enforced by
//! PostgreSQL in the batch's transaction: unique run ids, one terminal event
//! per run and one event per caller id (partial unique indexes), CAS updates
//! by revision, one run per flow and key that has not ended, the inbox's
//! all-or-none accept, a run's checkpoint replaced only by a greater id.
//!
//! **One writer.** Writes go through one writer connection, one transaction
//! per [`apply_batch`](Store::apply_batch), each op in a savepoint and the
//! batch's plain appends in one `UNNEST` insert (group commit: see
//! `BENCHMARKS.md`). The writer assigns event cursors itself, under a
//! transaction-scoped advisory lock: with several concurrent writers, a
//! sequence (`bigserial`) would hand out cursors that commit out of order,
//! and a poller could skip an event committed late below a cursor it has
//! already passed. The journal actor is the single writer of a process; the
//! lock makes a second one wait; several processes share the runs through
//! leases (`lease.rs`).
//!
//! **Connection loss.** A connection lost before `COMMIT` is sent fails
//! the batch with [`StoreError::ConnectionLost`] (the server rolls it back);
//! lost while `COMMIT` is in flight, with [`StoreError::CommitUnknown`]:
//! never acknowledged as done. Either way the next batch reconnects.
//!
//! **What PostgreSQL refuses that SQLite keeps**: a NUL character in a
//! string stored as `text` (kind names, event ids, step ids, stages, ...):
//! [`StoreError::InvalidInput`] for that op. JSON is stored as serde_json
//! bytes, so NULs inside JSON strings are fine.

mod checkpoint;
mod codec;
mod definition;
mod doorbell;
mod inbox;
mod lease;
mod ledger;
mod ops;
mod read;
mod schema;
mod write;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};
use tokio_postgres::{Client, Config};
use uuid::Uuid;

use self::codec::own_error;
use self::doorbell::Doorbell;
use self::lease::LeaseBook;
pub use self::schema::POSTGRES_SCHEMA_VERSION;
use self::schema::{connect, current_schema, lock_key, migrate};
use self::write::Writer;
use super::traits::Store;
use super::{BatchResult, Fence, Ownership, Renewal};
use crate::records::StepOutput;
use crate::records::{Checkpoint, Memo};
use crate::records::{Cursor, DamagedRun, RunEvent, StoreError, WriteOp, WriteOutcome};
use crate::records::{DeadLetter, FailureEntry, InboxEntry, Run, RunFilter, RunStatus, RunStep};

/// How long a lease lasts by default ([`PostgresConfig::lease`]).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// The shortest lease accepted: renewals every third of it must fit.
const MIN_LEASE: Duration = Duration::from_millis(300);

/// A worker identity unique to this store: the process and a random part.
fn default_worker() -> String {
    let unique = crate::records::new_run_id().simple().to_string();
    format!("pid{}-{}", std::process::id(), &unique[unique.len() - 8..])
}

/// Options of a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The PostgreSQL schema (namespace) holding troupe's tables, created if
    /// missing; `None` uses the connection's `search_path` (normally `public`).
    pub schema: Option<String>,
    /// How long opening a connection may take before it fails.
    pub connect_timeout: Duration,
    /// How many connections serve reads (at least one).
    pub readers: usize,
    /// This store's worker identity, the owner its leases name; `None`
    /// makes one up (process id and a random suffix), unique per store.
    pub worker: Option<String>,
    /// How long a run's lease lasts unless renewed (see
    /// [`Ownership`](crate::store::Ownership)): a dead process's runs are
    /// taken over this long after its last renewal. Default 5 s.
    pub lease: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            schema: None,
            connect_timeout: Duration::from_secs(10),
            readers: 2,
            worker: None,
            lease: DEFAULT_LEASE,
        }
    }
}

/// A durable store in a PostgreSQL database (15 or newer).
///
/// ```no_run
/// # async fn open() -> Result<(), troupe::records::StoreError> {
/// use troupe::store::{PostgresStore, Store};
/// use troupe::records::Run;
///
/// let store = PostgresStore::connect("host=/tmp user=postgres dbname=troupe").await?;
/// store.insert_run(Run::new("orders", "ship order 17", "session-1"), None).await?;
/// # Ok(())
/// # }
/// ```
pub struct PostgresStore {
    config: Config,
    options: PostgresConfig,
    writer: tokio::sync::Mutex<Writer>,
    readers: Vec<Mutex<Option<Arc<Client>>>>,
    next_reader: AtomicUsize,
    lease: Arc<LeaseBook>,
    /// The connection leases are claimed, renewed and released on: their
    /// own, for they run in transactions (see `lease.rs`).
    lease_conn: tokio::sync::Mutex<Option<Client>>,
    /// The statement that takes the schema's write lock.
    lock_sql: String,
    doorbell: Doorbell,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.options.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgresql://` URL or a
    /// `key=value` string), creates or migrates troupe's tables, and opens
    /// the writer and reader connections. Call inside a tokio runtime: each
    /// connection's driver is a task on it.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(url, PostgresConfig::default()).await
    }

    /// [`connect`](Self::connect) with options.
    pub async fn connect_with(
        url: &str,
        options: PostgresConfig,
    ) -> Result<PostgresStore, StoreError> {
        let config: Config = url.parse().map_err(|e| StoreError::Postgres {
            op: "parse the connection URL",
            source: Arc::new(e),
        })?;
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
        }
        let schema = options.schema.as_deref();
        let timeout = options.connect_timeout;
        let worker = match &options.worker {
            Some(worker) if !worker.is_empty() && !worker.contains('\0') => worker.clone(),
            Some(worker) => {
                return Err(own_error(
                    "connect",
                    format!("the worker identity {worker:?} is empty or holds a NUL"),
                ));
            }
            None => default_worker(),
        };
        // Operators (and tests) tell the workers' writers apart by it.
        let writer_name = format!("troupe-writer {worker}");
        let client = connect(&config, schema, &writer_name, timeout).await?;
        migrate(&client, schema).await?;
        let name = match schema {
            Some(schema) => schema.to_owned(),
            None => current_schema(&client).await?,
        };
        let channel = format!("troupe_inbox_{:08x}", lock_key(&name) as u32);
        let lease = Arc::new(LeaseBook::new(
            worker,
            options.lease.max(MIN_LEASE),
            channel.clone(),
        ));
        // Runs taken from this worker before now are none of this store's.
        let taken: i64 = client
            .query_one(lease::TAKEN, &[&lease.worker])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(codec::pg("read the worker's takeovers"))?;
        lease.set_taken_seen(taken);
        let doorbell = Doorbell::new(config.clone(), options.schema.clone(), channel);
        let writer = Writer::new(
            config.clone(),
            options.schema.clone(),
            timeout,
            lock_key(&name),
            client,
            lease.clone(),
            writer_name,
        );
        let mut readers = Vec::new();
        for _ in 0..options.readers.max(1) {
            let reader = connect(&config, schema, "troupe-reader", timeout).await?;
            readers.push(Mutex::new(Some(Arc::new(reader))));
        }
        Ok(PostgresStore {
            config,
            options,
            writer: tokio::sync::Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            lease,
            lease_conn: tokio::sync::Mutex::new(None),
            lock_sql: format!(
                "SELECT pg_advisory_xact_lock({}, {})",
                schema::WRITE_LOCK,
                lock_key(&name)
            ),
            doorbell,
        })
    }

    /// The process id of the writer connection's server backend
    /// (reconnecting first if it was lost): what `pg_stat_activity` and
    /// `pg_terminate_backend` know it by.
    pub async fn writer_backend_pid(&self) -> Result<i32, StoreError> {
        self.writer.lock().await.backend_pid().await
    }

    /// The lease connection, (re)connected if it is missing or lost.
    async fn lease_connection(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, StoreError> {
        let mut slot = self.lease_conn.lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            let client = connect(
                &self.config,
                self.options.schema.as_deref(),
                "troupe-leases",
                self.options.connect_timeout,
            )
            .await?;
            *slot = Some(client);
        }
        Ok(slot)
    }

    /// A reader connection, reconnected if it was lost.
    async fn reader(&self) -> Result<Arc<Client>, StoreError> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let slot = &self.readers[i];
        let current = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(client) = current.filter(|c| !c.is_closed()) {
            return Ok(client);
        }
        let client = Arc::new(
            connect(
                &self.config,
                self.options.schema.as_deref(),
                "troupe-reader",
                self.options.connect_timeout,
            )
            .await?,
        );
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
        Ok(client)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.lock().await.apply_batch(&ops, &[]).await
    }

    async fn apply_fenced_batch(&self, ops: Vec<WriteOp>, fences: Vec<Fence>) -> BatchResult {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.lock().await.apply_batch(&ops, &fences).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<Run>, StoreError> {
        read::get_run(&*self.reader().await?, id).await
    }

    fn ownership(&self) -> Ownership {
        Ownership::Leased {
            worker: self.lease.worker.clone(),
            lease: self.lease.lease,
        }
    }

    async fn claim_runs(
        &self,
        flows: &[String],
        skip: &[Uuid],
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        let mut slot = self.lease_connection().await?;
        let client = slot
            .as_mut()
            .ok_or_else(|| own_error("claim runs", "no connection".into()))?;
        let claimed = lease::claim(client, &self.lock_sql, &self.lease, flows, skip, limit).await;
        forget_if_closed(&mut slot);
        claimed
    }

    async fn renew_leases(&self) -> Result<Renewal, StoreError> {
        let mut slot = self.lease_connection().await?;
        let client = slot
            .as_mut()
            .ok_or_else(|| own_error("renew leases", "no connection".into()))?;
        let renewed = lease::renew(client, &self.lock_sql, &self.lease).await;
        forget_if_closed(&mut slot);
        renewed
    }

    async fn release_leases(&self, runs: &[Uuid]) -> Result<(), StoreError> {
        let mut slot = self.lease_connection().await?;
        let client = slot
            .as_mut()
            .ok_or_else(|| own_error("release leases", "no connection".into()))?;
        let released = lease::release(client, &self.lock_sql, &self.lease, runs).await;
        forget_if_closed(&mut slot);
        released
    }

    fn lease_lost(&self) -> Option<Arc<Notify>> {
        Some(self.lease.lost_now())
    }

    fn inbox_doorbell(&self) -> Option<broadcast::Receiver<Uuid>> {
        Some(self.doorbell.subscribe())
    }

    async fn find_run_by_key(&self, flow: &str, key: &str) -> Result<Option<Run>, StoreError> {
        read::find_run_by_key(&*self.reader().await?, flow, key).await
    }

    async fn list_runs_by_owner(&self, owner_session_key: &str) -> Result<Vec<Run>, StoreError> {
        read::list_runs_by_owner(&*self.reader().await?, owner_session_key).await
    }

    async fn list_runs_by_status(&self, status: RunStatus) -> Result<Vec<Run>, StoreError> {
        read::list_runs_by_status(&*self.reader().await?, status).await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        read::list_runs(&*self.reader().await?, filter, before, limit).await
    }

    async fn list_runs_missing_terminal_event(&self) -> Result<Vec<Run>, StoreError> {
        read::list_runs_missing_terminal_event(&*self.reader().await?).await
    }

    async fn list_runs_to_recover(&self) -> Result<Vec<Result<Run, DamagedRun>>, StoreError> {
        read::list_runs_to_recover(&*self.reader().await?).await
    }

    async fn list_events(&self, run_id: Uuid, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        read::list_events(&*self.reader().await?, run_id, limit).await
    }

    async fn poll(&self, after: Cursor, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        read::poll(&*self.reader().await?, after, limit).await
    }

    async fn latest_cursor(&self) -> Result<Cursor, StoreError> {
        read::latest_cursor(&*self.reader().await?).await
    }

    async fn terminal_event(&self, run_id: Uuid) -> Result<Option<RunEvent>, StoreError> {
        read::terminal_event(&*self.reader().await?, run_id).await
    }

    async fn list_step_outputs(&self, run_id: Uuid) -> Result<Vec<StepOutput>, StoreError> {
        read::list_step_outputs_for(&*self.reader().await?, &[run_id]).await
    }

    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        read::list_step_outputs_for(&*self.reader().await?, run_ids).await
    }

    async fn list_failures(&self, run_id: Uuid) -> Result<Vec<FailureEntry>, StoreError> {
        read::list_failures(&*self.reader().await?, run_id).await
    }

    async fn list_memos(&self, run_id: Uuid, stage: &str) -> Result<Vec<Memo>, StoreError> {
        read::list_memos(&*self.reader().await?, run_id, stage).await
    }

    async fn last_checkpoints_for(&self, run_ids: &[Uuid]) -> Result<Vec<Checkpoint>, StoreError> {
        checkpoint::last_checkpoints_for(&*self.reader().await?, run_ids).await
    }

    async fn last_checkpoint(&self, run_id: Uuid) -> Result<Option<Checkpoint>, StoreError> {
        checkpoint::last_checkpoint(&*self.reader().await?, run_id).await
    }

    async fn list_definitions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<crate::records::DefinitionRecord>, StoreError> {
        definition::list_definitions(&*self.reader().await?, name).await
    }

    async fn list_dead_letters(&self, run_id: Uuid) -> Result<Vec<DeadLetter>, StoreError> {
        read::list_dead_letters(&*self.reader().await?, run_id).await
    }

    async fn list_inbox(&self, run_id: Uuid) -> Result<Vec<InboxEntry>, StoreError> {
        read::list_inbox(&*self.reader().await?, run_id).await
    }

    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
        read::list_steps(&*self.reader().await?, run_id).await
    }
}

/// Refuses a schema name that is empty or too long for PostgreSQL (63 bytes).
pub(crate) fn check_schema_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(own_error(
            "check schema name",
            format!("schema name {name:?} must be 1..=63 bytes without NUL"),
        ));
    }
    Ok(())
}

/// Lets a lost lease connection go (the next call reconnects).
fn forget_if_closed(slot: &mut Option<Client>) {
    if slot.as_ref().is_some_and(Client::is_closed) {
        *slot = None;
    }
}
