//! [`RuntimeBuilder`]: where the journal lives, then `start`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::Actor;

use super::registry::Registry;
use super::root::{RootActor, root_state};
use super::{Runtime, RuntimeError};
use crate::flow::FlowDefinition;
use crate::journal::{JournalBackend, JournalConfig, JournalHandle};
use crate::records::StoreError;
use crate::runs::recover;
use crate::store::{MemoryStore, SqliteStore, create_journal_dir};

/// Where the journal lives when none is chosen.
pub const DEFAULT_JOURNAL_PATH: &str = "./troupe-data/journal.sqlite";

#[derive(Clone)]
enum Location {
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String, crate::store::PostgresConfig),
    Memory,
    Store(JournalBackend),
}

/// Configures and starts a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeBuilder {
    location: Location,
    journal: JournalConfig,
    definitions: Registry,
    hibernate_after: Option<Duration>,
    claim_at_most: Option<usize>,
}

/// How long a run whose stages all wait durably stays live before it
/// hibernates, unless [`RuntimeBuilder::hibernate_after`] says otherwise: a
/// wait shorter than this (a quick approval, a retry's backoff) costs no
/// reactivation, and a longer one holds its actors (~30 KB) no longer than
/// this.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(1);

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = match &self.location {
            Location::Sqlite(path) => format!("sqlite:{}", path.display()),
            #[cfg(feature = "postgres")]
            Location::Postgres(..) => "postgres".to_owned(),
            Location::Memory => "memory".to_owned(),
            Location::Store(_) => "store".to_owned(),
        };
        f.debug_struct("RuntimeBuilder")
            .field("location", &location)
            .field("journal", &self.journal)
            .field("flows", &self.definitions.names())
            .field("hibernate_after", &self.hibernate_after)
            .field("claim_at_most", &self.claim_at_most)
            .finish()
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            location: Location::Sqlite(PathBuf::from(DEFAULT_JOURNAL_PATH)),
            journal: JournalConfig::default(),
            definitions: Registry::default(),
            hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
            claim_at_most: None,
        }
    }
}

