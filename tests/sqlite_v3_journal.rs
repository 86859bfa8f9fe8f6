//! A journal written by troupe before the one-vocabulary rename (schema
//! version 3, commit eac5f35; the file and how it was made are described in
//! `tests/fixtures/README.md`) opens with this build and reads back what the
//! old code wrote, under the new names: runs, `Run*` terminal events, a
//! custom kind that was named `RunCompleted` (now `custom:RunCompleted`),
//! caller event ids, mirrored steps keyed by `external_run_id`, step
//! outputs, the failure ledger and the run a crash left without its
//! terminal event. New writes work on it and survive a reopen, and the
//! migration is idempotent and atomic.
//!
//! The committed file is never opened in place: each test works on a copy.

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use raw_sqlite::{run_sql, user_version};
use serde_json::{Value, json};
use troupe::records::{
    Appended, Cursor, EventKind, FailureEntry, Lease, NewEvent, Run, RunEvent, RunStatus, RunStep,
    RunStepStatus, SYSTEM_STEP_ID, StepOutput, StepRuntime, StoreError, TerminalAppend,
    TerminalEvent, new_run_id,
};
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};
use uuid::Uuid;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/journal-v3.sqlite"
);

/// The generator's ids: run `n` is `id(n)`, its steps `id(0x100 + ...)`.
fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0197_2a00_0000_7000_8000_0000_0000_0000 | n)
}

/// The generator's clock: 2025-06-01T12:00:00.123456Z plus `secs` seconds.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_748_779_200_123_456).expect("time") + TimeDelta::seconds(secs)
}

/// Copies the fixture into `dir` and checks it is the version-3 file.
fn copy_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("journal.sqlite");
    std::fs::copy(FIXTURE, &path).expect("copy fixture");
    assert_eq!(user_version(&path), 3, "the fixture is a version-3 journal");
    path
}

fn custom(name: &str, payload: Value) -> EventKind {
    EventKind::custom(name, payload)
}

fn completed_output() -> Value {
    json!({"steps": {"fetch": {"rows": 3}}, "total": 42.5})
}

/// Run `n` as the generator first built it.
fn base_run(n: u128, owner: &str, status: RunStatus) -> Run {
    let at = t(n as i64 * 10);
    Run {
        id: id(n),
        controller_id: "orders".into(),
        goal: format!("ship order {n}"),
        owner_session_key: owner.into(),
        requester_origin: None,
        parent_run_id: None,
        current_step: None,
        state_json: json!({ "order": n as u64 }),
        wait_json: None,
        status,
        cancel_requested: false,
        revision: 0,
        created_at: at,
        updated_at: at,
        ended_at: None,
        lease: None,
        input: serde_json::Value::Null,
        key: None,
        fingerprint: None,
        flow_version: None,
        continued_from: None,
    }
}

/// `run` after one status change at `t(at)`.
fn moved(mut run: Run, status: RunStatus, at: i64) -> Run {
    run.status = status;
    run.updated_at = t(at);
    if status.is_terminal() {
        run.ended_at = Some(t(at));
    }
    run.revision = 1;
    run
}

/// The seven runs of the fixture, in insertion order.
fn expected_runs() -> Vec<Run> {
    let mut r1 = base_run(1, "session-a", RunStatus::Created);
    r1.requester_origin = Some("cli".into());
    let mut r2 = base_run(2, "session-a", RunStatus::Created);
    r2.current_step = Some("process".into());
    r2.state_json = json!({"order": 2, "cursor": "p-3"});
    r2.lease = Some(Lease {
        owner: "node-1".into(),
        epoch: 3,
        expires_at: t(100),
    });
    let mut r3 = base_run(3, "session-b", RunStatus::Created);
    r3.parent_run_id = Some(id(2));
    r3.wait_json = Some(json!({"signal": "approve", "timeout_s": 3600}));
    r3.cancel_requested = true;
    let mut r6 = base_run(6, "session-c", RunStatus::Running);
    r6.cancel_requested = true;
    vec![
        r1,
        moved(r2, RunStatus::Running, 21),
        moved(r3, RunStatus::Waiting, 35),
        moved(
            base_run(4, "session-b", RunStatus::Running),
            RunStatus::Finished,
            45,
        ),
        moved(
            base_run(5, "session-b", RunStatus::Running),
            RunStatus::Failed,
            55,
        ),
        moved(r6, RunStatus::Cancelled, 65),
        moved(
            base_run(7, "session-c", RunStatus::Running),
            RunStatus::Failed,
            75,
        ),
    ]
}

