//! What can go wrong, and the exit code each failure gets.

use std::path::PathBuf;

use troupe::projection::ProjectionError;
use troupe::records::{LockHolder, RunStatus, StoreError};
use troupe::runs::RunError;
use troupe::runtime::RuntimeError;
use uuid::Uuid;

/// A command's failure: printed as `troupe: <message>` on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No journal at the path given (nothing is created).
    #[error("{}: no journal here; give its path with --journal", .0.display())]
    NoJournal(PathBuf),
    /// The journal exists but could not be opened.
    #[error("cannot open the journal: {0}")]
    Open(StoreError),
    /// A write command found the journal owned by another process.
    #[error(
        "{}: the journal is in use by another process{}; stop it first or send \
         the input through it (read commands work meanwhile)",
        .path.display(),
        .holder.as_ref().map_or_else(String::new, |h| format!(" ({h})"))
    )]
    InUse {
        /// The journal.
        path: PathBuf,
        /// Who holds it, where the lock file says.
        holder: Option<LockHolder>,
    },
    /// The journal has no run with this id.
    #[error("no run {0} in this journal")]
    UnknownRun(Uuid),
    /// The journal has no definition of this flow (under this version).
    #[error(
        "no flow `{name}`{} recorded in this journal (`troupe flows` lists them)",
        .version.map_or_else(String::new, |v| format!(" version {v}"))
    )]
    UnknownFlow {
        /// The flow asked for.
        name: String,
        /// The version asked for.
        version: Option<u32>,
    },
    /// The run has ended and takes no more input.
    #[error("run {id} has ended ({}): it takes no input", .status.as_str())]
    Ended {
        /// The run.
        id: Uuid,
        /// Its terminal status.
        status: RunStatus,
    },
    /// The command line is incomplete.
    #[error("{0}")]
    Usage(&'static str),
    /// A payload argument is not JSON.
    #[error("the payload is not JSON: {0}")]
    BadJson(serde_json::Error),
    /// Reading the journal failed.
    #[error("reading the journal failed: {0}")]
    Read(#[from] StoreError),
    /// The runtime refused or failed the operation.
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The control plane refused the change.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The run's lifecycle could not be projected.
    #[error("projecting the run's lifecycle failed: {0}")]
    Project(ProjectionError),
    /// Output could not be written or encoded.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// JSON output could not be encoded.
    #[error("cannot encode the output: {0}")]
    Encode(serde_json::Error),
}

impl CliError {
    /// The process exit code: 2 for what the caller must fix in the command
    /// line (a path with no journal, a payload that is not JSON), 1 for an
    /// operation that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoJournal(_) | CliError::BadJson(_) | CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl From<RuntimeError> for CliError {
    fn from(error: RuntimeError) -> CliError {
        match error {
            RuntimeError::JournalLocked { path, holder } => CliError::InUse { path, holder },
            RuntimeError::UnknownRun(id) => CliError::UnknownRun(id),
            error => CliError::Runtime(error),
        }
    }
}

impl From<ProjectionError> for CliError {
    fn from(error: ProjectionError) -> CliError {
        match error {
            ProjectionError::UnknownRun(id) => CliError::UnknownRun(id),
            ProjectionError::Store { source, .. } => CliError::Read(source),
            error => CliError::Project(error),
        }
    }
}
