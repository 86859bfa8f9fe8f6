//! The lifecycle projection (`troupe::projection`) over logs written by
//! real runs: phases, stable ids (across repeats, compaction and an
//! unrelated event inserted earlier), idempotence, refused moves, redaction,
//! and prefix-then-rest equal to the whole (a property test).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use troupe::flow::{DeadLetterPolicy, FlowDefinition, RetryPolicy, RunOptions};
use troupe::projection::{
    Detail, LifecycleId, PhaseKey, PhaseKind, PhaseStatus, Projection, Resolved, RunRecords,
    Snapshot,
};
use troupe::records::{Checkpoint, EventKind, RunEvent, RunStatus, StageCheckpoint};
use troupe::runtime::Runtime;
use troupe::stage::{
    Emitter, PermanentError, Produced, Source, StageContext, Transform, sink_fn, step_fn,
};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;
use uuid::Uuid;

/// What no summary may show: it is in the run's input, a signal's payload,
/// the child's input and output, and the run's output.
const SECRET: &str = "s3cret";

/// `ship`: waits for the signal `release`, then returns its input.
fn ship() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("ship")
        .step("label", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    ctx.wait_signal("release", None).await?;
                    Ok(json!({ "label": ctx.input_json() }))
                }
            })
        })
        .build()
        .unwrap()
}

/// `errand`: sleeps twice (durably), waits for the signal `go`, then runs a
/// `ship` child and waits for it.
fn errand() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("errand")
        .step("errand", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    ctx.sleep("first", Duration::from_secs(10)).await?;
                    ctx.sleep("second", Duration::from_secs(10)).await?;
                    let go = ctx.wait_signal("go", None).await?;
                    let child_input = json!({ "parcel": format!("{SECRET}-child") });
                    let child = ctx.start_child("ship", child_input, "parcel").await?;
                    let shipped = ctx.await_child(&child).await?;
                    Ok(json!({ "go": go, "shipped": shipped, "note": format!("{SECRET}-output") }))
                }
            })
        })
        .build()
        .unwrap()
}

/// Emits 0..5.
struct Numbers(u64);

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.0 == 5 {
            return Ok(Produced::Done);
        }
        out.push(self.0);
        self.0 += 1;
        Ok(Produced::More)
    }
}

/// Passes items on but item 3, which it refuses for good.
struct Check;

impl Transform<u64> for Check {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if x == 3 {
            return Err(PermanentError::new("item 3 is poisoned").into());
        }
        out.push(x);
        Ok(())
    }
}

/// `numbers → check → sink`: `check` refuses item 3 for good (a dead letter).
fn pipeline() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("pipeline")
        .source("numbers", |_| Numbers(0))
        .transform("check", |_| Check)
        .sink("sink", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "check", "sink"])
        .default_retry(RetryPolicy::attempts(1))
        .serde_items()
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()
        .unwrap()
}

/// The records of a finished `errand` run and of a finished `pipeline` run.
struct Journal {
    errand: RunRecords,
    pipeline: RunRecords,
}

async fn make_journal() -> Journal {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = Runtime::builder()
        .store(store.clone())
        .start()
        .await
        .unwrap();
    for flow in [ship(), errand(), pipeline()] {
        runtime.register(flow).await.unwrap();
    }
    let options = RunOptions::new().input(json!({ "card": format!("{SECRET}-input") }));
    let run = runtime.start_with("errand", options).await.unwrap();
    // Each signal is sent once its wait is in the log.
    waits_for(&store, run.run_id(), "signal").await;
    let payload = json!({ "by": format!("{SECRET}-signal") });
    runtime
        .send_signal(run.run_id(), None, "go", payload)
        .await
        .unwrap();
    let child = waits_for(&store, run.run_id(), "child").await["child"].clone();
    let child = child.as_str().unwrap().parse().unwrap();
    waits_for(&store, child, "signal").await;
    runtime
        .send_signal(child, None, "release", Value::Null)
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    let piped = runtime.start("pipeline").await.unwrap();
    assert_eq!(piped.wait().await.unwrap().status, RunStatus::Finished);
    runtime.shutdown().await;
    Journal {
        errand: RunRecords::load(&*store, run.run_id()).await.unwrap(),
        pipeline: RunRecords::load(&*store, piped.run_id()).await.unwrap(),
    }
}

