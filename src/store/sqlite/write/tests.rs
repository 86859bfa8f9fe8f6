//! The writer against a real database file.

use rusqlite::StatementStatus;

use super::ops::SELECT_HEAD;
use super::*;
use crate::records::Run;
use crate::records::{EventKind, NewEvent};
use crate::store::sqlite::SqliteConfig;
use crate::store::sqlite::schema::open_writer;
use rusqlite::limits::Limit;

#[test]
fn looking_up_runs_does_not_recompile_the_statement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let config = SqliteConfig::default();
    let runs: Vec<Run> = (0..4).map(|_| Run::new("c", "g", "o")).collect();
    let mut writer = Writer::new(open_writer(&path, &config).unwrap(), None, 4096).unwrap();
    let inserts: Vec<WriteOp> = runs
        .iter()
        .map(|run| WriteOp::InsertRun {
            run: Box::new(run.clone()),
            audit: None,
        })
        .collect();
    writer.apply_batch(&inserts).unwrap();
    drop(writer);
    // A fresh writer has no heads cached: it looks each run up.
    let mut writer = Writer::new(open_writer(&path, &config).unwrap(), None, 4096).unwrap();
    let appends: Vec<WriteOp> = runs
        .iter()
        .map(|run| {
            WriteOp::Append(NewEvent::new(
                run.id,
                EventKind::custom("tick", serde_json::json!(1)),
            ))
        })
        .collect();
    for result in writer.apply_batch(&appends).unwrap() {
        result.unwrap();
    }
    let statement = writer.conn.prepare_cached(SELECT_HEAD).unwrap();
    assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
}

/// A writer over a fresh file with `runs` runs inserted (each with a
/// `created` audit event, inserted without the buffer).
fn writer_with_runs(
    dir: &tempfile::TempDir,
    runs: usize,
    prepare: impl FnOnce(&Connection),
) -> (Writer, Vec<Run>) {
    let conn = open_writer(&dir.path().join("j.db"), &SqliteConfig::default()).unwrap();
    prepare(&conn);
    let mut writer = Writer::new(conn, None, 4096).unwrap();
    let runs: Vec<Run> = (0..runs).map(|_| Run::new("c", "g", "o")).collect();
    let inserts: Vec<WriteOp> = runs
        .iter()
        .map(|run| WriteOp::InsertRun {
            run: Box::new(run.clone()),
            audit: Some(EventKind::custom("created", serde_json::json!(null))),
        })
        .collect();
    for result in writer.apply_batch(&inserts).unwrap() {
        result.unwrap();
    }
    (writer, runs)
}

fn tick(run: &Run, payload: serde_json::Value) -> WriteOp {
    named(run, "tick", payload)
}

/// A plain append of kind `name`.
fn named(run: &Run, name: &str, payload: serde_json::Value) -> WriteOp {
    WriteOp::Append(NewEvent::new(run.id, EventKind::custom(name, payload)))
}

/// `(cursor, rid, seq, prev)` of every stored event, in cursor order.
fn stored_events(writer: &Writer) -> Vec<(i64, i64, i64, Option<i64>)> {
    writer
        .conn
        .prepare("SELECT cursor, rid, seq, prev FROM events ORDER BY cursor")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Each run's events are numbered 1, 2, ... and each links to the one before.
fn assert_chains(events: &[(i64, i64, i64, Option<i64>)]) {
    let mut last: std::collections::HashMap<i64, (i64, i64)> = Default::default();
    for &(cursor, rid, seq, prev) in events {
        let (last_seq, last_cursor) = last.get(&rid).map_or((0, None), |&(s, c)| (s, Some(c)));
        assert_eq!(seq, last_seq + 1, "event {cursor} of run {rid}");
        assert_eq!(prev, last_cursor, "event {cursor} of run {rid}");
        last.insert(rid, (seq, cursor));
    }
}

fn cursor_of(outcome: &WriteOutcome) -> i64 {
    match outcome {
        WriteOutcome::Appended(a) => a.cursor.0 as i64,
        WriteOutcome::Terminal(crate::records::TerminalAppend::Appended(a)) => a.cursor.0 as i64,
        other => panic!("not an append: {other:?}"),
    }
}

/// Plain appends are queued and inserted together, other ops' events at
/// once: whatever the mix, and with a failed op rolled back in between,
/// cursors follow the ops' order, each run's chain is exact, and every
/// cursor an op was told is the one stored.
#[test]
fn mixed_batches_number_events_in_op_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, runs) = writer_with_runs(&dir, 2, |_| {});
    let (a, b) = (&runs[0], &runs[1]);
    let ops = vec![
        tick(a, serde_json::json!(1)),
        tick(b, serde_json::json!(2)),
        WriteOp::Append(NewEvent::with_id(
            a.id,
            "k1",
            EventKind::custom("keyed", serde_json::json!(3)),
        )),
        tick(a, serde_json::json!(4)),
        WriteOp::AppendBatch(vec![
            NewEvent::new(b.id, EventKind::custom("tick", serde_json::json!(5))),
            NewEvent::new(b.id, EventKind::custom("", serde_json::json!(6))),
        ]),
        tick(b, serde_json::json!(7)),
        WriteOp::AppendTerminalIfAbsent {
            run_id: b.id,
            event: crate::records::TerminalEvent::RunCancelled,
        },
        tick(a, serde_json::json!(8)),
    ];
    let results = writer.apply_batch(&ops).unwrap();
    assert!(
        matches!(results[4], Err(StoreError::InvalidInput { .. })),
        "{:?}",
        results[4]
    );
    let told: Vec<i64> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, r)| cursor_of(r.as_ref().unwrap()))
        .collect();
    assert!(
        told.windows(2).all(|w| w[0] < w[1]),
        "cursors out of op order: {told:?}"
    );
    let events = stored_events(&writer);
    assert_eq!(
        events.len(),
        2 + told.len(),
        "the failed op left nothing behind"
    );
    assert_eq!(events[2..].iter().map(|e| e.0).collect::<Vec<_>>(), told);
    assert_chains(&events);

    // The next batch (cursor read afresh) carries on from there.
    let more = writer
        .apply_batch(&[tick(a, serde_json::json!(9))])
        .unwrap();
    let next = cursor_of(more[0].as_ref().unwrap());
    assert_eq!(next, told.last().unwrap() + 1);
    assert_chains(&stored_events(&writer));
}

