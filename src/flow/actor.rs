//! The flow actor: one ractor actor per run, driving the flow machine.
//!
//! It spawns its stage actors linked to itself and overrides ractor's
//! default supervision (which would stop the flow on any child exit): every
//! exit of a stage becomes a decision of the flow's [`RestartTracker`]: a
//! restart after a backoff timer (taking the stages the strategy says), the
//! stage abandoned (`StageAbandoned`: the run carries on without it), or a
//! `StageGaveUp` event naming the stage and its last error. Control events
//! arrive as messages with a reply; a stage's completion arrives as a report
//! the flow records (refused after a cancel) before acknowledging.
//!
//! [`RestartTracker`]: super::restart::RestartTracker

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;
use tracing::Instrument;

use super::cell::RunCell;
use super::context::FlowCtx;
use super::control::{ControlEvent, HandleError};
use super::definition::FlowPlan;
use super::machine::{FlowEvent, RunState, flow_machine};
use super::record;
use super::restart::{RestartDecision, RestartStrategy, RestartType, StageExit, restart_group};
use crate::fsm::{EventVariant, FsmError, StateMachine, StateVariant};
use crate::journal::JournalHandle;
use crate::records::Run;
use crate::stage::child::RunLauncher;
use crate::stage::{EXIT_COMPLETED, StageDone, StageEvent};

pub(crate) use super::msg::FlowMsg;

mod hibernate;
mod input;

pub(crate) use hibernate::HIBERNATED;

/// What a flow actor starts from.
pub(crate) struct FlowArgs {
    pub(crate) run: Run,
    pub(crate) journal: JournalHandle,
    pub(crate) plan: FlowPlan,
    /// The run as its runtime keeps it: state, outcome, route.
    pub(crate) cell: Arc<RunCell>,
    /// How long the run stays live once all its stages wait durably
    /// before it hibernates (`None`: never; see `hibernate.rs`).
    pub(crate) hibernate_after: Option<Duration>,
    /// The run was found unfinished after a restart (its record says how far it got).
    pub(crate) recovering: bool,
    /// A new run whose inbox holds input already (replayed items): it is
    /// loaded before the stages start.
    pub(crate) inbox_waiting: bool,
    /// How the run's stages start child runs.
    pub(crate) launcher: Option<Arc<dyn RunLauncher>>,
}

/// The flow actor.
pub(crate) struct FlowActor;

/// The flow actor's state: its machine and context.
pub(crate) struct FlowHost {
    machine: StateMachine<RunState, FlowEvent, FlowCtx, super::machine::FlowAction>,
    ctx: FlowCtx,
    /// `flow` span with the run id and flow name; every handling runs in it.
    span: tracing::Span,
    recovering: bool,
    inbox_waiting: bool,
    /// See [`FlowArgs::hibernate_after`].
    hibernate_after: Option<Duration>,
    /// Counts the messages handled: a `Hibernate` asked before the last
    /// one is stale.
    epoch: u64,
    /// A `Hibernate` is on its way.
    hibernate_asked: bool,
    /// The epoch at which the runtime refused hibernation, if it did.
    hibernate_refused: Option<u64>,
}

impl FlowHost {
    /// Feeds `event`, runs its actions, and feeds a failing action's error
    /// as a `Failure` (once: a failure while failing is traced and ends there,
    /// the outcome is published either way).
    async fn feed(&mut self, event: FlowEvent) -> Result<(), FeedError> {
        let actions = self
            .machine
            .handle(event, &mut self.ctx)
            .await
            .map_err(FeedError::Rejected)?;
        self.publish();
        let Err(error) = self.machine.execute_actions(actions, &mut self.ctx).await else {
            return Ok(());
        };
        let reason = error.to_string();
        tracing::error!(%reason, "flow action failed");
        if let Ok(actions) = self
            .machine
            .handle(FlowEvent::Failure(reason.clone()), &mut self.ctx)
            .await
        {
            self.publish();
            if let Err(again) = self.machine.execute_actions(actions, &mut self.ctx).await {
                tracing::error!(error = %again, "flow failure handling failed");
            }
        }
        let state = self.machine.state().clone();
        self.ctx.end_if_stranded(&state, &reason).await;
        Err(FeedError::ActionFailed(reason))
    }

    fn publish(&self) {
        let state = self.machine.state();
        self.ctx.cell.set_state(state);
    }

    /// Feeds an internal event; a rejection is a bug in the machine, traced.
    async fn feed_internal(&mut self, event: FlowEvent) {
        let name = event.variant_name();
        if let Err(FeedError::Rejected(error)) = self.feed(event).await {
            tracing::error!(event = name, %error, "flow machine rejected an internal event");
        }
    }