/// Waits until run `id`'s record says its only stage waits for `what`;
/// that stage's wait.
async fn waits_for(store: &Arc<dyn Store>, id: Uuid, what: &str) -> Value {
    loop {
        let record = store.get_run(id).await.unwrap().unwrap();
        let stages = record.wait_json.map(|w| w["stages"].clone());
        let wait = stages.and_then(|s| s.as_object()?.values().next().cloned());
        if let Some(wait) = wait.filter(|w| w["for"] == what) {
            return wait;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One journal for every test of this binary (the property test included).
fn journal() -> &'static Journal {
    static JOURNAL: OnceLock<Journal> = OnceLock::new();
    JOURNAL.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(make_journal())
    })
}

fn projected(events: &[RunEvent]) -> Projection {
    let mut projection = Projection::new(events[0].run_id);
    projection.project(events).unwrap();
    projection
}

fn history(projection: &Projection, kind: PhaseKind, name: &str) -> Vec<PhaseStatus> {
    let key = PhaseKey::new(kind, name);
    let phase = projection
        .phase(&key)
        .unwrap_or_else(|| panic!("no phase {key}"));
    phase.history.iter().map(|s| s.status).collect()
}

fn ids(projection: &Projection) -> Vec<LifecycleId> {
    projection.events().iter().map(|e| e.id).collect()
}

#[test]
fn a_real_runs_log_becomes_guarded_phases_with_causes() {
    use PhaseStatus::*;
    let records = &journal().errand;
    let p = records.project().unwrap();
    assert!(p.refused().is_empty(), "{:?}", p.refused());
    assert!(p.unreadable().is_empty(), "{:?}", p.unreadable());
    let run = history(&p, PhaseKind::Run, "run");
    assert_eq!(
        (run[0], run[1], *run.last().unwrap()),
        (Created, Running, Finished)
    );
    assert_eq!(run.iter().filter(|s| **s == Waiting).count(), 4, "{run:?}");
    assert_eq!(
        history(&p, PhaseKind::Wait, "errand/timer/first"),
        [Waiting, Fired]
    );
    assert_eq!(
        history(&p, PhaseKind::Wait, "errand/timer/second"),
        [Waiting, Fired]
    );
    assert_eq!(
        history(&p, PhaseKind::Wait, "errand/signal/go"),
        [Waiting, Answered]
    );
    let child = p
        .phases()
        .find(|ph| ph.key.kind == PhaseKind::Child)
        .unwrap();
    assert_eq!(child.status, Finished);
    let child_wait = format!("errand/child/{}", child.key.name);
    assert_eq!(
        history(&p, PhaseKind::Wait, &child_wait),
        [Waiting, Resolved]
    );
    let stage = history(&p, PhaseKind::Stage, "errand");
    assert_eq!(stage.first(), Some(&Waiting));
    assert_eq!(stage.last(), Some(&Completed));
    // Every status names the journal event that caused it.
    for phase in p.phases() {
        for step in &phase.history {
            let cause = &records.events[step.caused_by.seq as usize - 1];
            assert_eq!(cause.event_id, step.caused_by.event_id);
        }
        assert!(phase.is_ended(), "{} ended with its run", phase.key);
    }
}

#[test]
fn repeated_records_get_distinct_occurrence_ids() {
    let p = journal().errand.project().unwrap();
    let waiting: Vec<_> = p
        .events()
        .iter()
        .filter(|e| e.record.phase() == Some((&PhaseKey::run(), PhaseStatus::Waiting)))
        .collect();
    let occurrences: Vec<u32> = waiting.iter().map(|e| e.occurrence).collect();
    assert_eq!(occurrences, [1, 2, 3, 4]);
    let distinct: BTreeSet<LifecycleId> = p.events().iter().map(|e| e.id).collect();
    assert_eq!(distinct.len(), p.events().len());
}

#[test]
fn projecting_again_adds_nothing_and_a_restarted_projector_resumes() {
    let events = &journal().errand.events;
    let whole = projected(events);
    let mut again = whole.clone();
    assert_eq!(again.project(events).unwrap(), 0);
    assert_eq!(again, whole);
    for cut in 1..events.len() {
        let stopped = projected(&events[..cut]);
        // What a projector kept when it stopped, read back after a restart.
        let saved = serde_json::to_vec(&stopped).unwrap();
        let mut restarted: Projection = serde_json::from_slice(&saved).unwrap();
        restarted.project(events).unwrap();
        assert_eq!(restarted, whole, "restarted after {cut} events");
    }
}

