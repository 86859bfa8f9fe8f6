//! Pipelined WAL syncs: commits do not fsync, a syncer thread does, and a
//! batch's result is handed over only after a sync that started once its
//! commit had finished.
//!
//! With [`Synchronous::Full`](super::Synchronous::Full) (or `Extra`) on a
//! file database, the writer connection runs with SQLite's
//! `synchronous=NORMAL`: in WAL mode its COMMIT writes the frames into the
//! `-wal` file without syncing it (SQLite still syncs the WAL before every
//! checkpoint and the database after it; NORMAL never corrupts the database
//! on power loss, it can only lose the newest transactions). Each commit's
//! result then goes to this module's thread, which `fdatasync`s the WAL
//! through a descriptor of its own and only then hands the results on. The
//! writer meanwhile commits the next batch; every result that reached the
//! syncer before a sync started is covered by that sync (the page cache is
//! per inode, so a sync through any descriptor flushes the writer's
//! writes), so commits that finish during one sync share the next.
//! Results are handed on in commit order.
//!
//! Why an acknowledged commit survives a power loss exactly as with
//! SQLite's own `FULL` (which runs the same sync inside COMMIT):
//! - The descriptor stays on the WAL's inode. SQLite restarts the WAL by
//!   overwriting it from its start, and `journal_size_limit` truncates it
//!   in place; it deletes the file only when the last connection closes,
//!   and the store's writer, reader and checkpointer connections stay open
//!   while the syncer runs. Each sync also checks that the file is still
//!   linked; if it is not, it fails like a failed sync.
//! - Checkpoints: a restart overwrites only frames that a checkpoint has
//!   copied into the database, and a checkpoint (the background thread's,
//!   `checkpoint.rs`, or the writer's catch-up) syncs the WAL before copying
//!   and the database after. A commit whose frames a restart overwrote
//!   before the syncer ran is therefore already durable in the database.
//! - The WAL's directory entry: the syncer fsyncs the directory once at
//!   start (SQLite's `FULL` does so at the WAL's first sync), and it syncs
//!   the WAL once before the store is handed out, covering the schema
//!   migration and the heads fold of the open.
//! - A failed sync: the page cache's state is then unknown (Linux may have
//!   dropped the dirty pages and marked them clean), so a retry could
//!   succeed without the data being on disk. The commits waiting for it get
//!   [`StoreError::WalSyncFailed`] instead of their results, the store is
//!   poisoned, and every later commit and every result still queued fails
//!   with the same error; reopening the store (recovery) is the way out.
//! - A process crash (SIGKILL) loses nothing committed: the frames are in
//!   the page cache. Results whose sync had not finished were never acked.
//!
//! Trade-off: another connection (the store's reader) sees a commit as soon
//! as it is committed, up to one sync before it is acknowledged; only a power
//! loss or OS crash in that window can take back what a reader saw.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::store::error::StoreError;
use crate::store::traits::{BatchResult, OnDurable};

/// Runs before each real sync (tests block or fail syncs through it).
pub(crate) type SyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// A commit waiting for the sync that makes it durable.
struct Waiting {
    result: BatchResult,
    done: OnDurable,
}

#[derive(Default)]
struct Queue {
    /// Commits no sync has taken yet, in commit order.
    waiting: Vec<Waiting>,
    /// The writer is gone (no more commits), or the syncer is (none will be synced).
    closed: bool,
    /// The first failed sync's error: once set, no write succeeds any more.
    poison: Option<Arc<std::io::Error>>,
}

/// State shared by the writer and the syncer thread.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when commits arrive or the writer goes.
    arrived: Condvar,
    /// Signalled when the syncer has taken the waiting commits.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // No code panics while holding the lock; the queue stays consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's side of the syncer thread.
