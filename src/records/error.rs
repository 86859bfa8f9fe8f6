//! The store's typed errors.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::events::Cursor;
use super::run::RunStatus;

/// Where a bad row lives, so that an operator can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    /// The table holding the row.
    pub table: &'static str,
    /// The row's integer key in that table (the event cursor for events).
    pub rowid: i64,
    /// The run the row belongs to, when it could be read.
    pub run_id: Option<Uuid>,
}

impl std::fmt::Display for RowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}", self.table, self.rowid)?;
        if let Some(run) = self.run_id {
            write!(f, " (run {run})")?;
        }
        Ok(())
    }
}

/// A run row that a scan could not read: where it is and why. The scan
/// reports it in the row's place and goes on with the next row, so one
/// damaged run does not hide the others
/// (see [`Store::list_runs_to_recover`](crate::store::Store::list_runs_to_recover)).
#[derive(Debug, Clone)]
pub struct DamagedRun {
    /// The row, with its run id when that much could be read.
    pub row: RowRef,
    /// Why it could not be read.
    pub error: StoreError,
}

impl std::fmt::Display for DamagedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is unreadable: {}", self.row, self.error)
    }
}

/// Everything a store operation can fail with.
///
/// The type is `Clone` so that one commit failure can be reported to every
/// request of a group-committed batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No run has this id.
    #[error("run {0} not found")]
    RunNotFound(Uuid),
    /// A run with this id already exists.
    #[error("run {0} already exists")]
    RunExists(Uuid),
    /// A compare-and-set update saw another revision than the caller expected.
    #[error("run {run_id}: revision mismatch (expected {expected}, found {actual})")]
    RevisionMismatch {
        /// The run.
        run_id: Uuid,
        /// The revision the caller based its update on.
        expected: u64,
        /// The revision in the store.
        actual: u64,
    },
    /// The run already has a terminal event, so another one cannot be appended.
    #[error("run {run_id} already has a terminal event ({existing}) at cursor {cursor}")]
    TerminalExists {
        /// The run.
        run_id: Uuid,
        /// The kind of the terminal event already stored.
        existing: &'static str,
        /// Where it is stored.
        cursor: Cursor,
    },
    /// A caller-supplied value is not acceptable: an event id or event kind
    /// name; JSON nested deeper than
    /// [`MAX_JSON_DEPTH`](crate::records::MAX_JSON_DEPTH) (which could not be
    /// read back); an `expected_revision` of `u64::MAX` (no revision
    /// follows it); or (SQLite) an event's encoded payload larger than the
    /// store's length limit allows.
    #[error("run {run_id}: invalid {field} {value:?}: {why}")]
    InvalidInput {
        /// The run the write was for.
        run_id: Uuid,
        /// Which field is wrong.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// Why it is rejected.
        why: &'static str,
    },
    /// A stored payload could not be decoded.
    #[error("{row}: corrupt {column}: {source}")]
    CorruptPayload {
        /// The row.
        row: RowRef,
        /// The column holding the payload.
        column: &'static str,
        /// The decoding error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A stored row holds a value this version does not understand.
    #[error("{row}: invalid {column} value {value}")]
    CorruptRow {
        /// The row.
        row: RowRef,
        /// The column.
        column: &'static str,
        /// The stored value, rendered.
        value: String,
    },
    /// An event row names an event kind code that is not in the kind dictionary.
    #[error("{row}: unknown event kind code {code}")]
    UnknownEventKind {
        /// The row.
        row: RowRef,
        /// The stored code.
        code: i64,
    },
    /// The database was written by a newer version of troupe.
    #[error(
        "{path}: schema version {found} is newer than the newest this build knows ({supported})"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build supports.
        supported: i64,
    },
    /// The file is not an SQLite database (or is encrypted).
    #[error("{path}: not an SQLite database: {source}")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// `PRAGMA integrity_check` reported problems.
    #[error("{path}: integrity check failed: {report}")]
    IntegrityCheckFailed {
        /// The database file.
        path: PathBuf,
        /// SQLite's report, one problem per line.
        report: String,
    },
    /// A status change that the run's current status does not allow.
    #[error("run {run_id}: status {status:?} does not allow {what}")]
    InvalidStatus {
        /// The run.
        run_id: Uuid,
        /// Its persisted status.
        status: RunStatus,
        /// What was attempted.
        what: &'static str,
    },
    /// An SQLite call failed.
    #[error("sqlite {op}: {source}")]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The whole group-committed batch failed (for example the commit itself),
    /// so this request's write is not durable.
    #[error("batch of {batch_len} writes failed: {source}")]
    BatchFailed {
        /// How many requests were in the batch.
        batch_len: usize,
        /// Why the batch failed.
        #[source]
        source: Arc<StoreError>,
    },
    /// A file-system or thread operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The database file concerned.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The thread owning an SQLite connection has stopped.
    #[error("sqlite connection thread for {path} has stopped")]
    ConnectionClosed {
        /// The database file.
        path: PathBuf,
    },
    /// The journal actor is stopped or shutting down; the write was not taken.
    #[error("journal is closed")]
    JournalClosed,
    /// The write was sent to the journal but no acknowledgement came back; it
    /// may or may not be durable.
    #[error("journal dropped the request before acknowledging it")]
    AckDropped,
    /// A backend answered a write with an outcome of another kind (a backend bug).
    #[error("backend returned an outcome that does not match {op}")]
    OutcomeMismatch {
        /// The op that was sent.
        op: &'static str,
    },
    /// A fault injected by a [`FaultyStore`](crate::store::FaultyStore).
    #[error("injected fault on {op}")]
    Injected {
        /// The operation that was made to fail.
        op: &'static str,
    },
    /// The write was performed, but a [`FaultyStore`](crate::store::FaultyStore) lost its acknowledgement.
    #[error("acknowledgement of {op} lost (the write was performed)")]
    AckLost {
        /// The operation whose ack was lost.
        op: &'static str,
    },
}

impl StoreError {
    /// Wraps an SQLite error with what the store was doing.
    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |e| StoreError::Sqlite {
            op,
            source: Arc::new(e),
        }
    }
}