/// Each run's log in the fixture: `(cursor, seq, event id, kind)`.
fn expected_events(n: u128) -> Vec<(u64, u64, &'static str, EventKind)> {
    let created = || custom("created", Value::Null);
    match n {
        1 => vec![
            (1, 1, "#1", created()),
            (2, 2, "pick-1", custom("picked", json!({"sku": 7}))),
            (
                3,
                3,
                "pick-2",
                custom("picked", json!({"sku": 8, "qty": 2})),
            ),
            (4, 4, "#4", custom("note", json!("plain string payload"))),
        ],
        2 => vec![
            (5, 1, "#1", created()),
            (6, 2, "#2", custom("started", json!({"by": "node-1"}))),
            (
                7,
                3,
                "legacy-1",
                custom("custom:RunCompleted", json!({"legacy": true, "n": 1})),
            ),
        ],
        3 => vec![
            (8, 1, "#1", created()),
            (9, 2, "#2", custom("waiting", Value::Null)),
        ],
        4 => vec![
            (10, 1, "#1", created()),
            (
                11,
                2,
                "#2",
                custom("custom:RunCompleted", json!({"legacy": 2})),
            ),
            (12, 3, "#3", custom("finishing", Value::Null)),
            (
                13,
                4,
                "#4",
                TerminalEvent::RunCompleted {
                    structured_output: Some(completed_output()),
                }
                .into(),
            ),
        ],
        5 => vec![
            (14, 1, "#1", created()),
            (15, 2, "#2", custom("failing", Value::Null)),
            (
                16,
                3,
                "#3",
                TerminalEvent::RunFailed {
                    reason: "upstream returned 503".into(),
                }
                .into(),
            ),
        ],
        6 => vec![
            (17, 1, "#1", created()),
            (18, 2, "#2", custom("cancelling", Value::Null)),
            (19, 3, "#3", TerminalEvent::RunCancelled.into()),
        ],
        7 => vec![
            (20, 1, "#1", created()),
            (
                21,
                2,
                "#2",
                custom("failing", json!({"why": "worker lost"})),
            ),
        ],
        _ => unreachable!(),
    }
}

fn shape(events: &[RunEvent]) -> Vec<(u64, u64, &str, EventKind)> {
    events
        .iter()
        .map(|e| (e.cursor.0, e.seq, e.event_id.as_str(), e.kind.clone()))
        .collect()
}

fn expected_steps() -> Vec<RunStep> {
    vec![
        RunStep {
            id: id(0x102),
            run_id: id(2),
            runtime: StepRuntime::Mirrored,
            child_session_key: Some("child-7".into()),
            external_run_id: "ext-run-1".into(),
            task: "summarise".into(),
            status: RunStepStatus::Succeeded,
            result_json: Some(json!({"summary": "ok", "tokens": 120})),
            created_at: t(22),
            updated_at: t(24),
        },
        RunStep {
            id: id(0x202),
            run_id: id(2),
            runtime: StepRuntime::Managed,
            child_session_key: None,
            external_run_id: "ext-run-2".into(),
            task: "notify".into(),
            status: RunStepStatus::Pending,
            result_json: None,
            created_at: t(25),
            updated_at: t(25),
        },
    ]
}

fn output(step: &str, iteration: Option<u32>, value: Value, at: i64) -> StepOutput {
    StepOutput {
        run_id: id(2),
        step_id: step.into(),
        loop_id: iteration.map(|_| "each".into()),
        iteration,
        output: value,
        at: t(at),
    }
}

fn expected_outputs() -> Vec<StepOutput> {
    let mut outputs = vec![output("fetch", None, json!({"rows": 3}), 26)];
    outputs.extend((0..3u32).map(|i| output("process", Some(i), json!({ "i": i }), 27 + i as i64)));
    outputs
}

