//! The supervised component a stage actor hosts: the stage machine plus the
//! work each state does, mapped onto [`Supervised`].

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::oneshot;

use super::StageKind;
use super::dead_letter::StageDeadLetter;
use super::durable::{Envelope, Settlement, Settler};
use super::events::{EventQueue, HeldEvents, Next, before_work, while_idle};
use super::machine::{StageAction, StageCtx, StageEvent, StageState, stage_machine};
use super::ports::PortSlot;
use super::retry::{Retries, RetryPolicy};
use super::work::{Bells, Stepped, Work, completion_output};
use crate::fsm::StateMachine;
use crate::ids::{StageId, WriterId};
use crate::progress::StageCounters;
use crate::supervise::{
    BoxError, DispatchResult, EventLoopDirective, ExternalEventMode, ExternalEventPolicy,
    Supervised, Supervisor,
};

/// A stage's completed work, reported to its flow, which records it (or,
/// after a cancel, refuses to) and acknowledges.
#[derive(Debug)]
pub(crate) struct StageDone {
    /// The stage's index in its flow.
    pub stage: usize,
    /// Which start of the stage (restarts count up) completed.
    pub generation: u64,
    /// The output to record.
    pub output: Value,
    /// Whether it completed before its input ended (the rest of the input
    /// is then dropped, as an abandoned stage's is).
    pub input_left: bool,
    /// `Ok(true)` once recorded, `Ok(false)` if the flow refused (cancelled),
    /// `Err` if recording failed.
    pub ack: oneshot::Sender<Result<bool, String>>,
}

/// What a stage reports to its flow.
#[derive(Debug)]
pub(crate) enum StageReport {
    /// Its work is done.
    Done(StageDone),
    /// It gave up on an item.
    DeadLetter(StageDeadLetter),
    /// Its logic took an inbox entry.
    Settled(Settlement),
    /// It started or stopped waiting durably (a timer or a signal).
    Waiting(StageWait),
    /// Its step continues the run as a new run.
    ContinueAsNew(super::continue_as_new::StageContinue),
}

/// A stage that waits durably (`wait` says for what), or no longer does
/// (`None`).
#[derive(Debug, Clone)]
pub(crate) struct StageWait {
    pub(crate) stage: usize,
    /// Tells apart the waits of one stage (it may wait for several things
    /// at once).
    pub(crate) token: u64,
    pub(crate) wait: Option<serde_json::Value>,
}

/// How a stage reaches its flow with its completion and its dead letters.
pub(crate) type Reporter = Arc<dyn Fn(StageReport) -> bool + Send + Sync>;

/// Why reporting a completion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CompletionError {
    /// The flow is gone or dropped the report.
    #[error("stage `{stage}`: the flow is gone; the completion was not recorded")]
    FlowGone {
        /// The stage's name.
        stage: String,
    },
    /// The flow could not record the output.
    #[error("stage `{stage}`: recording the completion failed: {reason}")]
    Recording {
        /// The stage's name.
        stage: String,
        /// Why.
        reason: String,
    },
}

/// Who a stage is and how it reaches its flow.
pub(crate) struct StageIdentity {
    pub(crate) name: String,
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) id: StageId,
    pub(crate) report: Reporter,
    pub(crate) bells: Arc<Bells>,
    /// Its live counters, kept by the run (across restarts and wakes).
    pub(crate) counters: Arc<StageCounters>,
}

/// The component a stage actor drives.
pub(crate) struct StageSupervisor<T: Clone + Send + 'static, W: Work<T>> {
    identity: StageIdentity,
    slot: Arc<PortSlot<T>>,
    retry: RetryPolicy,
    /// The stage's user-event queue, if it declares events.
    events: Option<EventQueue<W::Event>>,
    /// The queue, once taken in `Starting`.
    held: Option<HeldEvents<W::Event>>,
    /// Set when `Completed` is dispatched: what `write_completion_event` reports.
    final_output: Option<Value>,
    /// Set with it: whether the stage completed before its input ended.
    input_left: bool,
    _work: PhantomData<fn() -> W>,
}

