//! [`SqliteStore`]: the embedded durable backend (WAL, `synchronous=FULL` by
//! default), with one dedicated thread for the writer connection and one for
//! a read-only connection, so reads never queue behind writes and SQLite
//! never blocks a tokio worker, plus a checkpointer thread that keeps WAL
//! checkpoints out of commits (`checkpoint.rs`) and a WAL file allocated at
//! open to the size it reaches between restarts (`wal_file.rs`).

mod checkpoint;
mod codec;
mod fast_hash;
mod heads;
mod multi_row;
mod read;
mod rows;
mod schema;
mod thread;
mod wal_file;
mod write;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use uuid::Uuid;

use self::checkpoint::Checkpoints;
use self::codec::Kinds;
use self::thread::ConnThread;
use self::write::Writer;
use super::traits::{Store, WriterJob};
use crate::records::{DamagedRun, StoreError};
use crate::records::{Cursor, RunEvent};
use crate::records::{FailureEntry, Run, RunStatus, RunStep, StepOutput};
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
    /// `BENCHMARKS.md`). Commits never run a checkpoint themselves. 0 counts
    /// as 1.
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
    /// its first query; a clean close checkpoints and deletes the file.
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
    writer: ConnThread<Writer>,
    reader: ReadSide,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, or a private
    /// in-memory database for `":memory:"`, with the default [`SqliteConfig`].
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteConfig::default()).await
    }

    /// Opens with explicit options. Checks integrity and migrates the schema;
    /// a newer schema, a damaged file or a file that is not SQLite is a typed error.
    pub async fn open_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_owned();
        let (p, c) = (path.clone(), config.clone());
        let writer = ConnThread::spawn("troupe-sqlite-writer", path.clone(), move || {
            let mut conn = schema::open_writer(&p, &c)?;
            let checkpoints = if schema::in_memory(&p) {
                None
            } else {
                Some(Checkpoints::start(&mut conn, &p, &c)?)
            };
            Writer::new(conn, checkpoints, c.heads_write_back_events)
        })
        .await?;
        let reader = if path.as_os_str() == ":memory:" {
            ReadSide::Writer
        } else {
            let p = path.clone();
            ReadSide::Own(
                ConnThread::spawn("troupe-sqlite-reader", path.clone(), move || {
                    let conn = schema::open_reader(&p, &config)?;
                    conn.set_prepared_statement_cache_capacity(64);
                    Ok(Reader {
                        conn,
                        kinds: Kinds::default(),
                    })
                })
                .await?,
            )
        };
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(SqliteStore {
            path,
            writer,
            reader,
        })
    }

    /// The database file (or `":memory:"`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Kinds) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        match &self.reader {
            ReadSide::Own(reader) => reader.call(move |r| f(&r.conn, &mut r.kinds)).await?,
            ReadSide::Writer => {
                self.writer
                    .call(move |w| {
                        let mut kinds = Kinds::default();
                        f(&w.conn, &mut kinds)
                    })
                    .await?
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        // The ops come back to be dropped here, not on the writer thread.
        let (result, _spent) = self
            .writer
            .call(move |w| (w.apply_batch(&ops), ops))
            .await?;
        result
    }

    fn run_on_writer(&self, job: WriterJob) -> Result<(), WriterJob> {
        self.writer
            .post(move |w| job(&mut |ops| w.apply_batch(ops)));
        Ok(())
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<Run>, StoreError> {
        self.read(move |c, _| read::get_run(c, id)).await
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

    async fn list_steps(&self, run_id: Uuid) -> Result<Vec<RunStep>, StoreError> {
        self.read(move |c, _| read::list_steps(c, run_id)).await
    }
}
