//! The writer thread's hold on its journal: the writer connection with the
//! journal's lock (`lock.rs`), from open until the store is closed.
//!
//! Closing runs on the writer thread, as a job behind every job queued
//! before it: the connection is closed first, then the lock released, so
//! nothing this store had queued can write after another owner has opened
//! the journal. A store closes when it is dropped (the drop waits for it,
//! so that the next owner can open at once) or when the runtime that
//! opened it shuts down ([`Closer`]), even while handles to it live on.
//! After that its writes fail with [`StoreError::Closed`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::ThreadId;

use rusqlite::Connection;

use super::checkpoint::Checkpoints;
use super::lock::JournalLock;
use super::thread::ConnThread;
use super::write::Writer;
use super::{SqliteConfig, private, schema};
use crate::records::{StoreError, WriteOp};
use crate::store::BatchResult;

/// The writer thread's state.
pub(super) struct Owner {
    path: PathBuf,
    /// `None` once closed.
    open: Option<Open>,
}

/// An open writer. Fields drop in order: the connection, then the lock,
/// then the signal that both are gone.
struct Open {
    writer: Writer,
    _lock: Option<JournalLock>,
    _closed: mpsc::Sender<()>,
}

impl Owner {
    /// On the writer thread: takes the journal's lock (creating its
    /// directory and file first), then opens the writer connection.
    /// `closed` is dropped when the writer is closed.
    pub(super) fn open(
        path: &Path,
        config: &SqliteConfig,
        closed: mpsc::Sender<()>,
    ) -> Result<Owner, StoreError> {
        let in_memory = schema::in_memory(path);
        let (lock, created) = if in_memory {
            (None, false)
        } else {
            let (lock, created) = take_ownership(path)?;
            (Some(lock), created)
        };
        let mut conn = schema::open_writer(path, config)?;
        let checkpoints = if in_memory {
            None
        } else {
            Some(Checkpoints::start(&mut conn, path, config)?)
        };
        if created {
            restrict_sidecars(path);
        }
        let writer = Writer::new(conn, checkpoints, config.heads_write_back_events)?;
        Ok(Owner {
            path: path.to_owned(),
            open: Some(Open {
                writer,
                _lock: lock,
                _closed: closed,
            }),
        })
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.path.clone(),
        }
    }

    pub(super) fn apply_batch(&mut self, ops: &[WriteOp]) -> BatchResult {
        match &mut self.open {
            Some(open) => open.writer.apply_batch(ops),
            None => Err(self.closed()),
        }
    }

    /// The writer connection (in-memory stores read on it too).
    pub(super) fn conn(&self) -> Result<&Connection, StoreError> {
        match &self.open {
            Some(open) => Ok(&open.writer.conn),
            None => Err(self.closed()),
        }
    }

    /// Checkpoints the whole WAL into the database and truncates it, then
    /// closes the connection and releases the lock; idempotent. The store's
    /// reader may outlive the writer, and only the last connection deletes
    /// the `-wal` file: truncating it here leaves the database file whole,
    /// and no 0-byte `-wal` needs replaying at the next open.
    pub(super) fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if !schema::in_memory(&self.path) {
            truncate_wal(&open.writer.conn, &self.path);
        }
        drop(open);
        tracing::debug!(path = %self.path.display(), "sqlite store closed");
    }
}

/// Creates the journal's directory, takes its lock, then creates its
/// database file if needed (after the lock: only the owner creates it);
/// whether the file was created.
fn take_ownership(path: &Path) -> Result<(JournalLock, bool), StoreError> {
    let io = |op: &'static str| {
        move |e: std::io::Error| StoreError::Io {
            path: path.to_owned(),
            op,
            source: Arc::new(e),
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private::create_dir(dir).map_err(io("create journal directory"))?;
    }
    let lock = JournalLock::acquire(path)?;
    // SQLite takes an empty file for an empty database, and gives its
    // `-wal` and `-shm` files the database file's mode.
    let (_, created) = private::open_or_create_file(path).map_err(io("create journal file"))?;
    Ok((lock, created))
}

/// The `-wal` and `-shm` files of a journal this store created get 0600
/// explicitly too (SQLite gives them the database's mode already).
fn restrict_sidecars(path: &Path) {
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if let Err(error) = private::restrict_if_exists(file, 0o600) {
            tracing::warn!(path = %file.display(), %error, "could not restrict the file's mode");
        }
    }
}

/// What closing the store from its own side (its drop) waits for.
pub(super) struct Closing {
    /// Disconnected once the writer is closed. In a mutex only to make the
    /// store `Sync`.
    closed: Mutex<mpsc::Receiver<()>>,
    /// The writer thread, which must not wait for itself: the last handle
    /// of a store can be dropped by a job running there (the journal's).
    thread: Arc<OnceLock<ThreadId>>,
}

impl Closing {
    /// A `Closing`, the sender to hand to [`Owner::open`], and the cell
    /// the writer thread records itself in.
    pub(super) fn new() -> (Closing, mpsc::Sender<()>, Arc<OnceLock<ThreadId>>) {
        let (closed_tx, closed) = mpsc::channel();
        let thread = Arc::new(OnceLock::new());
        let closing = Closing {
            closed: Mutex::new(closed),
            thread: thread.clone(),
        };
        (closing, closed_tx, thread)
    }

    /// Closes `writer` behind what it has queued, and waits for it unless
    /// called on the writer thread itself (which closes it when the
    /// running job returns).
    pub(super) fn close_and_wait(self, writer: &ConnThread<Owner>) {
        writer.post(Owner::close);
        if self.thread.get() == Some(&std::thread::current().id()) {
            return;
        }
        let closed = self
            .closed
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        // An error is the disconnection: the writer is closed (or its
        // thread is gone).
        let _ = closed.recv();
    }
}

/// Closes a store's writer, releasing its journal, without holding the
/// store (a runtime holds only its journal): what a runtime's shutdown
/// uses for the store it opened.
#[derive(Clone)]
pub(crate) struct Closer {
    writer: ConnThread<Owner>,
}

impl Closer {
    pub(super) fn new(writer: ConnThread<Owner>) -> Closer {
        Closer { writer }
    }

    /// Closes the writer once the jobs queued before are done, and waits.
    pub(crate) async fn close(&self) {
        let _ = self.writer.call(Owner::close).await;
    }

    /// Closes the writer once the jobs queued before are done, without
    /// waiting (for a `Drop`).
    pub(crate) fn close_soon(&self) {
        self.writer.post(Owner::close);
    }
}

/// Checkpoints every frame of the WAL and truncates it. The checkpointer
/// thread may be in a pass (SQLite then answers busy at once rather than
/// waiting), so this retries for a bounded time; if the WAL still cannot be
/// truncated, nothing is lost: the next open replays it.
fn truncate_wal(conn: &Connection, path: &Path) {
    const TRIES: u32 = 200;
    for _ in 0..TRIES {
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error,
                    "WAL checkpoint at close failed; the next open replays it");
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    tracing::warn!(path = %path.display(),
        "WAL still busy at close; the next open replays it");
}
