//! Run outcomes: recording a run's terminal event exactly once
//! ([`record_persisted_terminalization`]), repairing a missing one from the
//! persisted status ([`repair_persisted_terminalization`]), and the recovery
//! scan at open ([`recover`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use troupe::runs::{TerminalTarget, TerminalizationOutcome, recover, repair_persisted_terminalization};
//! use troupe::store::{EventKind, Flow, FlowStatus, FlowStore, MemoryStore, TerminalEvent};
//!
//! let store = MemoryStore::new();
//! let mut run = Flow::new("orders", "ship", "session-1");
//! store.insert_run(run.clone(), None).await?;
//! run.status = FlowStatus::Cancelled;
//! store.update_run(run.clone(), 0, EventKind::custom("cancelled", serde_json::Value::Null)).await?;
//! // The process died before the terminal event was appended; the scan repairs it.
//! let report = recover(&store).await?;
//! assert_eq!(report.repaired, vec![run.id]);
//! let terminal = store.terminal_event(run.id).await?.unwrap();
//! assert_eq!(terminal.kind, EventKind::Terminal(TerminalEvent::FlowCanceled));
//! // Repairing again appends nothing.
//! let again = repair_persisted_terminalization(&store, run.id, "orders", Some(TerminalTarget::Canceled)).await;
//! assert_eq!(again.ok(), Some(TerminalizationOutcome::Noop));
//! # Ok::<(), troupe::store::StoreError>(())
//! # }).unwrap();
//! ```

mod recovery;
mod terminal;

pub use recovery::{RecoveryReport, recover};
pub use terminal::{
    TerminalTarget, TerminalizationError, TerminalizationOutcome, rebuild_structured_output,
    record_persisted_terminalization, repair_persisted_terminalization,
};
