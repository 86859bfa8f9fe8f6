//! Hibernation, the flow's side: once every unfinished stage of a running
//! run waits durably (a timer, a signal, a child run) and its record says
//! so (`Waiting`, journaled), the flow stops its stages and itself after
//! the runtime's `hibernate_after`, leaving the runtime a [`Sleep`]: when
//! to wake it and for which children. Woken, the run resumes as after a
//! restart: its steps run again, their memos answer, their timers re-arm.
//!
//! Only steps hibernate: a source, transform or sink holds items in its
//! pipes, which would be lost with its actor.

use super::{FlowHost, FlowMsg};
use crate::flow::cell::{Route, Sleep};
use crate::flow::machine::RunState;
use crate::flow::waits::waits_for_stages;

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
        self.ctx.sleep_plan()
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

    /// A shutdown: a run that may sleep now stops, stages first, with no
    /// outcome and no [`Sleep`] for the runtime (which is going): the
    /// journal has it `Waiting`, so the next start resumes it asleep.
    /// Replies whether it stopped.
    pub(super) async fn on_park(&mut self, reply: tokio::sync::oneshot::Sender<bool>) {
        if self.sleep().is_none() {
            let _ = reply.send(false);
            return;
        }
        tracing::debug!(run_id = %self.ctx.run.id, "parked for the shutdown");
        self.stop_stages().await;
        self.ctx.cell.set_route(Route::Hibernated);
        let _ = reply.send(true);
        self.ctx.myself.stop(Some(HIBERNATED.to_owned()));
    }

    /// Stops every stage actor and waits until each is gone.
    async fn stop_stages(&mut self) {
        for stage in &mut self.ctx.stages {
            if let Some(actor) = stage.detach() {
                let _ = actor.kill_and_wait(None).await;
            }
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
        self.stop_stages().await;
        host.hibernate(&self.ctx.cell, sleep);
        self.ctx.myself.stop(Some(HIBERNATED.to_owned()));
    }
}
