//! Property test: random batches of mixed writes (plain and keyed appends,
//! terminal appends, bad and misdirected events, atomic event batches) give
//! the same per-op results and the same event logs on SQLite as on the
//! memory store, and SQLite numbers each batch's new events in op order.
//!
//! SQLite queues a batch's plain appends and inserts them together, while
//! every other op writes at once inside a savepoint of its own; mixing the
//! two, with ops that fail and roll back in between, is what this exercises.

use proptest::prelude::*;
use serde_json::json;
use troupe::records::{
    EventKind, NewEvent, Run, StoreError, TerminalAppend, TerminalEvent, WriteOp, WriteOutcome,
};
use troupe::store::{MemoryStore, SqliteStore, Store};
use uuid::Uuid;

/// Runs that exist; index `RUNS` names a run that does not.
const RUNS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// An append with no event id and a custom kind.
    Plain { run: usize, n: u8 },
    /// An append with one of a few event ids (repeats are idempotent).
    Keyed { run: usize, key: u8 },
    /// `AppendTerminalIfAbsent`.
    TerminalIfAbsent { run: usize },
    /// A terminal event through a plain `Append` (refused if one exists).
    TerminalAppend { run: usize },
    /// An event with an empty kind name (refused).
    Bad { run: usize },
    /// `AppendBatch`: all or nothing; `false` marks a bad event.
    Batch(Vec<(usize, bool)>),
}

fn op() -> impl Strategy<Value = Op> {
    let run = 0..=RUNS;
    prop_oneof![
        6 => (run.clone(), any::<u8>()).prop_map(|(run, n)| Op::Plain { run, n }),
        2 => (run.clone(), 0u8..3).prop_map(|(run, key)| Op::Keyed { run, key }),
        1 => run.clone().prop_map(|run| Op::TerminalIfAbsent { run }),
        1 => run.clone().prop_map(|run| Op::TerminalAppend { run }),
        1 => run.clone().prop_map(|run| Op::Bad { run }),
        1 => prop::collection::vec((run, prop::bool::weighted(0.8)), 1..4).prop_map(Op::Batch),
    ]
}

fn batches() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..16), 1..5)
}

fn event(run: Uuid, valid: bool, n: usize) -> NewEvent {
    let name = if valid { "tick" } else { "" };
    NewEvent::new(run, EventKind::custom(name, json!({ "n": n })))
}

fn write_op(op: &Op, ids: &[Uuid], n: usize) -> WriteOp {
    match op {
        Op::Plain { run, n } => WriteOp::Append(NewEvent::new(
            ids[*run],
            EventKind::custom("tick", json!({ "n": n })),
        )),
        Op::Keyed { run, key } => WriteOp::Append(NewEvent::with_id(
            ids[*run],
            format!("key-{key}"),
            EventKind::custom("keyed", json!(n)),
        )),
        Op::TerminalIfAbsent { run } => WriteOp::AppendTerminalIfAbsent {
            run_id: ids[*run],
            event: TerminalEvent::RunCancelled,
        },
        Op::TerminalAppend { run } => WriteOp::Append(NewEvent::new(
            ids[*run],
            TerminalEvent::RunFailed {
                reason: format!("op {n}"),
            },
        )),
        Op::Bad { run } => WriteOp::Append(event(ids[*run], false, n)),
        Op::Batch(events) => WriteOp::AppendBatch(
            events
                .iter()
                .map(|&(run, valid)| event(ids[run], valid, n))
                .collect(),
        ),
    }
}

/// What must agree between backends: everything but cursors.
#[derive(Debug, PartialEq)]
enum Seen {
    Appended { seq: u64, duplicate: bool },
    BatchAppended(Vec<u64>),
    TerminalAppended(u64),
    TerminalPresent(u64),
    Refused(&'static str),
}

fn seen(result: &Result<WriteOutcome, StoreError>) -> Seen {
    match result {
        Ok(WriteOutcome::Appended(a)) => Seen::Appended {
            seq: a.seq,
            duplicate: a.duplicate,
        },
        Ok(WriteOutcome::BatchAppended(all)) => {
            Seen::BatchAppended(all.iter().map(|a| a.seq).collect())
        }
        Ok(WriteOutcome::Terminal(TerminalAppend::Appended(a))) => Seen::TerminalAppended(a.seq),
        Ok(WriteOutcome::Terminal(TerminalAppend::AlreadyPresent(e))) => {
            Seen::TerminalPresent(e.seq)
        }
        Ok(other) => panic!("unexpected outcome {other:?}"),
        Err(StoreError::RunNotFound(_)) => Seen::Refused("run not found"),
        Err(StoreError::InvalidInput { .. }) => Seen::Refused("invalid input"),
        Err(StoreError::TerminalExists { .. }) => Seen::Refused("terminal exists"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// The cursors of the events an outcome newly appended.
fn new_cursors(result: &Result<WriteOutcome, StoreError>) -> Vec<u64> {
    match result {
        Ok(WriteOutcome::Appended(a)) if !a.duplicate => vec![a.cursor.0],
        Ok(WriteOutcome::BatchAppended(all)) => all.iter().map(|a| a.cursor.0).collect(),
        Ok(WriteOutcome::Terminal(TerminalAppend::Appended(a))) => vec![a.cursor.0],
        _ => Vec::new(),
    }
}

async fn agree(batches: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    let memory = MemoryStore::new();
    let sqlite = SqliteStore::open(":memory:").await.expect("open sqlite");
    let runs: Vec<Run> = (0..RUNS).map(|_| Run::new("c", "g", "o")).collect();
    let mut ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    ids.push(Uuid::now_v7());
    for run in &runs {
        memory.insert_run(run.clone(), None).await.unwrap();
        sqlite.insert_run(run.clone(), None).await.unwrap();
    }
    let mut n = 0;
    for batch in &batches {
        let ops: Vec<WriteOp> = batch
            .iter()
            .map(|op| {
                n += 1;
                write_op(op, &ids, n)
            })
            .collect();
        let want = memory.apply_batch(ops.clone()).await.unwrap();
        let got = sqlite.apply_batch(ops).await.unwrap();
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            prop_assert_eq!(seen(w), seen(g), "op {} of {:?}", i, batch);
        }
        let cursors: Vec<u64> = got.iter().flat_map(new_cursors).collect();
        prop_assert!(
            cursors.windows(2).all(|w| w[0] < w[1]),
            "new events out of op order: {:?}",
            cursors
        );
    }
    for &id in &ids[..RUNS] {
        let want = memory.replay(id).await.unwrap();
        let got = sqlite.replay(id).await.unwrap();
        let strip = |events: &[troupe::records::RunEvent]| {
            events
                .iter()
                .map(|e| (e.seq, e.event_id.clone(), e.kind.clone()))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(strip(&want), strip(&got));
        prop_assert!(got.windows(2).all(|w| w[0].cursor < w[1].cursor));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn sqlite_batches_agree_with_the_memory_store(batches in batches()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(agree(batches))?;
    }
}
