//! The lifecycle projection: a run's journal events projected into a
//! compact, stable lifecycle a UI (or `troupe runs show`) can render,
//! instead of the raw log.
//!
//! - **Phases.** The run itself, each stage, each durable wait of a stage
//!   and each child run is a phase ([`PhaseState`]) whose status moves only
//!   as its guard allows ([`allowed_next`]); it carries its history and the
//!   statuses it may take next. A move the guard refuses is not recorded: it
//!   is reported ([`Projection::refused`]).
//! - **Lifecycle events.** Every recorded move, and a few run-level
//!   [`Note`]s (a cancel asked for, operator input accepted), is a
//!   [`LifecycleEvent`] whose [`LifecycleId`] is a UUID v5 of what the
//!   record says plus its occurrence number: independent of where it sits
//!   in the history, so an unrelated event earlier in the log, or
//!   compaction, leaves it unchanged, and the same record twice (a run
//!   waiting twice) gets two ids.
//! - **Idempotent.** A [`Projection`] remembers the last journal position
//!   it projected: the same log projected again adds nothing, and a
//!   projection saved (it is `Serialize`) and fed the log again after a
//!   restart resumes where it stopped.
//! - **Compaction** ([`Projection::compact`]) folds old lifecycle events into
//!   a [`CompactedSpan`]; their ids still [`resolve`](Projection::resolve).
//! - **Snapshots** ([`Snapshot`]) carry the phases, causation ids (which
//!   journal event caused each status) and a [`RunSummary`] of ids,
//!   statuses and counts (stage item counts, dead letters, waits,
//!   children, the latest checkpoint's [`CheckpointSummary`]); the run's
//!   input, state, outputs, failure reasons and checkpoint states only
//!   with [`Detail::Full`].
//!
//! Not yet in a snapshot: the definition's fingerprint, which the journal
//! does not record yet.
//!
//! Stage phases come from what the log says of stages (their waits, timers,
//! signals, children) and close at the run's outcome, from the stages its
//! output names; a stage's item counts come from its recorded output. The
//! projection is pure: [`RunRecords::load`] reads what it needs from a store.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use serde_json::json;
//! use troupe::projection::{Detail, PhaseKey, PhaseStatus, Resolved, RunRecords, Snapshot};
//! use troupe::runs::{CreateManagedInput, RunManager};
//! use troupe::store::{SqliteStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(":memory:").await?);
//! let manager = RunManager::new(store.clone());
//! let run = manager
//!     .create_managed(CreateManagedInput {
//!         controller_id: "orders".into(),
//!         goal: "ship order 17".into(),
//!         owner_session_key: "session-1".into(),
//!         requester_origin: None,
//!         current_step: None,
//!         state_json: json!({}),
//!         input: json!({"card": "4111 1111 1111 1111"}),
//!         key: None,
//!         parent_run_id: None,
//!     })
//!     .await?;
//! manager.start_running(run.id).await?;
//! for _ in 0..2 {
//!     manager.set_waiting(run.id, json!({"for": "courier"})).await?;
//!     manager.resume(run.id, None).await?;
//! }
//! manager.finish(run.id, None).await?;
//!
//! let records = RunRecords::load(&*store, run.id).await?;
//! let mut projection = records.project()?;
//! let phase = projection.phase(&PhaseKey::run()).unwrap();
//! assert_eq!(phase.status, PhaseStatus::Finished);
//! assert!(phase.allowed_next.is_empty());
//!
//! // The run waited twice: two lifecycle events, two ids.
//! let waited: Vec<_> = projection
//!     .events()
//!     .iter()
//!     .filter(|e| e.record.phase() == Some((&PhaseKey::run(), PhaseStatus::Waiting)))
//!     .collect();
//! assert_eq!((waited[0].occurrence, waited[1].occurrence), (1, 2));
//! assert_ne!(waited[0].id, waited[1].id);
//!
//! // Projecting the same log again adds nothing.
//! assert_eq!(projection.project(&records.events)?, 0);
//!
//! // Compacted ids still resolve.
//! let first = projection.events()[0].id;
//! projection.compact(1);
//! assert!(matches!(projection.resolve(first), Some(Resolved::Compacted(_))));
//!
//! // A summary holds no user payload; full detail does.
//! let summary = Snapshot::new(&projection, &records, Detail::Summary);
//! assert!(!serde_json::to_string(&summary)?.contains("4111"));
//! let full = Snapshot::new(&projection, &records, Detail::Full);
//! assert!(serde_json::to_string(&full)?.contains("4111"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod checkpoint;
mod compact;
mod error;
mod event;
mod id;
mod interpret;
mod phase;
mod projector;
mod snapshot;

pub use checkpoint::{CheckpointSummary, StageCheckpointSummary};
pub use compact::{CompactedSpan, Resolved};
pub use error::ProjectionError;
pub use event::{Causation, LifecycleEvent, LifecycleRecord, Note};
pub use id::{LIFECYCLE_NAMESPACE, LifecycleId};
pub use phase::{
    PhaseKey, PhaseKind, PhaseState, PhaseStatus, PhaseStep, RefusedTransition, allowed_next,
};
pub use projector::{Applied, Projection, UnreadableEvent};
pub use snapshot::{
    Detail, FullDetail, RunRecords, RunSummary, Snapshot, StageSummary, StatusCounts,
};

#[cfg(test)]
mod tests;