/// A payload over SQLite's length limit is refused before it is queued, so
/// it fails its own op only.
#[test]
fn an_oversized_payload_fails_its_op_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, runs) = writer_with_runs(&dir, 1, |conn| {
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 4096).unwrap();
    });
    let run = &runs[0];
    let ops = [
        tick(run, serde_json::json!("small")),
        tick(run, serde_json::json!("x".repeat(5000))),
        tick(run, serde_json::json!("small again")),
    ];
    let results = writer.apply_batch(&ops).unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(*field, "payload"),
        other => panic!("expected the payload refused, got {other:?}"),
    }
    let events = stored_events(&writer);
    assert_eq!(events.len(), 3);
    assert_chains(&events);
}

/// Queued events that the database refuses when they are flushed fail the
/// whole batch (their ops already hold `Ok` results, so no op of it may
/// commit), and the writer carries on with the next batch.
#[test]
fn a_failed_flush_fails_the_batch_and_the_writer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, runs) = writer_with_runs(&dir, 1, |conn| {
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events \
             WHEN NEW.payload = CAST('\"refuse\"' AS BLOB) \
             BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END",
        )
        .unwrap();
    });
    let run = &runs[0];
    let before = stored_events(&writer);
    let err = writer
        .apply_batch(&[
            tick(run, serde_json::json!("fine")),
            tick(run, serde_json::json!("refuse")),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("refused by trigger"), "{err}");
    assert_eq!(
        stored_events(&writer),
        before,
        "nothing of the batch is stored"
    );

    let results = writer
        .apply_batch(&[tick(run, serde_json::json!("fine"))])
        .unwrap();
    let cursor = cursor_of(results[0].as_ref().unwrap());
    let events = stored_events(&writer);
    assert_eq!(events.last().map(|e| e.0), Some(cursor));
    assert_chains(&events);
}

/// An error that makes SQLite roll back the whole transaction (here a
/// trigger's `RAISE(ROLLBACK)` while a plain append interns its kind) fails
/// the batch at once: nothing after it runs in autocommit, nothing of the
/// batch is stored, and the writer's caches still match the database.
#[test]
fn a_transaction_rolled_back_under_an_op_fails_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, runs) = writer_with_runs(&dir, 1, |conn| {
        conn.execute_batch(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON event_kinds \
             WHEN NEW.name = 'boom' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END",
        )
        .unwrap();
    });
    let run = &runs[0];
    let late = Run::new("c", "g", "o");
    let insert_late = WriteOp::InsertRun {
        run: Box::new(late.clone()),
        audit: Some(EventKind::custom("created", serde_json::json!(null))),
    };
    let before = stored_events(&writer);
    let err = writer
        .apply_batch(&[
            tick(run, serde_json::json!(1)),
            named(run, "boom", serde_json::json!(2)),
            tick(run, serde_json::json!(3)),
            insert_late.clone(),
            tick(run, serde_json::json!(4)),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(
        stored_events(&writer),
        before,
        "nothing of the batch is stored"
    );

    let results = writer
        .apply_batch(&[tick(run, serde_json::json!(5)), insert_late])
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_chains(&stored_events(&writer));
}

/// Large payloads are flushed as they pile up (not held until the end of
/// the batch); the chain is the same.
#[test]
fn large_payloads_are_flushed_as_they_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, runs) = writer_with_runs(&dir, 2, |_| {});
    let big = serde_json::json!("y".repeat(400_000));
    let ops: Vec<WriteOp> = (0..8).map(|i| tick(&runs[i % 2], big.clone())).collect();
    let results = writer.apply_batch(&ops).unwrap();
    assert!(results.iter().all(Result::is_ok));
    let events = stored_events(&writer);
    assert_eq!(events.len(), 2 + 8);
    assert_chains(&events);
}

/// If anything but the writer inserted events while appends were queued
/// (here a trigger, fired while a queued append's neighbour interns its
/// kind), SQLite would number the queued rows differently from the cursors
/// their ops were told: the flush notices, and the batch fails instead of
/// committing wrong cursors.
#[test]
fn queued_cursors_that_sqlite_would_number_otherwise_fail_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, runs) = writer_with_runs(&dir, 1, |conn| {
        conn.execute_batch(
            "CREATE TEMP TRIGGER sneak AFTER INSERT ON event_kinds \
             WHEN NEW.name = 'sneaky' \
             BEGIN INSERT INTO events(rid, seq, kind, at) VALUES (1, 999, 16, 0); END",
        )
        .unwrap();
    });
    let run = &runs[0];
    let before = stored_events(&writer);
    let err = writer
        .apply_batch(&[
            tick(run, serde_json::json!(1)),
            named(run, "sneaky", serde_json::json!(2)),
        ])
        .unwrap_err();
    assert!(
        err.to_string().contains("last queued event got cursor"),
        "{err}"
    );
    assert_eq!(stored_events(&writer), before);
}
