//! A run that waits durably, SIGKILLed again and again: a child process
//! starts (or resumes) the run `crash-approval` on an SQLite journal; its
//! `request` step asks the approver once (a memoized effect that appends to
//! a synced log), its `decide` step waits for the `approval` signal on a
//! durable timer's watch. The parent kills the child at points it reports —
//! right after the effect's memo is journaled, while the step waits awake,
//! and while the run hibernates — for `ROUNDS` rounds; then a last child
//! resumes the run asleep, signals it awake, and the run ends.
//! Checked: the effect ran exactly once across every process, the wait took
//! the one signal, the run has one terminal event and finished with the
//! approval, and starting the run's id in each round returned the same run.
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_CRASH_WAITS_CHILD` set it is the child.

#[path = "support/child.rs"]
mod child;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use child::{Running, completed_output, say};
use serde_json::json;
use troupe::flow::{FlowDefinition, RunOptions};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{StageContext, step_fn};
use troupe::store::{SqliteStore, Store};

const CHILD_ENV: &str = "TROUPE_CRASH_WAITS_CHILD";
/// Set for the last child: it sends the signal and waits for the outcome.
const APPROVE_ENV: &str = "TROUPE_CRASH_WAITS_APPROVE";
/// Killed children.
const ROUNDS: usize = 20;
const RUN_KEY: &str = "crash-approval";
/// Set for odd rounds: the run hibernates as soon as it waits and the child
/// says `asleep` once it has (so the next child finds it journaled
/// `Waiting`); even rounds never hibernate, so their step waits awake.
const EAGER_ENV: &str = "TROUPE_CRASH_WAITS_EAGER";

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(PathBuf::from(dir)),
        None => parent(),
    }
}

// ---- the child ----

/// Appends `line` to `path` and syncs it: the next moment may be a SIGKILL.
fn append(path: &Path, line: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    writeln!(file, "{line}").expect("append");
    file.sync_all().expect("sync");
}

fn flow(dir: &Path) -> FlowDefinition<u64> {
    let effects = dir.join("effects.log");
    FlowDefinition::<u64>::builder("approval")
        .step("request", move |ctx: &StageContext| {
            let (ctx, effects) = (ctx.clone(), effects.clone());
            step_fn(move |_| {
                let (ctx, effects) = (ctx.clone(), effects.clone());
                async move {
                    let ticket: String = ctx
                        .run("ask-approver", || async {
                            append(&effects, "asked");
                            Ok("ticket-1".to_owned())
                        })
                        .await?;
                    // Journaled: a kill from here on must not ask again.
                    say("asked");
                    Ok(json!(ticket))
                }
            })
        })
        .step("decide", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    say("waiting");
                    let answer = ctx
                        .wait_signal("approval", Some(Duration::from_secs(86_400)))
                        .await?;
                    Ok(json!({ "answer": answer }))
                }
            })
        })
        .edge("request", "decide")
        .build()
        .expect("flow")
}

fn child(dir: PathBuf) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let eager = std::env::var_os(EAGER_ENV).is_some();
        let approve = std::env::var_os(APPROVE_ENV).is_some();
        let mut builder = Runtime::builder().sqlite(dir.join("journal.sqlite"));
        if eager {
            builder = builder.hibernate_after(Duration::ZERO);
        } else if !approve {
            builder = builder.never_hibernate();
        }
        let runtime = builder
            .register(flow(&dir))
            .expect("register")
            .start()
            .await
            .expect("start runtime");
        let run = runtime
            .start_with("approval", RunOptions::new().id(RUN_KEY))
            .await
            .expect("start run");
        say(&format!("run {}", run.run_id()));
        // A run whose `Waiting` record was journaled before the last kill
        // resumes hibernated: its step does not run again until the signal.
        if runtime.run_counts().hibernated == 1 {
            say("hibernated");
        }
        if eager {
            // Nothing announces a hibernation; a test child may look often.
            while !run.is_hibernated() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            say("asleep");
        }
        if approve {
            runtime
                .send_signal(run.run_id(), None, "approval", json!({"by": "ada"}))
                .await
                .expect("signal");
            let outcome = run.wait().await.expect("outcome");
            say(&format!("outcome {}", outcome.status.as_str()));
            runtime.shutdown().await;
            return;
        }
        // Killed from outside; never ends by itself.
        std::future::pending::<()>().await;
    });
}

// ---- the parent ----

fn spawn(dir: &Path, round: usize, approve: bool) -> Running {
    let exe = std::env::current_exe().expect("current exe");
    let mut env = vec![(CHILD_ENV, dir.as_os_str().to_owned())];
    if approve {
        env.push((APPROVE_ENV, "1".into()));
    }
    if round % 2 == 1 {
        env.push((EAGER_ENV, "1".into()));
    }
    Running::spawn(&exe, &env, round, Duration::from_secs(60))
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run_id = None;
    for round in 0..ROUNDS {
        let mut child = spawn(dir.path(), round, false);
        let id = child.expect("run ");
        assert_eq!(
            *run_id.get_or_insert_with(|| id.clone()),
            id,
            "one run for the id"
        );
        // Kill points: right after the journaled effect (first round), while
        // `decide` waits awake (even rounds), or while the run hibernates
        // (odd rounds; after the first, it resumed asleep).
        if round == 0 {
            child.expect_all(&["asked"]);
        } else if round % 2 == 0 {
            child.expect_all(&["waiting"]);
        } else {
            child.expect_all(&["asleep"]);
        }
        child.kill();
    }
    let mut last = spawn(dir.path(), ROUNDS, true);
    assert_eq!(Some(last.expect("run ")), run_id);
    // The last killed child left the run asleep: it resumes asleep, and the
    // signal wakes it.
    last.expect_all(&["hibernated"]);
    let status = last.expect("outcome ");
    assert_eq!(status, "finished");
    last.process.wait().expect("reap");

    let effects = std::fs::read_to_string(dir.path().join("effects.log")).expect("effects");
    assert_eq!(
        effects.lines().count(),
        1,
        "the approver was asked once: {effects:?}"
    );

    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let store = SqliteStore::open_read_only(dir.path().join("journal.sqlite"))
            .await
            .expect("open");
        let run_id = run_id.expect("run id").parse().expect("uuid");
        let record = store.get_run(run_id).await.expect("get").expect("run");
        assert_eq!(record.status, RunStatus::Finished);
        let log = store.replay(run_id).await.expect("replay");
        let output = completed_output(&log);
        assert_eq!(output["steps"]["decide"]["answer"]["by"], "ada", "{output}");
        assert_eq!(output["steps"]["request"], "ticket-1");
        let taken = log
            .iter()
            .filter(|e| e.kind.name() == "signal_taken")
            .count();
        assert_eq!(taken, 1);
        let memos = store.list_memos(run_id, "request").await.expect("memos");
        assert_eq!(memos.len(), 1);
        println!(
            "runtime_crash_waits: {ROUNDS} kills (awake and asleep), one effect, one signal taken, one outcome"
        );
    });
}