    async fn on_control(&mut self, event: ControlEvent) -> Result<(), HandleError> {
        let run_id = self.ctx.run.id;
        let name = event.name();
        // Cancel and drain are always taken: each is accepted at most once
        // per run, so they fit the reserve (and a cancel's grace timer kills
        // stages that do not take it). Pause, resume and signals can repeat
        // without bound, so they wait for room.
        if !matches!(event, ControlEvent::Cancel { .. } | ControlEvent::Drain) {
            self.ctx.admit(None, name)?;
        }
        let event = match event {
            ControlEvent::Pause => FlowEvent::Pause,
            ControlEvent::Resume => FlowEvent::Resume,
            ControlEvent::Drain => FlowEvent::Drain,
            ControlEvent::Cancel { reason } => FlowEvent::Cancel(reason),
            ControlEvent::Signal { name, payload } => FlowEvent::Signal { name, payload },
        };
        match self.feed(event).await {
            Ok(()) => Ok(()),
            Err(FeedError::Rejected(_)) => Err(HandleError::Rejected {
                run_id,
                state: self.machine.state().variant_name(),
                event: name,
            }),
            Err(FeedError::ActionFailed(reason)) => Err(HandleError::NotRecorded {
                run_id,
                event: name,
                reason,
            }),
        }
    }

    async fn on_stage_done(&mut self, done: StageDone) {
        let current = self.ctx.stages.get(done.stage).map(|s| s.generation);
        if current != Some(done.generation) {
            let _ = done.ack.send(Err("stale completion report".to_owned()));
            return;
        }
        match self.ctx.record_output(done.stage, done.output).await {
            Ok(recorded) => {
                let _ = done.ack.send(Ok(recorded));
                if recorded {
                    if done.input_left {
                        self.ctx.stages[done.stage].wind_down_input();
                    }
                    // The stage's own settlements came before its report.
                    self.ctx.sweep_inbox().await;
                    self.feed_internal(FlowEvent::StageCompleted).await;
                }
            }
            Err(error) => {
                let reason = error.to_string();
                let _ = done.ack.send(Err(reason.clone()));
                self.feed_internal(FlowEvent::Failure(reason)).await;
            }
        }
    }

    /// A stage actor exited: decide, per its restart policy and the flow's
    /// supervision, what follows.
    async fn on_stage_exit(&mut self, index: usize, exit: StageExit) {
        let stage = &mut self.ctx.stages[index];
        stage.detach();
        if matches!(exit, StageExit::Failed(_)) {
            // A panic or a kill: its actor could not say so.
            stage.counters.set_failed();
        }
        let name = stage.name.clone();
        let policy = stage.policy;
        let state = self.machine.state().clone();
        if matches!(state, RunState::Cancelling) || state.is_terminal() {
            if self.ctx.live_stages() == 0 && state == RunState::Cancelling {
                self.feed_internal(FlowEvent::StagesGone).await;
            }
            return;
        }
        let run_id = self.ctx.run.id;
        let decision = self
            .ctx
            .restarts
            .on_exit(index, &policy, &exit, Instant::now());
        if let StageExit::Failed(reason) = &exit {
            let restarted = matches!(decision, RestartDecision::Restart { .. });
            tracing::warn!(%run_id, stage = %name, %reason, restarted, "stage failed");
            if let Err(error) =
                record::stage_failure(self.ctx.journal(), run_id, &name, reason, restarted).await
            {
                // A failure the ledger cannot hold must not vanish into a log
                // line: the run fails, and its outcome carries both errors.
                tracing::error!(%run_id, stage = %name, %error, "recording a stage failure failed");
                let why = format!(
                    "stage `{name}` failed ({reason}) and the failure could not be recorded: {error}"
                );
                self.feed_internal(FlowEvent::Failure(why)).await;
                return;
            }
        }
        match decision {
            RestartDecision::Done => {}
            RestartDecision::Abandon => {
                self.ctx.stages[index].abandon(exit.to_string());
                self.ctx.stage_ended(index);
                self.ctx.sweep_inbox().await;
                self.feed_internal(FlowEvent::StageAbandoned).await;
            }
            RestartDecision::GiveUp(why) => {
                self.feed_internal(FlowEvent::StageGaveUp(why.describe(&name)))
                    .await;
            }
            RestartDecision::Restart { after, strategy } => {
                if self.restart_after(index, after, strategy) {
                    self.ctx.sweep_inbox().await;
                    self.feed_internal(FlowEvent::StageAbandoned).await;
                }
            }
        }
    }