#[test]
fn ids_are_stable_across_compaction_and_an_unrelated_event_inserted_earlier() {
    let events = &journal().errand.events;
    let whole = projected(events);

    // Compacted part-way, then fed the rest: later ids are unchanged and
    // every earlier id still resolves.
    let mut compacted = projected(&events[..events.len() / 2]);
    let span = compacted.compact(1).unwrap().clone();
    compacted.project(events).unwrap();
    assert_eq!(ids(&compacted), ids(&whole)[span.events..]);
    for event in whole.events() {
        match compacted.resolve(event.id) {
            Some(Resolved::Compacted(s)) => assert_eq!(s, &span),
            Some(Resolved::Live(live)) => assert_eq!(live, event),
            None => panic!("{} does not resolve", event.id),
        }
    }

    // An operator's input accepted early, as the store would number it.
    let inserted = EventKind::custom(
        "signal",
        json!({ "name": "audit", "payload": 1, "id": Uuid::now_v7().to_string(), "stage": null }),
    );
    let mut moved = events.clone();
    let mut extra = events[2].clone();
    extra.kind = inserted;
    moved.insert(2, extra);
    for (i, event) in moved.iter_mut().enumerate() {
        event.seq = i as u64 + 1;
        event.event_id = format!("#{}", event.seq);
    }
    let shifted = projected(&moved);
    let before: BTreeSet<LifecycleId> = ids(&whole).into_iter().collect();
    let after: BTreeSet<LifecycleId> = ids(&shifted).into_iter().collect();
    assert!(before.is_subset(&after));
    assert_eq!(after.len(), before.len() + 1);
}

#[test]
fn a_refused_phase_transition_is_reported_and_not_recorded() {
    // The finished pipeline run, then a `started` audit in its log (as a
    // confused tool might append it).
    let records = &journal().pipeline;
    let mut log = records.events.clone();
    let mut stray = log.last().unwrap().clone();
    stray.seq += 1;
    stray.event_id = format!("#{}", stray.seq);
    stray.kind = EventKind::custom("started", Value::Null);
    log.push(stray);
    let clean = projected(&records.events);
    let p = projected(&log);
    assert_eq!(
        p.events(),
        clean.events(),
        "the refused move is not recorded"
    );
    assert_eq!(
        p.phase(&PhaseKey::run()).unwrap().status,
        PhaseStatus::Finished
    );
    let refused = p.refused();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].phase, PhaseKey::run());
    assert_eq!(
        (refused[0].from, refused[0].to),
        (Some(PhaseStatus::Finished), PhaseStatus::Running)
    );
    assert_eq!(refused[0].caused_by.seq, log.len() as u64);
    let snapshot = Snapshot::new(&p, records, Detail::Summary);
    assert_eq!(snapshot.refused, refused);
}

