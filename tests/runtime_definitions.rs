//! Versioned definitions at resume: a run records the fingerprint of the
//! definition it started with; after a restart, a changed definition does
//! not resume it blindly (refused, naming what changed, unless the new
//! definition says to resume it), an older version still registered
//! finishes it, a run recorded before fingerprints resumes as before, and
//! every registered definition is recorded in the journal once. A dropped
//! runtime stands in for a crashed process; the store outlives it.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use runtime_support::*;
use serde_json::{Value, json};
use troupe::flow::{ChangePolicy, FlowBuilder, FlowDefinition};
use troupe::records::{DefinitionChange, Run, RunStatus};
use troupe::runtime::{ResumeError, Runtime};
use troupe::stage::step_fn;
use troupe::store::{MemoryStore, Store};

/// A step that answers at once, counting its runs.
fn quick(builder: FlowBuilder<()>, name: &str, runs: &Arc<AtomicU64>) -> FlowBuilder<()> {
    let runs = runs.clone();
    let label = name.to_owned();
    builder.step(name, move |_| {
        let (runs, label) = (runs.clone(), label.clone());
        step_fn(move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            let label = label.clone();
            async move { Ok(json!(label)) }
        })
    })
}

/// A step that never ends.
fn stuck(builder: FlowBuilder<()>, name: &str) -> FlowBuilder<()> {
    builder.step(name, |_| {
        step_fn(|_| async {
            std::future::pending::<Result<Value, troupe::supervise::BoxError>>().await
        })
    })
}

/// Version 1: `charge` → `ship`; `ship` never ends when `hang`.
fn v1(hang: bool, runs: &Arc<AtomicU64>) -> FlowDefinition<()> {
    let builder = quick(FlowDefinition::builder("orders").version(1), "charge", runs);
    let builder = if hang {
        stuck(builder, "ship")
    } else {
        quick(builder, "ship", runs)
    };
    builder.pipeline(["charge", "ship"]).build().unwrap()
}

/// Version 2: `charge` → `pack` → `ship`.
fn v2(policy: ChangePolicy, runs: &Arc<AtomicU64>) -> FlowDefinition<()> {
    let builder = FlowDefinition::builder("orders")
        .version(2)
        .on_change(policy);
    let builder = quick(builder, "charge", runs);
    let builder = quick(builder, "pack", runs);
    quick(builder, "ship", runs)
        .pipeline(["charge", "pack", "ship"])
        .build()
        .unwrap()
}

/// A first process starts a run of version 1 whose `ship` hangs, then dies.
async fn crashed_run(store: &Arc<dyn Store>) -> Run {
    let first = Runtime::builder()
        .store(store.clone())
        .register(v1(true, &counter()))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("orders").await.unwrap();
    settle().await;
    drop(first);
    settle().await;
    let run = store.get_run(run.run_id()).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    run
}

