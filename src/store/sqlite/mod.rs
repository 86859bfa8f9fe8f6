//! [`SqliteStore`]: the embedded durable backend (WAL, `synchronous=FULL` by
//! default), with one dedicated thread for the writer connection and one for
//! a read-only connection, so reads never queue behind writes and SQLite
//! never blocks a tokio worker, plus a checkpointer thread that keeps WAL
//! checkpoints out of commits (`checkpoint.rs`) and a WAL file allocated at
//! open to the size it reaches between restarts (`wal_file.rs`).

mod checkpoint;
pub(in crate::store) mod codec;
pub(in crate::store) mod definition;
mod fast_hash;
mod heads;
mod list;
mod lock;
mod multi_row;
mod owner;
mod private;
mod read;
mod rows;
mod run_checkpoint;
mod schema;
mod thread;
mod wal_file;
mod write;

use crate::records::{Checkpoint, Memo};
pub(crate) use owner::Closer;
pub(crate) use private::create_dir as create_journal_dir;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use uuid::Uuid;

use self::codec::Kinds;
use self::owner::{Closing, Owner};
use self::thread::ConnThread;
use super::traits::{Store, WriterJob};
use crate::records::{Cursor, RunEvent};
use crate::records::{DamagedRun, StoreError};
use crate::records::{
    DeadLetter, FailureEntry, InboxEntry, Run, RunFilter, RunStatus, RunStep, StepOutput,
};
use crate::records::{WriteOp, WriteOutcome};

/// The newest journal schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// No fsync: fast, loses recent commits on power loss (not on a process crash).
    Off,
    /// fsync at checkpoints only (in WAL mode): survives process crashes, may
    /// lose the last commits on power loss.
    Normal,
    /// fsync on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// Like `Full`, plus a sync of the directory.
    Extra,
}

impl Synchronous {
    fn as_pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// How thoroughly the database is checked when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntegrityCheck {
    /// No check.
    Off,
    /// `PRAGMA quick_check`: page and record structure, without index contents.
    #[default]
    Quick,
    /// `PRAGMA integrity_check`: everything, including index contents.
    Full,
}

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Commit durability; [`Synchronous::Full`] by default.
    pub synchronous: Synchronous,
    /// Check at open; [`IntegrityCheck::Quick`] by default.
    pub integrity_check: IntegrityCheck,
    /// How long a connection waits for a lock held by another connection.
    pub busy_timeout: Duration,
    /// Pages committed to the WAL after which a background thread copies
    /// them into the database file; 2000 by default (SQLite's own threshold
    /// is 1000 pages, but fewer, larger passes slow fewer commits: see
    /// `BENCHMARKS.md`, "Preallocated WAL, restarted once per
    /// `wal_restart_pages`"). Commits never run a checkpoint themselves. 0
    /// counts as 1.
    pub checkpoint_pages: u32,
    /// WAL size, in pages, from which the writer lets the WAL restart from
    /// its beginning. After the first background pass that ends with the WAL
    /// at least this long, the writer copies the pages committed during the
    /// pass before its next commit (a database `fsync` that every write
    /// queued behind it waits for), and that commit restarts the WAL. Larger
    /// means fewer such stalls, a larger WAL file and a longer replay after a
    /// crash. A value at or below `checkpoint_pages` restarts the WAL after
    /// every pass.
    ///
    /// The WAL holds at most about `checkpoint_pages` plus the larger of the
    /// two settings, in pages (more only while a reader's snapshot or a
    /// single larger transaction holds it back). The store allocates the
    /// `-wal` file to that size when it opens, so that commits overwrite
    /// allocated blocks instead of growing the file: with the defaults and 4
    /// KiB pages, 6000 frames or 24.7 MB of disk (at most 256 MiB is
    /// allocated ahead, whatever the settings; a store that cannot allocate
    /// it, e.g. for lack of space, opens anyway and logs a warning, and its
    /// commits grow the file as they go). After a crash, the next
    /// open reads the WAL's valid frames again (at most that much) before
    /// its first query. A clean close ([`SqliteStore::close`], or dropping
    /// the store) checkpoints the WAL into the database and truncates it to
    /// zero bytes; the empty `-wal` and `-shm` files stay until the last
    /// connection to the database closes (SQLite deletes them then), and
    /// the next open allocates the WAL again.
    pub wal_restart_pages: u32,
    /// How many events may be committed before the per-run counters
    /// (`run_heads`) are written back to disk. Until then the writer holds
    /// them in memory, and reads and the next open rebuild them from the
    /// events after the last write-back, so a larger value makes commits
    /// cheaper and those scans longer (`list_events` of a run with no event
    /// in that tail scans all of it). 0 counts as 1. A commit that leaves
    /// more than 10,000 runs with unwritten counters writes them back too.
    pub heads_write_back_events: u32,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            synchronous: Synchronous::Full,
            integrity_check: IntegrityCheck::Quick,
            busy_timeout: Duration::from_secs(5),
            checkpoint_pages: 2000,
            wal_restart_pages: 4000,
            heads_write_back_events: 4096,
        }
    }
}

