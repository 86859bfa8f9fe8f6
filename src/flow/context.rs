//! What a flow actor works on: its run record, its stages, and the side
//! effects its machine asks for ([`FlowAction`]).

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, MessagingErr};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::actor::FlowMsg;
use super::cell::RunCell;
use super::control::{CONTROL_PLANE_CANCEL_REASON, HandleError, RunOutcome};
use super::definition::{DeadLetterPolicy, FlowPlan};
use super::machine::{FlowAction, RunState};
use super::record::{self, RecordError};
use super::restart::RestartTracker;
use super::stages::StageRuntime;
use crate::checkpoint::link::Note;
use crate::journal::JournalHandle;
use crate::progress::StageStatus;
use crate::records::{DeadLetter, Run, RunStatus};
use crate::runs::{TerminalTarget, structured_output};
use crate::stage::child::{RunLauncher, close_children};
use crate::stage::dead_letter::StageDeadLetter;
use crate::stage::events::EventPort;
use crate::stage::{RunContext, StageKind};
use crate::stage::{StageEvent, StageState};
use crate::store::Store;

mod continued;

/// Control slots of each stage kept for the flow actor's own events: user
/// events are refused (`HandleError::Busy`) once a stage's free slots fall
/// below this.
pub(crate) const CONTROL_RESERVE: usize = 64;

/// Signals a stage may have accepted and not yet taken (kept for its next
/// start while it is down) before more are refused (`HandleError::Busy`).
pub(crate) const MAX_KEPT_SIGNALS: usize = 1024;

/// The flow actor's context: everything its handlers read and its actions change.
pub(crate) struct FlowCtx {
    pub(crate) run: Run,
    /// What every stage's [`StageContext`](crate::stage::StageContext)
    /// shares of the run.
    run_context: Arc<RunContext>,
    journal: JournalHandle,
    pub(crate) myself: ActorRef<FlowMsg>,
    pub(crate) stages: Vec<StageRuntime>,
    /// Stage indices, each after its upstreams.
    pub(crate) start_order: Vec<usize>,
    /// The flow's supervision over every stage: intensity and strategy.
    pub(crate) restarts: RestartTracker,
    /// Why the run is being cancelled, once a cancel was requested of the
    /// flow (sticky: no stage output is recorded from then on).
    cancel_reason: Option<String>,
    outputs: Map<String, Value>,
    /// The run's state, outcome and route, owned by the runtime.
    pub(crate) cell: Arc<RunCell>,
    cancel_grace: Duration,
    dead_letter: DeadLetterPolicy,
    /// Restart and cancel-grace timers; aborted when the flow goes away.
    timers: Vec<Timer>,
    /// What its stages wait for durably (see `waits.rs`).
    pub(crate) waits: super::waits::StageWaits,
    /// The run's checkpoint coordinator, if its flow takes checkpoints, and
    /// how to tell it of stages that ended.
    checkpoints: Option<(JoinHandle<()>, mpsc::UnboundedSender<Note>)>,
    /// Inbox entries (id, stage) handed to a stage by this flow actor and
    /// not settled yet: an inbox read again (`load_inbox`) skips them.
    pub(crate) handed: std::collections::HashSet<(uuid::Uuid, String)>,
}

impl Drop for FlowCtx {
    fn drop(&mut self) {
        for timer in &self.timers {
            timer.abort();
        }
        if let Some((coordinator, _)) = &self.checkpoints {
            coordinator.abort();
        }
    }
}

/// A pending `send_after` to the flow actor.
pub(crate) type Timer = JoinHandle<Result<(), MessagingErr<FlowMsg>>>;

/// Why a side effect failed; becomes the flow's `Failure` event.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EffectError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Start(#[from] crate::stage::StageStartError),
}

