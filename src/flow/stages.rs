//! One stage of a run as its flow tracks it across restarts: its policy,
//! its live actor (if any), its control state and its doorbells.

use std::sync::Arc;

use ractor::{ActorCell, ActorRef};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::actor::FlowMsg;
use super::definition::{Abandon, PlannedStage};
use super::inbox::Forwarder;
use super::restart::RestartPolicy;
use crate::ids::StageId;
use crate::progress::{StageCounters, StageStatus};
use crate::stage::actor::{Spawner, StageLaunch, StageStartError};
use crate::stage::durable::{Delivery, Undeliverable};
use crate::stage::events::EventPort;
use crate::stage::replay::ItemReplay;
use crate::stage::work::Bells;
use crate::stage::{KeptSignals, RunContext, StageContext};
use crate::stage::{
    StageEvent, StageIdentity, StageKind, StageReport, StageSignal, StageState, StepInputs,
};
use crate::supervise::{ExternalEventSender, StateWatcher};

/// One stage as its flow tracks it across restarts.
pub(crate) struct StageRuntime {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    pub(crate) policy: RestartPolicy,
    spawn: Spawner,
    /// Counts the stage's starts; reports of older starts are stale.
    pub(crate) generation: u64,
    /// The live actor, if any.
    pub(crate) actor: Option<ActorCell>,
    control: Option<ExternalEventSender<StageEvent>>,
    pub(crate) watcher: Option<StateWatcher<StageState>>,
    /// Rung around each control or user event sent to the stage.
    doorbell: Arc<Notify>,
    /// The live actor's doorbells.
    bells: Option<Arc<Bells>>,
    /// The sending end of the stage's user-event queue, if it declares events.
    events: Option<EventPort>,
    /// Queues replayed items into its input, if it can take them.
    pub(crate) replay: Option<ItemReplay>,
    /// The last `Pause`, `Resume` or `Drain` sent to the stage: part of its
    /// control state, not of one actor, so a restarted stage gets it again.
    /// A `Drain` is sticky, as it is for the stage machine (which ignores
    /// pauses and resumes while draining): nothing undoes it.
    steer: Option<StageEvent>,
    pub(crate) completed: bool,
    /// Why the stage was abandoned (ended, and not restarted per its
    /// restart type), if it was; see [`abandon`](Self::abandon).
    pub(crate) abandoned: Option<String>,
    /// Items it dead-lettered in this run (since the run's actor started).
    pub(crate) dead_letters: u64,
    abandon: Abandon,
    /// The abandoned stage's wind-down, aborted with the flow.
    wind_down: Option<JoinHandle<()>>,
    /// Signals accepted into the run's inbox and not yet settled by the
    /// stage: each (re)start of the stage is handed them again.
    signals: Vec<Arc<StageSignal>>,
    /// The same signals, watched by the stage's context (a step's waits
    /// take them from there).
    kept: watch::Sender<KeptSignals>,
    /// Sends durable events into the stage's queue in order (see
    /// [`FlowCtx::forward`](super::context::FlowCtx::forward)).
    pub(crate) forwarder: Option<Forwarder>,
    /// The forwarder's task, aborted with the flow.
    pub(crate) forwarding: Option<JoinHandle<()>>,
    /// The task re-sending kept signals to the latest start, aborted with
    /// the flow.
    resending: Option<JoinHandle<()>>,
    /// Whether inbox entries were handed to the stage in this process (so a
    /// stage that ends may leave some unsettled; see
    /// [`FlowCtx::sweep_inbox`](super::context::FlowCtx::sweep_inbox)).
    pub(crate) inbox_used: bool,
    /// Whether its leftover inbox entries were swept once it ended.
    pub(crate) inbox_swept: bool,
    upstream: Vec<usize>,
    /// Its live counters, kept by the run's cell.
    pub(crate) counters: Arc<StageCounters>,
}

impl Drop for StageRuntime {
    fn drop(&mut self) {
        let tasks = self.wind_down.iter().chain(&self.forwarding);
        for task in tasks.chain(&self.resending) {
            task.abort();
        }
    }
}