#[test]
fn a_summary_snapshot_shows_counts_and_no_payload_and_full_detail_shows_them() {
    let j = journal();
    let errand = j.errand.project().unwrap();
    let summary = Snapshot::new(&errand, &j.errand, Detail::Summary);
    let text = serde_json::to_string(&summary).unwrap();
    let read_back: Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(read_back, summary, "a UI can read a snapshot back");
    assert!(!text.contains(SECRET), "{text}");
    // Which definition the phases are of: the one the run started with.
    let definition = self::errand();
    assert_eq!(
        summary.summary.fingerprint.as_deref(),
        Some(definition.fingerprint())
    );
    assert_eq!(summary.summary.flow_version, definition.version());
    // The log itself holds them: the summary left them out.
    assert!(
        serde_json::to_string(&j.errand.events)
            .unwrap()
            .contains(&format!("{SECRET}-signal"))
    );
    assert_eq!(
        summary.summary.children.get(&PhaseStatus::Finished),
        Some(&1)
    );
    assert_eq!(summary.summary.waits.values().sum::<u64>(), 4);
    let full = serde_json::to_string(&Snapshot::new(&errand, &j.errand, Detail::Full)).unwrap();
    for part in ["input", "output"] {
        assert!(
            full.contains(&format!("{SECRET}-{part}")),
            "{part} in {full}"
        );
    }

    // The runtime takes no checkpoints yet (nor does a store, for an ended
    // run): the records get one as a stream's run will have, with a state
    // that holds user data.
    let mut records = j.pipeline.clone();
    let stage = |state| StageCheckpoint {
        finished: false,
        state,
        items_in: 2,
        items_out: 1,
    };
    let stages = BTreeMap::from([
        (
            "check".to_owned(),
            stage(Some(json!({ "seen": format!("{SECRET}-state") }))),
        ),
        ("sink".to_owned(), stage(None)),
    ]);
    records.checkpoint = Some(Checkpoint::new(records.run.id, 1, stages));
    let pipeline = records.project().unwrap();
    let snapshot = Snapshot::new(&pipeline, &records, Detail::Summary);
    let stages = &snapshot.summary.stages;
    assert_eq!(snapshot.summary.dead_letters, 1);
    assert_eq!(stages["check"].dead_letters, 1);
    assert_eq!(
        (stages["numbers"].items_out, stages["sink"].items_in),
        (Some(5), Some(4))
    );
    for stage in ["numbers", "check", "sink"] {
        assert_eq!(
            stages[stage].status,
            Some(PhaseStatus::Completed),
            "{stage}"
        );
    }
    let checkpoint = snapshot.summary.checkpoint.as_ref().unwrap();
    assert_eq!(checkpoint.id, 1);
    assert!(checkpoint.stages["check"].keeps_state && !checkpoint.stages["sink"].keeps_state);
    assert_eq!(checkpoint.stages["check"].items_in, 2);
    assert!(snapshot.summary.full.is_none());
    let text = serde_json::to_string(&snapshot).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let full = Snapshot::new(&pipeline, &records, Detail::Full)
        .summary
        .full
        .unwrap();
    assert_eq!(full.dead_letters[0].item, json!(3));
    let state = &full.checkpoint.unwrap().stages["check"].state;
    assert_eq!(state, &Some(json!({ "seen": format!("{SECRET}-state") })));
}

/// A log of the shapes the runtime writes, in any order the generator
/// picks (so refused moves are exercised too).
fn arbitrary_log() -> impl Strategy<Value = Vec<RunEvent>> {
    let run = Uuid::from_u128(42);
    let kind = (0usize..9, 0usize..2, 0usize..2).prop_map(|(what, stage, name)| {
        let (stage, name) = (["a", "b"][stage], ["x", "y"][name]);
        let child = Uuid::from_u128(100 + name.len() as u128 + stage.len() as u128);
        let timer =
            json!({ "for": "stages", "stages": { stage: { "for": "timer", "timer": name } } });
        match what {
            0 => EventKind::custom("created", Value::Null),
            1 => EventKind::custom("started", Value::Null),
            2 => EventKind::custom("waiting", json!({ "wait": timer })),
            3 => EventKind::custom("resumed", Value::Null),
            4 => EventKind::custom("timer_fired", json!({ "stage": stage, "timer": name })),
            5 => EventKind::custom("child_started", json!({ "stage": stage, "child": child })),
            6 => EventKind::custom(
                "child_ended",
                json!({ "stage": stage, "child": child, "terminal": { "status": "finished" } }),
            ),
            7 => EventKind::custom("recovered", Value::Null),
            _ => EventKind::Terminal(troupe::records::TerminalEvent::RunCompleted {
                structured_output: Some(json!({ "steps": { stage: null } })),
            }),
        }
    });
    prop::collection::vec(kind, 1..40).prop_map(move |kinds| {
        let first = &journal().errand.events[0];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| RunEvent {
                run_id: run,
                seq: i as u64 + 1,
                event_id: format!("#{}", i + 1),
                kind,
                ..first.clone()
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn any_prefix_then_the_rest_equals_the_whole(
        real in any::<bool>(),
        generated in arbitrary_log(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let events = if real { journal().errand.events.clone() } else { generated };
        let whole = projected(&events);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        cuts.sort();
        // The log in consecutive pieces: a prefix, then the rest.
        let mut pieces = Projection::new(events[0].run_id);
        let mut from = 0;
        for cut in cuts {
            pieces.project(&events[from..cut]).unwrap();
            from = cut;
        }
        pieces.project(&events[from..]).unwrap();
        prop_assert_eq!(pieces, whole);
    }
}
