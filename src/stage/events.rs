//! Typed user events for one stage: the policy, the queue (which belongs to
//! the run, so a restarted stage's actor gets the events its predecessor
//! left) and the hand-over (the user-facing docs are on [`EventPolicy`]).

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, Notify, OwnedMutexGuard, mpsc};

use super::durable::{Envelope, InTransit, Redeliver};
use super::machine::StageState;
use crate::supervise::{BoxError, ExternalEventMode};

/// How many user events may wait for a stage, by default, before a send waits.
pub const DEFAULT_EVENT_CAPACITY: usize = 64;

/// The largest event queue a stage may have; a flow declaring a larger one
/// is rejected when it is built
/// ([`DefinitionError::EventCapacity`](crate::flow::DefinitionError::EventCapacity)).
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

/// Stage logic that takes user events of type `Ev`; when it takes them, and
/// what becomes of queued events when the stage completes, fails or is
/// cancelled, is told on [`EventPolicy`].
pub trait OnEvent<Ev>: Send + 'static {
    /// Handles one event. An error (or a panic) fails the stage, as one from
    /// its work does; its restart policy decides what follows.
    fn on_event(&mut self, event: Ev) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// The event type of a stage that declares none: it has no values, so
/// nothing can be sent to such a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEvents {}

/// Every logic takes `NoEvents` (there are none), so that a stage without
/// declared events needs no impl. A consequence: a generic
/// `impl<E> OnEvent<E> for MyLogic` conflicts with this one (it would
/// cover `E = NoEvents` too); implement `OnEvent` for each event type.
impl<L: Send + 'static> OnEvent<NoEvents> for L {
    async fn on_event(&mut self, event: NoEvents) -> Result<(), BoxError> {
        match event {}
    }
}