impl RuntimeBuilder {
    /// Journal in an SQLite database at `path` (its directory is created,
    /// 0700 on unix, and its files 0600). The runtime owns the journal until
    /// it has shut down or been dropped: [`start`](Self::start) fails with
    /// [`RuntimeError::JournalLocked`] while another runtime, in this
    /// process or another, has it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// use troupe::runtime::{Runtime, RuntimeError};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("journal.sqlite");
    /// let first = Runtime::builder().sqlite(&path).start().await?;
    /// let second = Runtime::builder().sqlite(&path).start().await;
    /// assert!(matches!(second, Err(RuntimeError::JournalLocked { .. })));
    /// first.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn sqlite(mut self, path: impl AsRef<Path>) -> Self {
        self.location = Location::Sqlite(path.as_ref().to_path_buf());
        self
    }

    /// Journal in the PostgreSQL database at `url` (a `postgresql://` URL or
    /// a `key=value` string; cargo feature `postgres`): [`start`](Self::start)
    /// connects, creates or migrates troupe's tables and runs the journal
    /// over a [`PostgresStore`](crate::store::PostgresStore). Several
    /// runtimes, in as many processes, may share one database: each runs
    /// the runs it holds a lease on (those it starts, and those it claims
    /// when their owner stops renewing), and a runtime that lost a lease
    /// commits nothing more for that run (see
    /// [`Ownership`](crate::store::Ownership)).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), troupe::runtime::RuntimeError> {
    /// use troupe::runtime::Runtime;
    ///
    /// let runtime = Runtime::builder()
    ///     .postgres("host=/var/run/postgresql user=troupe dbname=troupe")
    ///     .start()
    ///     .await?;
    /// runtime.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn postgres(self, url: impl Into<String>) -> Self {
        self.postgres_with(url, crate::store::PostgresConfig::default())
    }

    /// [`postgres`](Self::postgres) with options: the worker identity its
    /// leases name, the lease's length, the PostgreSQL schema.
    #[cfg(feature = "postgres")]
    pub fn postgres_with(
        mut self,
        url: impl Into<String>,
        config: crate::store::PostgresConfig,
    ) -> Self {
        self.location = Location::Postgres(url.into(), config);
        self
    }

    /// Journal in memory: nothing survives the process (for tests).
    pub fn memory(mut self) -> Self {
        self.location = Location::Memory;
        self
    }

    /// Journal over `store`, e.g. a store shared with other tools or a
    /// `FaultyStore` in tests. The runtime becomes its single writer.
    pub fn store(mut self, store: JournalBackend) -> Self {
        self.location = Location::Store(store);
        self
    }

    /// Registers a flow definition before start, so that the runtime
    /// resumes the unfinished runs of it that the journal holds.
    pub fn register<T: Clone + Send + 'static>(
        self,
        definition: FlowDefinition<T>,
    ) -> Result<Self, RuntimeError> {
        let name = definition.name().to_owned();
        if self.definitions.register(Arc::new(definition)) {
            Ok(self)
        } else {
            Err(RuntimeError::AlreadyRegistered(name))
        }
    }

    /// How long a run stays live once every stage it has not finished
    /// waits durably (a step in [`sleep`](crate::stage::StageContext::sleep),
    /// [`wait_signal`](crate::stage::StageContext::wait_signal) or
    /// [`await_child`](crate::stage::StageContext::await_child)) and its
    /// `Waiting` record is journaled; then it **hibernates**: its flow and
    /// stage actors stop and the runtime keeps a compact entry (its earliest
    /// deadline, the children it awaits). It is woken, through the path a
    /// restart takes (its steps run again, their memos answer, their timers
    /// re-arm), when its deadline comes, a child it awaits ends, or anything
    /// is sent to it (a signal, a cancel, a pause). Its [`RunHandle`](crate::flow::RunHandle)
    /// stays good throughout. A run with a source, transform or sink not
    /// done does not hibernate, nor one awaiting a child that does not run
    /// in this runtime. Default [`DEFAULT_HIBERNATE_AFTER`]; zero hibernates
    /// at once.
    pub fn hibernate_after(mut self, after: Duration) -> Self {
        self.hibernate_after = Some(after);
        self
    }

    /// On a journal shared with other runtimes (PostgreSQL), claim lapsed
    /// runs only while this runtime holds fewer than `runs` unended ones,
    /// so that a takeover spreads over the live runtimes instead of landing
    /// on the first. Runs started here always run here (their caller holds
    /// their handle), cap or not. Default: no cap. Ignored by a journal
    /// with a single owner (SQLite), whose runs are all its own.
    pub fn claim_at_most(mut self, runs: usize) -> Self {
        self.claim_at_most = Some(runs);
        self
    }

    /// Runs never hibernate: a waiting run keeps its actors.
    pub fn never_hibernate(mut self) -> Self {
        self.hibernate_after = None;
        self
    }

    /// Options of the journal actor.
    pub fn journal_config(mut self, config: JournalConfig) -> Self {
        self.journal = config;
        self
    }

    /// Opens the journal, spawns the root supervisor and the journal actor
    /// under it, and runs the journal's recovery scan (terminal records a
    /// crash left half-written are repaired; unfinished runs are listed in
    /// [`Runtime::recovery`]); then resumes every unfinished run of a flow
    /// registered here: stages whose completion is recorded do not run again
    /// (their outputs come from the journal), the others start over. A run
    /// that cannot be resumed does not fail the start: it is listed in
    /// [`Runtime::resume_failures`] and left as it was; nor does a run row
    /// that cannot be read at all, listed in [`Runtime::damaged_runs`].
    /// Call inside a tokio runtime.
    pub async fn start(self) -> Result<Runtime, RuntimeError> {
        // The SQLite store the runtime opens is its own to close (a store
        // handed in is the caller's).
        let (store, path, closer): (JournalBackend, _, _) = match &self.location {
            Location::Memory => (Arc::new(MemoryStore::new()), None, None),
            Location::Store(store) => (store.clone(), None, None),
            #[cfg(feature = "postgres")]
            Location::Postgres(url, config) => {
                let store = crate::store::PostgresStore::connect_with(url, config.clone())
                    .await
                    .map_err(open_error)?;
                (Arc::new(store), None, None)
            }
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_journal_dir(dir).map_err(|source| RuntimeError::CreateDir {
                        dir: dir.to_path_buf(),
                        source,
                    })?;
                }
                let store = SqliteStore::open(path).await.map_err(open_error)?;
                let closer = store.closer();
                (Arc::new(store), Some(path.clone()), closer)
            }
        };
        let (root, _join) = Actor::spawn(None, RootActor, root_state()).await?;
        let journal = match JournalHandle::spawn(store, self.journal, Some(root.get_cell())).await {
            Ok(journal) => journal,
            Err(error) => {
                root.kill();
                return Err(error.into());
            }
        };
        // The scan writes (it repairs outcomes), so it runs through the journal.
        let recovery = match recover(&journal).await {
            Ok(recovery) => recovery,
            Err(source) => {
                journal.shutdown().await;
                root.kill();
                if let Some(closer) = &closer {
                    closer.close().await;
                }
                return Err(RuntimeError::Recovery(source));
            }
        };
        tracing::info!(
            journal = ?path,
            unfinished = recovery.unfinished.len(),
            repaired = recovery.repaired.len(),
            damaged = recovery.damaged.len(),
            "runtime started"
        );
        let mut runtime = Runtime::new(
            journal,
            root,
            self.definitions,
            recovery,
            path,
            self.hibernate_after,
        )
        .with_closer(closer.clone());
        if let Some(cap) = self.claim_at_most {
            runtime.launcher.claim_cap.store(cap, Ordering::Relaxed);
        }
        if let Err(error) = runtime.resume_unfinished().await {
            drop(runtime);
            // Released before the error returns, so a retry can open it.
            if let Some(closer) = &closer {
                closer.close().await;
            }
            return Err(error);
        }
        Ok(runtime)
    }
}

/// The runtime's error for a journal that would not open: its own variant
/// when another owner has it.
fn open_error(error: StoreError) -> RuntimeError {
    match error {
        StoreError::JournalLocked { path, holder, .. } => {
            RuntimeError::JournalLocked { path, holder }
        }
        other => RuntimeError::Store(other),
    }
}
