//! The read commands: they open the journal read-only, so they never
//! create, migrate or write it and work while a runtime owns it.

use std::path::Path;

use serde::Serialize;
use troupe::projection::{Detail, RunRecords, Snapshot};
use troupe::records::{
    Checkpoint, DeadLetter, EventKind, FailureEntry, InboxEntry, Run, RunEvent, RunFilter, RunStep,
    StepOutput, StoreError,
};
use troupe::store::{IntegrityCheck, SqliteConfig, SqliteStore, Store};
use uuid::Uuid;

use crate::error::CliError;
use crate::lifecycle;
use crate::render::{Table, json, opt_time, short_json, time};

/// Opens the journal at `path` read-only: [`CliError::NoJournal`] when
/// there is none (nothing is created).
///
/// Without the integrity check at open (`PRAGMA quick_check`, the store's
/// default): it reads every page of the database, ~1 s on a journal of
/// 1,000,000 runs, at every command, while a command reads a few pages.
/// A damaged page a command reads is still an error (SQLite checks each
/// page it reads), and the runtime that owns the journal checks it at its
/// own open.
pub async fn open(path: &Path) -> Result<SqliteStore, CliError> {
    let config = SqliteConfig {
        integrity_check: IntegrityCheck::Off,
        ..SqliteConfig::default()
    };
    match SqliteStore::open_read_only_with(path, config).await {
        Ok(store) => Ok(store),
        Err(StoreError::NotFound { path }) => Err(CliError::NoJournal(path)),
        Err(error) => Err(CliError::Open(error)),
    }
}

/// The run `id`, or [`CliError::UnknownRun`].
pub async fn run(store: &dyn Store, id: Uuid) -> Result<Run, CliError> {
    store.get_run(id).await?.ok_or(CliError::UnknownRun(id))
}

/// What `runs list` prints.
pub struct ListArgs {
    /// Which runs.
    pub filter: RunFilter,
    /// The page after this run.
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: usize,
}

/// `troupe runs list`: a table of runs, newest first, or a JSON array.
pub async fn list(store: &dyn Store, args: ListArgs, as_json: bool) -> Result<String, CliError> {
    let runs = match store.list_runs(&args.filter, args.before, args.limit).await {
        Err(StoreError::RunNotFound(id)) => return Err(CliError::UnknownRun(id)),
        listed => listed?,
    };
    if as_json {
        return json(&runs);
    }
    let mut text = runs_table(&runs).render();
    if args.limit > 0 && runs.len() == args.limit {
        let last = runs.last().map(|r| r.id.to_string()).unwrap_or_default();
        text.push_str(&format!("(more: --before {last})\n"));
    }
    Ok(text)
}

/// One row per run: id, flow, status, created, updated.
fn runs_table(runs: &[Run]) -> Table {
    let mut table = Table::new(&["ID", "FLOW", "STATUS", "CREATED", "UPDATED"]);
    for run in runs {
        table.row(vec![
            run.id.to_string(),
            run.controller_id.clone(),
            status(run),
            time(run.created_at),
            time(run.updated_at),
        ]);
    }
    table
}

/// A run's status, saying when a cancel is pending.
pub fn status(run: &Run) -> String {
    if run.cancel_requested && !run.status.is_terminal() {
        format!("{} (cancel requested)", run.status.as_str())
    } else {
        run.status.as_str().to_owned()
    }
}

/// Everything `runs show` prints about one run.
#[derive(Serialize)]
struct Shown {
    run: Run,
    outcome: Option<RunEvent>,
    /// Its lifecycle, redacted: the record's fields carry the payloads.
    lifecycle: Snapshot,
    stage_outputs: Vec<StepOutput>,
    steps: Vec<RunStep>,
    children: Vec<Run>,
    failures: Vec<FailureEntry>,
    dead_letters: Vec<DeadLetter>,
    inbox: Vec<InboxEntry>,
    /// The latest checkpoint, states included.
    checkpoint: Option<Checkpoint>,
}

