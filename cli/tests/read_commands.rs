//! The read commands against journals made by real runs: they open the
//! journal read-only, print aligned tables or one JSON document, and say
//! clearly when there is no journal; `runs events --follow` prints a live
//! run's log as another runtime commits it and exits at its outcome;
//! `runs tree` shows a run's continue-as-new chain.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{POISON, flow, journal, json, ok, troupe};
use tokio::sync::mpsc;
use troupe::flow::ControlEvent;
use troupe::records::Run;
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::store::{SqliteStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_prints_a_table_and_json_newest_first_with_filters() {
    let j = journal().await;
    let (finished, unfinished) = (j.finished.to_string(), j.unfinished.to_string());

    let table = ok(&j.path, &["runs", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID "), "{table}");
    for column in ["FLOW", "STATUS", "CREATED", "UPDATED"] {
        assert!(lines[0].contains(column), "{table}");
    }
    // Left mid-way: whatever its record says, not terminal.
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    let status = store.get_run(j.unfinished).await.unwrap().unwrap().status;
    assert!(!status.is_terminal());
    let (flow_at, status_at) = (
        lines[0].find("FLOW").unwrap(),
        lines[0].find("STATUS").unwrap(),
    );
    let created_at = lines[0].find("CREATED").unwrap();
    for (line, id, flow, status) in [
        (lines[1], &unfinished, "stream", status.as_str()),
        (lines[2], &finished, "batch", "finished"),
    ] {
        assert!(line.starts_with(id.as_str()), "{table}");
        assert!(line[flow_at..].starts_with(flow), "aligned: {table}");
        assert!(line[status_at..].starts_with(status), "aligned: {table}");
        assert!(
            line[created_at..].contains(" UTC"),
            "readable times: {table}"
        );
    }

    let listed = json(&j.path, &["runs", "list"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [unfinished.as_str(), finished.as_str()]);
    assert_eq!(listed[1]["status"], "Finished");
    assert_eq!(listed[1]["controller_id"], "batch");

    let only = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "list"];
        all.extend_from_slice(args);
        json(&j.path, &all)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(only(&["--status", "finished"]), [finished.as_str()]);
    assert_eq!(only(&["--flow", "stream"]), [unfinished.as_str()]);
    assert!(only(&["--flow", "stream", "--status", "failed"]).is_empty());
    assert_eq!(only(&["--limit", "1"]), [unfinished.as_str()]);
    assert_eq!(only(&["--owner", "troupe"]).len(), 2);
    assert!(only(&["--owner", "nobody"]).is_empty());
    assert!(only(&["--parent", &finished]).is_empty());
    assert_eq!(only(&["--since", "2000-01-01T00:00:00Z"]).len(), 2);
    assert!(only(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let out = troupe(&j.path, &["runs", "list", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "a bad time is a usage error");
    assert_eq!(
        only(&["--limit", "1", "--before", &unfinished]),
        [finished.as_str()]
    );

    let page = ok(&j.path, &["runs", "list", "--limit", "1"]);
    assert!(
        page.contains(&format!("(more: --before {unfinished})")),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_events_ledger_and_dead_letters_read_what_the_runs_recorded() {
    let j = journal().await;
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    let id = j.finished.to_string();

    let shown = json(&j.path, &["runs", "show", &id]);
    assert_eq!(shown["run"]["id"], id.as_str());
    assert_eq!(shown["run"]["status"], "Finished");
    assert!(
        shown["outcome"]["kind"]["Terminal"]["RunCompleted"].is_object(),
        "{shown:#}"
    );
    let outputs = store.list_step_outputs(j.finished).await.unwrap();
    assert!(!outputs.is_empty());
    assert_eq!(
        shown["stage_outputs"].as_array().unwrap().len(),
        outputs.len()
    );
    assert_eq!(shown["dead_letters"][0]["item"], POISON);
    assert_eq!(shown["dead_letters"][0]["stage"], "check");
    let text = ok(&j.path, &["runs", "show", &id]);
    // The definition it started with, also in its lifecycle snapshot.
    let fingerprint = shown["run"]["fingerprint"].as_str().unwrap();
    assert_eq!(shown["lifecycle"]["summary"]["fingerprint"], fingerprint);
    for part in [
        "Flow      batch",
        &format!("Flow def  fingerprint {fingerprint}"),
        "Status    finished",
        "Outcome   RunCompleted",
        "Dead letters (1)",
        "Inbox (0)",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }

    assert_eq!(shown["steps"], serde_json::json!([]));
    assert_eq!(shown["children"], serde_json::json!([]));
    drop(store);
    // A run the finished one started (written as a tool would, through a
    // bare store, while no runtime owns the journal).
    let mut child = Run::new("batch", "follow-up", "troupe");
    child.parent_run_id = Some(j.finished);
    child.key = Some("order-42".into());
    child.input = serde_json::json!({"order": 42});
    let writer = SqliteStore::open(&j.path).await.unwrap();
    writer.insert_run(child.clone(), None).await.unwrap();
    drop(writer);
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    let shown = json(&j.path, &["runs", "show", &id]);
    assert_eq!(shown["children"][0]["id"], child.id.to_string());
    let text = ok(&j.path, &["runs", "show", &id]);
    assert!(
        text.contains("Children (1)") && text.contains(&child.id.to_string()),
        "{text}"
    );
    let child_id = child.id.to_string();
    let text = ok(&j.path, &["runs", "show", &child_id]);
    for part in ["Key       order-42", "Input     {\"order\":42}"] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    let shown = json(&j.path, &["runs", "show", &child_id]);
    assert_eq!(shown["run"]["key"], "order-42");
    assert_eq!(shown["run"]["input"]["order"], 42);
    let listed = json(&j.path, &["runs", "list", "--parent", &id]);
    assert_eq!(listed[0]["id"], child.id.to_string());
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let log = store.replay(j.finished).await.unwrap();
    let events = json(&j.path, &["runs", "events", &id]);
    assert_eq!(events.as_array().unwrap().len(), log.len());
    assert_eq!(events[0]["seq"], 1);
    let last = json(&j.path, &["runs", "events", &id, "--limit", "1"]);
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["seq"], log.len());
    let text = ok(&j.path, &["runs", "events", &id]);
    assert_eq!(text.lines().count(), log.len() + 1, "{text}");
    assert!(
        text.lines().last().unwrap().contains("RunCompleted"),
        "{text}"
    );
    // Following an ended run prints its log and exits.
    let text = ok(&j.path, &["runs", "events", &id, "--follow"]);
    assert_eq!(text.lines().count(), log.len() + 1, "{text}");
    assert!(
        text.lines().last().unwrap().contains("RunCompleted"),
        "{text}"
    );

    let letters = json(&j.path, &["dead-letters", &id]);
    assert_eq!(letters.as_array().unwrap().len(), 1);
    assert_eq!(letters[0]["item"], POISON);
    let text = ok(&j.path, &["dead-letters", &id]);
    assert!(
        text.contains("check") && text.contains("poisoned"),
        "{text}"
    );

    let failures = store.list_failures(j.finished).await.unwrap();
    let ledger = json(&j.path, &["ledger", &id]);
    assert_eq!(ledger.as_array().unwrap().len(), failures.len());
    let text = ok(&j.path, &["ledger", &id]);
    assert_eq!(text.lines().count(), failures.len() + 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_or_an_unknown_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.sqlite");
    for args in [
        &["runs", "list"][..],
        &[
            "cancel",
            "0191e5b8-0000-7000-8000-000000000000",
            "--reason",
            "r",
        ][..],
        &["signal", "0191e5b8-0000-7000-8000-000000000000", "s", "1"][..],
    ] {
        let out = troupe(&missing, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("absent.sqlite: no journal here"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );

    let j = journal().await;
    let unknown = "0191e5b8-0000-7000-8000-000000000000";
    let out = troupe(&j.path, &["runs", "show", unknown]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no run {unknown}")), "{err}");
    let out = troupe(&j.path, &["runs", "show", "not-an-id"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_a_live_runs_events_until_its_outcome() {
    let j = journal().await;
    let (tx, _seen) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .sqlite(&j.path)
        .register(flow("stream", tx))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.resumed()[0].clone();

    let id = j.unfinished.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("--journal")
        .arg(&j.path)
        .args(["runs", "events", &id, "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (line_tx, mut lines) = mpsc::unbounded_channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = line_tx.send(serde_json::from_str(&line.unwrap()).unwrap());
        }
    });
    // The log so far (one read) is printed before the run is told to end:
    // what the cancel adds comes from the follow.
    let first = lines.recv().await.unwrap();
    assert_eq!(first["seq"], 1);
    let before_end = runtime.journal().replay(j.unfinished).await.unwrap().len();
    let reason = "enough".to_owned();
    run.send(ControlEvent::Cancel { reason }).await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);

    let mut printed = vec![first];
    while let Some(line) = lines.recv().await {
        printed.push(line);
    }
    reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let log = runtime.journal().replay(j.unfinished).await.unwrap();
    assert!(log.len() > before_end, "events came after the follow began");
    let seqs: Vec<u64> = printed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, expected, "each event once, in order");
    let last = printed.last().unwrap();
    assert_eq!(last["kind"]["Terminal"], "RunCancelled", "{last}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_the_latest_checkpoint_compactly_and_its_states_in_json() {
    use std::collections::BTreeMap;
    use troupe::records::{Checkpoint, StageCheckpoint};

    let j = journal().await;
    let id = j.unfinished.to_string();
    let text = ok(&j.path, &["runs", "show", &id]);
    assert!(text.ends_with("\nCheckpoint (none)\n"), "{text}");
    assert_eq!(
        json(&j.path, &["runs", "show", &id])["checkpoint"],
        Value::Null
    );

    // Checkpoints written as a tool would, through a bare store, while no
    // runtime owns the journal: the latest is shown.
    let stage = |finished, state, items_in, items_out| StageCheckpoint {
        finished,
        state,
        items_in,
        items_out,
    };
    let checkpoint = |n: u64| {
        Checkpoint::new(
            j.unfinished,
            n,
            BTreeMap::from([
                (
                    "numbers".to_owned(),
                    stage(false, Some(serde_json::json!({"offset": n * 1000})), n, n),
                ),
                ("check".to_owned(), stage(true, None, 5, 4)),
            ]),
        )
    };
    let writer = SqliteStore::open(&j.path).await.unwrap();
    writer.record_checkpoint(checkpoint(1)).await.unwrap();
    let latest = checkpoint(2);
    writer.record_checkpoint(latest.clone()).await.unwrap();
    drop(writer);
    support::wait_released(&j.path).await;

    let text = ok(&j.path, &["runs", "show", &id]);
    let taken = latest.taken_at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let section = text
        .split(&format!("\nCheckpoint 2, taken {taken} (2 stages)\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no checkpoint 2 in {text}"));
    let rows: Vec<Vec<&str>> = section
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["STAGE", "FINISHED", "ITEMS", "IN", "ITEMS", "OUT", "STATE"],
            vec!["check", "yes", "5", "4", "-"],
            vec!["numbers", "no", "2", "2", "kept"],
        ],
        "{text}"
    );
    assert!(!text.contains("2000"), "no state in the table: {text}");

    let shown = json(&j.path, &["runs", "show", &id]);
    assert_eq!(shown["checkpoint"]["id"], 2);
    assert_eq!(
        shown["checkpoint"]["stages"]["numbers"]["state"]["offset"],
        2000
    );
    assert_eq!(shown["checkpoint"]["stages"]["check"]["finished"], true);
    assert!(
        shown["checkpoint"]["stages"]["check"]
            .get("state")
            .is_none()
    );
}

/// `runs tree ID` shows the continue-as-new chain a run belongs to (from
/// any of its runs); `runs list --status continued-as-new` lists the runs
/// that continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_tree_shows_the_chain_from_any_of_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let store = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
    let runs = troupe::runs::RunManager::new(store.clone());
    let first = runs
        .create_managed(troupe::runs::CreateManagedInput::new("tail", "follow", "o"))
        .await
        .unwrap();
    runs.start_running(first.id).await.unwrap();
    let second = runs
        .continue_as_new(first.id, serde_json::json!(1))
        .await
        .unwrap();
    runs.start_running(second.id).await.unwrap();
    let third = runs
        .continue_as_new(second.id, serde_json::json!(2))
        .await
        .unwrap();
    let lone = runs
        .create_managed(troupe::runs::CreateManagedInput::new("tail", "alone", "o"))
        .await
        .unwrap();
    store.close().await;
    drop(runs);
    drop(store);
    let ids = [first.id, second.id, third.id].map(|id| id.to_string());

    for id in &ids {
        let text = ok(&path, &["runs", "tree", id]);
        assert!(text.starts_with("chain of 3 runs:\n"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        for (i, member) in ids.iter().enumerate() {
            assert!(lines[i + 1].contains(member.as_str()), "{text}");
        }
        assert!(lines[1].contains("continued_as_new"), "{text}");
        assert!(lines[3].contains("created"), "{text}");
        let this = lines.iter().find(|l| l.contains("this run")).unwrap();
        assert!(this.contains(id.as_str()), "{text}");

        let tree = json(&path, &["runs", "tree", id]);
        let chain: Vec<&str> = (tree["chain"].as_array().unwrap().iter())
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(chain, ids.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let alone = ok(&path, &["runs", "tree", &lone.id.to_string()]);
    assert!(
        !alone.contains("chain"),
        "a chain of one is not shown: {alone}"
    );
    let tree = json(&path, &["runs", "tree", &lone.id.to_string()]);
    assert!(tree.get("chain").is_none(), "{tree:#}");

    let listed = json(&path, &["runs", "list", "--status", "continued-as-new"]);
    let mut continued: Vec<&str> = (listed.as_array().unwrap().iter())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    continued.sort_unstable();
    let mut expected = [ids[0].as_str(), ids[1].as_str()];
    expected.sort_unstable();
    assert_eq!(continued, expected);
}
