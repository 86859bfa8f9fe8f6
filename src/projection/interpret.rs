//! What each journal event means for the lifecycle: the phase moves and
//! notes it asks for, given the phases as they stand. The guard is not
//! consulted here; the projector applies it to every move asked for.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

use super::event::Note;
use super::phase::{PhaseKey, PhaseKind, PhaseState, PhaseStatus};
use crate::records::{EventKind, RunEvent, TerminalEvent};

/// One thing a journal event asks of the lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Intent {
    /// Move a phase (create it if it does not exist).
    Move(PhaseKey, PhaseStatus),
    /// Record a note.
    Note(Note),
}

/// A known event whose payload lacks what the projection reads: which field.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MissingField(pub(super) &'static str);

type Phases = BTreeMap<PhaseKey, PhaseState>;

/// The intents of `event`. Events the lifecycle does not follow (state
/// updates, user events, the `finished`/`failed`/`cancelled` audits whose
/// outcome event follows in the same write) ask nothing.
pub(super) fn interpret(event: &RunEvent, phases: &Phases) -> Result<Vec<Intent>, MissingField> {
    let (name, payload) = match &event.kind {
        EventKind::Terminal(outcome) => return Ok(ended(outcome, phases)),
        EventKind::Custom { name, payload } => (name.as_str(), payload),
    };
    let run = |status| vec![Intent::Move(PhaseKey::run(), status)];
    Ok(match name {
        "created" => run(PhaseStatus::Created),
        "started" => run(PhaseStatus::Running),
        "waiting" => {
            let mut intents = run(PhaseStatus::Waiting);
            intents.extend(stage_waits(payload.get("wait"), phases));
            intents
        }
        "resumed" => {
            let mut intents = stages_in(phases, PhaseStatus::Waiting, PhaseStatus::Running);
            intents.extend(run(PhaseStatus::Running));
            intents
        }
        "recovered" => vec![Intent::Note(Note::Recovered)],
        "cancel_requested" => vec![Intent::Note(Note::CancelRequested)],
        "signal" => vec![Intent::Note(Note::SignalAccepted {
            id: uuid_field(payload, "id")?,
            name: str_field(payload, "name")?.to_owned(),
            stage: payload
                .get("stage")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })],
        "event_accepted" => vec![Intent::Note(Note::EventAccepted {
            id: uuid_field(payload, "id")?,
            stage: str_field(payload, "stage")?.to_owned(),
        })],
        "items_replayed" => vec![Intent::Note(Note::ItemsReplayed {
            stage: str_field(payload, "stage")?.to_owned(),
            items: payload
                .get("items")
                .and_then(Value::as_u64)
                .ok_or(MissingField("items"))?,
        })],
        "child_started" => {
            let stage = str_field(payload, "stage")?;
            let child = uuid_field(payload, "child")?;
            let mut intents = first_seen(stage, phases);
            intents.push(Intent::Move(child_key(child), PhaseStatus::Running));
            intents
        }
        "child_ended" => {
            let stage = str_field(payload, "stage")?;
            let child = uuid_field(payload, "child")?;
            let status = match payload.pointer("/terminal/status").and_then(Value::as_str) {
                Some("finished") => PhaseStatus::Finished,
                Some("failed") => PhaseStatus::Failed,
                Some("cancelled") => PhaseStatus::Cancelled,
                _ => return Err(MissingField("terminal.status")),
            };
            let mut intents = vec![Intent::Move(child_key(child), status)];
            let wait = wait_key(stage, "child", &child.to_string());
            intents.extend(resolve(wait, PhaseStatus::Resolved, phases));
            intents
        }
        "timer_fired" => {
            let wait = wait_key(
                str_field(payload, "stage")?,
                "timer",
                str_field(payload, "timer")?,
            );
            resolve(wait, PhaseStatus::Fired, phases)
        }
        "signal_taken" => {
            let wait = wait_key(
                str_field(payload, "stage")?,
                "signal",
                str_field(payload, "signal")?,
            );
            let answered = payload.get("answer").is_some_and(|a| !a.is_null());
            let status = if answered {
                PhaseStatus::Answered
            } else {
                PhaseStatus::TimedOut
            };
            resolve(wait, status, phases)
        }
        _ => Vec::new(),
    })
}