/// When a stage takes its user events, by state, and how big its queue is.
///
/// A stage may declare, when its flow is built, the type `Ev` of the events
/// it takes ([`FlowBuilder::with_events`](crate::flow::FlowBuilder::with_events));
/// its logic then implements [`OnEvent<Ev>`], and a
/// [`TypedStageHandle<Ev>`](crate::flow::TypedStageHandle) sends it values of
/// that type. Events wait in the stage's own bounded queue, which belongs to
/// the run (not to one actor): events queued for a stage that fails are
/// handed to its restarted actor.
///
/// When the stage takes them is this policy: per state, an
/// [`ExternalEventMode`], in the sense of
/// [`ExternalEventPolicy`](crate::supervise::ExternalEventPolicy):
///
/// | mode | `Running` / `Draining` | `Paused` |
/// |---|---|---|
/// | `Poll` | one queued event before each unit of work (a batch), if any | each event as it comes |
/// | `Block` | waits for an event before each unit of work: events gate the work (see below) | each event as it comes |
/// | `Ignore` | events stay queued until a state that takes them, or until the stage completes (below) | events stay queued until resumed |
///
/// `Poll` hands over at most one event per unit of work, so a steady
/// stream of events never starves the data plane (nor a drain); a
/// transform or sink waiting for input takes each event as it comes.
///
/// `Block` never holds up the end of a stage: a transform or sink whose
/// input has ended stops waiting (its completion is not a unit of work),
/// and a draining stage takes `Block` as `Poll` (a drain must finish, a
/// drained source has nothing to gate).
///
/// A stage never takes user events while `Starting`. None accepted is
/// dropped by a stage that completes, whatever its policy (`Ignore`
/// defers events, it does not discard them): right before its completion
/// hook, a completing stage hands its logic every event still queued; once
/// the hook has run, it closes its queue (from then on sends fail with
/// [`HandleError::StageNotRunning`](crate::flow::HandleError::StageNotRunning))
/// and hands over the events accepted while the hook ran, before its
/// outputs close. A stage whose hook fails restarts with its queue open; one
/// whose last hand-over fails restarts with it closed (it takes no more
/// events, and `Block` no longer gates it). A cancelled
/// stage closes its queue too; the events still queued are dropped with
/// the cancel (and counted in a warning). The default,
/// [`EventPolicy::default`], is how a stage takes `Signal`s: between
/// batches while running or draining, at once while paused. User events and
/// control events travel apart: their relative order is not kept. An event
/// whose handling fails the stage (or is cut short by a kill) is lost with
/// that failure, unless it was sent durably
/// ([`FlowBuilder::with_durable_events`](crate::flow::FlowBuilder::with_durable_events)):
/// then a failed handling is settled with its error in the run's inbox and
/// failure ledger, and one cut short by a crash is handed over again.
///
/// ```
/// use troupe::stage::{EventPolicy, OnEvent, Sink};
/// use troupe::supervise::{BoxError, ExternalEventMode};
///
/// /// What an operator can tell the sink.
/// enum Threshold {
///     Raise(u64),
///     Reset,
/// }
///
/// struct Alerts {
///     threshold: u64,
/// }
///
/// impl Sink<u64> for Alerts {
///     async fn consume(&mut self, x: u64) -> Result<(), BoxError> {
///         if x > self.threshold {
///             println!("alert: {x}");
///         }
///         Ok(())
///     }
/// }
///
/// impl OnEvent<Threshold> for Alerts {
///     async fn on_event(&mut self, event: Threshold) -> Result<(), BoxError> {
///         match event {
///             Threshold::Raise(by) => self.threshold += by,
///             Threshold::Reset => self.threshold = 0,
///         }
///         Ok(())
///     }
/// }
///
/// // Events wait while the sink runs and are taken once it is paused.
/// let policy = EventPolicy::default().running(ExternalEventMode::Ignore);
/// assert_eq!(policy.mode(&troupe::stage::StageState::Running), ExternalEventMode::Ignore);
/// # let _ = Alerts { threshold: 0 };
/// ```
///
/// The whole path, through a flow, is shown on
/// [`RunHandle::stage_events`](crate::flow::RunHandle::stage_events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventPolicy {
    running: ExternalEventMode,
    paused: ExternalEventMode,
    draining: ExternalEventMode,
    capacity: usize,
}

