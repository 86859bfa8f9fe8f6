//! `troupe`: inspect a troupe journal and send its runs operator input.
//!
//! Read commands (`runs list|show|events|tree`, `ledger`, `dead-letters ID`,
//! `flows`, `flows show NAME`, `repair --dry-run`)
//! open the journal read-only; write commands (`signal`, `cancel`,
//! `dead-letters replay`, `repair`) start a runtime on it, the journal's
//! single writer, and are refused while another process owns it. Exit codes: 0
//! done, 1 the operation failed, 2 a usage error or a path with no journal.

mod args;
mod checkpoint;
mod error;
mod flows;
mod follow;
mod lifecycle;
mod read;
mod render;
mod repair;
mod tree;
mod write;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use troupe::records::RunFilter;

use args::{Cli, Command, DeadLettersCommand, FlowsCommand, RunsCommand};
use error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&CliError::Output(error)),
    };
    let printed = runtime
        .block_on(execute(cli))
        .and_then(|text| Ok(std::io::stdout().lock().write_all(text.as_bytes())?));
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &CliError) -> ExitCode {
    eprintln!("troupe: {error}");
    ExitCode::from(error.exit_code())
}

/// Runs the command; what it prints.
async fn execute(cli: Cli) -> Result<String, CliError> {
    let (path, as_json) = (cli.journal.as_path(), cli.json);
    match cli.command {
        Command::Runs(command) => {
            let store = read::open(path).await?;
            match command {
                RunsCommand::List {
                    status,
                    flow,
                    owner,
                    parent,
                    since,
                    limit,
                    before,
                } => {
                    let filter = RunFilter {
                        status: status.map(Into::into),
                        controller_id: flow,
                        owner_session_key: owner,
                        parent_run_id: parent,
                        created_since: since,
                    };
                    let args = read::ListArgs {
                        filter,
                        before,
                        limit,
                    };
                    read::list(&store, args, as_json).await
                }
                RunsCommand::Show { id } => read::show(&store, id, as_json).await,
                RunsCommand::Tree { id } => tree::tree(&store, id, as_json).await,
                RunsCommand::Events {
                    id,
                    follow: true,
                    lifecycle,
                    ..
                } => {
                    let mut out = std::io::stdout().lock();
                    follow::follow(&store, id, as_json, lifecycle, &mut out).await?;
                    Ok(String::new())
                }
                RunsCommand::Events {
                    id,
                    limit,
                    lifecycle: true,
                    ..
                } => lifecycle::events(&store, id, limit, as_json).await,
                RunsCommand::Events { id, limit, .. } => {
                    read::events(&store, id, limit, as_json).await
                }
            }
        }
        Command::Ledger { id } => read::ledger(&read::open(path).await?, id, as_json).await,
        Command::DeadLetters(args) => match (args.command, args.id) {
            (Some(DeadLettersCommand::Replay { id, stage }), _) => {
                write::replay(path, id, &stage, as_json).await
            }
            (None, Some(id)) => read::dead_letters(&read::open(path).await?, id, as_json).await,
            // clap requires the id when there is no subcommand.
            (None, None) => Err(CliError::Usage("dead-letters needs a run id")),
        },
        Command::Flows(args) => {
            let store = read::open(path).await?;
            match args.command {
                None => flows::list(&store, as_json).await,
                Some(FlowsCommand::Show {
                    name,
                    version,
                    mermaid,
                }) => flows::show(&store, &name, version, mermaid, as_json).await,
            }
        }
        Command::Signal {
            id,
            name,
            payload,
            stage,
        } => write::signal(path, id, &name, &payload, stage.as_deref(), as_json).await,
        Command::Cancel { id, reason } => write::cancel(path, id, &reason, as_json).await,
        Command::Repair { dry_run } => repair::repair(path, dry_run, as_json).await,
    }
}
