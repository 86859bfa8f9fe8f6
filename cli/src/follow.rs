//! `troupe runs events ID --follow`: the run's log (or its lifecycle
//! events, with `--lifecycle`), then its new events as they are committed,
//! until its outcome. Another process writes the
//! journal, so the only way to learn of a commit is to read: the log is
//! polled, every [`INTERVAL`] while nothing is new.

use std::io::Write;
use std::time::Duration;

use troupe::records::{Cursor, RunEvent};
use troupe::store::Store;
use uuid::Uuid;

use crate::error::CliError;
use crate::lifecycle::Follower;
use crate::read;
use crate::render::time;

/// How long to wait before reading again when nothing was new: an idle
/// poll is one indexed read, and issue 20 asks for ≤ 50 ms from commit to
/// print.
const INTERVAL: Duration = Duration::from_millis(25);

/// Events read per poll of the journal's log.
const PAGE: usize = 1_000;

/// What `--follow` prints of each event.
enum View {
    /// The event itself.
    Log,
    /// The lifecycle events it adds.
    Lifecycle(Follower),
}

/// Prints the run's events (or, with `lifecycle`, its lifecycle events) to
/// `out` as they come (one JSON document per line with `as_json`),
/// flushing each, and returns once its outcome is printed.
pub async fn follow(
    store: &dyn Store,
    id: Uuid,
    as_json: bool,
    lifecycle: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    read::run(store, id).await?;
    let mut view = if lifecycle {
        View::Lifecycle(Follower::new(id, as_json, out)?)
    } else {
        if !as_json {
            writeln!(out, "{:>5}  {:<23}  {:<14}  DATA", "SEQ", "AT", "EVENT")?;
        }
        View::Log
    };
    let mut after = Cursor(0);
    for event in store.replay(id).await? {
        after = event.cursor;
        if view.print(&event, as_json, out)? {
            return Ok(());
        }
    }
    loop {
        let page = store.poll(after, PAGE).await?;
        if page.is_empty() {
            tokio::time::sleep(INTERVAL).await;
            continue;
        }
        for event in page {
            after = event.cursor;
            if event.run_id == id && view.print(&event, as_json, out)? {
                return Ok(());
            }
        }
    }
}

impl View {
    /// Prints what this view shows of `event` and flushes; whether it is
    /// the run's outcome.
    fn print(
        &mut self,
        event: &RunEvent,
        as_json: bool,
        out: &mut impl Write,
    ) -> Result<bool, CliError> {
        match self {
            View::Log => print(event, as_json, out)?,
            View::Lifecycle(follower) => follower.print(event, as_json, out)?,
        }
        out.flush()?;
        Ok(event.kind.as_terminal().is_some())
    }
}

/// Prints one event.
fn print(event: &RunEvent, as_json: bool, out: &mut impl Write) -> Result<(), CliError> {
    if as_json {
        let line = serde_json::to_string(event).map_err(CliError::Encode)?;
        writeln!(out, "{line}")?;
    } else {
        let data = read::event_data(event)?;
        let (seq, at, name) = (event.seq, time(event.at), event.kind.name());
        writeln!(out, "{seq:>5}  {at:<23}  {name:<14}  {data}")?;
    }
    Ok(())
}