impl<T: Clone + Send + 'static, W: Work<T>> StageSupervisor<T, W> {
    pub(crate) fn new(
        identity: StageIdentity,
        slot: Arc<PortSlot<T>>,
        retry: RetryPolicy,
        events: Option<EventQueue<W::Event>>,
    ) -> Self {
        StageSupervisor {
            identity,
            slot,
            retry,
            events,
            held: None,
            final_output: None,
            input_left: false,
            _work: PhantomData,
        }
    }

    /// How the stage takes user events in `state` (`Ignore` if it declares none).
    fn event_mode(&self, state: &StageState) -> ExternalEventMode {
        self.events
            .as_ref()
            .map_or(ExternalEventMode::Ignore, |e| e.policy.mode(state))
    }

    /// Hands the logic the events queued now, whatever the mode, leaving the
    /// queue open: a completing stage's last look at it before its
    /// completion hook (only those already queued, so a steady stream cannot
    /// hold the completion up). The queue stays open so that a stage whose
    /// hook fails restarts able to take events (and `Block` still gates it).
    async fn hand_over_queued(&mut self, work: &mut W) -> Result<(), BoxError> {
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        for _ in 0..held.len() {
            let Ok(event) = held.try_recv() else { break };
            deliver(work, event, &self.identity).await?;
        }
        Ok(())
    }

    /// Closes the queue of a completing stage (later sends fail at once with
    /// `StageNotRunning`) and hands the logic every event accepted before
    /// that, whatever the mode: none that a send was told was queued is
    /// dropped. `recv` until the end, not `len` times: a send that reserved
    /// its slot before the close may still be writing its event.
    ///
    /// Durable events accepted before the close but still on their way
    /// (the flow's forwarder waits for room in a full queue) are taken
    /// first: the close would fail their sends.
    async fn close_and_hand_over(&mut self, work: &mut W) -> Result<(), BoxError> {
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        if let Some(transit) = self.events.as_ref().map(|e| e.in_transit.clone()) {
            loop {
                let changed = transit.changed();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if transit.close_if_empty() {
                    break;
                }
                // A closed queue fails the sends at once: then only the
                // count's change is waited for.
                tokio::select! {
                    Some(event) = held.recv() => deliver(work, event, &self.identity).await?,
                    () = changed => {}
                }
            }
        }
        held.close();
        while let Some(event) = held.recv().await {
            deliver(work, event, &self.identity).await?;
        }
        Ok(())
    }

    /// A cancelled stage takes no more events: later sends fail at once,
    /// and those still queued are dropped with the cancel, counted.
    fn refuse_events(&mut self) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        held.close();
        let mut dropped = 0_usize;
        while held.try_recv().is_ok() {
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(stage = %self.identity.name, dropped, "stage cancelled with user events queued; they are dropped");
        }
    }

    /// Settles the replayed items the stage is done with (once per unit of
    /// work, not per item).
    fn settle_replayed(&self, ports: &mut crate::stage::ports::Ports<T>) {
        for id in ports.take_replayed() {
            self.identity.settler().settle(id, None);
        }
    }

    /// What a unit of work needs to retry an item.
    fn retries(&self) -> Retries<'_> {
        Retries {
            stage: &self.identity.name,
            policy: &self.retry,
            bells: &self.identity.bells,
            index: self.identity.index,
            generation: self.identity.generation,
            report: &self.identity.report,
            counters: &self.identity.counters,
        }
    }

    async fn run(&mut self, ctx: &mut StageCtx<T, W>) -> DispatchResult<StageEvent> {
        let StageCtx { work, ports, .. } = ctx;
        let ports = ports.as_mut().ok_or("stage is running without its ports")?;
        let stepped = work.step(ports, &self.retries()).await;
        self.settle_replayed(ports);
        ports.publish_counts();
        Ok(match stepped? {
            Stepped::Worked | Stepped::Interrupted => EventLoopDirective::Continue,
            Stepped::Ended => EventLoopDirective::Transition(StageEvent::InputEnded),
        })
    }

    /// Sources stop at once; transforms and sinks first work off their input.
    async fn drain(&mut self, ctx: &mut StageCtx<T, W>) -> DispatchResult<StageEvent> {
        let StageCtx {
            work,
            ports,
            output,
            ..
        } = ctx;
        let ports = ports
            .as_mut()
            .ok_or("stage is draining without its ports")?;
        if W::KIND != StageKind::Source {
            let stepped = work.step(ports, &self.retries()).await;
            self.settle_replayed(ports);
            ports.publish_counts();
            match stepped? {
                Stepped::Ended => {}
                Stepped::Worked | Stepped::Interrupted => return Ok(EventLoopDirective::Continue),
            }
        }
        // Whatever the policy, no accepted event is dropped: those queued
        // now go before the completion hook; the queue closes after it and
        // those accepted meanwhile go before the outputs close, so no event
        // can fail a stage whose outputs are finished (a restart would run
        // it again into closed outputs).
        self.hand_over_queued(work).await?;
        let result = work.complete(ports).await?;
        self.close_and_hand_over(work).await?;
        ports.finish_outputs().await?;
        ports.publish_counts();
        *output = Some(completion_output(W::KIND, ports, result));
        Ok(EventLoopDirective::Transition(StageEvent::Flushed))
    }
}