impl FlowCtx {
    pub(crate) fn new(
        run: Run,
        journal: JournalHandle,
        myself: ActorRef<FlowMsg>,
        plan: FlowPlan,
        cell: Arc<RunCell>,
        launcher: Option<Arc<dyn RunLauncher>>,
    ) -> Self {
        let mut outputs = Map::new();
        for stage in &plan.stages {
            // A woken run's stages report their waits again, if they still wait.
            stage.counters.set_waiting(false);
            if let Some(output) = &stage.recorded {
                stage.counters.set_status(StageStatus::Completed);
                outputs.insert(stage.name.clone(), output.clone());
            }
        }
        cell.set_waiting(run.status == RunStatus::Waiting);
        let checkpoints = plan.checkpoints.map(|seed| {
            let notes = seed.notes();
            (seed.spawn(run.id, journal.clone()), notes)
        });
        FlowCtx {
            checkpoints,
            handed: Default::default(),
            run_context: RunContext::of(&run, journal.clone(), launcher),
            run,
            journal,
            myself,
            stages: plan.stages.into_iter().map(StageRuntime::new).collect(),
            start_order: plan.start_order,
            restarts: RestartTracker::new(plan.supervision),
            cancel_reason: None,
            outputs,
            cell,
            cancel_grace: plan.cancel_grace,
            dead_letter: plan.dead_letter,
            timers: Vec::new(),
            waits: Default::default(),
        }
    }

    pub(crate) fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    /// What a dead letter does to the run.
    pub(crate) fn dead_letter_policy(&self) -> DeadLetterPolicy {
        self.dead_letter
    }

    /// Whether every stage is done: completed, or abandoned.
    pub(crate) fn all_done(&self) -> bool {
        self.stages.iter().all(StageRuntime::done)
    }

    /// How many stage actors are alive.
    pub(crate) fn live_stages(&self) -> usize {
        self.stages.iter().filter(|s| s.actor.is_some()).count()
    }

    /// Keeps a timer so that it dies with the flow.
    pub(crate) fn keep_timer(&mut self, timer: Timer) {
        self.timers.retain(|t| !t.is_finished());
        self.timers.push(timer);
    }

    /// Records a completed stage's output (unless a cancel was recorded first).
    pub(crate) async fn record_output(
        &mut self,
        index: usize,
        output: Value,
    ) -> Result<bool, RecordError> {
        if self.cancel_reason.is_some() {
            return Ok(false);
        }
        let name = self.stages[index].name.clone();
        record::stage_output(&self.journal, self.run.id, &name, output.clone()).await?;
        self.stages[index].completed = true;
        self.outputs.insert(name, output);
        self.stage_ended(index);
        Ok(true)
    }

    /// Tells the checkpoint coordinator that stage `index` passes no more
    /// barriers (its completion is recorded, or it was abandoned).
    pub(crate) fn stage_ended(&self, index: usize) {
        if let Some((_, notes)) = &self.checkpoints {
            let _ = notes.send(Note::Ended { stage: index });
        }
    }

    /// Records a stage's dead letter and acknowledges it (refused after a
    /// cancel, as outputs are, and from a stale start); `Some` with the
    /// reason the run fails for, per the flow's [`DeadLetterPolicy`].
    pub(crate) async fn record_dead_letter(&mut self, letter: StageDeadLetter) -> Option<String> {
        let StageDeadLetter {
            stage,
            generation,
            position,
            attempts,
            errors,
            item,
            ack,
        } = letter;
        if let Some(runtime) = self.stages.get(stage) {
            metrics::counter!(crate::metrics::DEAD_LETTERS,
                "flow" => self.run.controller_id.clone(), "stage" => runtime.name.clone())
            .increment(1);
        }
        let Some(runtime) = self
            .stages
            .get(stage)
            .filter(|s| s.generation == generation)
        else {
            let _ = ack.send(Err("stale dead-letter report".to_owned()));
            return None;
        };
        if self.cancel_reason.is_some() {
            let _ = ack.send(Err("the run is being cancelled".to_owned()));
            return None;
        }
        let name = runtime.name.clone();
        let last = errors.last().cloned().unwrap_or_default();
        let record = DeadLetter {
            run_id: self.run.id,
            stage: name.clone(),
            position,
            attempts,
            errors,
            item,
            at: chrono::Utc::now(),
        };
        if let Err(error) = record::dead_letter(&self.journal, record).await {
            let _ = ack.send(Err(error.to_string()));
            return None;
        }
        let runtime = &mut self.stages[stage];
        runtime.dead_letters += 1;
        runtime.counters.set_dead_letters(runtime.dead_letters);
        let _ = ack.send(Ok(()));
        (self.dead_letter == DeadLetterPolicy::FailRun).then(|| {
            format!(
                "stage `{name}` dead-lettered item {position} after {attempts} attempt(s): {last}"
            )
        })
    }

