//! Crash test: a child process appends through the journal actor and prints
//! every acknowledged write; the parent kills it with SIGKILL at a random
//! moment, reopens the database and checks that every acknowledged event is
//! there, every run's own log matches the global log, no run has two
//! terminal events, the file passes `PRAGMA integrity_check`, and recovery
//! gives every terminal run its event. Every other child runs with a WAL
//! small enough to restart many times before it is killed, so that recovery
//! also reads restarted, preallocated WAL files (older frames after the
//! valid ones).
//!
//! One binary plays both roles (`harness = false`): with `TROUPE_CRASH_CHILD`
//! set it is the child.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use troupe::journal::{JournalConfig, JournalHandle};
use troupe::records::{Cursor, EventKind, NewEvent, Run, RunStatus};
use troupe::runs::{TerminalTarget, record_persisted_terminalization, recover};
use troupe::store::{IntegrityCheck, SqliteConfig, SqliteStore, Store};
use uuid::Uuid;

const CHILD_ENV: &str = "TROUPE_CRASH_CHILD";
/// Set for a child that runs with [`small_wal`].
const SMALL_WAL_ENV: &str = "TROUPE_CRASH_SMALL_WAL";
const KILLS: usize = 24;
const WRITERS: usize = 8;

/// xorshift64*: enough randomness for kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(path) => child(PathBuf::from(path)),
        None => parent(),
    }
}

/// Background passes every 8 pages and a restart every ~48.
fn small_wal() -> SqliteConfig {
    SqliteConfig {
        checkpoint_pages: 8,
        wal_restart_pages: 48,
        ..SqliteConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Writes forever: each writer creates runs, appends events, persists a
/// terminal status and terminalizes, printing each acknowledged step.
fn child(path: PathBuf) {
    runtime().block_on(async move {
        let config = match std::env::var_os(SMALL_WAL_ENV) {
            Some(_) => small_wal(),
            None => SqliteConfig::default(),
        };
        let store = Arc::new(
            SqliteStore::open_with(&path, config)
                .await
                .expect("child open"),
        );
        let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
            .await
            .expect("journal spawn");
        troupe::runs::recover(&journal)
            .await
            .expect("recovery scan");
        println!("ready");
        let mut tasks = Vec::new();
        for w in 0..WRITERS as u64 {
            let journal = journal.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1) ^ u64::from(std::process::id()));
                loop {
                    let mut run = Run::new("crash", "survive", format!("writer-{w}"));
                    journal
                        .insert_run(run.clone(), None)
                        .await
                        .expect("insert run");
                    for i in 0..1 + rng.below(20) {
                        let ev =
                            NewEvent::new(run.id, EventKind::custom("tick", json!({ "i": i })));
                        let a = journal.append(ev).await.expect("append");
                        println!("ack {} {} {}", run.id, a.seq, a.cursor);
                    }
                    let (status, target) = match rng.below(3) {
                        0 => (
                            RunStatus::Finished,
                            TerminalTarget::Completed {
                                structured_output: None,
                            },
                        ),
                        1 => (
                            RunStatus::Failed,
                            TerminalTarget::Failed { reason: "r".into() },
                        ),
                        _ => (RunStatus::Cancelled, TerminalTarget::Cancelled),
                    };
                    run.status = status;
                    journal
                        .update_run(
                            run.clone(),
                            0,
                            EventKind::custom(status.as_str(), Value::Null),
                        )
                        .await
                        .expect("persist status");
                    println!("status {} {}", run.id, status.as_str());
                    record_persisted_terminalization(&journal, run.id, "crash", target)
                        .await
                        .expect("terminalize");
                    println!("terminal {}", run.id);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[derive(Default)]
struct Acked {
    events: HashMap<(Uuid, u64), u64>,
    terminal_status: HashSet<Uuid>,
}

fn parent() {
    let seed = std::env::var("TROUPE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("journal_crash: seed {seed} (set TROUPE_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.sqlite");
    let exe = std::env::current_exe().expect("own path");
    let mut acked = Acked::default();
    let rt = runtime();
    for round in 0..KILLS {
        let kill_after = rng.below(400) as usize;
        let mut command = Command::new(&exe);
        if round % 2 == 1 {
            command.env(SMALL_WAL_ENV, "1");
        }
        let mut child = command
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = 0;
        // The pipe stays open until the child is dead: closing it first would
        // make the child's next `println!` panic on a broken pipe.
        let mut reader = BufReader::new(stdout);
        for line in (&mut reader).lines() {
            let Ok(line) = line else { break };
            record(&mut acked, &line);
            if line != "ready" {
                lines += 1;
            }
            if lines >= kill_after {
                break;
            }
        }
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("reap child");
        drop(reader);
        assert!(
            !status.success(),
            "round {round}: child exited on its own: {status}"
        );
        rt.block_on(verify(&path, &acked, round));
    }
    println!(
        "journal_crash: {KILLS} kills, {} acknowledged events, {} terminal runs verified",
        acked.events.len(),
        acked.terminal_status.len()
    );
}

fn record(acked: &mut Acked, line: &str) {
    let parts: Vec<&str> = line.split(' ').collect();
    let id = |s: &str| Uuid::parse_str(s).expect("run id");
    let num = |s: &str| s.parse::<u64>().expect("number");
    match parts.as_slice() {
        ["ack", run, seq, cursor] => {
            acked.events.insert((id(run), num(seq)), num(cursor));
        }
        ["status", run, _] => {
            acked.terminal_status.insert(id(run));
        }
        _ => {}
    }
}

async fn verify(path: &Path, acked: &Acked, round: usize) {
    let config = SqliteConfig {
        integrity_check: IntegrityCheck::Full,
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open_with(path, config)
        .await
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
    let report = recover(&store).await.expect("recovery scan");
    assert!(
        report.repair_failures.is_empty(),
        "round {round}: {:?}",
        report.repair_failures
    );
    let all = store.poll(Cursor(0), usize::MAX).await.expect("read log");
    let mut stored = HashMap::new();
    let mut terminals: HashMap<Uuid, usize> = HashMap::new();
    for e in &all {
        stored.insert((e.run_id, e.seq), e.cursor.0);
        if e.kind.as_terminal().is_some() {
            *terminals.entry(e.run_id).or_default() += 1;
        }
    }
    for (key, cursor) in &acked.events {
        assert_eq!(
            stored.get(key),
            Some(cursor),
            "round {round}: acknowledged event {key:?} lost"
        );
    }
    // Each run's own log (walked back from its head, which the store keeps
    // lazily and rebuilds at open) holds exactly its events in the global log.
    let runs: HashSet<Uuid> = all.iter().map(|e| e.run_id).collect();
    for run in runs {
        let own: Vec<_> = all.iter().filter(|e| e.run_id == run).cloned().collect();
        let listed = store.list_events(run, usize::MAX).await.expect("list run");
        assert_eq!(listed, own, "round {round}: run {run}'s log differs");
    }
    assert!(
        terminals.values().all(|&n| n == 1),
        "round {round}: a run has two terminal events"
    );
    for run in &acked.terminal_status {
        assert_eq!(
            terminals.get(run),
            Some(&1),
            "round {round}: terminal run {run} has no terminal event"
        );
    }
    for status in [RunStatus::Finished, RunStatus::Failed, RunStatus::Cancelled] {
        for run in store.list_runs_by_status(status).await.expect("list runs") {
            assert_eq!(
                terminals.get(&run.id),
                Some(&1),
                "round {round}: run {} not repaired",
                run.id
            );
        }
    }
}