/// Read-side connection state.
struct Reader {
    conn: Connection,
    kinds: Kinds,
}

/// Where reads run: a read-only connection of their own, or (for
/// `":memory:"`, which one connection owns) the writer's.
enum ReadSide {
    Own(ConnThread<Reader>),
    Writer,
}

/// The embedded SQLite backend.
///
/// A store opened for writing ([`open`](Self::open), [`open_with`](Self::open_with))
/// owns its journal: it holds an exclusive lock on it (a `<db>.lock` file
/// beside the database) until it is [closed](Self::close) or dropped, or
/// its process dies, so a second writer on the same file, in this process
/// or another, gets [`StoreError::JournalLocked`]. Tools read a journal that a writer holds
/// through [`open_read_only`](Self::open_read_only).
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
/// use troupe::store::{Store, SqliteStore};
/// use troupe::records::{EventKind, Run, TerminalEvent};
///
/// let store = SqliteStore::open(":memory:").await?;
/// let run = Run::new("orders", "process order 17", "session-1");
/// store.insert_run(run.clone(), None).await?;
/// store.append_terminal_event_if_absent(run.id, TerminalEvent::RunCancelled).await?;
/// assert!(store.terminal_event(run.id).await?.is_some());
/// # Ok::<(), troupe::records::StoreError>(())
/// # }).unwrap();
/// ```
pub struct SqliteStore {
    path: PathBuf,
    /// `None` when opened read-only.
    writer: Option<ConnThread<Owner>>,
    reader: ReadSide,
    /// `None` when opened read-only.
    closing: Option<Closing>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, or a private
    /// in-memory database for `":memory:"`, with the default [`SqliteConfig`].
    ///
    /// The store owns the journal until it is dropped: a second open for
    /// writing of the same file fails with [`StoreError::JournalLocked`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use troupe::records::StoreError;
    /// use troupe::store::SqliteStore;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("journal.sqlite");
    /// let owner = SqliteStore::open(&path).await?;
    /// let second = SqliteStore::open(&path).await;
    /// assert!(matches!(second, Err(StoreError::JournalLocked { .. })));
    /// drop(owner); // released once dropped
    /// SqliteStore::open(&path).await?;
    /// # Ok::<(), StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteConfig::default()).await
    }

    /// Opens with explicit options. Creates the journal's directory (0700 on
    /// unix) and database file (0600) if needed, takes the journal's lock,
    /// checks integrity and migrates the schema; another writer holding the
    /// journal, a newer schema, a damaged file or a file that is not SQLite
    /// is a typed error.
    pub async fn open_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_owned();
        let (p, c) = (path.clone(), config.clone());
        let (closing, closed, thread) = Closing::new();
        let writer = ConnThread::spawn("troupe-sqlite-writer", path.clone(), move || {
            let _ = thread.set(std::thread::current().id());
            Owner::open(&p, &c, closed)
        })
        .await?;
        // A store from here on, so that a failure below closes the writer
        // (and releases the lock) before it is returned.
        let mut store = SqliteStore {
            path,
            writer: Some(writer),
            reader: ReadSide::Writer,
            closing: Some(closing),
        };
        if !schema::in_memory(&store.path) {
            let reader = spawn_reader(&store.path, config, schema::open_reader);
            store.reader = ReadSide::Own(reader.await?);
        }
        tracing::debug!(path = %store.path.display(), "sqlite store opened");
        Ok(store)
    }

    /// Opens an existing journal for reads only, with the default
    /// [`SqliteConfig`]: for tools and inspection, beside a live writer.
    ///
    /// It never creates a journal (a missing path is
    /// [`StoreError::NotFound`]), never migrates one (an older schema is
    /// [`StoreError::SchemaTooOld`]: open it once for writing; a newer one is
    /// [`StoreError::SchemaTooNew`]), takes no lock, so it works while a
    /// runtime owns the journal, and sees what that runtime has committed.
    /// Every write is refused with [`StoreError::ReadOnly`].
    ///
    /// SQLite may create the `-wal` and `-shm` files beside a journal in WAL
    /// mode that has none (no writer has it open), as every reader of such a
    /// journal needs them.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use troupe::records::{Run, StoreError};
    /// use troupe::store::{SqliteStore, Store};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("journal.sqlite");
    /// let writer = SqliteStore::open(&path).await?;
    /// let run = Run::new("orders", "ship order 17", "session-1");
    /// writer.insert_run(run.clone(), None).await?;
    ///
    /// let reader = SqliteStore::open_read_only(&path).await?;
    /// assert_eq!(reader.get_run(run.id).await?.map(|r| r.goal), Some(run.goal.clone()));
    /// let refused = reader.insert_run(Run::new("orders", "another", "session-1"), None).await;
    /// assert!(matches!(refused, Err(StoreError::ReadOnly { .. })));
    ///
    /// let missing = SqliteStore::open_read_only(dir.path().join("absent.sqlite")).await;
    /// assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    /// # Ok::<(), StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_read_only_with(path, SqliteConfig::default()).await
    }

    /// [`open_read_only`](Self::open_read_only) with explicit options (of
    /// which it uses `integrity_check` and `busy_timeout`).
    pub async fn open_read_only_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_owned();
        let reader = spawn_reader(&path, config, schema::open_read_only).await?;
        tracing::debug!(path = %path.display(), "sqlite store opened read-only");
        Ok(SqliteStore {
            path,
            writer: None,
            reader: ReadSide::Own(reader),
            closing: None,
        })
    }

    /// Closes the store for writing, after the writes already queued: the
    /// writer connection is closed and the journal's lock released, so that
    /// another owner can open it at once, even while handles to this store
    /// live on. Later writes fail with [`StoreError::Closed`]; reads keep
    /// working (but an in-memory database is gone). Dropping the store
    /// closes it too. Idempotent; nothing to do for a read-only store.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use troupe::records::{Run, StoreError};
    /// use troupe::store::{SqliteStore, Store};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("journal.sqlite");
    /// let store = Arc::new(SqliteStore::open(&path).await?);
    /// let kept = store.clone();
    /// store.close().await;
    /// let next_owner = SqliteStore::open(&path).await?;
    /// let refused = kept.insert_run(Run::new("orders", "late", "session-1"), None).await;
    /// assert!(matches!(refused, Err(StoreError::Closed { .. })));
    /// # Ok::<(), StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn close(&self) {
        if let Some(closer) = self.closer() {
            closer.close().await;
        }
    }

    /// What closes this store's writer without holding the store, for a
    /// runtime that opened it (`None` when read-only).
    pub(crate) fn closer(&self) -> Option<Closer> {
        self.writer.clone().map(Closer::new)
    }

    /// The database file (or `":memory:"`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store was opened with
    /// [`open_read_only`](Self::open_read_only) (and so refuses writes).
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    fn read_only(&self, op: &WriteOp) -> StoreError {
        StoreError::ReadOnly {
            path: self.path.clone(),
            op: op.name(),
        }
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Kinds) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        match (&self.reader, &self.writer) {
            (ReadSide::Own(reader), _) => reader.call(move |r| f(&r.conn, &mut r.kinds)).await?,
            (ReadSide::Writer, Some(writer)) => {
                writer
                    .call(move |w| {
                        let mut kinds = Kinds::default();
                        f(w.conn()?, &mut kinds)
                    })
                    .await?
            }
            // Not built: only an in-memory store reads on its writer.
            (ReadSide::Writer, None) => Err(StoreError::ConnectionClosed {
                path: self.path.clone(),
            }),
        }
    }
}

