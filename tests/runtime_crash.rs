//! Crash test for recovery: a child process runs a flow on an SQLite
//! journal and is killed with SIGKILL mid-flow, several times; each new
//! child resumes the same run. At the end a child runs it to its outcome.
//!
//! No kill waits on the clock. The parent drives the flow through gates
//! and kills on reported progress:
//! - the flow has three branches `x-source → x-double → x-sink` (x = a, b,
//!   c); each source emits half its items, then waits until the parent
//!   opens its gate (a line `open x` on the child's stdin); `c-sink`
//!   completes only once `c-sink` is open, so a kill can land between a
//!   recorded producer and its unfinished consumer;
//! - the child prints `completed <stage>` once a stage's completion is
//!   durable (a store wrapper under the journal sees the write commit) and
//!   `seen <sink>` once a sink has had the first half of its items;
//! - each round opens some gates, waits for given lines, and SIGKILLs.
//!
//! Checked after each kill: the run is not terminal and the journal holds
//! exactly the completions the round aimed for (so the kill landed
//! mid-flow, after the stages it names). Checked of each child: it resumed
//! the same run and started exactly the stages that were not settled (a
//! settled stage is completed and so is everything downstream of it; the
//! others run again, at-least-once). At the end: the run is `Finished` with
//! exactly one terminal event, and every sink's recorded output saw every
//! item (none lost).
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_RUNTIME_CRASH_CHILD` set it is the child.

#[path = "support/child.rs"]
mod child;

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use child::Running;

use serde_json::{Value, json};
use tokio::sync::watch;
use troupe::flow::FlowDefinition;
use troupe::records::{EventKind, StepOutput, StoreError, TerminalEvent, WriteOp, WriteOutcome};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, Produced, Sink, Source, transform_fn};
use troupe::store::{BatchResult, SqliteStore, Store, WriterJob};
use troupe::supervise::BoxError;
use uuid::Uuid;

const CHILD_ENV: &str = "TROUPE_RUNTIME_CRASH_CHILD";
/// The child's round: its token in the starts log (a pid may be reused).
const ROUND_ENV: &str = "TROUPE_RUNTIME_CRASH_ROUND";
/// Items per branch; the first half (whole batches) flows before the gate.
const ITEMS: u64 = 2_048;
const HALF: u64 = ITEMS / 2;
const BRANCHES: [&str; 3] = ["a", "b", "c"];
/// The sink whose completion waits for its own gate.
const GATED_SINK: &str = "c-sink";

/// One child before its kill: the gates it opens, the lines it must print
/// before it is killed (every completion the round aims for, and a line
/// from every stage it must have started), and the stages the journal then
/// holds as completed.
struct Round {
    open: &'static [&'static str],
    kill_after: &'static [&'static str],
    completed: &'static [&'static str],
}

const ROUNDS: &[Round] = &[
    // Mid-stream, nothing completed yet.
    Round {
        open: &[],
        kill_after: &["seen a-sink", "seen b-sink", "seen c-sink"],
        completed: &[],
    },
    // Branch a settled, b and c mid-stream.
    Round {
        open: &["a"],
        kill_after: &[
            "completed a-source",
            "completed a-double",
            "completed a-sink",
            "seen b-sink",
            "seen c-sink",
        ],
        completed: &["a-source", "a-double", "a-sink"],
    },
    // b settled; c's producers recorded, its sink not: they are not settled.
    Round {
        open: &["b", "c"],
        kill_after: &[
            "completed b-source",
            "completed b-double",
            "completed b-sink",
            "completed c-source",
            "completed c-double",
            "seen c-sink",
        ],
        completed: &[
            "a-source", "a-double", "a-sink", "b-source", "b-double", "b-sink", "c-source",
            "c-double",
        ],
    },
    // Only c runs again (all three stages); killed mid-stream.
    Round {
        open: &[],
        kill_after: &["seen c-sink"],
        completed: &[
            "a-source", "a-double", "a-sink", "b-source", "b-double", "b-sink", "c-source",
            "c-double",
        ],
    },
];

/// The gates the final child opens: everything.
const OPEN_ALL: &[&str] = &["a", "b", "c", GATED_SINK];

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(PathBuf::from(dir)),
        None => parent(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

// ---- the child ----

/// The gates the parent opened in this process.
fn gates() -> &'static watch::Sender<BTreeSet<String>> {
    static GATES: OnceLock<watch::Sender<BTreeSet<String>>> = OnceLock::new();
    GATES.get_or_init(|| watch::Sender::new(BTreeSet::new()))
}

async fn opened(gate: &str) {
    let mut gates = gates().subscribe();
    let _ = gates.wait_for(|open| open.contains(gate)).await;
}

/// Reads `open <gate>` lines from stdin; the parent gone (stdin closed)
/// ends the child, so no child outlives a failed parent.
fn read_gates() {
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if let Some(gate) = line.strip_prefix("open ") {
                gates().send_modify(|open| {
                    open.insert(gate.to_owned());
                });
            }
        }
        std::process::exit(3);
    });
}

/// Emits `0..ITEMS`: the first half at once, the rest once its gate opens.
struct Gated {
    gate: &'static str,
    next: u64,
}

impl Source<u64> for Gated {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.next == HALF {
            opened(self.gate).await;
        }
        let end = if self.next < HALF { HALF } else { ITEMS };
        let room = u64::try_from(out.room()).unwrap_or(u64::MAX);
        while self.next < end.min(self.next.saturating_add(room)) {
            out.push(self.next);
            self.next += 1;
        }
        Ok(if self.next == ITEMS {
            Produced::Done
        } else {
            Produced::More
        })
    }
}

/// Records which items it saw; reports the first half; its completion
/// output says how many items it had and how many distinct ones.
struct Check {
    name: String,
    seen: Vec<bool>,
    count: u64,
}

impl Sink<u64> for Check {
    async fn consume(&mut self, item: u64) -> Result<(), BoxError> {
        let index = usize::try_from(item / 2)?;
        *self.seen.get_mut(index).ok_or("item out of range")? = true;
        self.count += 1;
        if self.count == HALF {
            println!("seen {}", self.name);
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        if self.name == GATED_SINK {
            opened(GATED_SINK).await;
        }
        let distinct = self.seen.iter().filter(|s| **s).count();
        Ok(Some(json!({ "count": self.count, "distinct": distinct })))
    }
}

/// Appends `<round> <stage>` to the starts log (synced: the next line may
/// be the parent's SIGKILL).
fn started(dir: &Path, stage: &str) {
    let round = std::env::var(ROUND_ENV).unwrap_or_default();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("starts.log"));
    if let Ok(mut log) = log {
        let _ = writeln!(log, "{round} {stage}");
        let _ = log.sync_data();
    }
}

fn definition(dir: &Path) -> FlowDefinition<u64> {
    let mut builder = FlowDefinition::<u64>::builder("crashy");
    for branch in BRANCHES {
        let [source, double, sink] = stage_names(branch);
        let (d1, d2, d3) = (dir.to_path_buf(), dir.to_path_buf(), dir.to_path_buf());
        let (s1, s2, s3) = (source.clone(), double.clone(), sink.clone());
        builder = builder
            .source(&source, move |_| {
                started(&d1, &s1);
                Gated {
                    gate: branch,
                    next: 0,
                }
            })
            .transform(&double, move |_| {
                started(&d2, &s2);
                transform_fn(|x: u64, out: &mut Emitter<u64>| {
                    out.push(x * 2);
                    Ok(())
                })
            })
            .sink(&sink, move |_| {
                started(&d3, &s3);
                Check {
                    name: s3.clone(),
                    seen: vec![false; usize::try_from(ITEMS).unwrap_or(usize::MAX)],
                    count: 0,
                }
            })
            .pipeline([source, double, sink]);
    }
    builder.build().expect("valid flow")
}

fn stage_names(branch: &str) -> [String; 3] {
    ["source", "double", "sink"].map(|kind| format!("{branch}-{kind}"))
}

/// The journal's store: prints `completed <stage>` once a stage's
/// completion is committed. It passes the production paths through: the
/// journal commits on SQLite's writer thread (`run_on_writer`), and resume
/// reads outputs with the batched query (`list_step_outputs_for`).
struct Reporting(Arc<dyn Store>);

troupe::store_wrapper! {
    Reporting, reads: 0;
    async fn apply_batch(&self, ops: Vec<WriteOp>) -> BatchResult {
        let stages = recorded_stages(&ops);
        let results = self.0.apply_batch(ops).await?;
        report(&stages, &results);
        Ok(results)
    }

    fn run_on_writer(&self, job: WriterJob) -> Result<(), WriterJob> {
        // The inner store runs the wrapped job or hands it back; the job
        // itself is taken out again in the second case.
        let job = Arc::new(Mutex::new(Some(job)));
        let inner = job.clone();
        let wrapped: WriterJob = Box::new(move |apply| {
            let Some(job) = inner.lock().expect("job lock").take() else {
                return;
            };
            job(&mut |ops: &[WriteOp]| {
                let stages = recorded_stages(ops);
                let results = apply(ops)?;
                report(&stages, &results);
                Ok(results)
            });
        });
        self.0.run_on_writer(wrapped).map_err(|_| {
            job.lock()
                .expect("job lock")
                .take()
                .expect("a job handed back was not run")
        })
    }

    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        self.0.list_step_outputs_for(run_ids).await
    }
}

/// The stage each op records the completion of, if it does.
fn recorded_stages(ops: &[WriteOp]) -> Vec<Option<String>> {
    ops.iter()
        .map(|op| match op {
            WriteOp::RecordStepOutput(output) => Some(output.step_id.clone()),
            _ => None,
        })
        .collect()
}

/// Prints `completed <stage>` for each completion newly recorded.
fn report(stages: &[Option<String>], results: &[Result<WriteOutcome, StoreError>]) {
    for (stage, result) in stages.iter().zip(results) {
        if let (Some(stage), Ok(WriteOutcome::StepOutputRecorded { inserted: true })) =
            (stage, result)
        {
            println!("completed {stage}");
        }
    }
}

/// Resumes the unfinished run (or starts one) and prints `run <id>
/// resumed|new`; prints `done <status>` if it ends.
fn child(dir: PathBuf) {
    read_gates();
    runtime().block_on(async move {
        let store = SqliteStore::open(dir.join("journal.sqlite"))
            .await
            .expect("open journal");
        let runtime = Runtime::builder()
            .store(Arc::new(Reporting(Arc::new(store))))
            .register(definition(&dir))
            .expect("register")
            .start()
            .await
            .expect("start");
        let (run, how) = match runtime.resumed().first() {
            Some(run) => (run.clone(), "resumed"),
            None => (runtime.start("crashy").await.expect("start run"), "new"),
        };
        println!("run {} {how}", run.run_id());
        let outcome = run.wait().await.expect("outcome");
        println!("done {:?}", outcome.status);
        runtime.shutdown().await;
    });
}

