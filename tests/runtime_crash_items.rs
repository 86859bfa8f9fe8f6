//! Crash test for items and durable operator input: a child process runs
//! `numbers → flaky → record` on an SQLite journal and is SIGKILLed
//! mid-stream, round after round; each new child resumes the same run, and
//! a last child runs it to its outcome.
//!
//! - `numbers` emits `0..ITEMS` in every process, once the parent says
//!   `go` (it has no position: a resume starts it over, at-least-once).
//! - `flaky` fails each multiple of 97 on its first attempt in each process
//!   (its retry succeeds) and every poisoned item (`x % 1000 == 500`) on
//!   every attempt: those are dead-lettered (`Continue`, `serde_items`).
//!   It takes durable `Mark` events only when it completes (`Ignore` while
//!   running), so a mark sent to it is handled after a restart, by the last
//!   child, which is handed more of them than `flaky`'s queue holds.
//! - `record` appends `item <x>` to `record.log` per item and syncs it every
//!   `CHECKPOINT` items, then prints `seen <n>` (n items in this process).
//!   At its round's kill point it stops there (busy) until it is killed, so
//!   the child never runs ahead of the parent. It takes marks between
//!   batches, or as they come while it waits for input (`Poll`).
//! - Both stages append `handled <id> <stage> <round>` to their log (synced)
//!   when they handle a mark, then print it.
//!
//! Each round the parent asks the child (lines on its stdin) to send marks
//! with `durable_stage_events`; the child prints `accepted <id> <stage>
//! <round>` once `send` returned (the mark is in the journal). Before `go`,
//! even rounds send one to `record` and wait until it is handled, and every
//! round sends one to `flaky`; after `seen <kill point>`, odd rounds send
//! one to `record` (stuck: it is handled after the restart). Every
//! `OFFLINE_EVERY`-th child first sends one to `record` with
//! `Runtime::send_event`, before it registers the flow (the run is not live
//! yet). Then the parent SIGKILLs the child: no kill waits on the clock.
//!
//! Checked after each kill: the run is not terminal and every mark accepted
//! is in the run's inbox. At the end: the run is `Finished` with exactly one
//! terminal event; every item is in `record.log` or dead-lettered (the
//! poisoned ones are dead-lettered and nothing else is); every accepted mark
//! was handled, by id, by the stage it was sent to, when its sending says
//! (never before; `flaky`'s only by the last child; `record`'s sent while
//! it was stuck only after the restart); every inbox entry is settled as
//! handled. Children run one after the other (each is reaped before the
//! next starts).
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_CRASH_ITEMS_CHILD` set it is the child.

#[path = "support/child.rs"]
mod child;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use child::Running;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use troupe::flow::{Backoff, DeadLetterPolicy, FlowDefinition, RetryPolicy};
use troupe::records::{EventKind, RunStatus, TerminalEvent};
use troupe::runtime::Runtime;
use troupe::stage::{
    Durable, Emitter, EventPolicy, OnEvent, PipeConfig, Produced, Sink, Source, Transform,
};
use troupe::store::{SqliteStore, Store};
use troupe::supervise::{BoxError, ExternalEventMode};
use uuid::Uuid;

const CHILD_ENV: &str = "TROUPE_CRASH_ITEMS_CHILD";
/// The child's round: it tags what its stages handle.
const ROUND_ENV: &str = "TROUPE_CRASH_ITEMS_ROUND";
/// Set for a child that sends a mark to this run before registering its flow.
const OFFLINE_ENV: &str = "TROUPE_CRASH_ITEMS_OFFLINE";
/// Set for a child to be killed: `record` stops after this many items.
const KILL_AT_ENV: &str = "TROUPE_CRASH_ITEMS_KILL_AT";

const FLOW: &str = "crash-items";
const ITEMS: u64 = 3_000;
/// `record` syncs its log and reports every this many items.
const CHECKPOINT: u64 = 100;
/// Killed children; each is killed mid-stream.
const ROUNDS: usize = 24;
/// Every this many rounds (from round 1) a child sends a mark offline.
const OFFLINE_EVERY: usize = 5;
/// `flaky`'s event queue: smaller than the marks it gets (one a round).
const FLAKY_QUEUE: usize = 8;
/// Small pipes: `flaky` runs at most a few batches ahead of `record`, so a
/// kill on `record`'s progress lands before `flaky` completes.
const PIPES: PipeConfig = PipeConfig {
    batch_size: 32,
    capacity: 2,
};

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(PathBuf::from(dir)),
        None => parent(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// An item that fails on every attempt.
fn poisoned(x: u64) -> bool {
    x % 1000 == 500
}

/// The durable operator input: which round sent it.
#[derive(Debug, Serialize, Deserialize)]
struct Mark(usize);

// ---- the child ----

fn round() -> usize {
    std::env::var(ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("the child's round")
}

/// Opened by a `go` line on stdin: `numbers` waits for it, so that the
/// parent can have marks handled before the stream starts.
fn go() -> &'static watch::Sender<bool> {
    static GO: OnceLock<watch::Sender<bool>> = OnceLock::new();
    GO.get_or_init(|| watch::Sender::new(false))
}

/// An append-only log, synced when asked: the next moment may be a SIGKILL.
struct Log(File);

impl Log {
    fn open(path: PathBuf) -> Log {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log");
        Log(file)
    }

    /// Appends `line` in one write (an append never interleaves with the
    /// other stage's).
    fn append(&mut self, line: &str) -> Result<(), BoxError> {
        self.0.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), BoxError> {
        self.0.sync_data()?;
        Ok(())
    }
}

/// Records `handled <id> <stage> <round>` durably, then prints it.
fn handled(log: &mut Log, stage: &str, mark: &Durable<Mark>) -> Result<(), BoxError> {
    let line = format!("handled {} {stage} {}", mark.id, round());
    log.append(&line)?;
    log.sync()?;
    println!("{line}");
    Ok(())
}

/// Emits `0..ITEMS` once the parent said `go`.
struct Numbers {
    next: u64,
}

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.next == 0 {
            let _ = go().subscribe().wait_for(|go| *go).await;
        }
        let room = u64::try_from(out.room()).unwrap_or(u64::MAX);
        let end = ITEMS.min(self.next.saturating_add(room));
        while self.next < end {
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

/// Passes items on; fails multiples of 97 once per process and poisoned
/// items always.
struct Flaky {
    failed_once: BTreeSet<u64>,
    log: Log,
}

impl Transform<u64> for Flaky {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if poisoned(x) {
            return Err(format!("item {x} is poisoned").into());
        }
        if x.is_multiple_of(97) && self.failed_once.insert(x) {
            return Err(format!("item {x} fails its first attempt").into());
        }
        out.push(x);
        Ok(())
    }
}

impl OnEvent<Durable<Mark>> for Flaky {
    async fn on_event(&mut self, mark: Durable<Mark>) -> Result<(), BoxError> {
        handled(&mut self.log, "flaky", &mark)
    }
}

/// Appends every item to its log; syncs and reports every `CHECKPOINT`.
/// After `kill_at` items it stops (busy, taking no marks) until the kill:
/// the child cannot run ahead of the parent.
struct Record {
    seen: u64,
    kill_at: Option<u64>,
    log: Log,
}

impl Sink<u64> for Record {
    async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
        self.log.append(&format!("item {x}"))?;
        self.seen += 1;
        if self.seen.is_multiple_of(CHECKPOINT) {
            self.log.sync()?;
            println!("seen {}", self.seen);
        }
        if self.kill_at == Some(self.seen) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

impl OnEvent<Durable<Mark>> for Record {
    async fn on_event(&mut self, mark: Durable<Mark>) -> Result<(), BoxError> {
        handled(&mut self.log, "record", &mark)
    }
}

fn definition(dir: &Path) -> FlowDefinition<u64> {
    let (d1, d2) = (dir.to_path_buf(), dir.to_path_buf());
    let kill_at = std::env::var(KILL_AT_ENV)
        .ok()
        .map(|k| k.parse().expect("kill_at"));
    FlowDefinition::<u64>::builder(FLOW)
        .source("numbers", |_| Numbers { next: 0 })
        // Marks wait until `flaky` completes: they outlive every kill, and
        // the last child has more of them than its queue holds.
        .with_durable_events::<Mark>(
            EventPolicy::default()
                .running(ExternalEventMode::Ignore)
                .capacity(FLAKY_QUEUE),
        )
        .transform("flaky", move |_| Flaky {
            failed_once: BTreeSet::new(),
            log: Log::open(d1.join("flaky.log")),
        })
        .with_durable_events::<Mark>(EventPolicy::default())
        .sink("record", move |_| Record {
            seen: 0,
            kill_at,
            log: Log::open(d2.join("record.log")),
        })
        .pipeline(["numbers", "flaky", "record"])
        .pipes(PIPES)
        .default_retry(RetryPolicy::attempts(3).backoff(Backoff::NONE))
        .on_dead_letter(DeadLetterPolicy::Continue)
        .serde_items()
        .build()
        .expect("valid flow")
}

/// Reads `go` and `mark <stage>` lines from stdin; the parent gone
/// (stdin closed) ends the child, so no child outlives a failed parent.
fn read_commands(marks: tokio::sync::mpsc::UnboundedSender<String>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if let Some(stage) = line.strip_prefix("mark ") {
                let _ = marks.send(stage.to_owned());
            } else if line == "go" {
                go().send_replace(true);
            }
        }
        std::process::exit(3);
    });
}

/// Sends an offline mark if told to, resumes the run (or starts it),
/// prints `run <id> resumed|new`, sends the marks asked for, and prints
/// `done <status>` if the run ends.
fn child(dir: PathBuf) {
    let (marks, mut asked) = tokio::sync::mpsc::unbounded_channel();
    read_commands(marks);
    let round = round();
    runtime().block_on(async move {
        let runtime = Runtime::builder()
            .sqlite(dir.join("journal.sqlite"))
            .start()
            .await
            .expect("start");
        if let Ok(run_id) = std::env::var(OFFLINE_ENV) {
            // The flow is not registered: the run is not live, the mark
            // waits in the journal until `register` resumes the run.
            let run_id = Uuid::parse_str(&run_id).expect("run id");
            let id = runtime
                .send_event(run_id, "record", &Mark(round))
                .await
                .expect("offline send");
            println!("accepted {id} record {round} offline");
        }
        let report = runtime.register(definition(&dir)).await.expect("register");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let (run, how) = match report.resumed.first() {
            Some(run) => (run.clone(), "resumed"),
            None => (runtime.start(FLOW).await.expect("start run"), "new"),
        };
        println!("run {} {how}", run.run_id());
        let sender = run.clone();
        tokio::spawn(async move {
            while let Some(stage) = asked.recv().await {
                let sent = match sender.durable_stage_events::<Mark>(&stage).await {
                    Ok(handle) => handle.send(&Mark(round)).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(id) => println!("accepted {id} {stage} {round}"),
                    Err(e) => println!("refused {stage}: {e}"),
                }
            }
        });
        let outcome = run.wait().await.expect("outcome");
        println!("done {:?}", outcome.status);
        runtime.shutdown().await;
    });
}

// ---- the parent ----

/// How long a child may take to print what its round waits for. It bounds
/// failures only: no kill waits on it.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// A mark the parent saw accepted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Accepted {
    id: Uuid,
    stage: String,
    round: usize,
    /// Sent with `Runtime::send_event` before the flow was registered.
    offline: bool,
}

/// The marks among a child's lines.
fn accepted(lines: &[String]) -> Vec<Accepted> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("accepted "))
        .map(|rest| {
            let words: Vec<&str> = rest.split(' ').collect();
            let [id, stage, round, how @ ..] = words.as_slice() else {
                panic!("accepted <id> <stage> <round> [offline]: {rest}");
            };
            Accepted {
                id: Uuid::parse_str(id).expect("mark id"),
                stage: (*stage).to_owned(),
                round: round.parse().expect("round"),
                offline: how == ["offline"],
            }
        })
        .collect()
}

/// Sends a mark to `stage`; what the child said of it.
fn mark(child: &mut Running, stage: &str) -> Uuid {
    child.say(&format!("mark {stage}"));
    let line = child.expect("accepted ");
    let id = line.split(' ').next().expect("mark id");
    Uuid::parse_str(id).expect("mark id")
}

/// Where the child of `round` is killed: after `record` saw this many
/// items (spread over the stream, never its end).
fn kill_at(round: usize) -> u64 {
    CHECKPOINT * (1 + (round as u64 * 7) % 20)
}

/// The child of `round`: killed at `kill_at` (`None`: the last one).
fn spawn(
    exe: &Path,
    dir: &Path,
    round: usize,
    kill_at: Option<u64>,
    offline: Option<Uuid>,
) -> Running {
    let mut env = vec![
        (CHILD_ENV, dir.as_os_str().to_owned()),
        (ROUND_ENV, round.to_string().into()),
    ];
    if let Some(kill_at) = kill_at {
        env.push((KILL_AT_ENV, kill_at.to_string().into()));
    }
    if let Some(run) = offline {
        env.push((OFFLINE_ENV, run.to_string().into()));
    }
    Running::spawn(exe, &env, round, ROUND_LIMIT)
}

/// Reads the child's run line: the first child starts the run, every later
/// one resumes it.
fn same_run(child: &mut Running, run: &mut Option<Uuid>) -> Uuid {
    let line = child.expect("run ");
    let (id, how) = line.split_once(' ').expect("run <id> <how>");
    let id = Uuid::parse_str(id).expect("run id");
    match run {
        None => assert_eq!(how, "new", "round {}", child.round),
        Some(first) => assert_eq!((id, how), (*first, "resumed"), "round {}", child.round),
    }
    *run = Some(id);
    id
}

fn parent() {
    // Each read is bounded by its round (`ROUND_LIMIT`); this backstop
    // bounds the rest. Exiting closes every child's stdin, which ends it.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(300));
        eprintln!("runtime_crash_items: timed out outside a child's read");
        std::process::exit(1);
    });
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("own path");
    let mut run: Option<Uuid> = None;
    let mut marks: Vec<Accepted> = Vec::new();
    let mut offline_rounds = 0;
    for round in 0..ROUNDS {
        let offline = run.filter(|_| round % OFFLINE_EVERY == 1);
        offline_rounds += usize::from(offline.is_some());
        let mut child = spawn(&exe, dir.path(), round, Some(kill_at(round)), offline);
        let id = same_run(&mut child, &mut run);
        // Before the stream: `record` waits for input and takes the mark.
        if round % 2 == 0 {
            let sent = mark(&mut child, "record");
            child.expect_all(&[&format!("handled {sent} record {round}")]);
        }
        // Handled by `flaky` only when it completes, in the last child.
        mark(&mut child, "flaky");
        child.say("go");
        child.expect_all(&[&format!("seen {}", kill_at(round))]);
        // `record` is stuck at its kill point: this one waits for a restart.
        if round % 2 == 1 {
            mark(&mut child, "record");
        }
        let lines = child.kill();
        let round_marks = accepted(&lines);
        check_killed(dir.path(), id, round, &round_marks);
        marks.extend(round_marks);
    }
    let offline = marks.iter().filter(|m| m.offline).count();
    assert!(offline > 0, "no mark was sent offline");
    assert_eq!(
        offline, offline_rounds,
        "one offline mark per offline round"
    );

    let mut last = spawn(&exe, dir.path(), ROUNDS, None, None);
    let id = same_run(&mut last, &mut run);
    last.say("go");
    assert_eq!(last.expect("done "), "Finished");
    assert!(last.process.wait().expect("reap").success());
    marks.extend(accepted(&last.read));
    let summary = check_outcome(dir.path(), id, &marks);
    println!(
        "runtime_crash_items: {ROUNDS} kills mid-stream, then finished in {:?}: {summary}",
        started.elapsed()
    );
}

/// After a kill: the run is not terminal and every mark the child accepted
/// is in the run's inbox.
fn check_killed(dir: &Path, run: Uuid, round: usize, marks: &[Accepted]) {
    runtime().block_on(async {
        let store = SqliteStore::open(dir.join("journal.sqlite"))
            .await
            .expect("open");
        let record = store.get_run(run).await.expect("read").expect("run exists");
        assert!(
            !record.status.is_terminal(),
            "round {round}: the run ended before the kill"
        );
        let inbox: BTreeSet<Uuid> = store
            .list_inbox(run)
            .await
            .expect("inbox")
            .into_iter()
            .map(|e| e.id)
            .collect();
        for mark in marks {
            assert!(
                inbox.contains(&mark.id),
                "round {round}: accepted {mark:?} is not in the journal"
            );
        }
    });
}

/// The `handled` lines of a stage's log: mark id → the rounds that handled it.
fn handled_marks(dir: &Path) -> BTreeMap<(Uuid, String), Vec<usize>> {
    let mut handled: BTreeMap<(Uuid, String), Vec<usize>> = BTreeMap::new();
    for log in ["flaky.log", "record.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        for rest in text.lines().filter_map(|l| l.strip_prefix("handled ")) {
            let words: Vec<&str> = rest.split(' ').collect();
            let [id, stage, round] = words.as_slice() else {
                panic!("{log}: handled <id> <stage> <round>: {rest}");
            };
            handled
                .entry((Uuid::parse_str(id).expect("id"), (*stage).to_owned()))
                .or_default()
                .push(round.parse().expect("round"));
        }
    }
    handled
}

/// Checks the run's end; a summary of what the rounds did.
fn check_outcome(dir: &Path, run: Uuid, marks: &[Accepted]) -> String {
    runtime().block_on(async {
        let store = SqliteStore::open(dir.join("journal.sqlite"))
            .await
            .expect("open");

        // Finished, with exactly one terminal event.
        let record = store.get_run(run).await.expect("read").expect("run exists");
        assert_eq!(record.status, RunStatus::Finished);
        let events = store.replay(run).await.expect("replay");
        let terminals: Vec<&TerminalEvent> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Terminal(t) => Some(t),
                _ => None,
            })
            .collect();
        assert!(
            matches!(terminals.as_slice(), [TerminalEvent::RunCompleted { .. }]),
            "expected one RunCompleted, got {terminals:?}"
        );

        // Every item reached `record` or was dead-lettered; the poisoned
        // ones (and only they) were dead-lettered, each at least once.
        let log = std::fs::read_to_string(dir.join("record.log")).expect("record.log");
        let recorded: BTreeSet<u64> = log
            .lines()
            .filter_map(|l| l.strip_prefix("item "))
            .map(|x| x.parse().expect("item"))
            .collect();
        let letters = store.list_dead_letters(run).await.expect("dead letters");
        let dead: BTreeSet<u64> = letters
            .iter()
            .map(|l| {
                assert_eq!(l.stage, "flaky", "{l:?}");
                l.item.as_u64().expect("a serde item")
            })
            .collect();
        let missing: Vec<u64> = (0..ITEMS)
            .filter(|x| !recorded.contains(x) && !dead.contains(x))
            .collect();
        assert!(missing.is_empty(), "items lost: {missing:?}");
        let poisoned: BTreeSet<u64> = (0..ITEMS).filter(|x| poisoned(*x)).collect();
        assert_eq!(dead, poisoned, "dead-lettered items");
        assert!(
            recorded.is_disjoint(&poisoned),
            "a poisoned item got through"
        );

        // Every accepted mark was handled, by its stage; every inbox entry
        // is settled as handled.
        let handled = handled_marks(dir);
        let inbox = store.list_inbox(run).await.expect("inbox");
        for mark in marks {
            assert!(
                handled.contains_key(&(mark.id, mark.stage.clone())),
                "accepted {mark:?} was never handled; its inbox entry: {:?}",
                inbox.iter().find(|e| e.id == mark.id)
            );
        }
        assert_eq!(inbox.len(), marks.len(), "one inbox entry per mark");
        for entry in &inbox {
            let settled = entry.settled.as_ref();
            assert!(
                settled.is_some_and(|s| s.undeliverable.is_none()),
                "inbox entry not settled as handled: {entry:?}"
            );
        }

        // When each was handled follows from when it was sent: `flaky`'s
        // only by the last child (every kill landed before `flaky`
        // completed); `record`'s sent before the stream by its own child
        // (the parent waited for it), those sent while `record` was stuck at
        // its kill point only by a later child; none before it was sent.
        for mark in marks {
            let rounds = &handled[&(mark.id, mark.stage.clone())];
            let own = rounds.contains(&mark.round);
            let later = rounds.iter().all(|r| *r > mark.round);
            assert!(
                rounds.iter().all(|r| *r >= mark.round),
                "{mark:?}: {rounds:?}"
            );
            match (mark.stage.as_str(), mark.offline, mark.round % 2) {
                ("flaky", ..) => assert_eq!(rounds, &[ROUNDS], "{mark:?}"),
                ("record", true, _) => {}
                ("record", false, 0) => assert!(own, "{mark:?}: {rounds:?}"),
                ("record", false, _) => assert!(later, "{mark:?}: {rounds:?}"),
                _ => panic!("a mark to no stage: {mark:?}"),
            }
        }
        let later = marks
            .iter()
            .filter(|m| {
                handled[&(m.id, m.stage.clone())]
                    .iter()
                    .all(|r| *r > m.round)
            })
            .count();
        let again = handled.values().filter(|rounds| rounds.len() > 1).count();
        let items = log.lines().filter(|l| l.starts_with("item ")).count();
        format!(
            "{} marks ({later} handled only after a restart, {again} handled twice or more), \
             {items} items recorded, {} dead letters",
            marks.len(),
            letters.len()
        )
    })
}
