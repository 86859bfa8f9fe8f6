//! Hibernation, the flow's side: once every unfinished stage of a running
//! run waits durably (a timer, a signal, a child run) and its record says
//! so (`Waiting`, journaled), the flow stops its stages and itself after
//! the runtime's `hibernate_after`, leaving the runtime a [`Sleep`]: when
//! to wake it and for which children. Woken, the run resumes as after a
//! restart: its steps run again, their memos answer, their timers re-arm.
//!
//! Only steps hibernate: a source, transform or sink holds items in its
//! pipes, which would be lost with its actor.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{FlowHost, FlowMsg};
use crate::flow::cell::Sleep;
use crate::flow::machine::RunState;
use crate::flow::waits::waits_for_stages;
use crate::stage::StageKind;

/// The stop reason of a flow that hibernated (the root does not take it
/// for a lost flow).
pub(crate) const HIBERNATED: &str = "hibernated";

impl FlowHost {
    /// What the run would sleep for if it hibernated now; `None` while it
    /// may not (it is not running, or a stage works, restarts, or waits for
    /// something hibernation cannot wake it for).
    pub(super) fn sleep(&self) -> Option<Sleep> {
        if *self.machine.state() != RunState::Running
            || !waits_for_stages(&self.ctx.run)
            || self.ctx.cell.held()
        {
            return None;
        }
        let mut sleep = Sleep {
            flow: self.ctx.run.controller_id.clone(),
            ..Sleep::default()
        };
        let mut waiting = false;
        for stage in &self.ctx.stages {
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
            for wait in self.ctx.waits.get(&stage.name)?.values() {
                add_wait(&mut sleep, wait)?;
            }
            waiting = true;
        }
        waiting.then_some(sleep)
    }

    /// After each message: asks for a `Hibernate` once the run may sleep.
    pub(super) fn consider_hibernating(&mut self) {
        let Some(after) = self.hibernate_after else {
            return;
        };
        if self.hibernate_asked || self.hibernate_refused == Some(self.epoch) {
            return;
        }
        if self.sleep().is_none() {
            return;
        }
        self.hibernate_asked = true;
        let epoch = self.epoch;
        let msg = move || FlowMsg::Hibernate { epoch };
        if after.is_zero() {
            let _ = self.ctx.myself.send_message(msg());
        } else {
            let timer = self.ctx.myself.send_after(after, msg);
            self.ctx.keep_timer(timer);
        }
    }

    /// Hibernates if nothing came since `epoch` and the run still may.
    pub(super) async fn on_hibernate(&mut self, epoch: u64) {
        self.hibernate_asked = false;
        if epoch != self.epoch {
            // Something came meanwhile: asked again after it, if it still may.
            return;
        }
        let Some(sleep) = self.sleep() else { return };
        let Some(host) = self.ctx.cell.host() else {
            return;
        };
        if !host.may_hibernate(&sleep) {
            self.hibernate_refused = Some(self.epoch);
            return;
        }
        let run_id = self.ctx.run.id;
        tracing::debug!(%run_id, deadline = ?sleep.deadline, children = sleep.children.len(),
            "hibernating");
        // The stages are gone before the runtime may wake the run, so its
        // steps never run twice at once.
        for stage in &mut self.ctx.stages {
            if let Some(actor) = stage.detach() {
                let _ = actor.kill_and_wait(None).await;
            }
        }
        host.hibernate(&self.ctx.cell, sleep);
        self.ctx.myself.stop(Some(HIBERNATED.to_owned()));
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
    use serde_json::json;

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
}