/// Hands one user event to the logic and settles its inbox entry, if it has
/// one: handled, or, when the handling fails, panics or is cut short by a
/// kill (each fails the stage), undeliverable, so a poisonous event is not
/// handed to the restarted stage again. A crash settles nothing: the entry
/// is handed over again on resume.
async fn deliver<T: Clone + Send + 'static, W: Work<T>>(
    work: &mut W,
    envelope: Envelope<W::Event>,
    identity: &StageIdentity,
) -> Result<(), crate::supervise::BoxError> {
    let Envelope { event, inbox } = envelope;
    let settler = identity.settler();
    let handling = settler.handling(inbox);
    let handled = work.on_event(event).await;
    let failed = handled
        .as_ref()
        .err()
        .map(|e| format!("its handling failed: {e}"));
    handling.handled(failed);
    handled
}

impl StageIdentity {
    /// How this start of the stage settles inbox entries.
    pub(crate) fn settler(&self) -> Settler {
        Settler {
            stage: self.index,
            report: self.report.clone(),
        }
    }
}

impl<T: Clone + Send + 'static, W: Work<T>> Supervisor for StageSupervisor<T, W> {
    type State = StageState;
    type Event = StageEvent;
    type Context = StageCtx<T, W>;
    type Action = StageAction<T, W>;

    fn build_state_machine(
        &self,
        initial_state: StageState,
    ) -> StateMachine<StageState, StageEvent, StageCtx<T, W>, StageAction<T, W>> {
        stage_machine(initial_state)
    }

    fn name(&self) -> &str {
        &self.identity.name
    }
}

