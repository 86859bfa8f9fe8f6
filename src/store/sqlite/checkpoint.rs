//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that pushes the WAL
//! past its threshold: that commit copies the whole WAL into the database
//! file and fsyncs it before it returns, so every write waiting on it sees a
//! multi-millisecond ack (the journal's p99 tail). Instead, the writer
//! connection gets a WAL hook (which replaces the automatic checkpoint) that
//! wakes a checkpointer thread each time
//! [`SqliteConfig::checkpoint_pages`](super::SqliteConfig::checkpoint_pages)
//! pages have been committed since its last pass. That thread copies the WAL
//! with `wal_checkpoint(PASSIVE)` on a connection of its own while the writer
//! keeps committing, so the database file stays close behind the WAL.
//!
//! A passive checkpoint racing a busy writer never catches up with the
//! frames committed meanwhile, and SQLite only restarts the WAL from its
//! beginning when a write starts with every frame copied. So after a
//! background pass that leaves the WAL at or past
//! [`SqliteConfig::wal_restart_pages`](super::SqliteConfig::wal_restart_pages)
//! frames, the writer, before its next transaction, runs one more passive
//! checkpoint itself ([`Checkpoints::catch_up`]): it copies only the few
//! frames committed during the pass, and the next commit restarts the WAL.
//! That catch-up stalls every write queued behind it for a database `fsync`
//! (BENCHMARKS.md, "Making the catch-up cheaper or rarer"), which is why it
//! runs only once per `wal_restart_pages`, not after every pass. It is dear
//! because a pass that a commit overlapped does not sync the database
//! (SQLite's `walCheckpoint` syncs it only when no frame was added
//! meanwhile), so the catch-up's `fsync` also flushes the passes' writes. The
//! WAL holds about `checkpoint_pages` plus the larger of the two settings, in
//! frames, at most (more only while a reader's snapshot or a single larger
//! transaction holds it back), and the writer allocates the WAL file to that
//! size at open (`wal_file.rs`), so that commits overwrite allocated blocks
//! instead of growing the file.
//!
//! The catch-up cannot be made cheaper by lowering `synchronous` around it:
//! SQLite syncs a checkpoint the same way at `NORMAL` as at `FULL` (the WAL,
//! then the database file before the WAL may restart), and `OFF` skips the
//! database sync, after which the restart would overwrite frames whose pages
//! are not yet durable in the database file.
//!
//! The thread sleeps on a channel (idle costs nothing) and ends when the
//! writer connection, which owns the waking side, is closed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::Connection;

use super::SqliteConfig;
use super::schema::{classify, open_checkpointer};
use super::wal_file;
use crate::records::StoreError;

/// No checkpoint under way; the WAL hook may start one.
const IDLE: u8 = 0;
/// The checkpointer thread has been woken or is copying.
const RUNNING: u8 = 1;
/// A background pass finished with the WAL past `wal_restart_pages`: the
/// writer copies the rest before its next write, so that the WAL restarts.
const CATCH_UP: u8 = 2;

/// State the WAL hook, the checkpointer thread and the writer share.
struct Shared {
    phase: AtomicU8,
    /// WAL frames already copied into the database file (by the latest pass
    /// or catch-up); 0 once a catch-up has copied them all, since the next
    /// write then restarts the WAL and its frame count starts over. Written
    /// by the thread only while `phase` is `RUNNING`.
    copied: AtomicU32,
}

/// The writer's side of the checkpointer.
pub(crate) struct Checkpoints {
    shared: Arc<Shared>,
}

impl Checkpoints {
    /// Allocates the WAL file of the database at `path` to the size it
    /// reaches between restarts, starts the checkpointer thread and installs
    /// the WAL hook that wakes it on the writer connection `writer`.
    pub(crate) fn start(
        writer: &mut Connection,
        path: &Path,
        config: &SqliteConfig,
    ) -> Result<Checkpoints, StoreError> {
        preallocate_wal(writer, path, config);
        let conn = open_checkpointer(path, config)?;
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(IDLE),
            copied: AtomicU32::new(0),
        });
        let (wake, wakes) = mpsc::sync_channel::<()>(1);
        let display = path.display().to_string();
        let thread_shared = shared.clone();
        let restart = i64::from(config.wal_restart_pages);
        std::thread::Builder::new()
            .name("troupe-sqlite-checkpointer".to_owned())
            .spawn(move || run(&conn, &display, &wakes, &thread_shared, restart))
            .map_err(|e| StoreError::Io {
                path: path.to_owned(),
                op: "spawn checkpointer thread",
                source: e.into(),
            })?;
        let threshold = config.checkpoint_pages.max(1);
        let hook = shared.clone();
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                // Only this hook moves the phase out of IDLE, and the thread
                // stores `copied` before it stores IDLE or CATCH_UP.
                let uncopied = u32::try_from(pages)
                    .unwrap_or(0)
                    .saturating_sub(hook.copied.load(Ordering::Relaxed));
                if hook.phase.load(Ordering::Acquire) == IDLE
                    && uncopied >= threshold
                    && hook
                        .phase
                        .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    && wake.try_send(()).is_err()
                {
                    // The checkpointer is gone: the WAL grows until the
                    // store is reopened, and no commit waits for it.
                    hook.phase.store(IDLE, Ordering::Release);
                }
                Ok(())
            }))
            .map_err(classify(path, "install WAL hook"))?;
        Ok(Checkpoints { shared })
    }

    /// Before a write transaction: if a background pass has left the WAL
    /// past its restart size, copies the frames committed since, so that
    /// this transaction restarts the WAL.
    pub(crate) fn catch_up(&self, conn: &Connection) {
        if self.shared.phase.load(Ordering::Acquire) != CATCH_UP {
            return;
        }
        match passive(conn) {
            Ok((_, frames, copied)) => {
                // All copied: this write restarts the WAL (unless a reader's
                // snapshot still needs it; then the hook starts a pass soon).
                let left_copied = if copied >= frames { 0 } else { copied };
                self.shared
                    .copied
                    .store(u32::try_from(left_copied).unwrap_or(0), Ordering::Relaxed);
            }
            // Nothing is lost: the WAL keeps every commit until a later
            // checkpoint (the next pass, or SQLite's own at close) copies it.
            Err(e) => tracing::warn!(error = %e, "catch-up wal checkpoint failed"),
        }
        self.shared.phase.store(IDLE, Ordering::Release);
    }
}

