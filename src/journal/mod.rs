//! The journal actor: the single writer of a runtime's store.
//!
//! Every durable write of a runtime goes through one `ractor` actor. Callers
//! hold a [`JournalHandle`], which is a [`Store`](crate::store::Store):
//! its writes become requests to the actor, its reads go straight to the
//! store's read side, so reads never queue behind writes.
//!
//! - **Durable acks**: a write returns only after the commit holding it is
//!   durable (with [`SqliteStore`](crate::store::SqliteStore), committed and fsynced).
//! - **Group commit**: while one commit is in flight, new requests queue; the
//!   next commit takes everything queued (up to [`JournalConfig::max_batch_ops`])
//!   in one transaction. Each request still gets its own result. With a store
//!   that has its own writer thread (SQLite), commits run on that thread,
//!   which takes the next batch as soon as one is committed; the replies go
//!   out from a tokio task. Writes are queued without an actor message each:
//!   the actor is only asked to start committing when the queue was idle.
//! - **Backpressure**: at most [`JournalConfig::queue_capacity`] ops wait;
//!   further writers wait for a slot instead of growing memory.
//! - **Observability**: a `journal.commit` span per commit (requests, ops,
//!   queue depth) and counters in [`JournalHandle::stats`].
//! - **Throughput** grows with concurrency: commits are as large as the
//!   writers waiting make them, while one writer awaiting each ack is bound
//!   by the disk's sync time (`BENCHMARKS.md` has the figures).
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use troupe::journal::{JournalConfig, JournalHandle};
//! use troupe::store::{Store, SqliteStore};
//! use troupe::records::{EventKind, Run, NewEvent};
//!
//! let store = Arc::new(SqliteStore::open(":memory:").await?);
//! let journal = JournalHandle::spawn(store, JournalConfig::default(), None).await?;
//! let run = Run::new("orders", "ship order 17", "session-1");
//! journal.insert_run(run.clone(), None).await?;
//! let acked = journal.append(NewEvent::new(run.id, EventKind::custom("shipped", serde_json::json!({"box": 3})))).await?;
//! assert_eq!(acked.seq, 1);
//! journal.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod actor;
mod committer;
mod handle;
mod request;
mod stats;

pub use actor::JournalMsg;
pub use handle::{JournalBackend, JournalConfig, JournalError, JournalHandle};
pub use stats::JournalStats;
