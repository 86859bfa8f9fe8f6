//! Unit tests over logs written by hand in the shapes the runtime writes
//! (see `flow/record.rs`, `runs/lifecycle.rs`, `stage/{timer,signal_wait,child}.rs`).

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::records::{Cursor, EventKind, RunEvent, TerminalEvent};

const RUN: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
const CHILD: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0002);

fn event(seq: u64, kind: EventKind) -> RunEvent {
    RunEvent {
        cursor: Cursor(100 + seq),
        run_id: RUN,
        seq,
        event_id: format!("#{seq}"),
        kind,
        at: Utc.timestamp_opt(1_800_000_000 + seq as i64, 0).unwrap(),
    }
}

fn custom(name: &str, payload: Value) -> EventKind {
    EventKind::custom(name, payload)
}

/// A flow run: `wait` sleeps on a durable timer, then starts a child and
/// waits for it; `sink` never waits; the run completes.
fn flow_log() -> Vec<RunEvent> {
    let timer = json!({"for": "stages", "stages": {"wait": {"for": "timer", "timer": "nap"}}});
    let child = json!({"for": "stages", "stages": {"wait": {"for": "child", "child": CHILD}}});
    let kinds = vec![
        custom("created", json!({"status": "created"})),
        custom("started", json!({"status": "running"})),
        custom("waiting", json!({"wait": timer, "status": "waiting"})),
        custom("timer_fired", json!({"stage": "wait", "timer": "nap"})),
        custom("resumed", json!({"status": "running"})),
        custom(
            "child_started",
            json!({"stage": "wait", "key": "k", "child": CHILD, "flow": "f"}),
        ),
        custom("waiting", json!({"wait": child, "status": "waiting"})),
        custom(
            "child_ended",
            json!({"stage": "wait", "child": CHILD, "flow": "f", "terminal": {"status": "finished", "output": {"secret": 1}}}),
        ),
        custom("resumed", json!({"status": "running"})),
        custom("finished", json!({"status": "finished"})),
        EventKind::Terminal(TerminalEvent::RunCompleted {
            structured_output: Some(json!({"steps": {"wait": null, "sink": {"items_in": 2}}})),
        }),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| event(i as u64 + 1, kind))
        .collect()
}

fn projected(log: &[RunEvent]) -> Projection {
    let mut projection = Projection::new(RUN);
    projection.project(log).unwrap();
    projection
}

fn status(projection: &Projection, kind: PhaseKind, name: &str) -> Option<PhaseStatus> {
    projection
        .phase(&PhaseKey::new(kind, name))
        .map(|p| p.status)
}

fn history(projection: &Projection, kind: PhaseKind, name: &str) -> Vec<PhaseStatus> {
    let phase = projection.phase(&PhaseKey::new(kind, name)).unwrap();
    phase.history.iter().map(|s| s.status).collect()
}

#[test]
fn a_flow_runs_log_becomes_its_phases() {
    use PhaseStatus::*;
    let p = projected(&flow_log());
    assert_eq!(
        history(&p, PhaseKind::Run, "run"),
        [
            Created, Running, Waiting, Running, Waiting, Running, Finished
        ]
    );
    assert_eq!(
        history(&p, PhaseKind::Stage, "wait"),
        [Waiting, Running, Waiting, Running, Completed]
    );
    assert_eq!(history(&p, PhaseKind::Stage, "sink"), [Completed]);
    assert_eq!(
        history(&p, PhaseKind::Wait, "wait/timer/nap"),
        [Waiting, Fired]
    );
    let child_wait = format!("wait/child/{CHILD}");
    assert_eq!(
        history(&p, PhaseKind::Wait, &child_wait),
        [Waiting, Resolved]
    );
    assert_eq!(
        status(&p, PhaseKind::Child, &CHILD.to_string()),
        Some(Finished)
    );
    assert!(p.refused().is_empty(), "{:?}", p.refused());
    assert!(p.unreadable().is_empty());
    assert_eq!(p.through_seq(), 11);
    // Each status names the journal event that caused it.
    let fired = &p
        .phase(&PhaseKey::new(PhaseKind::Wait, "wait/timer/nap"))
        .unwrap()
        .history[1];
    assert_eq!(
        (fired.caused_by.seq, fired.caused_by.event_id.as_str()),
        (4, "#4")
    );
}

#[test]
fn repeated_records_get_occurrence_numbers_and_distinct_ids() {
    let p = projected(&flow_log());
    let running: Vec<&LifecycleEvent> = p
        .events()
        .iter()
        .filter(|e| e.record.phase() == Some((&PhaseKey::run(), PhaseStatus::Running)))
        .collect();
    let occurrences: Vec<u32> = running.iter().map(|e| e.occurrence).collect();
    assert_eq!(occurrences, [1, 2, 3]);
    let mut ids: Vec<LifecycleId> = p.events().iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        p.events().len(),
        "every lifecycle id is distinct"
    );
}

#[test]
fn the_same_log_twice_adds_nothing_and_a_saved_projection_resumes() {
    let log = flow_log();
    let whole = projected(&log);
    let mut again = whole.clone();
    assert_eq!(again.project(&log).unwrap(), 0);
    assert_eq!(again.apply(&log[3]).unwrap(), Applied::AlreadyProjected);
    assert_eq!(again, whole);

    let mut first = projected(&log[..5]);
    let saved = serde_json::to_string(&first).unwrap();
    first = serde_json::from_str(&saved).unwrap();
    first.project(&log).unwrap();
    assert_eq!(first, whole);
}