/// The outcome: stages and waits close, then the run ends.
fn ended(outcome: &TerminalEvent, phases: &Phases) -> Vec<Intent> {
    let mut intents = Vec::new();
    let run_status = match outcome {
        TerminalEvent::RunCompleted { structured_output } => {
            // A flow's is `{"steps": {stage: output}, "abandoned": {stage: ..}}`;
            // a managed run's is its state, which names no stage.
            let output = structured_output.as_ref();
            let abandoned = output
                .and_then(|o| o.get("abandoned"))
                .and_then(Value::as_object);
            let steps = output
                .and_then(|o| o.get("steps"))
                .and_then(Value::as_object);
            let mut closing: BTreeMap<&str, PhaseStatus> = BTreeMap::new();
            for stage in steps.into_iter().flat_map(|s| s.keys()) {
                closing.insert(stage, PhaseStatus::Completed);
            }
            for stage in abandoned.into_iter().flat_map(|a| a.keys()) {
                closing.insert(stage, PhaseStatus::Abandoned);
            }
            for (stage, status) in &closing {
                let key = PhaseKey::new(PhaseKind::Stage, *stage);
                if phases.get(&key).is_none_or(|p| !p.is_ended()) {
                    intents.push(Intent::Move(key, *status));
                }
            }
            let open = |key: &PhaseKey| !closing.contains_key(key.name.as_str());
            intents.extend(open_stages(phases, PhaseStatus::Completed, open));
            PhaseStatus::Finished
        }
        TerminalEvent::RunFailed { .. } => {
            intents.extend(open_stages(phases, PhaseStatus::Stopped, |_| true));
            PhaseStatus::Failed
        }
        TerminalEvent::RunCancelled => {
            intents.extend(open_stages(phases, PhaseStatus::Stopped, |_| true));
            PhaseStatus::Cancelled
        }
        TerminalEvent::RunContinuedAsNew { .. } => {
            intents.extend(open_stages(phases, PhaseStatus::Stopped, |_| true));
            PhaseStatus::ContinuedAsNew
        }
    };
    for (key, phase) in phases {
        if key.kind == PhaseKind::Wait && !phase.is_ended() {
            intents.push(Intent::Move(key.clone(), PhaseStatus::Abandoned));
        }
    }
    intents.push(Intent::Move(PhaseKey::run(), run_status));
    intents
}

/// Moves every stage not ended that `pick` picks to `to`.
fn open_stages(phases: &Phases, to: PhaseStatus, pick: impl Fn(&PhaseKey) -> bool) -> Vec<Intent> {
    phases
        .iter()
        .filter(|(key, phase)| key.kind == PhaseKind::Stage && !phase.is_ended() && pick(key))
        .map(|(key, _)| Intent::Move(key.clone(), to))
        .collect()
}

/// Moves every stage in status `from` to `to`.
fn stages_in(phases: &Phases, from: PhaseStatus, to: PhaseStatus) -> Vec<Intent> {
    open_stages(phases, to, |key| phases[key].status == from)
}

/// The stage and wait moves of a `waiting` audit whose wait is
/// `{"for": "stages", "stages": {stage: wait}}`: listed stages wait (and
/// their waits are armed), stages no longer listed run again. Any other
/// wait (an operator's pause) leaves the stages as they are.
fn stage_waits(wait: Option<&Value>, phases: &Phases) -> Vec<Intent> {
    let Some(wait) = wait.filter(|w| w.get("for").and_then(Value::as_str) == Some("stages")) else {
        return Vec::new();
    };
    let listed = wait.get("stages").and_then(Value::as_object);
    let listed = listed.into_iter().flatten();
    let mut intents = Vec::new();
    let mut waiting = Vec::new();
    for (stage, what) in listed {
        waiting.push(stage.as_str());
        let key = PhaseKey::new(PhaseKind::Stage, stage.as_str());
        if phases
            .get(&key)
            .is_none_or(|p| p.status != PhaseStatus::Waiting)
        {
            intents.push(Intent::Move(key, PhaseStatus::Waiting));
        }
        let kind = what.get("for").and_then(Value::as_str).unwrap_or("other");
        let name = match what.get(kind) {
            Some(Value::String(name)) => name.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let wait = wait_key(stage, kind, &name);
        if !phases.contains_key(&wait) {
            intents.push(Intent::Move(wait, PhaseStatus::Waiting));
        }
    }
    let left = |key: &PhaseKey| {
        phases[key].status == PhaseStatus::Waiting && !waiting.contains(&key.name.as_str())
    };
    intents.extend(open_stages(phases, PhaseStatus::Running, left));
    intents
}

/// A stage seen for the first time starts running.
fn first_seen(stage: &str, phases: &Phases) -> Vec<Intent> {
    let key = PhaseKey::new(PhaseKind::Stage, stage);
    if phases.contains_key(&key) {
        return Vec::new();
    }
    vec![Intent::Move(key, PhaseStatus::Running)]
}

/// Resolves wait `wait` if it was armed: a stage whose wait was over
/// before the run's record said it waited (a signal already in the inbox,
/// a deadline passed) did not wait.
fn resolve(wait: PhaseKey, to: PhaseStatus, phases: &Phases) -> Vec<Intent> {
    if phases.contains_key(&wait) {
        vec![Intent::Move(wait, to)]
    } else {
        Vec::new()
    }
}

/// The phase of a stage's wait: `{stage}/{kind}/{name}`.
pub(super) fn wait_key(stage: &str, kind: &str, name: &str) -> PhaseKey {
    PhaseKey::new(PhaseKind::Wait, format!("{stage}/{kind}/{name}"))
}

fn child_key(child: Uuid) -> PhaseKey {
    PhaseKey::new(PhaseKind::Child, child.to_string())
}

fn str_field<'a>(payload: &'a Value, field: &'static str) -> Result<&'a str, MissingField> {
    payload
        .get(field)
        .and_then(Value::as_str)
        .ok_or(MissingField(field))
}

fn uuid_field(payload: &Value, field: &'static str) -> Result<Uuid, MissingField> {
    str_field(payload, field)?
        .parse()
        .map_err(|_| MissingField(field))
}
