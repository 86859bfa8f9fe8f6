//! Crash test for recovery: a child process runs a flow on an SQLite
//! journal and is killed with SIGKILL mid-flow, several times; each new
//! child resumes the unfinished run. At the end a child runs it to its
//! outcome. Checked: every run ends `Finished` with exactly one terminal
//! event, and no stage whose completion was recorded before a kill was
//! started again by a later child.
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_RUNTIME_CRASH_CHILD` set it is the child.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use troupe::flow::FlowDefinition;
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, Produced, Source, sink_fn, source_iter, transform_fn};
use troupe::store::{EventKind, FlowStatus, FlowStore, SqliteStore};
use troupe::supervise::BoxError;
use uuid::Uuid;

const CHILD_ENV: &str = "TROUPE_RUNTIME_CRASH_CHILD";
const KILLS: u64 = 6;

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(
            PathBuf::from(dir),
            std::env::var_os("TROUPE_FINISH").is_some(),
        ),
        None => parent(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// A slow source: 64 items every 2 ms, 6,400 in all (~200 ms).
struct Slow(u64);

impl Source<u64> for Slow {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        for _ in 0..64 {
            if self.0 >= 6_400 {
                return Ok(Produced::Done);
            }
            out.push(self.0);
            self.0 += 1;
        }
        Ok(Produced::More)
    }
}

/// Appends `<pid> <stage>` to the starts log: who started which stage.
fn started(dir: &Path, stage: &str) {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("starts.log"));
    if let Ok(mut log) = log {
        let _ = writeln!(log, "{} {stage}", std::process::id());
    }
}

/// A slow main branch and a quick one that completes early.
fn definition(dir: &Path) -> FlowDefinition<u64> {
    let d = dir.to_path_buf();
    let logged = move |stage: &'static str| {
        let d = d.clone();
        move || started(&d, stage)
    };
    let (a, b, c, q, qs) = (
        logged("main"),
        logged("double"),
        logged("sum"),
        logged("quick"),
        logged("quick-sink"),
    );
    FlowDefinition::<u64>::builder("crashy")
        .source("main", move || {
            a();
            Slow(0)
        })
        .transform("double", move || {
            b();
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                out.push(x * 2);
                Ok(())
            })
        })
        .sink("sum", move || {
            c();
            sink_fn(|_: u64| Ok(()))
        })
        .source("quick", move || {
            q();
            source_iter(0..10_u64)
        })
        .sink("quick-sink", move || {
            qs();
            sink_fn(|_: u64| Ok(()))
        })
        .pipeline(["main", "double", "sum"])
        .edge("quick", "quick-sink")
        .build()
        .expect("valid flow")
}

/// Resumes the unfinished run (or starts one), prints its id, and with
/// `finish` waits for its outcome.
fn child(dir: PathBuf, finish: bool) {
    runtime().block_on(async move {
        let runtime = Runtime::builder()
            .sqlite(dir.join("journal.sqlite"))
            .register(definition(&dir))
            .expect("register")
            .start()
            .await
            .expect("start");
        let run = match runtime.resumed().first() {
            Some(run) => run.clone(),
            None => runtime.start("crashy").await.expect("start run"),
        };
        println!("run {}", run.run_id());
        if finish {
            let outcome = run.wait().await.expect("outcome");
            println!("done {:?}", outcome.status);
            runtime.shutdown().await;
        } else {
            std::future::pending::<()>().await;
        }
    });
}

/// The stages of `run` whose completion is recorded.
fn completed(dir: &Path, run: Uuid) -> BTreeSet<String> {
    runtime().block_on(async {
        let store = SqliteStore::open(dir.join("journal.sqlite"))
            .await
            .expect("open");
        let outputs = store.list_step_outputs(run).await.expect("outputs");
        outputs.into_iter().map(|o| o.step_id).collect()
    })
}

/// The completed stages that must not run again: a completed stage whose
/// downstream had not all completed runs again at resume (the items it sent
/// died with the process).
fn settled(completed: &BTreeSet<String>) -> BTreeSet<String> {
    let downstream: &[(&str, &[&str])] = &[
        ("main", &["double", "sum"]),
        ("double", &["sum"]),
        ("sum", &[]),
        ("quick", &["quick-sink"]),
        ("quick-sink", &[]),
    ];
    downstream
        .iter()
        .filter(|(stage, below)| {
            completed.contains(*stage) && below.iter().all(|b| completed.contains(*b))
        })
        .map(|(stage, _)| (*stage).to_owned())
        .collect()
}

/// The stages child `pid` started.
fn starts_of(dir: &Path, pid: u32) -> BTreeSet<String> {
    let log = std::fs::read_to_string(dir.join("starts.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, _)| p.parse() == Ok(pid))
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// Spawns a child and reads until it names its run; returns both.
fn spawn_child(
    exe: &Path,
    dir: &Path,
    finish: bool,
) -> (std::process::Child, Uuid, impl Iterator<Item = String>) {
    let mut command = Command::new(exe);
    command
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if finish {
        command.env("TROUPE_FINISH", "1");
    }
    let mut child = command.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let run = lines
        .find_map(|l| {
            l.strip_prefix("run ")
                .map(|id| Uuid::parse_str(id).expect("run id"))
        })
        .expect("child named its run");
    (child, run, lines)
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("own path");
    let mut runs = BTreeSet::new();
    let mut checked = 0;
    let mut previous: Option<Uuid> = None;
    for round in 0..=KILLS {
        let last = round == KILLS;
        // Read before the child starts: only completions recorded by earlier
        // children count (the child itself may complete stages quickly).
        let before = previous.map(|run| completed(dir.path(), run));
        let (mut child, run, mut lines) = spawn_child(&exe, dir.path(), last);
        // A new run (the previous one finished) legitimately starts every stage.
        let before = before.filter(|_| previous == Some(run)).unwrap_or_default();
        runs.insert(run);
        previous = Some(run);
        if last {
            let done = lines
                .find(|l| l.starts_with("done "))
                .expect("final child finished");
            assert_eq!(done, "done Finished");
            assert!(child.wait().expect("reap").success());
        } else {
            // Kill at a different point of the run each round.
            std::thread::sleep(Duration::from_millis(20 + 35 * round));
            child.kill().expect("SIGKILL child");
            child.wait().expect("reap child");
        }
        let settled = settled(&before);
        let rerun: Vec<_> = starts_of(dir.path(), child.id())
            .intersection(&settled)
            .cloned()
            .collect();
        assert!(
            rerun.is_empty(),
            "round {round}: completed stages ran again: {rerun:?}"
        );
        checked += settled.len();
    }
    runtime().block_on(async {
        let store = SqliteStore::open(dir.path().join("journal.sqlite"))
            .await
            .expect("open");
        for run in &runs {
            let record = store
                .get_run(*run)
                .await
                .expect("read")
                .expect("run exists");
            assert_eq!(record.status, FlowStatus::Finished, "run {run}");
            let terminals = store
                .replay(*run)
                .await
                .expect("replay")
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Terminal(_)))
                .count();
            assert_eq!(terminals, 1, "run {run}");
        }
    });
    println!(
        "runtime_crash: {KILLS} kills over {} run(s), {checked} recorded completions never rerun",
        runs.len()
    );
}
