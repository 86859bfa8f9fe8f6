//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that pushes the WAL
//! past its threshold: that commit copies the whole WAL into the database
//! file and fsyncs it before it returns, so every write waiting on it sees a
//! multi-millisecond ack (the journal's p99 tail). Instead, the writer
//! connection gets a WAL hook (which replaces the automatic checkpoint) that
//! wakes a checkpointer thread once the WAL holds
//! [`SqliteConfig::checkpoint_pages`](super::SqliteConfig::checkpoint_pages)
//! pages. That thread copies the WAL with `wal_checkpoint(PASSIVE)` on a
//! connection of its own while the writer keeps committing.
//!
//! A passive checkpoint racing a busy writer never catches up with the
//! frames committed meanwhile, and SQLite only restarts the WAL from its
//! beginning when a write starts with every frame copied. So after each
//! background pass the writer, before its next transaction, runs one more
//! passive checkpoint itself ([`Checkpoints::catch_up`]): it copies only the
//! few frames committed during the pass, and the next commit restarts the WAL.
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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;

use super::SqliteConfig;
use super::schema::{classify, open_checkpointer};
use crate::store::error::StoreError;

/// No checkpoint under way; the WAL hook may start one.
const IDLE: u8 = 0;
/// The checkpointer thread has been woken or is copying.
const RUNNING: u8 = 1;
/// A background pass finished; the writer copies the rest before its next write.
const CATCH_UP: u8 = 2;

/// The writer's side of the checkpointer.
pub(crate) struct Checkpoints {
    phase: Arc<AtomicU8>,
}

impl Checkpoints {
    /// Starts the checkpointer thread for the database at `path` and installs
    /// the WAL hook that wakes it on the writer connection `writer`.
    pub(crate) fn start(
        writer: &mut Connection,
        path: &Path,
        config: &SqliteConfig,
    ) -> Result<Checkpoints, StoreError> {
        let conn = open_checkpointer(path, config)?;
        let phase = Arc::new(AtomicU8::new(IDLE));
        let (wake, wakes) = mpsc::sync_channel::<()>(1);
        let display = path.display().to_string();
        let thread_phase = phase.clone();
        std::thread::Builder::new()
            .name("troupe-sqlite-checkpointer".to_owned())
            .spawn(move || run(&conn, &display, &wakes, &thread_phase))
            .map_err(|e| StoreError::Io {
                path: path.to_owned(),
                op: "spawn checkpointer thread",
                source: e.into(),
            })?;
        let threshold = i32::try_from(config.checkpoint_pages.max(1)).unwrap_or(i32::MAX);
        let hook_phase = phase.clone();
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= threshold
                    && hook_phase
                        .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    && wake.try_send(()).is_err()
                {
                    // The checkpointer is gone: the WAL grows until the
                    // store is reopened, and no commit waits for it.
                    hook_phase.store(IDLE, Ordering::Release);
                }
                Ok(())
            }))
            .map_err(classify(path, "install WAL hook"))?;
        Ok(Checkpoints { phase })
    }

    /// Before a write transaction: if a background pass has finished, copies
    /// the frames committed since, so that this transaction restarts the WAL.
    pub(crate) fn catch_up(&self, conn: &Connection) {
        if self.phase.load(Ordering::Acquire) != CATCH_UP {
            return;
        }
        if let Err(e) = passive(conn) {
            // Nothing is lost: the WAL keeps every commit until a later
            // checkpoint (the next pass, or SQLite's own at close) copies it.
            tracing::warn!(error = %e, "catch-up wal checkpoint failed");
        }
        self.phase.store(IDLE, Ordering::Release);
    }
}

/// Runs `wal_checkpoint(PASSIVE)`: (busy flag, WAL frames, frames copied).
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn run(conn: &Connection, path: &str, wakes: &mpsc::Receiver<()>, phase: &AtomicU8) {
    while wakes.recv().is_ok() {
        let span = tracing::debug_span!("journal.checkpoint", path);
        let _entered = span.enter();
        let next = match passive(conn) {
            Ok((busy, frames, copied)) => {
                tracing::debug!(busy, frames, copied, "wal checkpoint");
                CATCH_UP
            }
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed; retried at the next commit");
                IDLE
            }
        };
        phase.store(next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{EventKind, Flow, FlowStore, NewEvent, SqliteConfig, SqliteStore};

    /// With auto-checkpoints replaced by the hook, only the checkpointer and
    /// the writer's catch-up keep the WAL from growing with every commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_is_checkpointed_and_restarted_without_commit_side_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sqlite");
        let config = SqliteConfig {
            checkpoint_pages: 8,
            ..SqliteConfig::default()
        };
        let store = SqliteStore::open_with(&path, config).await.expect("open");
        let run = Flow::new("c", "g", "o");
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
        // Each commit adds at least one 4 KiB page of payload: without
        // checkpoints and restarts the WAL would hold ~400 frames.
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