/// `troupe runs show ID`: the record, outcome, lifecycle phases (and any
/// move their guard refused), stage outputs, mirrored steps, child runs,
/// failures, dead letters, inbox and latest checkpoint.
pub async fn show(store: &dyn Store, id: Uuid, as_json: bool) -> Result<String, CliError> {
    let children = RunFilter {
        parent_run_id: Some(id),
        ..RunFilter::default()
    };
    let (records, projection) = lifecycle::project(store, id).await?;
    let lifecycle = Snapshot::new(&projection, &records, Detail::Summary);
    let RunRecords {
        run,
        stage_outputs,
        dead_letters,
        ..
    } = records;
    let shown = Shown {
        run,
        lifecycle,
        outcome: store.terminal_event(id).await?,
        stage_outputs,
        steps: store.list_steps(id).await?,
        children: store.list_runs(&children, None, usize::MAX).await?,
        failures: store.list_failures(id).await?,
        dead_letters,
        inbox: store.list_inbox(id).await?,
        checkpoint: store.last_checkpoint(id).await?,
    };
    if as_json {
        return json(&shown);
    }
    let run = &shown.run;
    let mut text = String::new();
    let fields = [
        ("Run", run.id.to_string()),
        ("Flow", run.controller_id.clone()),
        (
            "Flow def",
            match (&run.fingerprint, run.flow_version) {
                (Some(f), Some(v)) => format!("fingerprint {f} (version {v})"),
                (Some(f), None) => format!("fingerprint {f}"),
                (None, _) => "-".into(),
            },
        ),
        ("Status", status(run)),
        ("Key", run.key.clone().unwrap_or_else(|| "-".into())),
        ("Goal", run.goal.clone()),
        ("Owner", run.owner_session_key.clone()),
        (
            "Parent",
            run.parent_run_id.map_or("-".into(), |p| p.to_string()),
        ),
        (
            "Step",
            run.current_step.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Created", time(run.created_at)),
        ("Updated", time(run.updated_at)),
        ("Ended", opt_time(run.ended_at)),
        ("Revision", run.revision.to_string()),
        (
            "Lease",
            run.lease.as_ref().map_or("-".into(), |l| {
                format!(
                    "{} (epoch {}, until {})",
                    l.owner,
                    l.epoch,
                    time(l.expires_at)
                )
            }),
        ),
        (
            "Input",
            if run.input.is_null() {
                "-".into()
            } else {
                short_json(&run.input)
            },
        ),
        ("State", short_json(&run.state_json)),
        (
            "Wait",
            run.wait_json.as_ref().map_or("-".into(), short_json),
        ),
        (
            "Outcome",
            shown
                .outcome
                .as_ref()
                .map_or("-".into(), |e| e.kind.name().to_owned()),
        ),
    ];
    for (name, value) in fields {
        text.push_str(&format!("{name:<10}{value}\n"));
    }
    let phases = &shown.lifecycle.phases;
    section(&mut text, "Lifecycle phases", phases.len(), || {
        lifecycle::phases_table(phases)
    });
    let refused = &shown.lifecycle.refused;
    section(&mut text, "Refused lifecycle moves", refused.len(), || {
        lifecycle::refused_table(refused)
    });
    section(
        &mut text,
        "Stage outputs",
        shown.stage_outputs.len(),
        || {
            let mut table = Table::new(&["STAGE", "ITERATION", "AT", "OUTPUT"]);
            for o in &shown.stage_outputs {
                let iteration = o.iteration.map_or("-".into(), |i| i.to_string());
                table.row(vec![
                    o.step_id.clone(),
                    iteration,
                    time(o.at),
                    short_json(&o.output),
                ]);
            }
            table
        },
    );
    section(&mut text, "Steps", shown.steps.len(), || {
        let mut table = Table::new(&["EXTERNAL ID", "TASK", "STATUS", "UPDATED", "RESULT"]);
        for step in &shown.steps {
            let result = step.result_json.as_ref().map_or("-".into(), short_json);
            table.row(vec![
                step.external_run_id.clone(),
                step.task.clone(),
                format!("{:?}", step.status).to_lowercase(),
                time(step.updated_at),
                result,
            ]);
        }
        table
    });
    section(&mut text, "Children", shown.children.len(), || {
        runs_table(&shown.children)
    });
    section(&mut text, "Failures", shown.failures.len(), || {
        failures_table(&shown.failures)
    });
    section(&mut text, "Dead letters", shown.dead_letters.len(), || {
        dead_letters_table(&shown.dead_letters)
    });
    section(&mut text, "Inbox", shown.inbox.len(), || {
        let mut table = Table::new(&["ID", "STAGE", "KIND", "ACCEPTED", "SETTLED", "PAYLOAD"]);
        for e in &shown.inbox {
            let settled = match &e.settled {
                None => "pending".to_owned(),
                Some(s) => match &s.undeliverable {
                    None => time(s.at),
                    Some(why) => format!("undeliverable: {why}"),
                },
            };
            table.row(vec![
                e.id.to_string(),
                e.stage.clone(),
                e.message.kind().to_owned(),
                time(e.accepted_at),
                settled,
                short_json(e.message.payload()),
            ]);
        }
        table
    });
    text.push_str(&crate::checkpoint::section(shown.checkpoint.as_ref()));
    Ok(text)
}

/// Appends a titled section: its table, or `(none)`.
fn section(text: &mut String, title: &str, len: usize, table: impl FnOnce() -> Table) {
    text.push_str(&format!("\n{title} ({len})\n"));
    if len > 0 {
        text.push_str(&table().render());
    }
}

/// `troupe runs events ID`: the run's log in order (the most recent
/// `limit` events if given).
pub async fn events(
    store: &dyn Store,
    id: Uuid,
    limit: Option<usize>,
    as_json: bool,
) -> Result<String, CliError> {
    run(store, id).await?;
    let events = match limit {
        Some(limit) => store.list_events(id, limit).await?,
        None => store.replay(id).await?,
    };
    if as_json {
        return json(&events);
    }
    let mut table = Table::new(&["SEQ", "AT", "EVENT", "DATA"]);
    for event in &events {
        table.row(vec![
            event.seq.to_string(),
            time(event.at),
            event.kind.name().to_owned(),
            event_data(event)?,
        ]);
    }
    Ok(table.render())
}

/// An event's data on one line, cut short: a custom event's payload, or
/// the outcome.
pub fn event_data(event: &RunEvent) -> Result<String, CliError> {
    Ok(match &event.kind {
        EventKind::Custom { payload, .. } => short_json(payload),
        EventKind::Terminal(t) => short_json(&serde_json::to_value(t).map_err(CliError::Encode)?),
    })
}

/// `troupe ledger ID`: the run's failure ledger.
pub async fn ledger(store: &dyn Store, id: Uuid, as_json: bool) -> Result<String, CliError> {
    run(store, id).await?;
    let failures = store.list_failures(id).await?;
    if as_json {
        return json(&failures);
    }
    Ok(failures_table(&failures).render())
}

fn failures_table(failures: &[FailureEntry]) -> Table {
    let mut table = Table::new(&["STAGE", "AT", "REASON"]);
    for f in failures {
        table.row(vec![f.step_id.clone(), time(f.at), f.reason.clone()]);
    }
    table
}

/// `troupe dead-letters ID`: the items the run's stages gave up on.
pub async fn dead_letters(store: &dyn Store, id: Uuid, as_json: bool) -> Result<String, CliError> {
    run(store, id).await?;
    let letters = store.list_dead_letters(id).await?;
    if as_json {
        return json(&letters);
    }
    Ok(dead_letters_table(&letters).render())
}

fn dead_letters_table(letters: &[DeadLetter]) -> Table {
    let mut table = Table::new(&["STAGE", "POSITION", "ATTEMPTS", "AT", "ITEM", "LAST ERROR"]);
    for l in letters {
        table.row(vec![
            l.stage.clone(),
            l.position.to_string(),
            l.attempts.to_string(),
            time(l.at),
            short_json(&l.item),
            l.errors.last().cloned().unwrap_or_default(),
        ]);
    }
    table
}
