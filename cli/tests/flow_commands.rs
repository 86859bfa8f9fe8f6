//! `troupe flows` and `troupe flows show` against journals whose runtimes
//! registered real definitions: a table, JSON parsed back, a Mermaid
//! diagram, versions, and the exit codes of a flow or journal not there.

mod support;

use serde_json::{Value, json as j};
use support::{flow, journal, json, ok, troupe};
use tokio::sync::mpsc;
use troupe::flow::FlowDefinition;
use troupe::runtime::Runtime;
use troupe::stage::step_fn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_lists_recorded_definitions_as_a_table_and_json() {
    let journal = journal().await;
    let table = ok(&journal.path, &["flows"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["NAME", "VERSION", "FINGERPRINT", "STAGES", "REGISTERED"] {
        assert!(lines[0].contains(column), "{table}");
    }
    let (tx, _) = mpsc::unbounded_channel();
    let batch = flow("batch", tx);
    let stages_at = lines[0].find("STAGES").unwrap();
    assert!(lines[1].starts_with("batch "), "by name: {table}");
    assert!(lines[1].contains(&batch.fingerprint()[..12]), "{table}");
    assert!(lines[1][stages_at..].starts_with('3'), "aligned: {table}");
    assert!(lines[1].ends_with(" UTC"), "{table}");
    assert!(lines[2].starts_with("stream "), "{table}");

    let listed = json(&journal.path, &["flows"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "batch");
    assert_eq!(listed[0]["fingerprint"], batch.fingerprint());
    assert_eq!(listed[0]["version"], Value::Null);
    assert_eq!(
        listed[0]["shape"]["stages"][1],
        j!({"name": "check", "kind": "transform"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_show_prints_stages_and_edges_a_diagram_and_json() {
    let journal = journal().await;
    let text = ok(&journal.path, &["flows", "show", "batch"]);
    assert!(
        text.starts_with("flow batch  version -  fingerprint "),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let stages = lines.iter().position(|l| l.starts_with("STAGE ")).unwrap();
    assert!(lines[stages + 1].starts_with("numbers  source"), "{text}");
    assert!(
        lines[stages + 2].starts_with("check    transform"),
        "{text}"
    );
    assert!(lines[stages + 3].starts_with("sink     sink"), "{text}");
    let edges = lines.iter().position(|l| l.starts_with("FROM ")).unwrap();
    assert_eq!(
        lines[edges + 1..],
        ["check    sink", "numbers  check"],
        "{text}"
    );

    let diagram = ok(&journal.path, &["flows", "show", "batch", "--mermaid"]);
    assert_eq!(
        diagram,
        "flowchart LR\n    s0[\"numbers (source)\"]\n    s1[\"check (transform)\"]\n    \
         s2[\"sink (sink)\"]\n    s1 --> s2\n    s0 --> s1\n"
    );
    let shown = json(&journal.path, &["flows", "show", "batch"]);
    assert_eq!(shown["name"], "batch");
    assert_eq!(shown["shape"]["edges"].as_array().unwrap().len(), 2);
    let both = json(&journal.path, &["flows", "show", "batch", "--mermaid"]);
    assert_eq!(both["mermaid"], diagram.as_str());
    assert_eq!(both["fingerprint"], shown["fingerprint"]);
}

fn orders(version: u32, stages: &[&'static str]) -> FlowDefinition<()> {
    let mut builder = FlowDefinition::builder("orders").version(version);
    for &stage in stages {
        builder = builder.step(stage, move |_| {
            step_fn(move |_| async move { Ok(j!(stage)) })
        });
    }
    builder.pipeline(stages.iter().copied()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_show_takes_the_highest_version_or_the_one_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let runtime = Runtime::builder()
        .sqlite(&path)
        .register(orders(2, &["charge", "pack", "ship"]))
        .unwrap()
        .register(orders(1, &["charge", "ship"]))
        .unwrap()
        .start()
        .await
        .unwrap();
    runtime.shutdown().await;

    let listed = ok(&path, &["flows"]);
    assert_eq!(listed.lines().count(), 3, "both versions: {listed}");
    let newest = json(&path, &["flows", "show", "orders"]);
    assert_eq!(newest["version"], 2);
    assert_eq!(newest["shape"]["stages"].as_array().unwrap().len(), 3);
    let old = json(&path, &["flows", "show", "orders", "--version", "1"]);
    assert_eq!(old["version"], 1);
    assert_eq!(
        old["fingerprint"],
        orders(1, &["charge", "ship"]).fingerprint()
    );

    let missing = troupe(&path, &["flows", "show", "orders", "--version", "7"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no flow `orders` version 7"), "{stderr}");
    let unknown = troupe(&path, &["flows", "show", "billing"]);
    assert_eq!(unknown.status.code(), Some(1));
    let nowhere = troupe(&dir.path().join("none.sqlite"), &["flows"]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(!dir.path().join("none.sqlite").exists(), "nothing created");
}