impl Default for EventPolicy {
    /// As `Signal`s are taken: `Poll` while running or draining, `Block`
    /// (at once) while paused; a queue of [`DEFAULT_EVENT_CAPACITY`].
    fn default() -> Self {
        EventPolicy {
            running: ExternalEventMode::Poll,
            paused: ExternalEventMode::Block,
            draining: ExternalEventMode::Poll,
            capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

impl EventPolicy {
    /// The mode while the stage runs.
    pub fn running(mut self, mode: ExternalEventMode) -> Self {
        self.running = mode;
        self
    }

    /// The mode while the stage is paused (`Poll` and `Block` both take
    /// events as they come: a paused stage has no work of its own).
    pub fn paused(mut self, mode: ExternalEventMode) -> Self {
        self.paused = mode;
        self
    }

    /// The mode while the stage drains (`Block` is taken as `Poll`: a
    /// drain never waits for an event).
    pub fn draining(mut self, mode: ExternalEventMode) -> Self {
        self.draining = mode;
        self
    }

    /// How many events may wait before a send waits (at least 1, at most
    /// [`MAX_EVENT_CAPACITY`], checked when the flow is built).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many events may wait before a send waits.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// The mode of `state`: `Ignore` while starting and once ended.
    pub fn mode(&self, state: &StageState) -> ExternalEventMode {
        match state {
            StageState::Running => self.running,
            StageState::Paused => self.paused,
            StageState::Draining => self.draining,
            StageState::Starting
            | StageState::Completed
            | StageState::Failed(_)
            | StageState::Cancelled => ExternalEventMode::Ignore,
        }
    }
}

/// The sending end of a stage's event queue for one run, with its type
/// erased so the flow can hold stages of any event type.
#[derive(Clone)]
pub(crate) struct EventPort {
    /// An `mpsc::Sender<Envelope<Ev>>`.
    sender: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
    /// The stage's control doorbell, rung after each send so that a stage
    /// waiting for input looks at its queue.
    pub(crate) doorbell: Arc<Notify>,
    /// How inbox entries re-delivered to the stage decode, if it takes
    /// durable events.
    pub(crate) redeliver: Option<Redeliver>,
    /// Durable events on their way into the queue.
    pub(crate) in_transit: Arc<InTransit>,
}

impl EventPort {
    /// The declared event type's name, for errors.
    pub(crate) fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The typed sender, if `Ev` is the declared event type.
    pub(crate) fn sender<Ev: Send + 'static>(&self) -> Option<mpsc::Sender<Envelope<Ev>>> {
        self.sender
            .downcast_ref::<mpsc::Sender<Envelope<Ev>>>()
            .cloned()
    }
}

/// A stage's event queue for one run: the receiving end, taken by each
/// start of the stage in turn, and the policy it is read by.
pub(crate) struct EventQueue<Ev> {
    queue: Arc<Mutex<mpsc::Receiver<Envelope<Ev>>>>,
    pub(crate) policy: EventPolicy,
    /// Durable events on their way into the queue (as [`EventPort`]'s).
    pub(crate) in_transit: Arc<InTransit>,
}

impl<Ev> Clone for EventQueue<Ev> {
    fn clone(&self) -> Self {
        EventQueue {
            queue: self.queue.clone(),
            policy: self.policy,
            in_transit: self.in_transit.clone(),
        }
    }
}

/// A new event queue: the stage's end and the flow's port to it
/// (`redeliver` decodes re-delivered inbox entries, for durable events).
pub(crate) fn event_queue<Ev: Send + 'static>(
    policy: EventPolicy,
    doorbell: Arc<Notify>,
    redeliver: Option<Redeliver>,
) -> (EventQueue<Ev>, EventPort) {
    // Checked when the flow is built; clamped again so that no policy can
    // make tokio panic.
    let (tx, rx) = mpsc::channel::<Envelope<Ev>>(policy.capacity.min(MAX_EVENT_CAPACITY));
    let in_transit = Arc::new(InTransit::default());
    let inbox = EventQueue {
        queue: Arc::new(Mutex::new(rx)),
        policy,
        in_transit: in_transit.clone(),
    };
    let port = EventPort {
        sender: Arc::new(tx),
        type_name: std::any::type_name::<Ev>(),
        doorbell,
        redeliver,
        in_transit,
    };
    (inbox, port)
}

/// A running stage's hold on its event queue; dropping it (with the actor)
/// hands the queue, and what waits in it, to the next start.
pub(crate) type HeldEvents<Ev> = OwnedMutexGuard<mpsc::Receiver<Envelope<Ev>>>;

impl<Ev: Send + 'static> EventQueue<Ev> {
    /// Takes the queue, waiting until a previous start of the stage let go.
    pub(crate) async fn hold(&self) -> HeldEvents<Ev> {
        self.queue.clone().lock_owned().await
    }
}

/// What to do about user events in a state, before its work.
pub(crate) enum Next<Ev> {
    /// Hand over this event, then do the work.
    EventThenWork(Envelope<Ev>),
    /// Do the work.
    Work,
    /// The doorbell rang: let the control channel be looked at first.
    Interrupted,
}

