//! [`Sleep`]: what a run whose stages all wait durably waits for, as the
//! runtime needs it to hibernate the run: its earliest deadline and the
//! child runs it awaits. The flow works it out from its stages' waits and
//! journals it in the run's `wait_json` (`"wake"`), so that a runtime
//! starting over the journal can hibernate the run without starting it.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::context::FlowCtx;
use crate::records::Run;
use crate::stage::StageKind;

/// What a hibernated run waits for besides a message to it (a signal, a
/// cancel, an operator's input).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sleep {
    /// The run's flow.
    pub(crate) flow: String,
    /// Its earliest timer deadline (a `sleep`, or a signal wait's timeout).
    pub(crate) deadline: Option<DateTime<Utc>>,
    /// The child runs it awaits.
    pub(crate) children: Vec<Uuid>,
    /// The fingerprint and version of the definition the run recorded, so
    /// that it wakes on the definition it resumed on (from the run record).
    pub(crate) fingerprint: Option<String>,
    pub(crate) version: Option<u32>,
}

impl Sleep {
    /// As the run's `wait_json` keeps it (under `"wake"`).
    pub(crate) fn to_json(&self) -> Value {
        json!({ "deadline": self.deadline, "children": self.children })
    }

    /// What `run` sleeps for, if its record says it waits for its stages
    /// and holds what they wait for (`"wake"`).
    pub(crate) fn of(run: &Run) -> Option<Sleep> {
        let wake = run.wait_json.as_ref()?.get("wake")?;
        Some(Sleep {
            flow: run.controller_id.clone(),
            deadline: serde_json::from_value(wake.get("deadline")?.clone()).ok()?,
            children: serde_json::from_value(wake.get("children")?.clone()).ok()?,
            fingerprint: run.fingerprint.clone(),
            version: run.flow_version,
        })
    }
}

impl FlowCtx {
    /// What the run would sleep for if it hibernated now, going by its
    /// stages only; `None` while it may not: a stage works, restarts, is
    /// not a step (a source, transform or sink holds items in its pipes,
    /// which its actor's end would lose), was handed the signal it waits
    /// for, or waits for something hibernation cannot wake it for.
    pub(crate) fn sleep_plan(&self) -> Option<Sleep> {
        let mut sleep = Sleep {
            flow: self.run.controller_id.clone(),
            fingerprint: self.run.fingerprint.clone(),
            version: self.run.flow_version,
            ..Sleep::default()
        };
        let mut waiting = false;
        for stage in &self.stages {
            if stage.done() {
                continue;
            }
            if stage.actor.is_none() {
                // Never started (its upstream steps wait): nothing to stop.
                // Started and down: a restart is due.
                if stage.generation == 0 {
                    continue;
                }
                return None;
            }
            if stage.kind != StageKind::Step {
                return None;
            }
            for wait in self.waits.get(&stage.name)?.values() {
                // Handed the signal it waits for: it is taking it (its
                // wait's end is on its way), not waiting.
                let signal = wait.get("signal").and_then(Value::as_str);
                if signal.is_some_and(|name| stage.keeps_signal(name)) {
                    return None;
                }
                add_wait(&mut sleep, wait)?;
            }
            waiting = true;
        }
        waiting.then_some(sleep)
    }
}

/// Adds one stage wait (as `waits.rs` records it) to `sleep`; `None` for a
/// wait hibernation cannot wake.
fn add_wait(sleep: &mut Sleep, wait: &Value) -> Option<()> {
    let deadline = || -> Option<Option<DateTime<Utc>>> {
        match wait.get("deadline") {
            None | Some(Value::Null) => Some(None),
            Some(at) => serde_json::from_value(at.clone()).ok().map(Some),
        }
    };
    match wait.get("for")?.as_str()? {
        "timer" => {
            let at = deadline()??;
            sleep.deadline = Some(sleep.deadline.map_or(at, |d| d.min(at)));
        }
        "signal" => {
            if let Some(at) = deadline()? {
                sleep.deadline = Some(sleep.deadline.map_or(at, |d| d.min(at)));
            }
        }
        "child" => {
            let child: Uuid = serde_json::from_value(wait.get("child")?.clone()).ok()?;
            sleep.children.push(child);
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_and_every_child_are_kept() {
        let mut sleep = Sleep::default();
        let child = Uuid::now_v7();
        let early: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let late: DateTime<Utc> = "2031-01-01T00:00:00Z".parse().unwrap();
        let waits = [
            json!({ "for": "timer", "timer": "t", "deadline": late }),
            json!({ "for": "signal", "signal": "s", "deadline": null }),
            json!({ "for": "signal", "signal": "s", "deadline": early }),
            json!({ "for": "child", "child": child }),
        ];
        for wait in &waits {
            assert_eq!(add_wait(&mut sleep, wait), Some(()));
        }
        assert_eq!(sleep.deadline, Some(early));
        assert_eq!(sleep.children, [child]);
    }

    #[test]
    fn an_unknown_or_broken_wait_keeps_the_run_awake() {
        let mut sleep = Sleep::default();
        assert_eq!(add_wait(&mut sleep, &json!({ "for": "resume" })), None);
        assert_eq!(add_wait(&mut sleep, &json!({ "for": "timer" })), None);
        let bad = json!({ "for": "timer", "deadline": "yesterday" });
        assert_eq!(add_wait(&mut sleep, &bad), None);
        assert_eq!(
            add_wait(&mut sleep, &json!({ "for": "child", "child": 3 })),
            None
        );
    }

    #[test]
    fn a_sleep_reads_back_from_the_record_it_was_journaled_in() {
        let mut run = Run::new("nap", "goal", "tests");
        assert_eq!(Sleep::of(&run), None, "no wait_json");
        let sleep = Sleep {
            flow: "nap".into(),
            deadline: Some("2030-01-01T00:00:00Z".parse().unwrap()),
            children: vec![Uuid::now_v7()],
            ..Sleep::default()
        };
        run.wait_json = Some(json!({ "for": "stages", "stages": {}, "wake": sleep.to_json() }));
        assert_eq!(Sleep::of(&run), Some(sleep));
        run.wait_json = Some(json!({ "for": "stages", "stages": {} }));
        assert_eq!(
            Sleep::of(&run),
            None,
            "no wake: not known to be hibernatable"
        );
        let no_deadline = Sleep {
            flow: "nap".into(),
            ..Sleep::default()
        };
        run.wait_json = Some(json!({ "for": "stages", "wake": no_deadline.to_json() }));
        assert_eq!(Sleep::of(&run), Some(no_deadline));
    }
}