fn steps(outcome: &troupe::flow::RunOutcome) -> Vec<String> {
    let steps = &outcome.structured_output.as_ref().unwrap()["steps"];
    let mut names: Vec<String> = steps.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn a_changed_definition_refuses_old_runs_and_names_the_change() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let run = crashed_run(&store).await;
    assert_eq!(
        run.fingerprint.as_deref(),
        Some(v1(true, &counter()).fingerprint())
    );
    assert_eq!(run.flow_version, Some(1));

    let runs = counter();
    let second = Runtime::builder()
        .store(store.clone())
        .register(v2(ChangePolicy::Refuse, &runs))
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(second.resumed().is_empty());
    let [failure] = second.resume_failures() else {
        panic!("one refused run: {:?}", second.resume_failures());
    };
    assert_eq!(failure.run.id, run.id);
    let mismatch = failure
        .error
        .definition_mismatch()
        .expect("a definition change");
    assert_eq!(
        (mismatch.recorded_version, mismatch.registered_version),
        (Some(1), Some(2))
    );
    assert_eq!(
        mismatch.changes.as_deref().unwrap(),
        [
            DefinitionChange::StageAdded {
                stage: "pack".into()
            },
            DefinitionChange::EdgeAdded {
                from: "charge".into(),
                to: "pack".into()
            },
            DefinitionChange::EdgeAdded {
                from: "pack".into(),
                to: "ship".into()
            },
            DefinitionChange::EdgeRemoved {
                from: "charge".into(),
                to: "ship".into()
            },
        ]
    );
    let message = failure.error.to_string();
    assert!(message.contains("stage `pack` added"), "{message}");
    assert!(message.contains("recorded v1"), "{message}");
    assert!(matches!(failure.error, ResumeError::DefinitionChanged(_)));
    assert_eq!(
        second.unresumed(),
        std::slice::from_ref(&failure.run),
        "left as it was"
    );
    assert_eq!(get(&runs), 0, "nothing ran");
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Running);

    // Both versions are recorded, each once.
    let recorded = store.list_definitions(Some("orders")).await.unwrap();
    let versions: Vec<_> = recorded.iter().map(|d| d.version).collect();
    assert_eq!(versions, [Some(1), Some(2)]);
    assert_eq!(recorded[1].shape.stages.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_old_version_registered_again_finishes_its_run_while_new_runs_start_on_the_newest() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let run = crashed_run(&store).await;
    let (old_runs, new_runs) = (counter(), counter());
    let second = Runtime::builder()
        .store(store.clone())
        .register(v2(ChangePolicy::Refuse, &new_runs))
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(second.resume_failures().len(), 1);

    // Registering version 1 (its `ship` now ends) resumes the run on it.
    let report = second.register(v1(false, &old_runs)).await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let [resumed] = &report.resumed[..] else {
        panic!("one resumed run");
    };
    assert_eq!(resumed.run_id(), run.id);
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(steps(&outcome), ["charge", "ship"], "finished on version 1");
    assert_eq!(get(&old_runs), 1, "only `ship` ran again");
    assert!(second.unresumed().is_empty());

    // A new run starts on version 2, the newest.
    let fresh = second.start("orders").await.unwrap();
    let outcome = fresh.wait().await.unwrap();
    assert_eq!(steps(&outcome), ["charge", "pack", "ship"]);
    let fresh = store.get_run(fresh.run_id()).await.unwrap().unwrap();
    assert_eq!(fresh.flow_version, Some(2));
    // Registering a version twice is refused.
    assert!(second.register(v1(false, &old_runs)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn both_versions_registered_at_start_resume_the_old_run_on_the_old_one() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let run = crashed_run(&store).await;
    let (old_runs, new_runs) = (counter(), counter());
    let second = Runtime::builder()
        .store(store.clone())
        .register(v2(ChangePolicy::Refuse, &new_runs))
        .unwrap()
        .register(v1(false, &old_runs))
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(second.resume_failures().is_empty());
    let [resumed] = &second.resumed()[..] else {
        panic!("one resumed run");
    };
    assert_eq!(resumed.run_id(), run.id);
    assert_eq!(steps(&resumed.wait().await.unwrap()), ["charge", "ship"]);
    assert_eq!(get(&new_runs), 0);
}

#[tokio::test(start_paused = true)]
async fn a_definition_that_says_so_resumes_old_runs_on_itself() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let run = crashed_run(&store).await;
    let runs = counter();
    let second = Runtime::builder()
        .store(store.clone())
        .register(v2(ChangePolicy::ResumeWithNew, &runs))
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(second.resume_failures().is_empty());
    let [resumed] = &second.resumed()[..] else {
        panic!("one resumed run");
    };
    assert_eq!(resumed.run_id(), run.id);
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(steps(&outcome), ["charge", "pack", "ship"]);
    assert_eq!(
        get(&runs),
        2,
        "`charge` completed before: only `pack` and `ship` ran"
    );
}

#[tokio::test(start_paused = true)]
async fn resume_with_recorded_version_takes_the_version_the_run_recorded() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let run = crashed_run(&store).await;
    // Version 1 changed without a new version number (another stage).
    let (old_runs, new_runs) = (counter(), counter());
    let changed_v1 = quick(
        quick(
            quick(
                FlowDefinition::builder("orders").version(1),
                "charge",
                &old_runs,
            ),
            "ship",
            &old_runs,
        ),
        "notify",
        &old_runs,
    )
    .pipeline(["charge", "ship", "notify"])
    .build()
    .unwrap();
    let second = Runtime::builder()
        .store(store.clone())
        .register(v2(ChangePolicy::ResumeWithRecordedVersion, &new_runs))
        .unwrap()
        .register(changed_v1)
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(second.resume_failures().is_empty());
    let [resumed] = &second.resumed()[..] else {
        panic!("one resumed run");
    };
    assert_eq!(resumed.run_id(), run.id);
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(steps(&outcome), ["charge", "notify", "ship"]);
    assert_eq!(get(&new_runs), 0);
}