    /// Restarts stage `failed` after `after`, with the stages `strategy`
    /// takes along: those are stopped now and restarted with it, except the
    /// temporary ones, which are abandoned (as OTP never restarts a
    /// temporary child). Whether it abandoned any.
    fn restart_after(&mut self, failed: usize, after: Duration, strategy: RestartStrategy) -> bool {
        let mut restart = vec![(failed, self.ctx.stages[failed].generation)];
        let mut abandoned = false;
        let name = self.ctx.stages[failed].name.clone();
        for other in restart_group(strategy, failed, &self.ctx.start_order) {
            let s = &mut self.ctx.stages[other];
            // Completed and abandoned stages stay so; steps still waiting
            // for their turn have nothing to restart.
            if s.done() || s.generation == 0 {
                continue;
            }
            if let Some(cell) = s.detach() {
                cell.kill();
            }
            if s.policy.restart == RestartType::Temporary {
                s.abandon(format!("stopped for a restart of stage `{name}`"));
                self.ctx.stage_ended(other);
                abandoned = true;
            } else {
                restart.push((other, s.generation));
            }
        }
        for (stage, generation) in restart {
            let timer = self
                .ctx
                .myself
                .send_after(after, move || FlowMsg::Restart { stage, generation });
            self.ctx.keep_timer(timer);
        }
        abandoned
    }

    async fn on_restart(&mut self, index: usize, generation: u64) {
        let Some(stage) = self.ctx.stages.get(index) else {
            return;
        };
        let state = self.machine.state();
        if stage.generation != generation
            || stage.actor.is_some()
            || stage.done()
            || state.is_terminal()
            || *state == RunState::Cancelling
        {
            return;
        }
        if let Err(error) = self.ctx.spawn_stage(index).await {
            self.feed_internal(FlowEvent::Failure(error.to_string()))
                .await;
        }
    }

    /// Starts a new run, or resumes a recovered one where its record says
    /// it was: a cancel requested before the restart is carried out, a
    /// waiting run is paused again, a run whose stages all completed ends.
    async fn start(&mut self) {
        if !self.recovering {
            if self.inbox_waiting
                && let Err(error) = self.ctx.load_inbox().await
            {
                let reason = format!("reading the run's inbox failed: {error}");
                let _ = self.feed(FlowEvent::Failure(reason)).await;
                return;
            }
            let _ = self.feed(FlowEvent::Start).await;
            return;
        }
        if self.ctx.run.cancel_requested {
            let reason = "cancel requested before a restart".to_owned();
            let _ = self.feed(FlowEvent::Cancel(reason)).await;
            return;
        }
        if let Err(error) = self.ctx.load_inbox().await {
            // Its operators' input cannot be handed over: the run must not
            // go on as if it had none.
            let reason = format!("reading the run's inbox failed: {error}");
            let _ = self.feed(FlowEvent::Failure(reason)).await;
            return;
        }
        match self.ctx.take_over_dead_letters().await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                let _ = self.feed(FlowEvent::Failure(reason)).await;
                return;
            }
            Err(error) => {
                let reason = format!("reading the run's dead letters failed: {error}");
                let _ = self.feed(FlowEvent::Failure(reason)).await;
                return;
            }
        }
        // Paused by an operator (not waiting for its stages' waits, which
        // its stages report again).
        let waiting = self.ctx.run.status == crate::records::RunStatus::Waiting
            && !super::waits::waits_for_stages(&self.ctx.run);
        if self.feed(FlowEvent::Recover).await.is_err() {
            return;
        }
        if self.ctx.all_done() {
            self.feed_internal(FlowEvent::StageCompleted).await;
        } else if waiting {
            let _ = self.feed(FlowEvent::Pause).await;
        }
    }

    async fn on_message(&mut self, msg: FlowMsg) {
        match msg {
            FlowMsg::Hibernate { epoch } => return self.on_hibernate(epoch).await,
            FlowMsg::Park(reply) => return self.on_park(reply).await,
            // Only asks for a `Hibernate` (after this message).
            FlowMsg::Reconsider => return,
            _ => {}
        }
        self.epoch += 1;
        match msg {
            FlowMsg::Hibernate { .. } | FlowMsg::Park(_) | FlowMsg::Reconsider => {}
            FlowMsg::Control { event, reply } => {
                let result = self.on_control(event).await;
                let _ = reply.send(result);
            }
            FlowMsg::StageControl {
                stage,
                event,
                reply,
            } => {
                let result = match (&event, self.ended("Signal")) {
                    // A signal is operator input: refused once the run ends.
                    (StageEvent::Signal(_), Some(ended)) => Err(ended),
                    _ => self.ctx.send_to_stage(stage, event).await,
                };
                let _ = reply.send(result);
            }
            FlowMsg::StageEvents { stage, reply } => {
                let _ = reply.send(self.ctx.event_port(stage));
            }
            FlowMsg::StageDone(done) => self.on_stage_done(done).await,
            FlowMsg::DeadLetter(letter) => {
                // Acknowledged before the run fails, so the stage is not
                // left waiting on a flow that is stopping.
                if let Some(reason) = self.ctx.record_dead_letter(letter).await {
                    self.feed_internal(FlowEvent::Failure(reason)).await;
                }
            }
            FlowMsg::Settled(settled) => self.ctx.settle(settled).await,
            FlowMsg::ContinueAsNew(next) => {
                // A stale start's report is dropped: its stage is gone.
                let current = self.ctx.stages.get(next.stage).map(|s| s.generation);
                if current == Some(next.generation) {
                    self.feed_internal(FlowEvent::ContinueAsNew(next.input))
                        .await;
                }
            }
            FlowMsg::StageWaiting(wait) => {
                if let Err(error) = self.ctx.stage_waits(wait).await {
                    let reason = format!("recording a stage's wait failed: {error}");
                    let _ = self.feed(FlowEvent::Failure(reason)).await;
                }
            }
            msg @ (FlowMsg::AcceptEvent { .. }
            | FlowMsg::AcceptItems { .. }
            | FlowMsg::AcceptSignal { .. }) => self.on_input(msg).await,
            FlowMsg::Restart { stage, generation } => self.on_restart(stage, generation).await,
            FlowMsg::CheckInbox => {
                if self.ended("input").is_none()
                    && let Err(error) = self.ctx.load_inbox().await
                {
                    // Still in the journal: the next doorbell or resume has it.
                    tracing::warn!(run_id = %self.ctx.run.id, %error,
                        "reading input journaled by another process failed");
                }
            }
            FlowMsg::CancelGraceExpired => {
                if *self.machine.state() == RunState::Cancelling {
                    tracing::warn!("cancel grace expired; killing stages");
                    self.kill_stages();
                }
            }
        }
    }

    async fn on_supervision(&mut self, event: SupervisionEvent) {
        let (cell, exit) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Cancelled, killed or stopped by someone: not a completion.
                let exit = match reason.as_deref() {
                    Some(EXIT_COMPLETED) => StageExit::Completed,
                    _ => StageExit::Stopped,
                };
                (cell, exit)
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                (cell, StageExit::Failed(error.to_string()))
            }
            _ => return,
        };
        let id = cell.get_id();
        let index = self
            .ctx
            .stages
            .iter()
            .position(|s| s.actor.as_ref().is_some_and(|a| a.get_id() == id));
        // An exit of an actor the flow already let go of (killed for a
        // restart of another stage) needs no decision.
        if let Some(index) = index {
            let exit = if self.ctx.stages[index].completed {
                StageExit::Completed
            } else {
                exit
            };
            self.on_stage_exit(index, exit).await;
        }
    }

    fn kill_stages(&mut self) {
        for stage in &mut self.ctx.stages {
            if let Some(cell) = stage.actor.as_ref() {
                cell.kill();
            }
        }
    }
}