// ---- the parent ----

/// How long a child may take to print what its round waits for (the whole
/// test takes seconds). It bounds failures only: no kill waits on it.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// The child of `round`.
fn spawn(exe: &Path, dir: &Path, round: usize) -> Running {
    let env = [
        (CHILD_ENV, dir.as_os_str().to_owned()),
        (ROUND_ENV, round.to_string().into()),
    ];
    Running::spawn(exe, &env, round, ROUND_LIMIT)
}

/// Opens `gates` in `child`.
fn open(child: &mut Running, gates: &[&str]) {
    for gate in gates {
        child.say(&format!("open {gate}"));
    }
}

/// The stages whose completion is recorded, and whether the run is terminal.
fn journal_state(dir: &Path, run: Uuid) -> (BTreeSet<String>, bool) {
    runtime().block_on(async {
        let store = SqliteStore::open(dir.join("journal.sqlite"))
            .await
            .expect("open");
        let outputs = store.list_step_outputs(run).await.expect("outputs");
        let record = store.get_run(run).await.expect("read").expect("run exists");
        let completed = outputs.into_iter().map(|o| o.step_id).collect();
        (completed, record.status.is_terminal())
    })
}

/// The completed stages that a resume must not run again: those whose
/// downstream stages all completed too (a completed producer of an
/// unfinished consumer runs again: the items it sent died with the process).
fn settled(completed: &BTreeSet<String>) -> BTreeSet<String> {
    let mut settled = BTreeSet::new();
    for branch in BRANCHES {
        let stages = stage_names(branch);
        for (i, stage) in stages.iter().enumerate() {
            if stages[i..].iter().all(|s| completed.contains(s)) {
                settled.insert(stage.clone());
            }
        }
    }
    settled
}

