//! `troupe repair`: a run whose terminal status was persisted without its
//! terminal event (faked by raw SQL on a journal made by real runs) is
//! listed by `--dry-run`, which writes nothing, and repaired without it,
//! once; refused while a live runtime holds the journal.

mod support;

use serde_json::Value;
use support::{journal, json, ok, troupe};
use troupe::runtime::Runtime;
use troupe::store::{SqliteStore, Store};

/// The `stream` run (left `Running`) gets the status `Failed` (code 4) as
/// if its process died before appending `RunFailed`.
fn half_write_failed(path: &std::path::Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch("UPDATE runs SET status = 4 WHERE status IN (0, 1, 2)")
        .unwrap();
}

/// What a repair could change, read raw: the runs' statuses and outcome
/// positions, and how many events and ledger entries there are.
fn contents(path: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let sql = "SELECT (SELECT group_concat(rid || ':' || status || ':' || \
               ifnull(outcome_cursor, '-'), ',') FROM runs) || ' ' || \
               (SELECT count(*) || '/' || ifnull(max(cursor), 0) FROM events) || ' ' || \
               (SELECT count(*) FROM failures)";
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_the_repair_and_writes_nothing_then_repair_appends_it_once() {
    let j = journal().await;
    half_write_failed(&j.path);
    let id = j.unfinished.to_string();

    let before = contents(&j.path);
    let plan = json(&j.path, &["repair", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    let repairs = plan["repairs"].as_array().unwrap();
    assert_eq!(repairs.len(), 1, "{plan}");
    assert_eq!(repairs[0]["run_id"], id.as_str());
    assert_eq!(repairs[0]["flow"], "stream");
    assert_eq!(repairs[0]["status"], "Failed");
    assert_eq!(repairs[0]["result"], "would repair");
    assert!(
        repairs[0]["event"]["RunFailed"]["reason"].is_string(),
        "{plan}"
    );
    let table = ok(&j.path, &["repair", "--dry-run"]);
    assert!(
        table.contains(&id) && table.contains("would repair"),
        "{table}"
    );
    assert!(table.contains("dry run: nothing written"), "{table}");
    assert_eq!(contents(&j.path), before, "a dry run wrote to the journal");
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    assert!(store.terminal_event(j.unfinished).await.unwrap().is_none());

    let done = json(&j.path, &["repair"]);
    assert_ne!(contents(&j.path), before, "the repair wrote nothing");
    assert_eq!(done["dry_run"], false);
    let repairs = done["repairs"].as_array().unwrap();
    assert_eq!(repairs.len(), 1, "{done}");
    assert_eq!(repairs[0]["result"], "repaired");
    assert_eq!(repairs[0]["event"], plan["repairs"][0]["event"]);
    let event = store.terminal_event(j.unfinished).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&event.kind).unwrap()["Terminal"],
        plan["repairs"][0]["event"]
    );
    // The finished run was never touched; nothing is left to repair.
    assert!(store.terminal_event(j.finished).await.unwrap().is_some());
    let again = json(&j.path, &["repair", "--dry-run"]);
    assert_eq!(again["repairs"], Value::Array(vec![]));
    let table = ok(&j.path, &["repair"]);
    assert!(table.starts_with("no run needs repair"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_is_refused_while_a_live_runtime_holds_the_journal_but_a_dry_run_reads() {
    let j = journal().await;
    half_write_failed(&j.path);
    let live = Runtime::builder().sqlite(&j.path).start().await.unwrap();
    // The live runtime's own scan repaired it: the dry run reads that.
    let plan = json(&j.path, &["repair", "--dry-run"]);
    assert_eq!(plan["repairs"], Value::Array(vec![]), "{plan}");
    let out = troupe(&j.path, &["repair"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    live.shutdown().await;
}

#[test]
fn repair_on_a_path_with_no_journal_is_a_usage_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.sqlite");
    for args in [&["repair"][..], &["repair", "--dry-run"][..]] {
        let out = troupe(&path, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no journal here"));
    }
    assert!(!path.exists());
}