    /// Whether stage `index` is due its first start: never started, not
    /// completed before a restart, and, for a step, every upstream step done
    /// (completed, or abandoned: then its output is missing from the inputs).
    /// (Restarts go through the restart timer, never through here.)
    fn ready(&self, index: usize) -> bool {
        let stage = &self.stages[index];
        stage.generation == 0
            && !stage.completed
            && (stage.kind != StageKind::Step
                || stage.upstream().iter().all(|&u| self.stages[u].done()))
    }

    /// Starts (or restarts) stage `index` under this flow.
    pub(crate) async fn spawn_stage(&mut self, index: usize) -> Result<(), EffectError> {
        let inputs = self.stages[index]
            .upstream()
            .iter()
            .filter_map(|&u| {
                let name = &self.stages[u].name;
                Some((name.clone(), self.outputs.get(name)?.clone()))
            })
            .collect();
        let myself = self.myself.clone();
        let run = self.run_context.clone();
        self.stages[index].start(index, myself, inputs, run).await?;
        Ok(())
    }

    /// Refuses a user's control event while any targeted live stage has
    /// fewer than [`CONTROL_RESERVE`] free control slots, so the flow actor's
    /// own sends (bounded: a few per state change) never wait on a blocked
    /// stage, and the flow keeps handling reports, timers and cancels.
    pub(crate) fn admit(
        &self,
        only: Option<usize>,
        event: &'static str,
    ) -> Result<(), HandleError> {
        let targets = self
            .stages
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i));
        for (_, stage) in targets {
            // Signals kept for a stage that is down count too: they are all
            // sent to its next start.
            let kept_full = event == "Signal" && stage.kept_signals() >= MAX_KEPT_SIGNALS;
            if kept_full
                || stage
                    .free_control_slots()
                    .is_some_and(|free| free < CONTROL_RESERVE)
            {
                return Err(HandleError::Busy {
                    run_id: self.run.id,
                    stage: stage.name.clone(),
                    event,
                });
            }
        }
        Ok(())
    }

    /// Sends `event` to stage `index` alone; its state before it takes it.
    pub(crate) async fn send_to_stage(
        &mut self,
        index: usize,
        event: StageEvent,
    ) -> Result<StageState, HandleError> {
        let stage = self.stages.get(index);
        if let (StageEvent::Signal(signal), Some(stage)) = (&event, stage)
            && !stage.done()
        {
            // Accepted into the inbox first; a stage between a failure and
            // its restart gets it when it restarts.
            let state = stage
                .watcher
                .as_ref()
                .map_or(StageState::Starting, |w| w.current().clone());
            self.admit(Some(index), "Signal")?;
            let (name, payload) = (signal.name.clone(), signal.payload.clone());
            self.accept_signal(Some(index), &name, payload)
                .await
                .map_err(|e| super::inbox::not_recorded(self.run.id, "Signal", e))?;
            return Ok(state);
        }
        let live = stage.filter(|s| s.is_live());
        let Some(state) = live.and_then(|s| Some(s.watcher.as_ref()?.current().clone())) else {
            return Err(self.stage_not_running(index));
        };
        self.admit(Some(index), crate::fsm::EventVariant::variant_name(&event))?;
        let remembered = !matches!(event, StageEvent::Signal(_));
        if !self.stages[index].send(event).await && !remembered {
            // The actor stopped and the flow has not handled its exit yet:
            // the signal would be lost, so its sender hears of it.
            return Err(self.stage_not_running(index));
        }
        Ok(state)
    }

    /// The sending end of stage `index`'s event queue (`None`: it declares
    /// no events); a completed or abandoned stage takes no more.
    pub(crate) fn event_port(&self, index: usize) -> Result<Option<EventPort>, HandleError> {
        match self.stages.get(index) {
            Some(stage) if !stage.done() => Ok(stage.event_port()),
            _ => Err(self.stage_not_running(index)),
        }
    }

    /// [`HandleError::StageNotRunning`] for stage `index` (named by its
    /// index if there is no such stage).
    pub(crate) fn stage_not_running(&self, index: usize) -> HandleError {
        HandleError::StageNotRunning {
            run_id: self.run.id,
            stage: self
                .stages
                .get(index)
                .map_or_else(|| format!("#{index}"), |s| s.name.clone()),
        }
    }

    /// Runs one action of the flow machine.
    pub(crate) async fn apply(&mut self, action: &FlowAction) -> Result<(), EffectError> {
        match action {
            FlowAction::Persist(status, audit) => {
                record::set_status(&self.journal, &mut self.run, *status, audit).await?;
                if matches!(*audit, "started" | "recovered") {
                    let flow = self.run.controller_id.clone();
                    metrics::counter!(crate::metrics::RUNS_STARTED, "flow" => flow).increment(1);
                }
                self.sync_waits().await?;
            }
            FlowAction::SpawnStages => {
                for i in 0..self.start_order.len() {
                    let index = self.start_order[i];
                    if self.ready(index) {
                        self.spawn_stage(index).await?;
                    }
                }
            }
            FlowAction::Broadcast(event) => {
                for stage in &mut self.stages {
                    stage.send(event.clone()).await;
                }
            }
            FlowAction::DrainSources => {
                for stage in &mut self.stages {
                    let event = match stage.kind {
                        StageKind::Source => StageEvent::Drain,
                        _ => StageEvent::Resume,
                    };
                    stage.send(event).await;
                }
            }
            FlowAction::RequestCancel(reason) => {
                // Sticky from here on: no stage output is recorded any more.
                self.cancel_reason = Some(reason.clone());
                for stage in &mut self.stages {
                    stage.send(StageEvent::Cancel).await;
                }
                let grace = self
                    .myself
                    .send_after(self.cancel_grace, || FlowMsg::CancelGraceExpired);
                self.keep_timer(grace);
                record::request_cancel(&self.journal, &mut self.run, reason).await?;
            }
            FlowAction::Signal(name, payload) => {
                self.accept_signal(None, name, payload.clone()).await?;
            }
            FlowAction::Complete => {
                let target = TerminalTarget::Completed {
                    structured_output: self.finished_output(),
                };
                self.terminate(target).await?;
            }
            FlowAction::Fail(reason) => {
                let target = TerminalTarget::Failed {
                    reason: reason.clone(),
                };
                self.terminate(target).await?;
            }
            FlowAction::Cancelled => self.terminate(TerminalTarget::Cancelled).await?,
            FlowAction::ContinueAsNew(input) => self.continue_as_new(input.clone()).await?,
        }
        Ok(())
    }

    /// A finished run's output: `{"steps": {stage: output}}`, with
    /// `"abandoned": {stage: {"reason": ...}}` if stages were abandoned and
    /// `"dead_letters": {stage: count}` if items were dead-lettered.
    fn finished_output(&self) -> Option<Value> {
        let abandoned: Map<String, Value> = self
            .stages
            .iter()
            .filter_map(|s| Some((s.name.clone(), json!({ "reason": s.abandoned.as_ref()? }))))
            .collect();
        let dead_letters: Map<String, Value> = self
            .stages
            .iter()
            .filter(|s| s.dead_letters > 0)
            .map(|s| (s.name.clone(), json!(s.dead_letters)))
            .collect();
        if abandoned.is_empty() && dead_letters.is_empty() {
            return structured_output(self.outputs.clone());
        }
        let mut output = Map::new();
        output.insert("steps".to_owned(), Value::Object(self.outputs.clone()));
        if !abandoned.is_empty() {
            output.insert("abandoned".to_owned(), Value::Object(abandoned));
        }
        if !dead_letters.is_empty() {
            output.insert("dead_letters".to_owned(), Value::Object(dead_letters));
        }
        Some(Value::Object(output))
    }

    /// Ends a run whose machine reached a terminal state while one of that
    /// step's earlier actions failed, so the action that records and
    /// publishes the outcome never ran; without this, `wait()` would never
    /// return. A run that already published its outcome is left alone.
    pub(crate) async fn end_if_stranded(&mut self, state: &RunState, failure: &str) {
        if !state.is_terminal() || self.cell.has_ended() {
            return;
        }
        let target = match state {
            RunState::Cancelled => TerminalTarget::Cancelled,
            RunState::Failed(reason) => TerminalTarget::Failed {
                reason: format!("{reason}; then {failure}"),
            },
            _ => TerminalTarget::Failed {
                reason: failure.to_owned(),
            },
        };
        if let Err(error) = self.terminate(target).await {
            tracing::error!(run_id = %self.run.id, %error, "recording a stranded run's outcome failed");
        }
    }

    /// Records the outcome, publishes it and stops the flow (which stops
    /// its stages). Published even if recording failed, saying so.
    pub(super) async fn terminate(
        &mut self,
        mut target: TerminalTarget,
    ) -> Result<(), RecordError> {
        let mut recorded = record::terminate(&self.journal, &mut self.run, target.clone()).await;
        if let Err(RecordError::Control(crate::runs::RunError::CancelPending { .. })) = recorded {
            // A cancel was requested through the control plane while the
            // flow ran: it is sticky, so the run ends cancelled, not finished.
            tracing::info!("cancel requested through the control plane; recording RunCancelled");
            target = TerminalTarget::Cancelled;
            // Its observer's `Cancel` may not have reached this flow yet.
            self.cancel_reason
                .get_or_insert_with(|| CONTROL_PLANE_CANCEL_REASON.to_owned());
            recorded = record::terminate(&self.journal, &mut self.run, target.clone()).await;
        }
        let mut outcome = match target {
            TerminalTarget::Completed { structured_output } => RunOutcome {
                run_id: self.run.id,
                status: RunStatus::Finished,
                structured_output,
                reason: None,
                recorded: true,
                next_run_id: None,
            },
            TerminalTarget::Failed { reason } => RunOutcome {
                run_id: self.run.id,
                status: RunStatus::Failed,
                structured_output: None,
                reason: Some(reason),
                recorded: true,
                next_run_id: None,
            },
            TerminalTarget::Cancelled => RunOutcome {
                run_id: self.run.id,
                status: RunStatus::Cancelled,
                structured_output: None,
                reason: self.cancel_reason.clone(),
                recorded: true,
                next_run_id: None,
            },
        };
        if let Err(RecordError::Control(crate::runs::RunError::AlreadyTerminal {
            status, ..
        })) = &recorded
        {
            // Ended through the control plane while the flow ran: the
            // persisted status is the truth, so that is what is published.
            tracing::info!(
                status = status.as_str(),
                "run already ended through the control plane"
            );
            outcome.status = *status;
            outcome.structured_output = None;
            outcome.reason = Some(format!(
                "the run was already {} through the control plane",
                status.as_str()
            ));
            recorded = Ok(());
        }
        self.conclude(outcome, recorded)
    }

    /// Publishes `outcome` (saying so if `recorded` failed), applies the
    /// parent-close policy to the children of a run that did not finish,
    /// and stops the flow; a run whose lease was lost is handed over
    /// instead. Returns `recorded`.
    pub(super) fn conclude(
        &mut self,
        mut outcome: RunOutcome,
        recorded: Result<(), RecordError>,
    ) -> Result<(), RecordError> {
        if let Err(error) = &recorded
            && error.is_lease_lost()
        {
            // Another process runs it now: nothing is published or closed
            // here, and the handles learn that it moved.
            tracing::warn!(run_id = %self.run.id, "lease lost while ending the run; stopped here");
            self.cell.hand_over();
            metrics::counter!(crate::metrics::LEASES_LOST).increment(1);
            self.myself.stop(Some("lease lost".to_owned()));
            return recorded;
        }
        if let Err(error) = &recorded {
            // On a shared journal the run is let go, so that a runtime
            // claims it and records its outcome: it must not stay `Running`
            // under a lease that this live process keeps renewing.
            let (journal, run_id) = (self.journal.clone(), self.run.id);
            tokio::spawn(async move {
                if let Err(error) = journal.release_leases(&[run_id]).await {
                    tracing::warn!(%run_id, %error, "releasing the unrecorded run's lease failed");
                }
            });
            outcome.recorded = false;
            outcome.reason = Some(match outcome.reason {
                Some(reason) => format!("{reason}; recording the outcome failed: {error}"),
                None => format!("recording the outcome failed: {error}"),
            });
        }
        tracing::info!(run_id = %self.run.id, status = outcome.status.as_str(), "flow ended");
        metrics::counter!(crate::metrics::RUNS_ENDED, "flow" => self.run.controller_id.clone(),
            "status" => outcome.status.as_str())
        .increment(1);
        if matches!(
            outcome.status,
            RunStatus::Failed | RunStatus::Cancelled | RunStatus::ContinuedAsNew
        ) {
            // Its children that have not ended follow their parent-close
            // policy, apart from the flow, which is stopping.
            let run = self.run_context.clone();
            let stages: Vec<String> = self.stages.iter().map(|s| s.name.clone()).collect();
            let why = outcome.status.as_str().to_owned();
            tokio::spawn(async move { close_children(&run, &stages, &why).await });
        }
        self.cell.publish(outcome);
        self.myself
            .stop(Some(format!("flow {}", self.run.status.as_str())));
        recorded
    }
}
