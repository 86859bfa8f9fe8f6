//! What projecting a run's lifecycle can fail with.

use uuid::Uuid;

use crate::records::StoreError;

/// Why a projection or its loading failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// An event of another run was given to a run's projection.
    #[error("event {event_id} of run {found} given to the projection of run {expected}")]
    WrongRun {
        /// The run the projection is of.
        expected: Uuid,
        /// The run the event is of.
        found: Uuid,
        /// The event's id.
        event_id: String,
    },
    /// The store has no run with this id.
    #[error("no run {0} in this journal")]
    UnknownRun(Uuid),
    /// Reading the journal failed.
    #[error("reading run {run_id} from the journal failed: {source}")]
    Store {
        /// The run.
        run_id: Uuid,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}
