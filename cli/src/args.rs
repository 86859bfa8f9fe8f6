//! The command line, as clap derive types.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use troupe::records::RunStatus;
use uuid::Uuid;

/// Inspect a troupe journal and send its runs operator input.
///
/// Read commands open the journal read-only (they never create, migrate or
/// write it, and work while a runtime holds it); write commands go through
/// the journal's single writer and are refused while another process owns it.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, propagate_version = true)]
pub struct Cli {
    /// The journal: an SQLite file a troupe runtime wrote.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "troupe-data/journal.sqlite"
    )]
    pub journal: PathBuf,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List and inspect runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// A run's failure ledger, oldest first.
    Ledger {
        /// The run.
        id: Uuid,
    },
    /// A run's dead letters, or replay them.
    DeadLetters(DeadLettersArgs),
    /// The flow definitions the journal recorded (name, version,
    /// fingerprint, stages), or one of them with `show`.
    Flows(FlowsArgs),
    /// Send a signal to a run (every stage, or one with --stage).
    Signal {
        /// The run.
        id: Uuid,
        /// The signal's name.
        name: String,
        /// The signal's payload, as JSON (e.g. '{"gain": 2}' or 'null').
        payload: String,
        /// Only this stage gets it.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Append the terminal event a run with a terminal status lacks (a
    /// process died between the two writes), as a runtime does at start;
    /// list the run rows that cannot be read.
    Repair {
        /// Only list what would be repaired: read-only, writes nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Ask a run to cancel: it is cancelled by the process running it, or
    /// when it resumes.
    Cancel {
        /// The run.
        id: Uuid,
        /// Why, recorded in the run's log.
        #[arg(long)]
        reason: String,
    },
}

/// `troupe runs ...`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One page of runs, newest first.
    List {
        /// Only runs with this status.
        #[arg(long)]
        status: Option<StatusArg>,
        /// Only runs of this flow.
        #[arg(long, value_name = "NAME")]
        flow: Option<String>,
        /// Only runs this session owns.
        #[arg(long, value_name = "KEY")]
        owner: Option<String>,
        /// Only runs this run started.
        #[arg(long, value_name = "ID")]
        parent: Option<Uuid>,
        /// Only runs created at or after this time (RFC 3339, e.g.
        /// 2026-01-31T12:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<DateTime<Utc>>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The page after this run (the last id of the previous page).
        #[arg(long, value_name = "ID")]
        before: Option<Uuid>,
    },
    /// A run's record, lifecycle phases, stage outputs, failures, dead
    /// letters, inbox and latest checkpoint (its states only with `--json`).
    Show {
        /// The run.
        id: Uuid,
    },
    /// A run and the runs it started, and theirs (32 levels deep at most),
    /// and its continue-as-new chain if it belongs to one.
    Tree {
        /// The run.
        id: Uuid,
    },
    /// A run's log, in order.
    Events {
        /// The run.
        id: Uuid,
        /// Only the most recent this many events.
        #[arg(long, conflicts_with = "follow")]
        limit: Option<usize>,
        /// Then print new events as they are committed, until the run's
        /// outcome (JSON lines with --json).
        #[arg(long, short)]
        follow: bool,
        /// Print the run's lifecycle events (phase changes and notes, each
        /// with a stable id and the journal event that caused it) instead
        /// of its raw log.
        #[arg(long)]
        lifecycle: bool,
    },
}

/// `troupe dead-letters ID` or `troupe dead-letters replay ...`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeadLettersArgs {
    /// The run whose dead letters to list.
    #[arg(required = true)]
    pub id: Option<Uuid>,
    /// Replay instead of listing.
    #[command(subcommand)]
    pub command: Option<DeadLettersCommand>,
}

/// `troupe dead-letters replay ...`.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Put a stage's dead letters back into the same run's stage input,
    /// through its inbox (the run gets them when it runs or resumes).
    Replay {
        /// The run the dead letters came from.
        id: Uuid,
        /// The stage whose dead letters to replay.
        #[arg(long)]
        stage: String,
    },
}

/// `troupe flows` or `troupe flows show NAME`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Show one definition instead of listing them.
    #[command(subcommand)]
    pub command: Option<FlowsCommand>,
}

/// `troupe flows show ...`.
#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// A definition's stages and edges: the highest version recorded (the
    /// latest recorded of it), or `--version`'s.
    #[command(disable_version_flag = true)]
    Show {
        /// The flow's name.
        name: String,
        /// This version of it.
        #[arg(long, value_name = "V")]
        version: Option<u32>,
        /// Print a Mermaid `flowchart LR` diagram instead of tables.
        #[arg(long)]
        mermaid: bool,
    },
}

/// A run status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Waiting for an external input.
    Waiting,
    /// Finished successfully.
    Finished,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Ended by continuing as a new run (`troupe runs tree ID` shows the chain).
    ContinuedAsNew,
}

impl From<StatusArg> for RunStatus {
    fn from(status: StatusArg) -> RunStatus {
        match status {
            StatusArg::Created => RunStatus::Created,
            StatusArg::Running => RunStatus::Running,
            StatusArg::Waiting => RunStatus::Waiting,
            StatusArg::Finished => RunStatus::Finished,
            StatusArg::Failed => RunStatus::Failed,
            StatusArg::Cancelled => RunStatus::Cancelled,
            StatusArg::ContinuedAsNew => RunStatus::ContinuedAsNew,
        }
    }
}
