//! [`FlowError`]: why a [`FlowManager`](super::FlowManager) call was refused or failed.

use uuid::Uuid;

use crate::store::{FlowStatus, StoreError};

/// Everything a [`FlowManager`](super::FlowManager) call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlowError {
    /// No run has this id.
    #[error("run {0} not found")]
    NotFound(Uuid),
    /// The run is finished, failed or cancelled: it accepts no further change.
    #[error("run {id} is already {} and accepts no further change", status.as_str())]
    AlreadyTerminal {
        /// The run.
        id: Uuid,
        /// Its terminal status.
        status: FlowStatus,
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
    /// The run's status does not allow this move.
    #[error("a run cannot move from {} to {}", from.as_str(), to.as_str())]
    InvalidTransition {
        /// The run's status.
        from: FlowStatus,
        /// The status the call would have moved it to.
        to: FlowStatus,
    },
    /// The caller's input is not acceptable (which field and why).
    #[error("invalid input: {0}")]
    InvalidData(String),
    /// The store failed (I/O, a closed journal, a corrupt row, ...).
    #[error("store error: {0}")]
    Store(#[source] StoreError),
}

impl From<StoreError> for FlowError {
    /// A store's "run not found" is the manager's [`FlowError::NotFound`];
    /// everything else is wrapped in [`FlowError::Store`].
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RunNotFound(id) => FlowError::NotFound(id),
            other => FlowError::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_not_found_maps_to_not_found() {
        let id = crate::store::new_run_id();
        assert!(matches!(
            FlowError::from(StoreError::RunNotFound(id)),
            FlowError::NotFound(got) if got == id
        ));
        assert!(matches!(
            FlowError::from(StoreError::JournalClosed),
            FlowError::Store(StoreError::JournalClosed)
        ));
    }

    #[test]
    fn messages_name_the_statuses() {
        let e = FlowError::InvalidTransition {
            from: FlowStatus::Created,
            to: FlowStatus::Finished,
        };
        assert_eq!(e.to_string(), "a run cannot move from created to finished");
    }
}