enum FeedError {
    Rejected(FsmError),
    ActionFailed(String),
}

impl Actor for FlowActor {
    type Msg = FlowMsg;
    type State = FlowHost;
    type Arguments = FlowArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FlowMsg>,
        args: FlowArgs,
    ) -> Result<FlowHost, ActorProcessingErr> {
        let ctx = FlowCtx::new(
            args.run,
            args.journal,
            myself,
            args.plan,
            args.cell,
            args.launcher,
        );
        let span = tracing::info_span!(
            "flow",
            run_id = %ctx.run.id,
            flow = %ctx.run.controller_id
        );
        Ok(FlowHost {
            machine: flow_machine(RunState::Created),
            ctx,
            span,
            recovering: args.recovering,
            inbox_waiting: args.inbox_waiting,
            hibernate_after: args.hibernate_after,
            epoch: 0,
            hibernate_asked: false,
            hibernate_refused: None,
        })
    }

    async fn post_start(
        &self,
        _: ActorRef<FlowMsg>,
        host: &mut FlowHost,
    ) -> Result<(), ActorProcessingErr> {
        let span = host.span.clone();
        Box::pin(host.start().instrument(span)).await;
        host.consider_hibernating();
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<FlowMsg>,
        msg: FlowMsg,
        host: &mut FlowHost,
    ) -> Result<(), ActorProcessingErr> {
        let span = host.span.clone();
        Box::pin(host.on_message(msg).instrument(span)).await;
        host.consider_hibernating();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<FlowMsg>,
        event: SupervisionEvent,
        host: &mut FlowHost,
    ) -> Result<(), ActorProcessingErr> {
        let span = host.span.clone();
        Box::pin(host.on_supervision(event).instrument(span)).await;
        host.epoch += 1;
        host.consider_hibernating();
        Ok(())
    }
}