/// Looks at the queue as `mode` asks, in a state with work of its own
/// (`Running`, `Draining`). `Block` stops waiting once `no_work_left`
/// resolves (the input ended): completing is not a unit of work.
pub(crate) async fn before_work<Ev>(
    held: &mut HeldEvents<Ev>,
    mode: ExternalEventMode,
    doorbell: &Notify,
    no_work_left: impl Future<Output = ()>,
) -> Next<Ev> {
    match mode {
        ExternalEventMode::Ignore => Next::Work,
        ExternalEventMode::Poll => match held.try_recv() {
            Ok(event) => {
                // The doorbell keeps one ring for several sends: ring again
                // for the rest, or an idle stage (no input coming) would
                // leave them queued until its next batch.
                if !held.is_empty() {
                    doorbell.notify_one();
                }
                Next::EventThenWork(event)
            }
            Err(_) => Next::Work,
        },
        ExternalEventMode::Block => tokio::select! {
            biased;
            () = doorbell.notified() => Next::Interrupted,
            event = held.recv() => event.map_or(Next::Work, Next::EventThenWork),
            () = no_work_left => Next::Work,
        },
    }
}

/// Waits, in a state without work (`Paused`), for the doorbell or, unless
/// `mode` ignores events, for an event.
pub(crate) async fn while_idle<Ev>(
    held: Option<&mut HeldEvents<Ev>>,
    mode: ExternalEventMode,
    doorbell: &Notify,
) -> Option<Envelope<Ev>> {
    match held {
        // A closed queue (a stage restarted after it closed it, as it
        // completed) has nothing to wait for: then only the doorbell counts.
        Some(held) if mode != ExternalEventMode::Ignore => tokio::select! {
            biased;
            () = doorbell.notified() => None,
            Some(event) = held.recv() => Some(event),
        },
        _ => {
            doorbell.notified().await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_takes_events_as_signals_are_taken() {
        let policy = EventPolicy::default();
        assert_eq!(
            policy.mode(&StageState::Starting),
            ExternalEventMode::Ignore
        );
        assert_eq!(policy.mode(&StageState::Running), ExternalEventMode::Poll);
        assert_eq!(policy.mode(&StageState::Paused), ExternalEventMode::Block);
        assert_eq!(policy.mode(&StageState::Draining), ExternalEventMode::Poll);
        assert_eq!(
            policy.mode(&StageState::Completed),
            ExternalEventMode::Ignore
        );
        let blocking = policy.running(ExternalEventMode::Block).capacity(0);
        assert_eq!(
            blocking.mode(&StageState::Running),
            ExternalEventMode::Block
        );
        assert_eq!(blocking.capacity, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_port_sends_only_its_declared_type_and_the_queue_outlives_its_holder() {
        let (inbox, port) =
            event_queue::<u8>(EventPolicy::default(), Arc::new(Notify::new()), None);
        assert!(port.sender::<u16>().is_none());
        assert!(port.type_name().ends_with("u8"));
        let tx = port.sender::<u8>().expect("declared type");
        tx.send(Envelope::plain(1)).await.unwrap();
        tx.send(Envelope::plain(2)).await.unwrap();
        let mut held = inbox.hold().await;
        assert_eq!(held.recv().await.map(|e| e.event), Some(1));
        drop(held);
        // The next holder gets what is left.
        let mut held = inbox.hold().await;
        let doorbell = Notify::new();
        let busy = std::future::pending;
        let next = before_work(&mut held, ExternalEventMode::Poll, &doorbell, busy()).await;
        assert!(matches!(
            next,
            Next::EventThenWork(Envelope { event: 2, .. })
        ));
        let next = before_work(&mut held, ExternalEventMode::Poll, &doorbell, busy()).await;
        assert!(matches!(next, Next::Work));
        doorbell.notify_one();
        let next = before_work(&mut held, ExternalEventMode::Block, &doorbell, busy()).await;
        assert!(matches!(next, Next::Interrupted));
        let ended = std::future::ready(());
        let next = before_work(&mut held, ExternalEventMode::Block, &doorbell, ended).await;
        assert!(matches!(next, Next::Work));
        // A closed, empty queue does not end a paused stage's wait.
        held.close();
        let idle = while_idle(Some(&mut held), ExternalEventMode::Block, &doorbell);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(1), idle).await;
        assert!(waited.is_err(), "returned at once: {waited:?}");
    }
}
