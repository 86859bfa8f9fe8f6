//! An expense that waits for an approver: the run asks for approval once (a
//! memoized side effect), waits durably for the `approval` signal, survives
//! its process going away while it waits, and completes in the next one.
//!
//! `cargo run --example approval`
//!
//! The example plays both processes: it runs itself as a child that starts
//! the run and exits while the run waits, then resumes the run, starts it
//! again by its id (which returns the same run), and sends the signal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use troupe::flow::DefinitionError;
use troupe::prelude::*;
use troupe::stage::StageContext;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Expense {
    id: String,
    cents: u64,
    by: String,
}

/// `request` asks the approver (once per run, whatever the restarts), then
/// `decide` waits up to a week for the `approval` signal. `waiting` turns
/// true when `decide` waits.
fn approvals(waiting: watch::Sender<bool>) -> Result<FlowDefinition<u64>, DefinitionError> {
    FlowDefinition::<u64>::builder("approval")
        .input::<Expense>()
        .step("request", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    let expense: Expense = ctx.input()?;
                    let ticket: String = ctx
                        .run("ask-approver", || async {
                            println!(
                                "  asked the approver about {} ({} cents)",
                                expense.id, expense.cents
                            );
                            Ok(format!("ticket-{}", expense.id))
                        })
                        .await?;
                    Ok(json!({ "ticket": ticket }))
                }
            })
        })
        .step("decide", move |ctx: &StageContext| {
            let (ctx, waiting) = (ctx.clone(), waiting.clone());
            step_fn(move |_| {
                let (ctx, waiting) = (ctx.clone(), waiting.clone());
                async move {
                    waiting.send_replace(true);
                    let week = Duration::from_secs(7 * 24 * 3600);
                    let decision = ctx.wait_signal("approval", Some(week)).await?;
                    Ok(json!({ "decision": decision.unwrap_or(json!("expired")) }))
                }
            })
        })
        .edge("request", "decide")
        .build()
}

fn expense() -> Expense {
    Expense {
        id: "expense-17".into(),
        cents: 42_000,
        by: "sam".into(),
    }
}

/// The first process: starts the run and exits while it waits.
async fn first_process(journal: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (waiting, mut waits) = watch::channel(false);
    let runtime = Runtime::builder()
        .sqlite(journal)
        .register(approvals(waiting)?)?
        .start()
        .await?;
    let options = RunOptions::new().id("expense-17").input(expense());
    let run = runtime.start_with("approval", options).await?;
    println!("  run {} started for expense-17", run.run_id());
    waits.wait_for(|w| *w).await?;
    println!("  the run waits for approval; this process exits now");
    // Gone without a shutdown, as in a crash: the run stays in the journal.
    std::process::exit(0);
}

/// The next process: resumes the run and approves it.
async fn next_process(journal: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (waiting, mut waits) = watch::channel(false);
    let runtime = Runtime::builder()
        .sqlite(journal)
        .register(approvals(waiting)?)?
        .start()
        .await?;
    println!(
        "  resumed {} run(s) from the journal",
        runtime.resumed().len()
    );
    // Starting the id again returns the run that exists, not a second one.
    let options = RunOptions::new().id("expense-17").input(expense());
    let run = runtime.start_with("approval", options).await?;
    waits.wait_for(|w| *w).await?;
    println!("  run {} waits again; the approver says yes", run.run_id());
    let decision = json!({ "approved": true, "by": "ada" });
    runtime
        .send_signal(run.run_id(), None, "approval", decision)
        .await?;
    let outcome = run.wait().await?;
    println!(
        "  run ended {:?}: {}",
        outcome.status,
        outcome.structured_output.unwrap_or_default()
    );
    assert_eq!(outcome.status, RunStatus::Finished);
    runtime.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--first-process") {
        let journal = PathBuf::from(args.next().ok_or("the journal path is missing")?);
        return first_process(&journal).await;
    }
    let dir = std::env::temp_dir().join(format!("troupe-approval-{}", std::process::id()));
    let journal = dir.join("journal.sqlite");
    println!("first process:");
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--first-process")
        .arg(&journal)
        .status()?;
    if !status.success() {
        return Err(format!("the first process failed: {status}").into());
    }
    println!("next process:");
    let result = next_process(&journal).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