#[tokio::test(start_paused = true)]
async fn a_renamed_stage_is_named_as_a_rename() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    crashed_run(&store).await;
    let runs = counter();
    let renamed = quick(
        quick(
            FlowDefinition::builder("orders").version(1),
            "charge",
            &runs,
        ),
        "deliver",
        &runs,
    )
    .pipeline(["charge", "deliver"])
    .build()
    .unwrap();
    let second = Runtime::builder()
        .store(store.clone())
        .register(renamed)
        .unwrap()
        .start()
        .await
        .unwrap();
    let [failure] = second.resume_failures() else {
        panic!("one refused run");
    };
    let mismatch = failure.error.definition_mismatch().unwrap();
    assert_eq!(
        mismatch.changes.as_deref().unwrap(),
        [DefinitionChange::StageRenamed {
            from: "ship".into(),
            to: "deliver".into()
        }]
    );
    assert!(
        failure
            .error
            .to_string()
            .contains("stage `ship` renamed to `deliver`")
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_recorded_before_fingerprints_resumes_as_before() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut legacy = Run::new("orders", "old work", "tests");
    legacy.status = RunStatus::Running;
    store.insert_run(legacy.clone(), None).await.unwrap();
    let runs = counter();
    let runtime = Runtime::builder()
        .store(store.clone())
        .register(v2(ChangePolicy::Refuse, &runs))
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(runtime.resume_failures().is_empty());
    let [resumed] = &runtime.resumed()[..] else {
        panic!("one resumed run");
    };
    assert_eq!(resumed.run_id(), legacy.id);
    assert_eq!(resumed.wait().await.unwrap().status, RunStatus::Finished);
}

/// `nap` of `version`: `rest` sleeps an hour and answers with the version;
/// version 2 adds `extra` after it.
fn nap(version: u32) -> FlowDefinition<()> {
    let builder = FlowDefinition::builder("nap").version(version).step(
        "rest",
        move |ctx: &troupe::stage::StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    ctx.sleep("nap", std::time::Duration::from_secs(3600))
                        .await?;
                    Ok(json!(version))
                }
            })
        },
    );
    if version == 1 {
        return builder.build().unwrap();
    }
    quick(builder, "extra", &counter())
        .edge("rest", "extra")
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hibernated_run_wakes_on_the_version_it_started_on() {
    use std::time::Duration;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = Runtime::builder()
        .store(store.clone())
        .hibernate_after(Duration::ZERO)
        .register(nap(1))
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = first.start("nap").await.unwrap();
    while !run.is_hibernated() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(first);
    settle().await;

    let second = Runtime::builder()
        .store(store.clone())
        .hibernate_after(Duration::ZERO)
        .register(nap(2))
        .unwrap()
        .register(nap(1))
        .unwrap()
        .start()
        .await
        .unwrap();
    let [resumed] = &second.resumed()[..] else {
        panic!("one resumed run: {:?}", second.resume_failures());
    };
    assert!(resumed.is_hibernated(), "asleep at start");
    tokio::time::sleep(Duration::from_secs(3601)).await;
    let outcome = resumed.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(steps(&outcome), ["rest"], "woke on version 1");
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["rest"],
        json!(1)
    );
}