fn expected_failures(n: u128) -> Vec<FailureEntry> {
    match n {
        2 => vec![FailureEntry {
            run_id: id(2),
            step_id: "process".into(),
            reason: "timeout after 30s".into(),
            error_json: Some(json!({"code": 504, "retry": true})),
            at: t(31),
        }],
        7 => vec![FailureEntry {
            run_id: id(7),
            step_id: SYSTEM_STEP_ID.into(),
            reason: "worker lost".into(),
            error_json: None,
            at: t(76),
        }],
        _ => vec![],
    }
}

fn ids(runs: Result<Vec<Run>, StoreError>) -> Vec<Uuid> {
    runs.expect("list runs").iter().map(|r| r.id).collect()
}

/// Everything the old code wrote reads back, under the new names.
async fn check_fixture_contents(store: &SqliteStore) {
    let runs = expected_runs();
    for run in &runs {
        assert_eq!(
            store.get_run(run.id).await.expect("get run").as_ref(),
            Some(run)
        );
    }
    assert_eq!(
        ids(store.list_runs_by_owner("session-a").await),
        vec![id(1), id(2)]
    );
    assert_eq!(
        ids(store.list_runs_by_status(RunStatus::Failed).await),
        vec![id(5), id(7)]
    );
    assert_eq!(
        ids(store.list_runs_by_status(RunStatus::Waiting).await),
        vec![id(3)]
    );

    for n in 1..=7 {
        let events = store.replay(id(n)).await.expect("replay");
        assert_eq!(shape(&events), expected_events(n), "run {n}'s log");
        assert!(events.iter().all(|e| e.run_id == id(n)));
    }
    let all = store.poll(Cursor(0), 100).await.expect("poll");
    let cursors: Vec<u64> = all.iter().map(|e| e.cursor.0).collect();
    assert_eq!(cursors, (1..=21).collect::<Vec<_>>());
    assert!(
        all.windows(2).all(|w| w[0].at <= w[1].at),
        "event times in log order"
    );

    // One terminal event each for runs 4, 5 and 6; a custom event named
    // `custom:RunCompleted` is not one (run 2 has one and no outcome).
    let terminal = |n| async move {
        store
            .terminal_event(id(n))
            .await
            .expect("terminal event")
            .map(|e| (e.cursor.0, e.kind))
    };
    assert_eq!(
        terminal(4).await,
        Some((
            13,
            TerminalEvent::RunCompleted {
                structured_output: Some(completed_output())
            }
            .into()
        ))
    );
    assert_eq!(
        terminal(5).await,
        Some((
            16,
            TerminalEvent::RunFailed {
                reason: "upstream returned 503".into()
            }
            .into()
        ))
    );
    assert_eq!(
        terminal(6).await,
        Some((19, TerminalEvent::RunCancelled.into()))
    );

    assert_eq!(
        store.list_steps(id(2)).await.expect("steps"),
        expected_steps()
    );
    assert_eq!(
        store.list_step_outputs(id(2)).await.expect("outputs"),
        expected_outputs()
    );
    assert_eq!(
        store
            .list_step_outputs_for(&[id(1), id(2)])
            .await
            .expect("outputs for"),
        expected_outputs()
    );
    for n in 1..=7 {
        let failures = store.list_failures(id(n)).await.expect("failures");
        assert_eq!(failures, expected_failures(n), "run {n}'s failures");
    }
}

/// The fixture's kind dictionary after the migration.
fn migrated_kinds() -> Vec<(i64, String)> {
    [
        (1, "RunCompleted"),
        (2, "RunFailed"),
        (3, "RunCancelled"),
        (4, "RunContinuedAsNew"),
        (16, "created"),
        (17, "picked"),
        (18, "note"),
        (19, "started"),
        (20, "custom:RunCompleted"),
        (21, "waiting"),
        (22, "finishing"),
        (23, "failing"),
        (24, "cancelling"),
    ]
    .into_iter()
    .map(|(code, name)| (code, name.to_owned()))
    .collect()
}

