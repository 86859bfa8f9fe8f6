//! Records and durable storage: run records, the event log, step outputs,
//! steps and the failure ledger, behind one object-safe trait, [`Store`],
//! with two backends: [`MemoryStore`] (tests) and [`SqliteStore`] (embedded,
//! durable). [`FaultyStore`] wraps any store to inject failures in tests.
//!
//! Every write is a [`WriteOp`](crate::records::WriteOp); [`Store::apply_batch`] commits several in
//! one transaction with one result each, which is what the journal actor
//! (`troupe::journal`) uses for group commit. The store itself enforces at
//! most one terminal event per run and unique caller-supplied event ids.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
//! use serde_json::json;
//! use troupe::store::{Store, SqliteStore};
//! use troupe::records::{EventKind, Run, RunStatus, NewEvent, StoreError};
//!
//! let store = SqliteStore::open(":memory:").await?;
//! let mut run = Run::new("orders", "ship order 17", "session-1");
//! store.insert_run(run.clone(), Some(EventKind::custom("created", json!(null)))).await?;
//!
//! // Compare-and-set on the revision; the audit event is written atomically with the change.
//! run.status = RunStatus::Running;
//! let revision = store.update_run(run.clone(), 0, EventKind::custom("started", json!(null))).await?;
//! assert_eq!(revision, 1);
//! let stale = store.update_run(run.clone(), 0, EventKind::custom("started", json!(null))).await;
//! assert!(matches!(stale, Err(StoreError::RevisionMismatch { actual: 1, .. })));
//!
//! // Caller-chosen event ids make appends idempotent.
//! let first = store.append(NewEvent::with_id(run.id, "pick-1", EventKind::custom("picked", json!({"sku": 7})))).await?;
//! let again = store.append(NewEvent::with_id(run.id, "pick-1", EventKind::custom("picked", json!({"sku": 7})))).await?;
//! assert!(again.duplicate && again.cursor == first.cursor);
//! assert_eq!(store.list_events(run.id, 10).await?.len(), 3);
//! # Ok::<(), StoreError>(())
//! # }).unwrap();
//! ```

mod faults;
mod forward;
mod lease;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
mod traits;

pub use faults::{Fault, FaultyStore};
pub use lease::{Fence, Ownership, Renewal};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{POSTGRES_SCHEMA_VERSION, PostgresConfig, PostgresStore};
pub(crate) use sqlite::{Closer, create_journal_dir};
pub use sqlite::{IntegrityCheck, SCHEMA_VERSION, SqliteConfig, SqliteStore, Synchronous};
pub use traits::{BatchResult, Store, WriterJob};

// For `store_wrapper!`, which implements an `#[async_trait]` trait.
#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
// For `store_wrapper!`, which forwards `Store::lease_lost` and `inbox_doorbell`.
#[doc(hidden)]
pub use tokio::sync::Notify as __Notify;
#[doc(hidden)]
pub use tokio::sync::broadcast as __broadcast;
