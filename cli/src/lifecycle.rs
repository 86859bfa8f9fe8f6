//! A run's lifecycle (`troupe::projection`) in the CLI: the phases section
//! of `runs show` and the lifecycle events of `runs events --lifecycle`.

use std::io::Write;

use troupe::projection::{
    Causation, LifecycleEvent, PhaseState, Projection, RefusedTransition, RunRecords,
};
use troupe::records::RunEvent;
use troupe::store::Store;
use uuid::Uuid;

use crate::error::CliError;
use crate::render::{Table, json, time};

/// Run `id`'s records, projected.
pub async fn project(store: &dyn Store, id: Uuid) -> Result<(RunRecords, Projection), CliError> {
    let records = RunRecords::load(store, id).await?;
    let projection = records.project()?;
    Ok((records, projection))
}

/// `troupe runs events ID --lifecycle`: the run's lifecycle events (the
/// most recent `limit` if given).
pub async fn events(
    store: &dyn Store,
    id: Uuid,
    limit: Option<usize>,
    as_json: bool,
) -> Result<String, CliError> {
    let (_, projection) = project(store, id).await?;
    let events = projection.events();
    let events = &events[events.len().saturating_sub(limit.unwrap_or(usize::MAX))..];
    if as_json {
        return json(events);
    }
    let mut table = Table::new(&HEADERS);
    for event in events {
        table.row(row(event).into());
    }
    Ok(table.render())
}

const HEADERS: [&str; 5] = ["ID", "#", "AT", "CAUSE", "LIFECYCLE"];

/// One lifecycle event as a table row.
fn row(event: &LifecycleEvent) -> [String; 5] {
    [
        event.id.to_string(),
        event.occurrence.to_string(),
        time(event.at),
        cause(&event.caused_by),
        event.record.label(),
    ]
}

/// The phases table of `runs show`: each phase, its status and since when,
/// the statuses it went through and the ones it may take next.
pub fn phases_table(phases: &[PhaseState]) -> Table {
    let mut table = Table::new(&["PHASE", "STATUS", "SINCE", "HISTORY", "NEXT"]);
    for phase in phases {
        let since = phase.history.last().map_or("-".into(), |s| time(s.at));
        let history: Vec<&str> = phase.history.iter().map(|s| s.status.as_str()).collect();
        let next: Vec<&str> = phase.allowed_next.iter().map(|s| s.as_str()).collect();
        table.row(vec![
            phase.key.to_string(),
            phase.status.as_str().to_owned(),
            since,
            history.join(" → "),
            if next.is_empty() {
                "-".into()
            } else {
                next.join("|")
            },
        ]);
    }
    table
}

/// The refused moves of `runs show`: which phase, from and to what, and
/// the journal event that asked.
pub fn refused_table(refused: &[RefusedTransition]) -> Table {
    let mut table = Table::new(&["PHASE", "FROM", "TO", "CAUSE"]);
    for r in refused {
        table.row(vec![
            r.phase.to_string(),
            r.from.map_or("-", |s| s.as_str()).to_owned(),
            r.to.as_str().to_owned(),
            cause(&r.caused_by),
        ]);
    }
    table
}

/// A journal event as `seq (event id)`.
fn cause(caused_by: &Causation) -> String {
    format!("{} ({})", caused_by.seq, caused_by.event_id)
}

/// `runs events --follow --lifecycle`: projects each journal event as it
/// comes and prints the lifecycle events it adds.
pub struct Follower {
    projection: Projection,
}

impl Follower {
    /// A follower of run `id`, printing its header unless `as_json`.
    pub fn new(id: Uuid, as_json: bool, out: &mut impl Write) -> Result<Follower, CliError> {
        if !as_json {
            let [id, n, at, cause, what] = HEADERS;
            writeln!(out, "{id:<36}  {n:>3}  {at:<23}  {cause:<16}  {what}")?;
        }
        Ok(Follower {
            projection: Projection::new(id),
        })
    }

    /// Projects `event` and prints what it added, one JSON document per
    /// line with `as_json`.
    pub fn print(
        &mut self,
        event: &RunEvent,
        as_json: bool,
        out: &mut impl Write,
    ) -> Result<(), CliError> {
        let before = self.projection.events().len();
        self.projection.apply(event)?;
        for added in &self.projection.events()[before..] {
            if as_json {
                let line = serde_json::to_string(added).map_err(CliError::Encode)?;
                writeln!(out, "{line}")?;
            } else {
                let [id, n, at, cause, what] = row(added);
                writeln!(out, "{id:<36}  {n:>3}  {at:<23}  {cause:<16}  {what}")?;
            }
        }
        Ok(())
    }
}
