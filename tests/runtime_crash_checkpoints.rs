//! Checkpointed streams, SIGKILLed again and again: a child process starts
//! (or resumes) the run `crash-stream` of `numbers → tally → record` on an
//! SQLite journal, checkpointed every `EVERY` items; the parent kills it at
//! a point it reports (the sink has taken `STRIDE` more items in this
//! process and parks there), `ROUNDS` times, then a last child runs the
//! run to its outcome.
//!
//! - `numbers` emits `0..ITEMS` from its position (its snapshot is the
//!   next number) and prints `from <position>` when it starts.
//! - `tally` dead-letters every poisoned item (`x % 1000 == 500`), and
//!   keeps a count and sum of the others (its state) which it reports when
//!   it completes.
//! - `record` appends `item <x> <round>` to `record.log` per item, syncs
//!   it at each checkpoint barrier, and keeps a count (its state); it
//!   prints `restored <count>` when handed its state and `at <count>` at
//!   its kill point.
//!
//! Checked after each kill, from the journal: the next child's source
//! starts at the last checkpoint's position and its sink restores that
//! checkpoint's count (the state after recovery is the checkpoint's, plus
//! the replayed window it then takes); every item a child logged lies at
//! or after the position the child started from (nothing before the last
//! complete checkpoint is processed again). At the end: the run finished
//! with exactly one terminal event; every item is in `record.log` or
//! dead-lettered (only the poisoned ones are); `tally` and `record` count
//! each item once, although the log holds the replayed windows twice.
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_CRASH_CHECKPOINTS_CHILD` set it is the child.

#[path = "support/child.rs"]
mod child;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use child::{Running, say};
use serde_json::{Value, json};
use troupe::checkpoint::Checkpoints;
use troupe::flow::{Backoff, DeadLetterPolicy, FlowDefinition, RetryPolicy, RunOptions};
use troupe::records::{Checkpoint, EventKind, RunStatus, TerminalEvent};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, PermanentError, Produced, Sink, Source, Transform};
use troupe::store::{SqliteStore, Store};
use troupe::supervise::BoxError;

const CHILD_ENV: &str = "TROUPE_CRASH_CHECKPOINTS_CHILD";
/// The round a child plays; absent for the last child.
const ROUND_ENV: &str = "TROUPE_CRASH_CHECKPOINTS_ROUND";
const ROUNDS: usize = 20;
const ITEMS: u64 = 10_000;
/// Items the sink takes in a killed child before it parks.
const STRIDE: u64 = 400;
/// A checkpoint each time the source emitted this many more items.
const EVERY: u64 = 100;
const RUN_KEY: &str = "crash-stream";

fn poisoned(x: u64) -> bool {
    x % 1000 == 500
}

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(PathBuf::from(dir)),
        None => parent(),
    }
}

// ---- the child ----

struct Numbers {
    next: u64,
}

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        let stop = (self.next + 50).min(ITEMS);
        out.extend(self.next..stop);
        self.next = stop;
        tokio::task::yield_now().await;
        Ok(if self.next == ITEMS {
            Produced::Done
        } else {
            Produced::More
        })
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!(self.next)))
    }

    fn restore(&mut self, position: Value) -> Result<(), BoxError> {
        self.next = serde_json::from_value(position)?;
        say(&format!("from {}", self.next));
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    count: u64,
    sum: u64,
}

impl Transform<u64> for Tally {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if poisoned(x) {
            return Err(PermanentError::new(format!("{x} is poisoned")).into());
        }
        self.count += 1;
        self.sum += x;
        out.push(x);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!([self.count, self.sum])))
    }

    fn restore(&mut self, state: Value) -> Result<(), BoxError> {
        (self.count, self.sum) = serde_json::from_value(state)?;
        Ok(())
    }

    async fn complete(&mut self, _: &mut Emitter<u64>) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!({ "count": self.count, "sum": self.sum })))
    }
}

struct Record {
    log: File,
    round: String,
    count: u64,
    /// Where this process parks (its count when it gets there).
    park_at: Option<u64>,
    taken_here: u64,
}

impl Sink<u64> for Record {
    async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
        writeln!(self.log, "item {x} {}", self.round)?;
        self.count += 1;
        self.taken_here += 1;
        if Some(self.taken_here) == self.park_at {
            self.log.sync_data()?;
            say(&format!("at {}", self.count));
            // Killed from outside: the child never runs ahead of the parent.
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        // What the checkpoint covers is on disk before it commits.
        self.log.sync_data()?;
        Ok(Some(json!(self.count)))
    }

    fn restore(&mut self, state: Value) -> Result<(), BoxError> {
        self.count = serde_json::from_value(state)?;
        say(&format!("restored {}", self.count));
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<Value>, BoxError> {
        self.log.sync_data()?;
        Ok(Some(json!(self.count)))
    }
}

fn flow(dir: &Path, round: Option<String>) -> FlowDefinition<u64> {
    let log = dir.join("record.log");
    FlowDefinition::<u64>::builder("stream")
        .source("numbers", |_| Numbers { next: 0 })
        .transform("tally", |_| Tally::default())
        .sink("record", move |_| Record {
            log: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open record.log"),
            round: round.clone().unwrap_or_else(|| "last".to_owned()),
            count: 0,
            park_at: round.as_ref().map(|_| STRIDE),
            taken_here: 0,
        })
        .pipeline(["numbers", "tally", "record"])
        .default_retry(RetryPolicy::attempts(2).backoff(Backoff::NONE))
        .on_dead_letter(DeadLetterPolicy::Continue)
        .serde_items()
        .checkpoints(Checkpoints::every_items(EVERY))
        .build()
        .expect("flow")
}

fn child(dir: PathBuf) {
    let round = std::env::var(ROUND_ENV).ok();
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.join("journal.sqlite"))
            .register(flow(&dir, round.clone()))
            .expect("register")
            .start()
            .await
            .expect("start runtime");
        let run = runtime
            .start_with("stream", RunOptions::new().id(RUN_KEY))
            .await
            .expect("start run");
        say(&format!("run {}", run.run_id()));
        if round.is_none() {
            let outcome = run.wait().await.expect("outcome");
            say(&format!("outcome {}", outcome.status.as_str()));
            runtime.shutdown().await;
            return;
        }
        std::future::pending::<()>().await;
    });
}

// ---- the parent ----

fn spawn(dir: &Path, round: Option<usize>) -> Running {
    let exe = std::env::current_exe().expect("current exe");
    let mut env = vec![(CHILD_ENV, dir.as_os_str().to_owned())];
    if let Some(round) = round {
        env.push((ROUND_ENV, round.to_string().into()));
    }
    Running::spawn(
        &exe,
        &env,
        round.unwrap_or(ROUNDS),
        Duration::from_secs(120),
    )
}

/// The run's last checkpoint, read after its child died.
fn last_checkpoint(rt: &tokio::runtime::Runtime, dir: &Path, run: &str) -> Option<Checkpoint> {
    rt.block_on(async {
        let store = SqliteStore::open_read_only(dir.join("journal.sqlite"))
            .await
            .expect("open");
        store
            .last_checkpoint(run.parse().expect("uuid"))
            .await
            .expect("read checkpoint")
    })
}

fn state_u64(c: &Checkpoint, stage: &str) -> u64 {
    c.stages[stage]
        .state
        .as_ref()
        .and_then(Value::as_u64)
        .expect("u64 state")
}

/// What a child printed after `prefix`, as a number, if it did.
fn printed(lines: &[String], prefix: &str) -> Option<u64> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix).map(|n| n.parse().expect("number")))
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let mut run_id: Option<String> = None;
    // Per child: where its source started.
    let mut started_from = Vec::new();
    let mut previous: Option<Checkpoint> = None;
    // Per kill: the sink's count when killed, and the count the next child restored.
    let (mut killed_at, mut restored_at) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let last = round == ROUNDS;
        let mut child = spawn(dir.path(), (!last).then_some(round));
        let id = child.expect("run ");
        assert_eq!(*run_id.get_or_insert_with(|| id.clone()), id, "one run");
        let lines = if last {
            assert_eq!(child.expect("outcome "), "finished");
            child.process.wait().expect("reap");
            child.read.clone()
        } else {
            child.expect("at ");
            child.kill()
        };
        // The child resumed from the checkpoint the previous one left.
        let from = printed(&lines, "from ").unwrap_or(0);
        let restored = printed(&lines, "restored ");
        match &previous {
            Some(c) => {
                assert_eq!(from, state_u64(c, "numbers"), "round {round}: {lines:?}");
                assert_eq!(restored, Some(state_u64(c, "record")), "round {round}");
            }
            None => assert_eq!((from, restored), (0, None), "round {round}"),
        }
        started_from.push(from);
        restored_at.push(restored.unwrap_or(0));
        killed_at.extend(printed(&lines, "at "));
        if !last {
            previous = last_checkpoint(&rt, dir.path(), &id).or(previous);
        }
    }
    let resumed_with_progress = started_from.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        resumed_with_progress >= ROUNDS / 2,
        "checkpoints did not move on: {started_from:?}"
    );

    // Nothing before a child's starting position was processed by it.
    let log = std::fs::read_to_string(dir.path().join("record.log")).expect("record.log");
    let mut logged = BTreeSet::new();
    for line in log.lines() {
        let mut parts = line.split(' ').skip(1);
        let x: u64 = parts.next().expect("item").parse().expect("number");
        let round = parts.next().expect("round");
        let round = if round == "last" {
            ROUNDS
        } else {
            round.parse().expect("round")
        };
        assert!(
            x >= started_from[round],
            "round {round} processed {x}, before its start {}",
            started_from[round]
        );
        logged.insert(x);
    }

    rt.block_on(async {
        let store = SqliteStore::open_read_only(dir.path().join("journal.sqlite"))
            .await
            .expect("open");
        let run_id = run_id.expect("run id").parse().expect("uuid");
        let record = store.get_run(run_id).await.expect("get").expect("run");
        assert_eq!(record.status, RunStatus::Finished);
        let events = store.replay(run_id).await.expect("replay");
        let terminals: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Terminal(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(terminals.len(), 1, "{terminals:?}");
        let TerminalEvent::RunCompleted { structured_output } = &terminals[0] else {
            panic!("not completed: {terminals:?}");
        };
        let steps = structured_output.clone().unwrap_or(Value::Null)["steps"].clone();
        let letters: BTreeSet<u64> = store
            .list_dead_letters(run_id)
            .await
            .expect("dead letters")
            .iter()
            .map(|d| d.item.as_u64().expect("kept item"))
            .collect();
        let poison: BTreeSet<u64> = (0..ITEMS).filter(|x| poisoned(*x)).collect();
        assert_eq!(letters, poison, "only the poisoned items are dead-lettered");
        for x in 0..ITEMS {
            assert!(
                logged.contains(&x) || letters.contains(&x),
                "item {x} was lost"
            );
        }
        let kept = ITEMS - poison.len() as u64;
        let sum: u64 = (0..ITEMS).filter(|x| !poisoned(*x)).sum();
        assert_eq!(
            steps["tally"]["result"],
            json!({"count": kept, "sum": sum}),
            "{steps}"
        );
        assert_eq!(steps["record"]["result"], json!(kept), "{steps}");
        assert!(log.lines().count() as u64 > kept, "no window was replayed");
        // Items the sink takes again after each kill: what it had taken
        // past the checkpoint the next child resumed from.
        let redone: Vec<u64> = killed_at
            .iter()
            .zip(&restored_at[1..])
            .map(|(at, restored)| at - restored)
            .collect();
        println!(
            "runtime_crash_checkpoints: {ROUNDS} kills; resumed from {started_from:?}; \
             {} lines logged for {kept} items, each counted once; items redone per kill \
             (checkpoint every {EVERY}): max {}, mean {}",
            log.lines().count(),
            redone.iter().max().unwrap_or(&0),
            redone.iter().sum::<u64>() / redone.len().max(1) as u64,
        );
    });
}