pub(crate) struct WalSync {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl WalSync {
    /// Opens the WAL of the database at `path` (which the writer connection
    /// has open), syncs it and its directory, and starts the syncer thread.
    pub(crate) fn start(path: &Path, hook: Option<SyncHook>) -> Result<WalSync, StoreError> {
        let io = |op: &'static str| {
            let path = path.to_owned();
            move |e: std::io::Error| StoreError::Io {
                path,
                op,
                source: Arc::new(e),
            }
        };
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let file = File::options()
            .read(true)
            .write(true)
            .open(&wal_path)
            .map_err(io("open WAL for syncing"))?;
        let syncer = Syncer {
            file,
            hook,
            shared: Arc::default(),
            path: path.to_owned(),
        };
        syncer.sync().map_err(io("sync WAL"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync journal directory"))?;
        let shared = syncer.shared.clone();
        std::thread::Builder::new()
            .name("troupe-sqlite-syncer".to_owned())
            .spawn(move || syncer.run())
            .map_err(io("spawn syncer thread"))?;
        Ok(WalSync {
            shared,
            path: path.to_owned(),
        })
    }

    /// The error every write gets once a sync has failed.
    pub(crate) fn poisoned(&self) -> Option<StoreError> {
        let poison = self.shared.lock().poison.clone();
        poison.map(|e| failed(&self.path, &e))
    }

    /// Blocks until the syncer has taken every commit handed to it, so the
    /// next commit is synced by the sync after the one under way, not queued
    /// behind a commit that already waits for it.
    pub(crate) fn wait_for_room(&self) {
        let mut queue = self.shared.lock();
        while !queue.waiting.is_empty() && !queue.closed {
            queue = self
                .shared
                .taken
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hands `result` to `done` once a sync started after this call has
    /// finished (or with the sync's error). If the syncer thread is gone,
    /// `done` is dropped uncalled: the caller sees the ack lost, never a
    /// false success.
    pub(crate) fn after_sync(&self, result: BatchResult, done: OnDurable) {
        let mut queue = self.shared.lock();
        if queue.closed {
            return;
        }
        queue.waiting.push(Waiting { result, done });
        drop(queue);
        self.shared.arrived.notify_one();
    }
}

impl Drop for WalSync {
    /// The writer is gone: the syncer syncs what is queued, then ends.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
    }
}

fn failed(path: &Path, e: &Arc<std::io::Error>) -> StoreError {
    StoreError::WalSyncFailed {
        path: path.to_owned(),
        source: e.clone(),
    }
}

struct Syncer {
    file: File,
    hook: Option<SyncHook>,
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Syncer {
    fn sync(&self) -> std::io::Result<()> {
        if let Some(hook) = &self.hook {
            hook()?;
        }
        self.file.sync_data()?;
        if self.file.metadata()?.nlink() == 0 {
            return Err(std::io::Error::other(
                "the WAL file was unlinked while the store had it open",
            ));
        }
        Ok(())
    }

    /// Takes everything queued, syncs once, hands the results on; ends once
    /// the writer is gone and nothing is queued.
    fn run(self) {
        let _closed = CloseOnExit(self.shared.clone());
        let mut group = Vec::new();
        loop {
            let poison = {
                let mut queue = self.shared.lock();
                while queue.waiting.is_empty() && !queue.closed {
                    queue = self
                        .shared
                        .arrived
                        .wait(queue)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if queue.waiting.is_empty() {
                    return;
                }
                std::mem::swap(&mut group, &mut queue.waiting);
                queue.poison.clone()
            };
            self.shared.taken.notify_one();
            let poison = match poison {
                Some(e) => Some(e),
                None if group.iter().any(|w| w.result.is_ok()) => self.sync_group(group.len()),
                None => None,
            };
            let error = poison.map(|e| failed(&self.path, &e));
            for w in group.drain(..) {
                let result = match (&error, w.result) {
                    (Some(e), Ok(_)) => Err(e.clone()),
                    (_, result) => result,
                };
                (w.done)(result);
            }
        }
    }

    /// Syncs for `commits` commits; on failure poisons the store and returns the error.
    fn sync_group(&self, commits: usize) -> Option<Arc<std::io::Error>> {
        let span = tracing::debug_span!("journal.wal_sync", commits);
        let e = Arc::new(span.in_scope(|| self.sync()).err()?);
        tracing::error!(path = %self.path.display(), error = %e, commits,
            "WAL sync failed; its commits are not acknowledged and the store refuses further writes");
        self.shared.lock().poison = Some(e.clone());
        Some(e)
    }
}

/// Marks the queue closed when the syncer thread ends (even by a panic), so
/// the writer never waits for it and later results are dropped (ack lost).
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let stranded = {
            let mut queue = self.0.lock();
            queue.closed = true;
            std::mem::take(&mut queue.waiting)
        };
        drop(stranded);
        self.0.taken.notify_all();
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