#[async_trait]
impl<T: Clone + Send + 'static, W: Work<T>> Supervised for StageSupervisor<T, W> {
    async fn dispatch_state(
        &mut self,
        state: &StageState,
        ctx: &mut StageCtx<T, W>,
    ) -> DispatchResult<StageEvent> {
        // A load and a compare while the state stays.
        self.identity.counters.set_status(state.into());
        match state {
            StageState::Starting => {
                let mut ports = self.slot.lease().await;
                // A resumed run's snapshot, handed over before any work; it
                // stays until a start took it (a failed restore fails this
                // start, and the next one gets it again).
                let snapshot = ports.checkpoint.as_ref().and_then(|c| c.restore.clone());
                if let Some(snapshot) = snapshot {
                    ctx.work.restore(snapshot)?;
                    if let Some(link) = ports.checkpoint.as_mut() {
                        link.restore = None;
                    }
                }
                ctx.ports = Some(ports);
                if let Some(events) = &self.events {
                    self.held = Some(events.hold().await);
                }
                Ok(EventLoopDirective::Transition(StageEvent::Started))
            }
            StageState::Running | StageState::Draining => {
                let mode = match (state, self.event_mode(state)) {
                    // A drain must finish: it never waits for an event.
                    (StageState::Draining, ExternalEventMode::Block) => ExternalEventMode::Poll,
                    (_, mode) => mode,
                };
                if let Some(held) = self.held.as_mut() {
                    let ports = ctx
                        .ports
                        .as_mut()
                        .ok_or("stage is running without its ports")?;
                    // A source's end is its own to find; a transform's or
                    // sink's comes with its input's.
                    let no_work_left = async {
                        match W::KIND {
                            StageKind::Source | StageKind::Step => std::future::pending().await,
                            StageKind::Transform | StageKind::Sink => ports.input_end().await,
                        }
                    };
                    let doorbell = &self.identity.bells.control;
                    match before_work(held, mode, doorbell, no_work_left).await {
                        Next::Work => {}
                        Next::Interrupted => return Ok(EventLoopDirective::Continue),
                        Next::EventThenWork(event) => {
                            deliver(&mut ctx.work, event, &self.identity).await?;
                        }
                    }
                }
                match state {
                    StageState::Running => self.run(ctx).await,
                    _ => self.drain(ctx).await,
                }
            }
            StageState::Paused => {
                // No work: wait for a control event (the doorbell rings with
                // each) or a user event the policy takes while paused.
                let mode = self.event_mode(state);
                let bell = &self.identity.bells.control;
                if let Some(event) = while_idle(self.held.as_mut(), mode, bell).await {
                    deliver(&mut ctx.work, event, &self.identity).await?;
                }
                Ok(EventLoopDirective::Continue)
            }
            StageState::Completed => {
                // Its queue was closed, and emptied, as it drained.
                self.final_output = ctx.output.take();
                self.input_left = ctx.work.ends_before_input();
                Ok(EventLoopDirective::Terminate)
            }
            StageState::Cancelled => {
                self.refuse_events();
                Ok(EventLoopDirective::Terminate)
            }
            StageState::Failed(_) => Ok(EventLoopDirective::Terminate),
        }
    }

    fn writer_id(&self) -> WriterId {
        self.identity.id.into()
    }

    async fn write_completion_event(&self) -> Result<(), BoxError> {
        let Some(output) = &self.final_output else {
            return Ok(()); // failed or cancelled: the flow records those
        };
        let (ack, acked) = oneshot::channel();
        let done = StageDone {
            stage: self.identity.index,
            generation: self.identity.generation,
            output: output.clone(),
            input_left: self.input_left,
            ack,
        };
        let gone = || CompletionError::FlowGone {
            stage: self.identity.name.clone(),
        };
        if !(self.identity.report)(StageReport::Done(done)) {
            return Err(gone().into());
        }
        match acked.await {
            Ok(Ok(_recorded)) => Ok(()),
            Ok(Err(reason)) => Err(CompletionError::Recording {
                stage: self.identity.name.clone(),
                reason,
            }
            .into()),
            Err(_) => Err(gone().into()),
        }
    }

    fn event_for_action_error(&self, msg: String) -> StageEvent {
        StageEvent::Failure(msg)
    }

    fn stage_id(&self) -> Option<StageId> {
        Some(self.identity.id)
    }
}

impl<T: Clone + Send + 'static, W: Work<T>> ExternalEventPolicy for StageSupervisor<T, W> {
    fn external_event_mode(state: &StageState) -> ExternalEventMode {
        match state {
            // Events wait until the ports are taken, so a Pause sent to a
            // restarting stage pauses it once it can run.
            StageState::Starting => ExternalEventMode::Ignore,
            // Paused polls too: its dispatch waits for the doorbell, which
            // rings with every control event, or for a user event.
            StageState::Running | StageState::Draining | StageState::Paused => {
                ExternalEventMode::Poll
            }
            StageState::Completed | StageState::Failed(_) | StageState::Cancelled => {
                ExternalEventMode::Ignore
            }
        }
    }

    fn on_external_event_channel_closed(state: &StageState) -> Option<StageEvent> {
        // The flow is gone: nobody will record this stage's work.
        (!state.is_terminal()).then_some(StageEvent::Cancel)
    }
}