#[test]
fn moves_the_guard_refuses_are_reported_not_recorded() {
    let mut log = flow_log();
    // After the outcome the run cannot run again; a child cannot end
    // without having started.
    log.push(event(12, custom("resumed", json!({"status": "running"}))));
    let stranger = Uuid::from_u128(99);
    let ended =
        json!({"stage": "s", "child": stranger, "terminal": {"status": "failed", "reason": "x"}});
    log.push(event(13, custom("child_ended", ended)));
    let whole = projected(&flow_log());
    let p = projected(&log);
    assert_eq!(p.events(), whole.events(), "nothing recorded");
    assert_eq!(p.phases().count(), whole.phases().count());
    let refused = p.refused();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].phase, PhaseKey::run());
    assert_eq!(refused[0].from, Some(PhaseStatus::Finished));
    assert_eq!(refused[0].to, PhaseStatus::Running);
    assert!(refused[0].allowed.is_empty());
    assert_eq!(refused[0].caused_by.seq, 12);
    assert_eq!(
        refused[1].phase,
        PhaseKey::new(PhaseKind::Child, stranger.to_string())
    );
    assert_eq!(
        (refused[1].from, refused[1].to),
        (None, PhaseStatus::Failed)
    );
    assert_eq!(refused[1].allowed, [PhaseStatus::Running]);
}

#[test]
fn an_event_missing_what_the_projection_reads_is_reported() {
    let mut log = flow_log()[..2].to_vec();
    log.push(event(3, custom("child_started", json!({"stage": "s"}))));
    let p = projected(&log);
    assert_eq!(p.unreadable().len(), 1);
    assert_eq!(p.unreadable()[0].kind, "child_started");
    assert_eq!(p.unreadable()[0].field, "child");
    assert_eq!(p.through_seq(), 3);
    assert_eq!(p.events().len(), 2);
}

#[test]
fn another_runs_event_is_an_error() {
    let mut stranger = flow_log()[0].clone();
    stranger.run_id = CHILD;
    let error = Projection::new(RUN).apply(&stranger).unwrap_err();
    assert!(matches!(error, ProjectionError::WrongRun { found, .. } if found == CHILD));
}

#[test]
fn compaction_keeps_ids_resolvable_and_later_ids_unchanged() {
    let log = flow_log();
    let whole = projected(&log);
    let mut p = projected(&log[..6]);
    let before: Vec<LifecycleEvent> = p.events().to_vec();
    let span = p.compact(2).unwrap().clone();
    assert_eq!(span.events, before.len() - 2);
    assert_eq!(p.events(), &before[before.len() - 2..]);
    for event in &before[..before.len() - 2] {
        assert_eq!(p.resolve(event.id), Some(Resolved::Compacted(&span)));
    }
    let last = before.last().unwrap();
    assert_eq!(p.resolve(last.id), Some(Resolved::Live(last)));
    assert_eq!(p.compact(2), None, "nothing more to fold");
    p.project(&log).unwrap();
    let ids: Vec<LifecycleId> = p.events().iter().map(|e| e.id).collect();
    let tail: Vec<LifecycleId> = whole.events()[span.events..].iter().map(|e| e.id).collect();
    assert_eq!(ids, tail);
    assert_eq!(
        p.compacted_events() + p.events().len(),
        whole.events().len()
    );
}

#[test]
fn a_failed_run_stops_its_open_stages_and_abandons_its_waits() {
    use PhaseStatus::*;
    let mut log = flow_log()[..3].to_vec();
    log.push(event(
        4,
        EventKind::Terminal(TerminalEvent::RunFailed {
            reason: "boom".into(),
        }),
    ));
    let p = projected(&log);
    assert_eq!(status(&p, PhaseKind::Run, "run"), Some(Failed));
    assert_eq!(status(&p, PhaseKind::Stage, "wait"), Some(Stopped));
    assert_eq!(
        status(&p, PhaseKind::Wait, "wait/timer/nap"),
        Some(Abandoned)
    );
}

#[test]
fn notes_name_operator_input_without_its_payload() {
    let inbox = Uuid::from_u128(5);
    let mut log = flow_log()[..2].to_vec();
    let signal =
        json!({"name": "gain", "payload": {"secret": 42}, "id": inbox.to_string(), "stage": null});
    log.push(event(3, custom("signal", signal)));
    log.push(event(
        4,
        custom("cancel_requested", json!({"status": "running"})),
    ));
    let p = projected(&log);
    let notes: Vec<&LifecycleRecord> = p.events()[2..].iter().map(|e| &e.record).collect();
    let accepted = Note::SignalAccepted {
        id: inbox,
        name: "gain".into(),
        stage: None,
    };
    assert_eq!(
        notes,
        [
            &LifecycleRecord::Note { note: accepted },
            &LifecycleRecord::Note {
                note: Note::CancelRequested
            }
        ]
    );
    assert!(!serde_json::to_string(&p).unwrap().contains("secret"));
}

#[test]
fn compacting_twice_keeps_both_spans_resolvable() {
    let log = flow_log();
    let mut p = projected(&log);
    let all: Vec<LifecycleId> = p.events().iter().map(|e| e.id).collect();
    let first = p.compact(all.len() - 2).unwrap().clone();
    let second = p.compact(1).unwrap().clone();
    assert_ne!(first.id, second.id);
    assert_eq!(p.compacted(), [first.clone(), second.clone()]);
    assert_eq!(p.resolve(all[0]), Some(Resolved::Compacted(&first)));
    assert_eq!(p.resolve(all[3]), Some(Resolved::Compacted(&second)));
    let last = p.events()[0].clone();
    assert_eq!(last.id, all[all.len() - 1]);
    assert_eq!(p.resolve(last.id), Some(Resolved::Live(&last)));
    assert_eq!(p.resolve(LifecycleId(Uuid::nil())), None);
    assert_eq!(p.compacted_events(), all.len() - 1);
}
