//! The write commands go through the journal's single writer: refused,
//! naming the holder, while a live runtime owns the journal (reads still
//! work); otherwise a signal, a cancel or a replay is journaled and the run
//! gets it when a runtime resumes it.

mod support;

use serde_json::json;
use support::{POISON, Seen, flow, journal, json, ok, troupe};
use tokio::sync::mpsc;
use troupe::records::{InboxMessage, RunStatus};
use troupe::runtime::Runtime;
use troupe::store::{SqliteStore, Store};

/// A runtime on the journal that resumes the `stream` run.
async fn resume(path: &std::path::Path) -> (Runtime, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .sqlite(path)
        .register(flow("stream", tx))
        .unwrap()
        .start()
        .await
        .unwrap();
    (runtime, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_commands_are_refused_while_a_live_runtime_holds_the_journal() {
    let j = journal().await;
    let id = j.unfinished.to_string();
    let (live, _seen) = resume(&j.path).await;
    for args in [
        &["signal", &id, "tune", "{}"][..],
        &["cancel", &id, "--reason", "r"][..],
        &["dead-letters", "replay", &id, "--stage", "check"][..],
    ] {
        let out = troupe(&j.path, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in use by another process"), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "who: {err}"
        );
    }
    // Reads work meanwhile, and nothing was written.
    let listed = json(&j.path, &["runs", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    assert!(store.list_inbox(j.unfinished).await.unwrap().is_empty());
    assert!(
        !store
            .get_run(j.unfinished)
            .await
            .unwrap()
            .unwrap()
            .cancel_requested
    );
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_journaled_and_reaches_its_stage_when_the_run_resumes() {
    let j = journal().await;
    let id = j.unfinished.to_string();
    let out = json(
        &j.path,
        &["signal", &id, "tune", r#"{"gain": 2}"#, "--stage", "check"],
    );
    let inbox_id = out["inbox_id"].as_str().unwrap().to_owned();
    let shown = json(&j.path, &["runs", "show", &id]);
    let entry = &shown["inbox"][0];
    assert_eq!(entry["id"], inbox_id.as_str());
    assert!(entry["settled"].is_null(), "pending until resumed");
    assert_eq!(entry["message"]["type"], "signal");
    assert_eq!(entry["message"]["name"], "tune");

    let (runtime, mut seen) = resume(&j.path).await;
    let tuned = Seen::Signal("tune".into(), json!({"gain": 2}));
    while seen.recv().await.as_ref() != Some(&tuned) {}
    // A drain ends the run; the signal's settlement is recorded before its outcome.
    runtime.shutdown().await;
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    let inbox = store.list_inbox(j.unfinished).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].id.to_string(), inbox_id);
    assert_eq!(inbox[0].stage, "check");
    let settled = inbox[0].settled.as_ref().expect("settled");
    assert_eq!(settled.undeliverable, None);

    // An ended run refuses input, and a payload that is not JSON is a usage error.
    let out = troupe(&j.path, &["signal", &id, "tune", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has ended"));
    let out = troupe(&j.path, &["signal", &id, "tune", "{"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_recorded_with_its_reason_and_the_resumed_run_is_cancelled() {
    let j = journal().await;
    let id = j.unfinished.to_string();
    let text = ok(&j.path, &["cancel", &id, "--reason", "operator says stop"]);
    assert!(text.contains("cancel requested"), "{text}");
    let shown = json(&j.path, &["runs", "show", &id]);
    assert_eq!(shown["run"]["cancel_requested"], true);
    let events = json(&j.path, &["runs", "events", &id]);
    let reason = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"]["Custom"]["name"] == "cancel_reason")
        .expect("the reason is in the log");
    assert_eq!(
        reason["kind"]["Custom"]["payload"]["reason"],
        "operator says stop"
    );
    let table = ok(&j.path, &["runs", "list", "--flow", "stream"]);
    assert!(table.contains("(cancel requested)"), "{table}");

    let (runtime, _seen) = resume(&j.path).await;
    let outcome = runtime.resumed()[0].wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    runtime.shutdown().await;
    let out = troupe(&j.path, &["cancel", &id, "--reason", "again"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_dead_letters_go_back_into_their_stage_when_the_run_resumes() {
    let j = journal().await;
    let id = j.unfinished.to_string();
    let letters = json(&j.path, &["dead-letters", &id]);
    assert_eq!(letters.as_array().unwrap().len(), 1);
    let out = json(
        &j.path,
        &["dead-letters", "replay", &id, "--stage", "check"],
    );
    assert_eq!(out["inbox_ids"].as_array().unwrap().len(), 1);
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    let inbox = store.list_inbox(j.unfinished).await.unwrap();
    assert!(
        matches!(&inbox[0].message, InboxMessage::Item { .. }),
        "{inbox:?}"
    );

    let (runtime, mut seen) = resume(&j.path).await;
    // `check` refuses item 3 twice: replayed, and again from the source,
    // which starts over on resume (no checkpoint). Each is a dead letter.
    for _ in 0..2 {
        while seen.recv().await != Some(Seen::Refused(POISON)) {}
    }
    runtime.shutdown().await;
    let letters = store.list_dead_letters(j.unfinished).await.unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(letters.iter().all(|l| l.item == json!(POISON)));
    let inbox = store.list_inbox(j.unfinished).await.unwrap();
    assert!(inbox[0].settled.is_some(), "{inbox:?}");
}
