//! `troupe repair [--dry-run]`: a run whose terminal status was persisted
//! but whose terminal event was not (a process died between the two writes,
//! or the append failed) gets the event its status implies, as a runtime's
//! recovery scan does at start (see `troupe::runs::recover`). Run rows that
//! cannot be read are listed; no repair mends them.
//!
//! `--dry-run` opens the journal read-only and lists what would be
//! repaired. Without it, the repair is the recovery scan of a runtime
//! started on the journal (its single writer): refused while another
//! process owns the journal, and what it appended is read back.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use troupe::records::{DamagedRun, EventKind, RunStatus, TerminalEvent};
use troupe::runs::plan_repairs;
use troupe::runtime::Runtime;
use troupe::store::Store;
use uuid::Uuid;

use crate::error::CliError;
use crate::read;
use crate::render::{self, Table};

/// What `troupe repair` prints with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    /// Whether nothing was written.
    dry_run: bool,
    /// The runs repaired (or that would be), oldest first.
    repairs: Vec<Repair>,
    /// Run rows that cannot be read.
    damaged: Vec<Damaged>,
    /// Runs that are not terminal: a runtime resumes them; repair leaves them.
    unfinished: usize,
}

/// One run's repair.
#[derive(Debug, Serialize)]
struct Repair {
    run_id: Uuid,
    flow: String,
    status: RunStatus,
    /// The terminal event appended (or to be), if known.
    event: Option<TerminalEvent>,
    /// `would repair`, `repaired`, or why it failed.
    result: String,
}

/// One unreadable run row.
#[derive(Debug, Serialize)]
struct Damaged {
    table: &'static str,
    rowid: i64,
    run_id: Option<Uuid>,
    error: String,
}

impl From<&DamagedRun> for Damaged {
    fn from(damaged: &DamagedRun) -> Damaged {
        Damaged {
            table: damaged.row.table,
            rowid: damaged.row.rowid,
            run_id: damaged.row.run_id,
            error: damaged.error.to_string(),
        }
    }
}

/// Runs `troupe repair`; what it prints.
pub async fn repair(path: &Path, dry_run: bool, as_json: bool) -> Result<String, CliError> {
    // Read-only first: a wrong path is an error, never a new journal.
    let store = read::open(path).await?;
    let report = if dry_run {
        planned(&store).await?
    } else {
        drop(store);
        repaired(path).await?
    };
    if as_json {
        return render::json(&report);
    }
    Ok(human(&report))
}

/// What a repair would do, read only.
async fn planned(store: &dyn Store) -> Result<Report, CliError> {
    let plan = plan_repairs(store).await?;
    let mut repairs: Vec<Repair> = plan
        .repairs
        .into_iter()
        .map(|r| Repair {
            run_id: r.run_id,
            flow: r.flow,
            status: r.status,
            event: Some(r.event),
            result: "would repair".to_owned(),
        })
        .collect();
    for (run_id, error) in plan.unplannable {
        let run = read::run(store, run_id).await?;
        repairs.push(Repair {
            run_id,
            flow: run.controller_id,
            status: run.status,
            event: None,
            result: format!("cannot derive its event: {error}"),
        });
    }
    Ok(Report {
        dry_run: true,
        repairs,
        damaged: plan.damaged.iter().map(Damaged::from).collect(),
        unfinished: plan.unfinished,
    })
}

/// Repairs through a runtime's recovery scan, then reads back what it did.
async fn repaired(path: &Path) -> Result<Report, CliError> {
    let runtime = Runtime::builder().sqlite(path).start().await?;
    let result = read_back(&runtime).await;
    runtime.shutdown().await;
    result
}

async fn read_back(runtime: &Runtime) -> Result<Report, CliError> {
    let journal = runtime.journal();
    let recovery = runtime.recovery();
    let mut repairs = Vec::new();
    let failed = recovery
        .repair_failures
        .iter()
        .map(|(id, error)| (*id, Err(error.to_string())));
    for (run_id, outcome) in recovery
        .repaired
        .iter()
        .map(|id| (*id, Ok(())))
        .chain(failed)
    {
        let run = read::run(journal, run_id).await?;
        let event = match journal.terminal_event(run_id).await?.map(|e| e.kind) {
            Some(EventKind::Terminal(event)) => Some(event),
            _ => None,
        };
        repairs.push(Repair {
            run_id,
            flow: run.controller_id,
            status: run.status,
            event,
            result: outcome.map_or_else(|e| format!("failed: {e}"), |()| "repaired".to_owned()),
        });
    }
    Ok(Report {
        dry_run: false,
        repairs,
        damaged: recovery.damaged.iter().map(Damaged::from).collect(),
        unfinished: recovery.unfinished.len(),
    })
}

/// The report as tables and a summary line.
fn human(report: &Report) -> String {
    let mut text = String::new();
    if report.repairs.is_empty() {
        text.push_str("no run needs repair\n");
    } else {
        let mut table = Table::new(&["RUN", "FLOW", "STATUS", "EVENT", "RESULT"]);
        for r in &report.repairs {
            table.row(vec![
                r.run_id.to_string(),
                r.flow.clone(),
                r.status.as_str().to_owned(),
                r.event.as_ref().map_or_else(|| "-".to_owned(), describe),
                r.result.clone(),
            ]);
        }
        text.push_str(&table.render());
    }
    if !report.damaged.is_empty() {
        text.push_str("\nunreadable run rows (no repair mends them; see `troupe ledger ID`):\n");
        let mut table = Table::new(&["ROW", "RUN", "ERROR"]);
        for d in &report.damaged {
            table.row(vec![
                format!("{} {}", d.table, d.rowid),
                d.run_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
                d.error.clone(),
            ]);
        }
        text.push_str(&table.render());
    }
    let verb = if report.dry_run {
        "would be repaired (dry run: nothing written)"
    } else {
        "repaired"
    };
    let done = report
        .repairs
        .iter()
        .filter(|r| r.result == "repaired" || r.result == "would repair")
        .count();
    text.push_str(&format!(
        "\n{done} run(s) {verb}; {} unreadable row(s); {} unfinished run(s) left to resume\n",
        report.damaged.len(),
        report.unfinished
    ));
    text
}

/// A terminal event in one cell: its name and what it carries.
fn describe(event: &TerminalEvent) -> String {
    match event {
        TerminalEvent::RunCompleted { structured_output } => match structured_output {
            Some(output) => format!("RunCompleted {}", render::short_json(output)),
            None => "RunCompleted (no output)".to_owned(),
        },
        TerminalEvent::RunFailed { reason } => {
            format!(
                "RunFailed {}",
                render::short_json(&Value::from(reason.as_str()))
            )
        }
        TerminalEvent::RunCancelled => "RunCancelled".to_owned(),
        TerminalEvent::RunContinuedAsNew { next_run_id } => {
            format!("RunContinuedAsNew (next run {next_run_id})")
        }
    }
}