/// Extends the writer's WAL file to `max(wal_restart_pages,
/// checkpoint_pages) + checkpoint_pages` frames (see the module docs).
fn preallocate_wal(writer: &Connection, path: &Path, config: &SqliteConfig) {
    let pass = config.checkpoint_pages.max(1);
    let frames = u64::from(config.wal_restart_pages.max(pass)) + u64::from(pass);
    let started = Instant::now();
    // Under the WAL's write lock: no other connection, in this process or
    // another, appends frames between our reading the file's length and
    // our zeros landing past it.
    let allocated = writer
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let page_size: u64 = writer
                .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
                .map_err(|e| e.to_string())?
                .try_into()
                .unwrap_or(0);
            let len = wal_file::target_len(frames, page_size);
            wal_file::preallocate(&wal_file::wal_path(path), len)
                .map(|added| (len, added))
                .map_err(|e| e.to_string())
        });
    let _ = writer.execute_batch("ROLLBACK");
    // Only a speed-up: a store that cannot allocate ahead (no space, no
    // permission, a lock held elsewhere) still opens, and its commits grow
    // the file as they go, as SQLite's own do.
    match allocated {
        Ok((len, Some(added))) => tracing::debug!(
            path = %path.display(),
            len,
            added,
            micros = started.elapsed().as_micros() as u64,
            "wal file preallocated"
        ),
        // SQLite opens the WAL while the writer connection is opened, so
        // this is not expected.
        Ok((_, None)) => {
            tracing::warn!(path = %path.display(), "no WAL file at open; not preallocated")
        }
        Err(error) => tracing::warn!(
            path = %path.display(),
            %error,
            "could not preallocate the WAL file; commits will grow it"
        ),
    }
}

/// Runs `wal_checkpoint(PASSIVE)`: (busy flag, WAL frames, frames copied).
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn run(conn: &Connection, path: &str, wakes: &mpsc::Receiver<()>, shared: &Shared, restart: i64) {
    while wakes.recv().is_ok() {
        let span = tracing::debug_span!("journal.checkpoint", path);
        let _entered = span.enter();
        let next = match passive(conn) {
            Ok((busy, frames, copied)) => {
                tracing::debug!(busy, frames, copied, "wal checkpoint");
                shared
                    .copied
                    .store(u32::try_from(copied).unwrap_or(0), Ordering::Relaxed);
                if frames >= restart { CATCH_UP } else { IDLE }
            }
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed; retried at the next commit");
                IDLE
            }
        };
        shared.phase.store(next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use crate::records::{EventKind, NewEvent, Run};
    use crate::store::{SqliteConfig, SqliteStore, Store};

    /// With auto-checkpoints replaced by the hook, only the checkpointer and
    /// the writer's catch-up keep the WAL from growing with every commit.
    /// (`tests/sqlite_wal.rs` counts the restarts and checks the allocation.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_is_checkpointed_and_restarted_without_commit_side_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sqlite");
        let config = SqliteConfig {
            checkpoint_pages: 8,
            wal_restart_pages: 32,
            ..SqliteConfig::default()
        };
        let store = SqliteStore::open_with(&path, config).await.expect("open");
        let run = Run::new("c", "g", "o");
        store.insert_run(run.clone(), None).await.expect("run");
        let commits = 400;
        let padding = "x".repeat(3000);
        for i in 0..commits {
            let payload = serde_json::json!({ "i": i, "pad": padding });
            store
                .append(NewEvent::new(run.id, EventKind::custom("tick", payload)))
                .await
                .expect("append");
        }
        // Each commit adds at least one 4 KiB page: without checkpoints and
        // restarts the WAL would hold ~400 frames (its file is allocated to
        // 40 at open).
        let wal = std::fs::metadata(dir.path().join("journal.sqlite-wal"))
            .expect("wal file")
            .len();
        assert!(wal < 200 * 4096, "WAL grew to {wal} bytes");
        assert_eq!(
            store.list_events(run.id, 1000).await.expect("read").len(),
            commits
        );
    }
}