impl StageRuntime {
    pub(crate) fn new(planned: PlannedStage) -> Self {
        let input_left = planned.input_left;
        let mut stage = StageRuntime {
            completed: planned.recorded.is_some(),
            name: planned.name,
            kind: planned.kind,
            policy: planned.policy,
            spawn: planned.spawn,
            generation: 0,
            actor: None,
            control: None,
            watcher: None,
            doorbell: planned.doorbell,
            bells: None,
            events: planned.events,
            replay: planned.replay,
            steer: None,
            abandoned: None,
            dead_letters: 0,
            abandon: planned.abandon,
            wind_down: None,
            signals: Vec::new(),
            kept: watch::channel(KeptSignals::new()).0,
            forwarder: None,
            forwarding: None,
            resending: None,
            inbox_used: false,
            inbox_swept: false,
            upstream: planned.upstream,
            counters: planned.counters,
        };
        if input_left {
            stage.wind_down_input();
        }
        stage
    }

    /// Queues `event` for the stage and wakes it if it waits for input (or,
    /// for a cancel or drain, if it is inside `produce`). Remembers a pause,
    /// resume or drain for the stage's next start; once drained, it stays so.
    /// Whether a live actor took the event (`false`: none is running, or it
    /// just stopped and its flow has not heard of it yet).
    pub(crate) async fn send(&mut self, event: StageEvent) -> bool {
        let halts = matches!(event, StageEvent::Cancel | StageEvent::Drain);
        let cancels = matches!(event, StageEvent::Cancel);
        let steers = matches!(
            event,
            StageEvent::Pause | StageEvent::Resume | StageEvent::Drain
        );
        if steers && self.steer != Some(StageEvent::Drain) {
            self.steer = Some(event.clone());
        }
        let (Some(control), Some(bells)) = (&self.control, &self.bells) else {
            return false;
        };
        // Ring before (a stage waiting for input then takes queued events,
        // making room) and after (so it sees this one).
        bells.control.notify_one();
        let delivered = control.send(event).await.is_ok();
        if !delivered {
            // A pause, resume or drain is remembered for the restart; a
            // stage-only signal is refused to its sender; the flow's own
            // signals are in the run's log.
            tracing::debug!(stage = %self.name, "stage already stopped; control event not delivered");
        }
        bells.control.notify_one();
        // Only once the event is queued: the interrupted stage must find it.
        if halts {
            bells.halt.notify_one();
        }
        if cancels {
            bells.cancel.notify_one();
        }
        delivered
    }

    /// Starts (or restarts) the stage, number `index` of its flow, under
    /// `flow`, handing a step its upstream steps' outputs (`inputs`).
    pub(crate) async fn start(
        &mut self,
        index: usize,
        flow: ActorRef<FlowMsg>,
        inputs: StepInputs,
        run: Arc<RunContext>,
    ) -> Result<(), StageStartError> {
        self.generation += 1;
        if self.generation > 1 {
            self.counters.add_restart();
            metrics::counter!(crate::metrics::STAGE_RESTARTS,
                "flow" => run.flow.clone(), "stage" => self.name.clone())
            .increment(1);
        }
        let context = StageContext::new(run, self.name.as_str().into(), self.generation);
        let bells = Arc::new(Bells {
            control: self.doorbell.clone(),
            halt: Notify::new(),
            cancel: Notify::new(),
        });
        let supervisor = flow.get_cell();
        let identity = StageIdentity {
            name: self.name.clone(),
            index,
            generation: self.generation,
            id: StageId::new_const(index as u64),
            report: Arc::new(move |report| {
                let msg = match report {
                    StageReport::Done(done) => FlowMsg::StageDone(done),
                    StageReport::DeadLetter(letter) => FlowMsg::DeadLetter(letter),
                    StageReport::Settled(settled) => FlowMsg::Settled(settled),
                    StageReport::Waiting(wait) => FlowMsg::StageWaiting(wait),
                    StageReport::ContinueAsNew(next) => FlowMsg::ContinueAsNew(next),
                };
                flow.send_message(msg).is_ok()
            }),
            bells: bells.clone(),
            counters: self.counters.clone(),
        };
        let settler = identity.settler();
        let context = context.with_signals(self.kept.subscribe(), settler);
        // A stage (re)started while it, or its flow, is paused or draining
        // joins in before any work: every pause, resume and drain, the
        // flow's own included, went through `send`, which remembered it.
        let steer = self.steer.clone().filter(|s| *s != StageEvent::Resume);
        let launch = StageLaunch {
            identity,
            supervisor,
            inputs,
            steer,
            context,
        };
        let spawned = (self.spawn)(launch).await?;
        tracing::debug!(stage = %self.name, generation = self.generation, "stage started");
        self.actor = Some(spawned.cell);
        self.control = Some(spawned.control);
        self.watcher = Some(spawned.watcher);
        self.bells = Some(bells);
        // Signals its previous start had not settled (or that came while it
        // was down, or before a crash): at-least-once, by id. Sent by a task
        // of their own, so the flow actor never waits on a control channel
        // that many kept signals would fill.
        if !self.signals.is_empty()
            && let (Some(control), Some(bells)) = (self.control.clone(), self.bells.clone())
        {
            let signals = self.signals.clone();
            let resend = tokio::spawn(async move {
                for signal in signals {
                    bells.control.notify_one();
                    if control.send(StageEvent::Signal(signal)).await.is_err() {
                        break;
                    }
                    bells.control.notify_one();
                }
            });
            if let Some(previous) = self.resending.replace(resend) {
                previous.abort();
            }
        }
        Ok(())
    }

