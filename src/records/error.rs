//! The store's typed errors.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
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

/// Who holds a journal's lock, as the holder wrote it into the lock file:
/// a hint for the error message, never trusted for correctness (the lock
/// itself is the operating system's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// When the holder took the lock, if it said.
    pub since: Option<DateTime<Utc>>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {}", self.pid)?;
        if let Some(since) = self.since {
            write!(f, ", since {}", since.format("%Y-%m-%d %H:%M:%S UTC"))?;
        }
        Ok(())
    }
}

/// " (held by ...)" when the holder is known.
fn held_by(holder: Option<&LockHolder>) -> String {
    holder.map_or_else(String::new, |h| format!(" (held by {h})"))
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
    /// A run of this flow with this key has not ended: a flow has at most
    /// one such run per key.
    #[error("flow `{flow}` already has run {existing} with key {key:?}, and it has not ended")]
    RunKeyTaken {
        /// The flow.
        flow: String,
        /// The key.
        key: String,
        /// The run holding it.
        existing: Uuid,
    },
    /// The run has ended (its status is terminal): it takes no more input.
    #[error("run {run_id} is {}; it takes no more input", status.as_str())]
    RunEnded {
        /// The run.
        run_id: Uuid,
        /// Its terminal status.
        status: RunStatus,
    },
    /// An inbox entry with this run, id and stage is already stored.
    #[error("run {run_id}: inbox entry {id} for stage `{stage}` already exists")]
    InboxEntryExists {
        /// The run.
        run_id: Uuid,
        /// The entry's id.
        id: Uuid,
        /// The stage.
        stage: String,
    },
    /// A checkpoint whose id is not greater than that of the run's stored
    /// checkpoint: the store keeps the latest cut, so an older (or the same)
    /// one changes nothing.
    #[error(
        "run {run_id}: checkpoint {id} refused: checkpoint {last} is already recorded, and a \
         checkpoint replaces it only with a greater id (a stale or repeated checkpoint; \
         number the next one after {last})"
    )]
    StaleCheckpoint {
        /// The run.
        run_id: Uuid,
        /// The refused checkpoint's id.
        id: u64,
        /// The id of the checkpoint the store keeps.
        last: u64,
    },
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
    /// follows it); (SQLite) an event's encoded payload larger than the
    /// store's length limit allows; or (PostgreSQL) a string holding a NUL
    /// character, which PostgreSQL text cannot store.
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
    /// A flow definition record a store cannot keep: an empty name, a
    /// fingerprint that is not 64 hex digits, text too long or holding a
    /// NUL character.
    #[error("flow definition {flow:?}: invalid {field} {value:?}: {why}")]
    InvalidDefinition {
        /// The flow's name (at most 64 characters of it).
        flow: String,
        /// Which field is wrong.
        field: &'static str,
        /// The rejected value (at most 64 characters of it).
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
    /// The database was written by an older version of troupe, and a
    /// read-only open does not migrate it.
    #[error(
        "{path}: schema version {found} is older than this build's ({supported}); \
         open it once for writing (`SqliteStore::open` or a runtime) to migrate it"
    )]
    SchemaTooOld {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The version this build reads.
        supported: i64,
    },
    /// Another store opened for writing, in this process or another one,
    /// holds the journal: one journal has one owner at a time.
    #[error(
        "{path}: the journal is owned by another writer{}; stop it first, or \
         open the journal read-only to inspect it (lock file {lock_file})",
        held_by(.holder.as_ref())
    )]
    JournalLocked {
        /// The database file.
        path: PathBuf,
        /// The lock file beside it.
        lock_file: PathBuf,
        /// Who holds the lock, where the lock file says.
        holder: Option<LockHolder>,
    },
    /// A read-only open found no journal at the path (it never creates one).
    #[error("{path}: no journal here (a read-only open does not create one)")]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// A write through a store that was closed (its journal released to
    /// the next owner), e.g. after its runtime shut down.
    #[error("{path}: the store is closed: writes are refused")]
    Closed {
        /// The database file.
        path: PathBuf,
    },
    /// A write through a store opened read-only.
    #[error("{path}: {op} refused: the journal is opened read-only")]
    ReadOnly {
        /// The database file.
        path: PathBuf,
        /// The refused operation.
        op: &'static str,
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
    /// A PostgreSQL database holds a schema newer than this build knows.
    #[error(
        "PostgreSQL schema `{schema}`: version {found} is newer than the newest this build \
         knows ({supported})"
    )]
    PostgresSchemaTooNew {
        /// The PostgreSQL schema (namespace) holding troupe's tables.
        schema: String,
        /// The version found in its `troupe_schema` table.
        found: i64,
        /// The newest version this build supports.
        supported: i64,
    },
    /// A PostgreSQL call failed; the server's error, or the client's.
    #[error("postgres {op}: {}", Causes(&**source))]
    Postgres {
        /// What the store was doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The connection to PostgreSQL was lost (during a read, or during a
    /// batch before its commit was sent: the server rolls that transaction
    /// back, so none of the batch is durable). The store reconnects for the
    /// next call.
    #[error(
        "postgres connection lost during {op} (a batch not yet committing is rolled back): \
         {}",
        Causes(&**source)
    )]
    ConnectionLost {
        /// What the store was doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The connection to PostgreSQL was lost while the batch's `COMMIT` was
    /// in flight: the batch may or may not be durable (never reported as
    /// done). The store reconnects for the next batch.
    #[error(
        "postgres connection lost during COMMIT of {batch_len} writes: they may or may not be \
         durable: {}",
        Causes(&**source)
    )]
    CommitUnknown {
        /// How many ops the batch held.
        batch_len: usize,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The thread owning an SQLite connection has stopped.
    #[error("sqlite connection thread for {path} has stopped")]
    ConnectionClosed {
        /// The database file.
        path: PathBuf,
    },
    /// A write for a run whose lease this store held, refused because
    /// another worker has claimed the run since (its lease lapsed): the
    /// run goes on there, and this process must stop executing it. Nothing
    /// of the refused op was written.
    #[error(
        "run {run_id}: lease lost (held at epoch {epoch}, now {}); the run is \
         executed by its new owner and nothing more is written for it here",
        match .holder { Some(h) => format!("owned by `{h}`"), None => "not owned".to_owned() }
    )]
    LeaseLost {
        /// The run.
        run_id: Uuid,
        /// The epoch this store held the run's lease at.
        epoch: u64,
        /// Who holds the lease now, if anyone.
        holder: Option<String>,
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

/// An error and its causes, `: `-joined: the driver's own message is often
/// a bare "db error", with the server's (SQLSTATE, message, detail) one
/// cause down, which is the part an operator needs.
struct Causes<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("db error")]
    struct Driver(#[source] Server);

    #[derive(Debug, thiserror::Error)]
    #[error("ERROR: deadlock detected")]
    struct Server;

    #[test]
    fn a_postgres_error_says_what_the_server_said() {
        let error = StoreError::Postgres {
            op: "commit",
            source: Arc::new(Driver(Server)),
        };
        assert_eq!(
            error.to_string(),
            "postgres commit: db error: ERROR: deadlock detected"
        );
    }
}
