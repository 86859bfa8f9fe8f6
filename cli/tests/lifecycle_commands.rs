//! The lifecycle in the CLI, against journals made by real runs: `runs
//! show` prints the run's phases (a table, or a redacted snapshot in its
//! JSON), `runs events --lifecycle` its lifecycle events with stable ids,
//! and `--follow --lifecycle` them as a live run makes them.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{journal, json, ok};
use tokio::sync::mpsc;
use troupe::flow::ControlEvent;
use troupe::projection::RunRecords;
use troupe::records::{EventKind, NewEvent, RunStatus};
use troupe::runtime::Runtime;
use troupe::store::{SqliteStore, Store};

/// The tests of this binary run one at a time: a process one spawns holds
/// copies of this process's open files between its fork and its exec, the
/// lock of another test's journal among them (a `flock` lasts while any copy
/// is open), so a runtime starting on that journal then would find it locked.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The phase `kind name` of a `runs show --json` document.
fn phase<'a>(shown: &'a Value, kind: &str, name: &str) -> &'a Value {
    let phases = shown["lifecycle"]["phases"].as_array().unwrap();
    phases
        .iter()
        .find(|p| p["key"]["kind"] == kind && p["key"]["name"] == name)
        .unwrap_or_else(|| panic!("no phase {kind} {name} in {shown:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_prints_the_lifecycle_phases_and_a_redacted_snapshot() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let j = journal().await;
    let id = j.finished.to_string();
    let shown = json(&j.path, &["runs", "show", &id]);
    let run = phase(&shown, "run", "run");
    assert_eq!(run["status"], "finished");
    let history: Vec<&str> = run["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["created", "running", "finished"]);
    assert_eq!(run["allowed_next"], serde_json::json!([]));
    for stage in ["numbers", "check", "sink"] {
        assert_eq!(phase(&shown, "stage", stage)["status"], "completed");
    }
    let summary = &shown["lifecycle"]["summary"];
    assert_eq!(summary["dead_letters"], 1);
    assert_eq!(summary["stages"]["check"]["dead_letters"], 1);
    assert_eq!(summary["stages"]["numbers"]["items_out"], 5);
    assert!(summary.get("full").is_none(), "{summary:#}");
    assert_eq!(shown["lifecycle"]["refused"], serde_json::json!([]));

    let text = ok(&j.path, &["runs", "show", &id]);
    for part in [
        "Lifecycle phases (4)",
        "created → running → finished",
        "stage check",
        "Refused lifecycle moves (0)",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    // A `started` audit after the outcome (as a confused tool might append
    // it, through a bare store while no runtime owns the journal): the run's
    // guard refuses the move, and both outputs say so.
    let writer = SqliteStore::open(&j.path).await.unwrap();
    let stray = NewEvent::new(j.finished, EventKind::custom("started", Value::Null));
    let appended = writer.append(stray).await.unwrap();
    drop(writer);
    let shown = json(&j.path, &["runs", "show", &id]);
    let refused = &shown["lifecycle"]["refused"];
    assert_eq!(refused.as_array().unwrap().len(), 1, "{shown:#}");
    assert_eq!(refused[0]["phase"]["kind"], "run");
    assert_eq!(
        (&refused[0]["from"], &refused[0]["to"]),
        (
            &serde_json::json!("finished"),
            &serde_json::json!("running")
        )
    );
    assert_eq!(refused[0]["caused_by"]["seq"], appended.seq);
    assert_eq!(phase(&shown, "run", "run")["status"], "finished");
    let text = ok(&j.path, &["runs", "show", &id]);
    let line = format!(
        "run    finished  running  {} (#{})",
        appended.seq, appended.seq
    );
    assert!(
        text.contains("Refused lifecycle moves (1)") && text.contains(&line),
        "{text}"
    );

    // The unfinished run's phases allow their next moves.
    let shown = json(&j.path, &["runs", "show", &j.unfinished.to_string()]);
    let run = phase(&shown, "run", "run");
    assert_eq!(run["status"], "running");
    assert!(!run["allowed_next"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_events_lifecycle_prints_the_librarys_lifecycle_events_with_stable_ids() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let j = journal().await;
    let id = j.finished.to_string();
    let store = SqliteStore::open_read_only(&j.path).await.unwrap();
    let projection = RunRecords::load(&store, j.finished)
        .await
        .unwrap()
        .project()
        .unwrap();
    let expected: Vec<String> = projection
        .events()
        .iter()
        .map(|e| e.id.to_string())
        .collect();

    let events = json(&j.path, &["runs", "events", &id, "--lifecycle"]);
    let ids: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected);
    let again = json(&j.path, &["runs", "events", &id, "--lifecycle"]);
    assert_eq!(again, events, "the same ids every time");
    let first = &events[0];
    assert_eq!(first["record"]["phase"]["kind"], "run");
    assert_eq!(first["record"]["status"], "created");
    assert_eq!(first["caused_by"]["seq"], 1);

    let last = json(
        &j.path,
        &["runs", "events", &id, "--lifecycle", "--limit", "1"],
    );
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["record"]["status"], "finished");

    let text = ok(&j.path, &["runs", "events", &id, "--lifecycle"]);
    assert_eq!(text.lines().count(), ids.len() + 1, "{text}");
    assert!(text.lines().next().unwrap().contains("LIFECYCLE"), "{text}");
    assert!(
        text.contains(&ids[0]) && text.contains("run → finished"),
        "{text}"
    );

    // Following an ended run prints the same events and exits.
    let text = ok(
        &j.path,
        &["runs", "events", &id, "--lifecycle", "--follow", "--json"],
    );
    let followed: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(Value::Array(followed), events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_lifecycle_prints_a_live_runs_lifecycle_until_its_outcome() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let j = journal().await;
    let (tx, _seen) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .sqlite(&j.path)
        .register(support::flow("stream", tx))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.resumed()[0].clone();
    let id = j.unfinished.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("--journal")
        .arg(&j.path)
        .args(["runs", "events", &id, "--follow", "--lifecycle", "--json"])
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
    let first = lines.recv().await.unwrap();
    assert_eq!(first["record"]["status"], "created");
    let reason = "enough".to_owned();
    run.send(ControlEvent::Cancel { reason }).await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);

    let mut printed = vec![first];
    while let Some(line) = lines.recv().await {
        printed.push(line);
    }
    reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let records = RunRecords::load(runtime.journal(), j.unfinished)
        .await
        .unwrap();
    let projection = records.project().unwrap();
    let expected = serde_json::to_value(projection.events()).unwrap();
    assert_eq!(
        Value::Array(printed),
        expected,
        "each lifecycle event once, in order"
    );
    let last = &expected[expected.as_array().unwrap().len() - 1];
    assert_eq!(last["record"]["phase"]["kind"], "run");
    assert_eq!(last["record"]["status"], "cancelled");
    runtime.shutdown().await;
}