    /// Keeps an accepted signal until the stage settles it, and sends it to
    /// the live actor, if any (else its next start gets it).
    pub(crate) async fn send_signal(&mut self, signal: Arc<StageSignal>) {
        self.keep_signal(signal.clone());
        self.send(StageEvent::Signal(signal)).await;
    }

    /// Keeps an accepted signal for the stage's next start.
    pub(crate) fn keep_signal(&mut self, signal: Arc<StageSignal>) {
        self.inbox_used = true;
        self.kept.send_modify(|kept| kept.push(signal.clone()));
        self.signals.push(signal);
    }

    /// Whether the stage was handed a signal `name` it has not settled.
    pub(crate) fn keeps_signal(&self, name: &str) -> bool {
        self.signals.iter().any(|s| s.name == name)
    }

    /// How many accepted signals the stage has not taken yet.
    pub(crate) fn kept_signals(&self) -> usize {
        self.signals.len()
    }

    /// Forgets every kept signal (the stage ended: none will be taken).
    pub(crate) fn forget_signals(&mut self) {
        self.signals.clear();
        self.kept.send_replace(KeptSignals::new());
    }

    /// The stage settled inbox entry `id`.
    pub(crate) fn forget_signal(&mut self, id: uuid::Uuid) {
        self.signals.retain(|s| s.id != Some(id));
        self.kept.send_if_modified(|kept| {
            let before = kept.len();
            kept.retain(|s| s.id != Some(id));
            kept.len() != before
        });
    }

    /// Whether a live actor takes control events.
    pub(crate) fn is_live(&self) -> bool {
        self.control.is_some()
    }

    /// Free slots of the live actor's control channel, if there is one.
    pub(crate) fn free_control_slots(&self) -> Option<usize> {
        self.control.as_ref().map(ExternalEventSender::free_slots)
    }

    /// The sending end of the stage's user-event queue, if it declares events.
    pub(crate) fn event_port(&self) -> Option<EventPort> {
        self.events.clone()
    }

    /// The delivery of a durable event (as JSON) into the stage's queue,
    /// decoded; `None` if the stage takes no durable events.
    pub(crate) fn redeliver(
        &self,
        id: uuid::Uuid,
        payload: &serde_json::Value,
    ) -> Option<Result<Delivery, Undeliverable>> {
        let port = self.events.as_ref()?;
        Some((port.redeliver?)(port, id, payload))
    }

    /// Stages feeding this one (for a step: the steps it waits for).
    pub(crate) fn upstream(&self) -> &[usize] {
        &self.upstream
    }

    /// Whether the stage is done for this run: completed, or abandoned.
    pub(crate) fn done(&self) -> bool {
        self.completed || self.abandoned.is_some()
    }

    /// Gives the stage up for this run, for `reason`: it is never started
    /// again, its downstream gets the end of its input, and what reaches
    /// its input is dropped (in a task of its own, as the ports come back
    /// from its last actor only once that actor is gone).
    pub(crate) fn abandon(&mut self, reason: String) {
        tracing::warn!(stage = %self.name, %reason, "stage abandoned; the run carries on without it");
        self.abandoned = Some(reason);
        self.counters.set_status(StageStatus::Abandoned);
        self.wind_down = Some(tokio::spawn((self.abandon)()));
    }

    /// Drops what still reaches a stage that completed before its input
    /// ended, as an abandoned stage's input is, so its upstream never
    /// waits on it.
    pub(crate) fn wind_down_input(&mut self) {
        self.wind_down = Some(tokio::spawn((self.abandon)()));
    }

    /// Forgets the live actor (it exited, or is being killed for a restart).
    pub(crate) fn detach(&mut self) -> Option<ActorCell> {
        self.control = None;
        self.bells = None;
        self.actor.take()
    }
}