/// The stages the child of `round` started.
fn starts_of(dir: &Path, round: usize) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join("starts.log")).unwrap_or_default();
    let mut starts: Vec<String> = log
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(r, _)| r.parse() == Ok(round))
        .map(|(_, s)| s.to_owned())
        .collect();
    starts.sort();
    starts
}

/// Checks that the child of `round` started each stage that was not
/// settled, once.
fn check_starts(dir: &Path, settled: &BTreeSet<String>, round: usize) {
    let expected: Vec<String> = BRANCHES
        .iter()
        .flat_map(|b| stage_names(b))
        .filter(|s| !settled.contains(s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        starts_of(dir, round),
        expected,
        "round {round}: the stages started (settled before it: {settled:?})"
    );
}

fn parent() {
    // Each read is bounded by its round (`ROUND_LIMIT`); this backstop
    // bounds the rest (a child that never exits, a journal read that hangs).
    // Exiting closes every child's stdin, which ends it.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(300));
        eprintln!("runtime_crash: timed out outside a child's read (reaping or a journal read)");
        std::process::exit(1);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("own path");
    let mut run: Option<Uuid> = None;
    let mut settled_before = BTreeSet::new();
    for (round, plan) in ROUNDS.iter().enumerate() {
        let mut child = spawn(&exe, dir.path(), round);
        let id = same_run(&mut child, &mut run, round);
        open(&mut child, plan.open);
        child.expect_all(plan.kill_after);
        child.kill();

        let (completed, terminal) = journal_state(dir.path(), id);
        assert!(!terminal, "round {round}: the run ended before the kill");
        let wanted: BTreeSet<String> = plan.completed.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(completed, wanted, "round {round}: completions at the kill");
        check_starts(dir.path(), &settled_before, round);
        settled_before = settled(&completed);
    }
    assert!(
        !settled_before.is_empty(),
        "no kill landed after a stage had settled"
    );

    let mut last = spawn(&exe, dir.path(), ROUNDS.len());
    let id = same_run(&mut last, &mut run, ROUNDS.len());
    open(&mut last, OPEN_ALL);
    assert_eq!(last.expect("done "), "Finished");
    assert!(last.process.wait().expect("reap").success());
    check_starts(dir.path(), &settled_before, ROUNDS.len());
    check_outcome(dir.path(), id);
    println!(
        "runtime_crash: {} kills mid-flow, then finished; settled stages never ran again",
        ROUNDS.len()
    );
}

/// Reads the child's run line: the first child starts the run, every later
/// one resumes it.
fn same_run(child: &mut Running, run: &mut Option<Uuid>, round: usize) -> Uuid {
    let line = child.expect("run ");
    let (id, how) = line.split_once(' ').expect("run <id> <how>");
    let id = Uuid::parse_str(id).expect("run id");
    match run {
        None => assert_eq!(how, "new", "round {round}"),
        Some(first) => assert_eq!((id, how), (*first, "resumed"), "round {round}"),
    }
    *run = Some(id);
    id
}

/// One terminal event, `RunCompleted`, and every sink saw every item.
fn check_outcome(dir: &Path, run: Uuid) {
    runtime().block_on(async {
        let store = SqliteStore::open(dir.join("journal.sqlite"))
            .await
            .expect("open");
        let events = store.replay(run).await.expect("replay");
        let terminals: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Terminal(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let [
            TerminalEvent::RunCompleted {
                structured_output: Some(output),
            },
        ] = terminals.as_slice()
        else {
            panic!("expected one RunCompleted with an output, got {terminals:?}");
        };
        for branch in BRANCHES {
            let [_, _, sink] = stage_names(branch);
            let output = &output["steps"][&sink];
            assert_eq!(output["result"]["distinct"], ITEMS, "{sink}: {output}");
            let count = output["result"]["count"].as_u64().expect("count");
            assert!(count >= ITEMS, "{sink}: {output}");
            assert_eq!(output["items_in"], count, "{sink}: {output}");
        }
    });
}
