//! [`RunError`]: why a [`RunManager`](super::RunManager) call was refused or failed.

use uuid::Uuid;

use crate::records::{RunStatus, StoreError};

/// Everything a [`RunManager`](super::RunManager) call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// No run has this id.
    #[error("run {0} not found")]
    NotFound(Uuid),
    /// The run is finished, failed or cancelled: it accepts no further change.
    #[error("run {id} is already {} and accepts no further change", status.as_str())]
    AlreadyTerminal {
        /// The run.
        id: Uuid,
        /// Its terminal status.
        status: RunStatus,
    },
    /// Cancellation was requested for the run: it can be cancelled (or failed),
    /// but not finished or have its state updated.
    #[error("run {id} has a pending cancellation request; cancel it instead")]
    CancelPending {
        /// The run.
        id: Uuid,
    },
    /// Other writers kept changing the run: every retry of the
    /// compare-and-set update saw a newer revision than the one it read.
    #[error(
        "revision mismatch after retries: the change was based on revision {expected}, \
         the store holds {actual}"
    )]
    RevisionMismatch {
        /// The revision the last attempt was based on.
        expected: u64,
        /// The revision the store held.
        actual: u64,
    },
    /// The run is at the last revision (`u64::MAX`): no change can follow it.
    #[error("run {id} is at the last revision ({revision}); no change can follow it")]
    RevisionExhausted {
        /// The run.
        id: Uuid,
        /// Its revision.
        revision: u64,
    },
    /// The run's status does not allow this move.
    #[error("a run cannot move from {} to {}", from.as_str(), to.as_str())]
    InvalidTransition {
        /// The run's status.
        from: RunStatus,
        /// The status the call would have moved it to.
        to: RunStatus,
    },
    /// A continue-as-new chain's records contradict each other (see
    /// [`RunManager::chain`](super::RunManager::chain)): repair or remove
    /// the run named.
    #[error("the continue-as-new chain is broken at run {run_id}: {why}")]
    BrokenChain {
        /// The run where the chain breaks.
        run_id: Uuid,
        /// What contradicts what.
        why: String,
    },
    /// The caller's input is not acceptable (which field and why).
    #[error("invalid input: {0}")]
    InvalidData(String),
    /// The store failed (I/O, a closed journal, a corrupt row, ...).
    #[error("store error: {0}")]
    Store(#[source] StoreError),
}

impl From<StoreError> for RunError {
    /// A store's "run not found" is the manager's [`RunError::NotFound`];
    /// everything else is wrapped in [`RunError::Store`].
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RunNotFound(id) => RunError::NotFound(id),
            other => RunError::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_not_found_maps_to_not_found() {
        let id = crate::records::new_run_id();
        assert!(matches!(
            RunError::from(StoreError::RunNotFound(id)),
            RunError::NotFound(got) if got == id
        ));
        assert!(matches!(
            RunError::from(StoreError::JournalClosed),
            RunError::Store(StoreError::JournalClosed)
        ));
    }

    #[test]
    fn messages_name_the_statuses() {
        let e = RunError::InvalidTransition {
            from: RunStatus::Created,
            to: RunStatus::Finished,
        };
        assert_eq!(e.to_string(), "a run cannot move from created to finished");
    }
}