fn raw_rows<T: rusqlite::types::FromSql, U: rusqlite::types::FromSql>(
    path: &Path,
    sql: &str,
) -> Vec<(T, U)> {
    let conn = rusqlite::Connection::open(path).expect("open raw");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn kinds(path: &Path) -> Vec<(i64, String)> {
    raw_rows(path, "SELECT code, name FROM event_kinds ORDER BY code")
}

/// Every table's and index's definition.
fn schema(path: &Path) -> Vec<(String, Option<String>)> {
    raw_rows(path, "SELECT name, sql FROM sqlite_schema ORDER BY name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_journal_reads_back_and_takes_new_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = copy_fixture(dir.path());
    let store = SqliteStore::open(&path).await.expect("open the v3 journal");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(kinds(&path), migrated_kinds());
    check_fixture_contents(&store).await;
    // The run a crash left with a terminal status and no terminal event.
    assert_eq!(
        ids(store.list_runs_missing_terminal_event().await),
        vec![id(7)]
    );

    // Caller ids stay idempotent, old kind names and new.
    let again = store
        .append(NewEvent::with_id(
            id(1),
            "pick-1",
            custom("picked", json!({"sku": 7})),
        ))
        .await
        .expect("append again");
    assert_eq!(
        again,
        Appended {
            cursor: Cursor(2),
            seq: 2,
            duplicate: true
        }
    );
    let again = store
        .append(NewEvent::with_id(
            id(2),
            "legacy-1",
            custom("custom:RunCompleted", json!({"legacy": true, "n": 1})),
        ))
        .await
        .expect("append again");
    assert_eq!(
        again,
        Appended {
            cursor: Cursor(7),
            seq: 3,
            duplicate: true
        }
    );

    // New custom events: a new id, and the renamed kind, which reuses its code.
    let picked = store
        .append(NewEvent::with_id(
            id(1),
            "pick-3",
            custom("picked", json!({"sku": 9})),
        ))
        .await
        .expect("append");
    assert_eq!(
        picked,
        Appended {
            cursor: Cursor(22),
            seq: 5,
            duplicate: false
        }
    );
    let renamed = store
        .append(NewEvent::new(
            id(1),
            custom("custom:RunCompleted", json!({"new": true})),
        ))
        .await
        .expect("append");
    assert_eq!((renamed.cursor, renamed.seq), (Cursor(23), 6));
    // `RunCompleted` is a terminal name now, reserved.
    let reserved = store
        .append(NewEvent::new(id(1), custom("RunCompleted", Value::Null)))
        .await;
    assert!(
        matches!(
            reserved,
            Err(StoreError::InvalidInput { field: "kind", .. })
        ),
        "{reserved:?}"
    );

    // Terminal events: run 2 (whose custom `RunCompleted` was no outcome)
    // gets its first, the crashed run 7 is repaired, and runs 4 and 5 keep
    // theirs.
    let done = TerminalEvent::RunCompleted {
        structured_output: Some(json!({"ok": true})),
    };
    let appended = store
        .append_terminal_event_if_absent(id(2), done.clone())
        .await
        .expect("terminal");
    assert!(
        matches!(appended, TerminalAppend::Appended(a) if a.cursor == Cursor(24) && a.seq == 4)
    );
    let failed = TerminalEvent::RunFailed {
        reason: "worker lost".into(),
    };
    let repaired = store
        .append_terminal_event_if_absent(id(7), failed.clone())
        .await
        .expect("repair");
    assert!(matches!(repaired, TerminalAppend::Appended(a) if a.cursor == Cursor(25)));
    assert!(ids(store.list_runs_missing_terminal_event().await).is_empty());
    let kept = store
        .append_terminal_event_if_absent(id(4), TerminalEvent::RunCancelled)
        .await
        .expect("terminal");
    assert!(matches!(
        kept,
        TerminalAppend::AlreadyPresent(e) if e.cursor == Cursor(13)
    ));
    let second = store
        .append(NewEvent::new(id(5), TerminalEvent::RunCancelled))
        .await;
    assert!(
        matches!(
            second,
            Err(StoreError::TerminalExists {
                cursor: Cursor(16),
                ..
            })
        ),
        "{second:?}"
    );

    // The mirrored step is found by its old key: updated, not duplicated.
    let update = RunStep {
        id: new_run_id(),
        run_id: id(2),
        runtime: StepRuntime::Mirrored,
        child_session_key: None,
        external_run_id: "ext-run-1".into(),
        task: "summarise".into(),
        status: RunStepStatus::Failed,
        result_json: Some(json!({"error": "late"})),
        created_at: t(90),
        updated_at: t(91),
    };
    let stored = store.upsert_step(update.clone()).await.expect("upsert");
    let mut updated_step = RunStep {
        id: id(0x102),
        child_session_key: Some("child-7".into()),
        created_at: t(22),
        ..update
    };
    assert_eq!(stored, updated_step);

    // Step outputs: a new iteration is recorded, an old one is not replaced.
    let fourth = output("process", Some(3), json!({"i": 3}), 92);
    assert!(
        store
            .record_step_output(fourth.clone())
            .await
            .expect("record")
    );
    let replaced = output("process", Some(0), json!({"i": "again"}), 93);
    assert!(!store.record_step_output(replaced).await.expect("record"));
    let late_failure = FailureEntry {
        run_id: id(3),
        step_id: "approve".into(),
        reason: "approver unreachable".into(),
        error_json: None,
        at: t(94),
    };
    store
        .record_failure(late_failure.clone())
        .await
        .expect("failure");
    // A CAS update of a migrated run.
    let mut r1 = expected_runs().remove(0);
    r1.status = RunStatus::Running;
    r1.updated_at = t(95);
    let revision = store
        .update_run(r1.clone(), 0, custom("started", Value::Null))
        .await
        .expect("update run");
    assert_eq!(revision, 1);
    r1.revision = 1;
    drop(store);

    // Everything, old and new, survives a reopen.
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(kinds(&path), migrated_kinds(), "no kind was added");
    assert_eq!(store.get_run(id(1)).await.expect("get"), Some(r1));
    for (n, run) in expected_runs().into_iter().enumerate().skip(1) {
        assert_eq!(
            store.get_run(run.id).await.expect("get").as_ref(),
            Some(&run),
            "run {}",
            n + 1
        );
    }
    let mut log1 = expected_events(1);
    log1.push((22, 5, "pick-3", custom("picked", json!({"sku": 9}))));
    log1.push((
        23,
        6,
        "#6",
        custom("custom:RunCompleted", json!({"new": true})),
    ));
    log1.push((26, 7, "#7", custom("started", Value::Null)));
    assert_eq!(shape(&store.replay(id(1)).await.expect("replay")), log1);
    let mut log2 = expected_events(2);
    log2.push((24, 4, "#4", done.clone().into()));
    assert_eq!(shape(&store.replay(id(2)).await.expect("replay")), log2);
    let mut log7 = expected_events(7);
    log7.push((25, 3, "#3", failed.into()));
    assert_eq!(shape(&store.replay(id(7)).await.expect("replay")), log7);
    for n in 3..=6 {
        assert_eq!(
            shape(&store.replay(id(n)).await.expect("replay")),
            expected_events(n)
        );
    }
    assert_eq!(
        store
            .terminal_event(id(2))
            .await
            .expect("terminal")
            .map(|e| e.kind),
        Some(done.into())
    );
    assert!(ids(store.list_runs_missing_terminal_event().await).is_empty());
    assert_eq!(store.latest_cursor().await.expect("latest"), Cursor(26));

    let mut steps = expected_steps();
    steps[0] = updated_step.clone();
    assert_eq!(store.list_steps(id(2)).await.expect("steps"), steps);
    // And the key still upserts after the reopen.
    updated_step.status = RunStepStatus::Succeeded;
    updated_step.updated_at = t(96);
    store
        .upsert_step(updated_step.clone())
        .await
        .expect("upsert");
    steps[0] = updated_step;
    assert_eq!(store.list_steps(id(2)).await.expect("steps"), steps);

    let mut outputs = expected_outputs();
    outputs.push(fourth);
    assert_eq!(
        store.list_step_outputs(id(2)).await.expect("outputs"),
        outputs
    );
    assert_eq!(
        store.list_failures(id(3)).await.expect("failures"),
        vec![late_failure]
    );
    assert_eq!(
        store.list_failures(id(2)).await.expect("failures"),
        expected_failures(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_is_atomic_and_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");

    // Atomic: a migration that fails at its last statements leaves the file
    // as it was (here a column already named `external_run_id` makes the
    // rename fail after the kinds were renamed).
    let path = copy_fixture(dir.path());
    let old_kinds = kinds(&path);
    assert_eq!(
        old_kinds[..3]
            .iter()
            .map(|k| k.1.as_str())
            .collect::<Vec<_>>(),
        ["FlowCompleted", "FlowFailed", "FlowCanceled"]
    );
    run_sql(&path, "ALTER TABLE steps ADD COLUMN external_run_id TEXT;");
    let before = schema(&path);
    let failed = SqliteStore::open(&path).await.err();
    assert!(
        matches!(
            &failed,
            Some(StoreError::Sqlite { op: "migrate schema", source })
                if source.to_string().contains("external_run_id")
        ),
        "the column rename fails: {failed:?}"
    );
    assert_eq!(user_version(&path), 3);
    assert_eq!(kinds(&path), old_kinds, "the kind renames were rolled back");
    assert_eq!(schema(&path), before);
    run_sql(&path, "ALTER TABLE steps DROP COLUMN external_run_id;");

    // Idempotent: once migrated, opening again changes nothing.
    let store = SqliteStore::open(&path).await.expect("open");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    check_fixture_contents(&store).await;
    let all = store.poll(Cursor(0), 100).await.expect("poll");
    drop(store);
    let migrated = schema(&path);
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(schema(&path), migrated);
    assert_eq!(kinds(&path), migrated_kinds());
    check_fixture_contents(&store).await;
    assert_eq!(store.poll(Cursor(0), 100).await.expect("poll"), all);
    assert_eq!(
        store.list_steps(id(2)).await.expect("steps"),
        expected_steps()
    );
    assert_eq!(
        store.list_step_outputs(id(2)).await.expect("outputs"),
        expected_outputs()
    );
    assert_eq!(
        ids(store.list_runs_missing_terminal_event().await),
        vec![id(7)]
    );
}

/// A version-3 journal could hold custom kinds named both `RunCompleted` and
/// `custom:RunCompleted`; the migration keeps both apart instead of failing
/// the open on the unique kind name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_kind_whose_renamed_name_is_taken_keeps_its_code_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    let run = Run::new("ctrl", "goal", "owner");
    let run_id = run.id;
    store.insert_run(run, None).await.expect("insert run");
    for (name, n) in [("custom:RunCompleted", 1), ("stand-in", 2)] {
        store
            .append(NewEvent::new(run_id, custom(name, json!(n))))
            .await
            .expect("append");
    }
    drop(store);
    // As a version-3 file: the stand-in kind had the name reserved since.
    run_sql(&path, raw_sqlite::UNDO_V11);
    run_sql(&path, raw_sqlite::UNDO_V10);
    run_sql(&path, raw_sqlite::UNDO_V9);
    run_sql(&path, raw_sqlite::UNDO_V8);
    run_sql(&path, raw_sqlite::UNDO_V7);
    run_sql(&path, raw_sqlite::UNDO_V6);
    run_sql(&path, raw_sqlite::UNDO_V5);
    run_sql(&path, raw_sqlite::UNDO_V4);
    run_sql(
        &path,
        "UPDATE event_kinds SET name = 'RunCompleted' WHERE name = 'stand-in'",
    );
    let code: i64 = raw_rows::<i64, String>(
        &path,
        "SELECT code, name FROM event_kinds WHERE name = 'RunCompleted' AND code > 3",
    )[0]
    .0;

    let store = SqliteStore::open(&path).await.expect("migrate");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let names: Vec<String> = store
        .list_events(run_id, 10)
        .await
        .expect("read")
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "custom:RunCompleted".to_owned(),
            format!("custom:{code}:RunCompleted")
        ]
    );
}