/// Dropping the store closes it (see [`SqliteStore::close`]) and waits
/// for that, so that when the drop returns the journal's lock is released
/// and the next owner can open it at once.
impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let (Some(writer), Some(closing)) = (self.writer.take(), self.closing.take()) {
            closing.close_and_wait(&writer);
        }
    }
}

/// Starts a reader thread over a connection opened by `open`.
async fn spawn_reader(
    path: &Path,
    config: SqliteConfig,
    open: fn(&Path, &SqliteConfig) -> Result<Connection, StoreError>,
) -> Result<ConnThread<Reader>, StoreError> {
    let p = path.to_owned();
    ConnThread::spawn("troupe-sqlite-reader", path.to_owned(), move || {
        let conn = open(&p, &config)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Reader {
            conn,
            kinds: Kinds::default(),
        })
    })
    .await
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let Some(writer) = &self.writer else {
            return Ok(ops.iter().map(|op| Err(self.read_only(op))).collect());
        };
        // The ops come back to be dropped here, not on the writer thread.
        let (result, _spent) = writer.call(move |w| (w.apply_batch(&ops), ops)).await?;
        result
    }

    fn run_on_writer(&self, job: WriterJob) -> Result<(), WriterJob> {
        // A read-only store has no writer thread: `apply_batch` refuses.
        let Some(writer) = &self.writer else {
            return Err(job);
        };
        writer.post(move |w| job(&mut |ops| w.apply_batch(ops)));
        Ok(())
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<Run>, StoreError> {
        self.read(move |c, _| read::get_run(c, id)).await
    }

    async fn find_run_by_key(&self, flow: &str, key: &str) -> Result<Option<Run>, StoreError> {
        let (flow, key) = (flow.to_owned(), key.to_owned());
        self.read(move |c, _| read::find_run_by_key(c, &flow, &key))
            .await
    }

    async fn list_runs_by_owner(&self, owner_session_key: &str) -> Result<Vec<Run>, StoreError> {
        let owner = owner_session_key.to_owned();
        self.read(move |c, _| read::list_runs_by_owner(c, &owner))
            .await
    }

    async fn list_runs_by_status(&self, status: RunStatus) -> Result<Vec<Run>, StoreError> {
        self.read(move |c, _| read::list_runs_by_status(c, status))
            .await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        let filter = filter.clone();
        self.read(move |c, _| list::list_runs(c, &filter, before, limit))
            .await
    }

    async fn list_runs_missing_terminal_event(&self) -> Result<Vec<Run>, StoreError> {
        self.read(|c, _| read::list_runs_missing_terminal_event(c))
            .await
    }

    async fn list_runs_to_recover(&self) -> Result<Vec<Result<Run, DamagedRun>>, StoreError> {
        self.read(|c, _| read::list_runs_to_recover(c)).await
    }

    async fn list_events(&self, run_id: Uuid, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        self.read(move |c, k| read::list_events(c, k, run_id, limit))
            .await
    }

    async fn poll(&self, after: Cursor, limit: usize) -> Result<Vec<RunEvent>, StoreError> {
        self.read(move |c, k| read::poll(c, k, after, limit)).await
    }

    async fn latest_cursor(&self) -> Result<Cursor, StoreError> {
        self.read(|c, _| read::latest_cursor(c)).await
    }

    async fn terminal_event(&self, run_id: Uuid) -> Result<Option<RunEvent>, StoreError> {
        self.read(move |c, k| read::terminal_event(c, k, run_id))
            .await
    }

    async fn list_step_outputs(&self, run_id: Uuid) -> Result<Vec<StepOutput>, StoreError> {
        self.read(move |c, _| read::list_step_outputs(c, run_id))
            .await
    }

    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        let run_ids = run_ids.to_vec();
        self.read(move |c, _| read::list_step_outputs_for(c, &run_ids))
            .await
    }

    async fn list_failures(&self, run_id: Uuid) -> Result<Vec<FailureEntry>, StoreError> {
        self.read(move |c, _| read::list_failures(c, run_id)).await
    }

    async fn list_memos(&self, run_id: Uuid, stage: &str) -> Result<Vec<Memo>, StoreError> {
        let stage = stage.to_owned();
        self.read(move |c, _| read::list_memos(c, run_id, &stage))
            .await
    }

    async fn last_checkpoints_for(&self, run_ids: &[Uuid]) -> Result<Vec<Checkpoint>, StoreError> {
        let run_ids = super::traits::distinct(run_ids);
        // One job on the reader: a cached statement per run, no round trips.
        self.read(move |c, _| {
            let mut found = Vec::new();
            for run_id in run_ids {
                found.extend(run_checkpoint::last_checkpoint(c, run_id)?);
            }
            Ok(found)
        })
        .await
    }

    async fn last_checkpoint(&self, run_id: Uuid) -> Result<Option<Checkpoint>, StoreError> {
        self.read(move |c, _| run_checkpoint::last_checkpoint(c, run_id))
            .await
    }

    async fn list_definitions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<crate::records::DefinitionRecord>, StoreError> {
        let name = name.map(str::to_owned);
        self.read(move |c, _| definition::list_definitions(c, name.as_deref()))
            .await
    }

    async fn list_dead_letters(&self, run_id: Uuid) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c, _| read::list_dead_letters(c, run_id))
            .await
    }

    async fn runs_with_unsettled_inbox(&self, run_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let run_ids = super::traits::distinct(run_ids);
        // One job on the reader, not a round trip per run.
        self.read(move |c, _| {
            let mut found = Vec::new();
            for run_id in run_ids {
                if read::list_inbox(c, run_id)?
                    .iter()
                    .any(|e| e.settled.is_none())
                {
                    found.push(run_id);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn list_inbox(&self, run_id: Uuid) -> Result<Vec<InboxEntry>, StoreError> {
        self.read(move |c, _| read::list_inbox(c, run_id)).await
    }

    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
        self.read(move |c, _| read::list_steps(c, run_id)).await
    }
}
