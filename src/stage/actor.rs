//! The stage actor: a ractor actor hosting a stage's supervised drive loop,
//! one [`Driver::step`] per message, so that supervision and stop signals
//! get their turn between batches.
//!
//! How it ends tells its flow what happened: a completed stage stops with
//! [`EXIT_COMPLETED`] (after its output was recorded), a cancelled one with
//! [`EXIT_CANCELLED`], a failed one returns the failure as an error, which
//! ractor reports to the flow as `ActorFailed` — as it does a panic of the
//! actor itself.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

use tokio::sync::Notify;

use super::context::StageContext;
use super::durable::Redeliver;
use super::events::{EventPolicy, EventPort, EventQueue, event_queue};
use super::logic::StepInputs;
use super::machine::{StageCtx, StageEvent, StageState};
use super::ports::PortSlot;
use super::retry::RetryPolicy;
use super::supervisor::{StageIdentity, StageSupervisor};
use super::work::Work;
use crate::supervise::{
    BoxFuture, ChannelBuilder, Driver, ExternalEventSender, Progress, StateWatcher,
    WithExternalEvents,
};

/// Exit reason of a stage actor whose work completed and was recorded.
pub const EXIT_COMPLETED: &str = "stage completed";
/// Exit reason of a stage actor that was cancelled.
pub const EXIT_CANCELLED: &str = "stage cancelled";

/// Units of work a stage takes per actor message while it only works.
const STEPS_PER_MESSAGE: usize = 32;

/// Control events that may wait for a stage before its flow's sends wait.
const CONTROL_CAPACITY: usize = 1024;

type Hosted<T, W> = Driver<WithExternalEvents<StageSupervisor<T, W>>>;

/// The actor type of a stage running logic `W` over items `T`.
pub(crate) struct StageActor<T, W>(PhantomData<fn() -> (T, W)>);

/// The only message: take the next step.
pub(crate) struct Step;

impl<T: Clone + Send + 'static, W: Work<T>> Actor for StageActor<T, W> {
    type Msg = Step;
    type State = Option<Hosted<T, W>>;
    type Arguments = Hosted<T, W>;

    async fn pre_start(
        &self,
        myself: ActorRef<Step>,
        driver: Hosted<T, W>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(Step)?;
        Ok(Some(driver))
    }

    async fn handle(
        &self,
        myself: ActorRef<Step>,
        _: Step,
        hosted: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(driver) = hosted.as_mut() else {
            return Ok(());
        };
        // Several units of work per message while they only work (no
        // event handled): the message round trip is paid once for them.
        // Control events are still looked at before each unit (the driver
        // polls its channel), and a kill interrupts a handler at once.
        let mut step = driver.step().await;
        for _ in 1..STEPS_PER_MESSAGE {
            if !matches!(step, Ok(Progress::Continued)) {
                break;
            }
            step = driver.step().await;
        }
        match step {
            Ok(Progress::Continued | Progress::Handled) => {
                myself.send_message(Step)?;
                Ok(())
            }
            Ok(Progress::Terminated) => {
                let state = driver.state().clone();
                // Dropping the driver hands the ports back before the flow
                // hears of the exit, so a restart finds them at once.
                *hosted = None;
                match state {
                    StageState::Completed => myself.stop(Some(EXIT_COMPLETED.to_owned())),
                    StageState::Cancelled => myself.stop(Some(EXIT_CANCELLED.to_owned())),
                    StageState::Failed(reason) => return Err(reason.into()),
                    other => {
                        return Err(format!("stage terminated in state {other:?}").into());
                    }
                }
                Ok(())
            }
            Err(error) => {
                *hosted = None;
                Err(error.into())
            }
        }
    }
}

/// What a flow hands a stage it starts.
pub(crate) struct StageLaunch {
    pub(crate) identity: StageIdentity,
    pub(crate) supervisor: ActorCell,
    /// For steps: the outputs of their upstream steps.
    pub(crate) inputs: StepInputs,
    /// A pause or drain the stage is under: queued before the actor starts,
    /// so a restarted stage takes it before any work.
    pub(crate) steer: Option<StageEvent>,
    /// The run and start the factory builds the logic for.
    pub(crate) context: StageContext,
}

/// A started stage: its actor, its control channel and its state.
pub(crate) struct SpawnedStage {
    pub(crate) cell: ActorCell,
    pub(crate) control: ExternalEventSender<StageEvent>,
    pub(crate) watcher: StateWatcher<StageState>,
}

/// Why a stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum StageStartError {
    /// The user's factory panicked while building the stage's logic.
    #[error("stage `{stage}`: its factory panicked: {panic}")]
    FactoryPanicked {
        /// The stage.
        stage: String,
        /// The panic message.
        panic: String,
    },
    /// The actor did not start.
    #[error("stage `{stage}`: its actor failed to start: {source}")]
    Spawn {
        /// The stage.
        stage: String,
        /// ractor's error.
        #[source]
        source: SpawnErr,
    },
}

/// Starts one stage of one run; built per run over that run's pipes.
pub(crate) type Spawner = Box<
    dyn Fn(StageLaunch) -> BoxFuture<'static, Result<SpawnedStage, StageStartError>> + Send + Sync,
>;

/// Builds a stage's logic and starts its actor; erased over the logic type
/// so a flow holds stages of any kind.
pub(crate) trait StageFactory<T: Send + 'static>: Send + Sync {
    /// The stage's parts for one run: how to start it over the ports in
    /// `slot` and, if it declares user events, the sending end of its event
    /// queue (`doorbell` is rung after each event sent); items are retried
    /// per `retry`.
    fn for_run(
        self: Arc<Self>,
        slot: Arc<PortSlot<T>>,
        doorbell: Arc<Notify>,
        retry: RetryPolicy,
    ) -> (Spawner, Option<EventPort>);
}

/// A [`StageFactory`] from a closure building the logic, with the stage's
/// event policy if it declares user events.
pub(crate) struct WorkFactory<F> {
    make: F,
    events: Option<EventPolicy>,
    redeliver: Option<Redeliver>,
}

impl<F> WorkFactory<F> {
    /// `redeliver` decodes the stage's re-delivered durable events.
    pub(crate) fn new(make: F, events: Option<EventPolicy>, redeliver: Option<Redeliver>) -> Self {
        WorkFactory {
            make,
            events,
            redeliver,
        }
    }
}

impl<T, W, F> StageFactory<T> for WorkFactory<F>
where
    T: Clone + Send + 'static,
    W: Work<T>,
    F: Fn(&StageContext) -> W + Send + Sync + 'static,
{
    fn for_run(
        self: Arc<Self>,
        slot: Arc<PortSlot<T>>,
        doorbell: Arc<Notify>,
        retry: RetryPolicy,
    ) -> (Spawner, Option<EventPort>) {
        let queue = self
            .events
            .map(|policy| event_queue::<W::Event>(policy, doorbell, self.redeliver));
        let (inbox, port) = queue.unzip();
        let spawner: Spawner =
            Box::new(move |launch| self.launch(slot.clone(), retry, inbox.clone(), launch));
        (spawner, port)
    }
}

impl<F> WorkFactory<F> {
    fn launch<T, W>(
        &self,
        slot: Arc<PortSlot<T>>,
        retry: RetryPolicy,
        inbox: Option<EventQueue<W::Event>>,
        mut launch: StageLaunch,
    ) -> BoxFuture<'static, Result<SpawnedStage, StageStartError>>
    where
        T: Clone + Send + 'static,
        W: Work<T>,
        F: Fn(&StageContext) -> W,
    {
        let work = catch_unwind(AssertUnwindSafe(|| (self.make)(&launch.context)));
        Box::pin(async move {
            let name = launch.identity.name.clone();
            let mut work = work.map_err(|payload| StageStartError::FactoryPanicked {
                stage: name.clone(),
                panic: crate::supervise::panic_message(payload.as_ref()),
            })?;
            work.prepare(std::mem::take(&mut launch.inputs));
            spawn_stage(launch, slot, retry, inbox, work)
                .await
                .map_err(|source| StageStartError::Spawn {
                    stage: name,
                    source,
                })
        })
    }
}

async fn spawn_stage<T: Clone + Send + 'static, W: Work<T>>(
    launch: StageLaunch,
    slot: Arc<PortSlot<T>>,
    retry: RetryPolicy,
    inbox: Option<EventQueue<W::Event>>,
    work: W,
) -> Result<SpawnedStage, SpawnErr> {
    // Roomy: tokio allocates channel blocks only as events queue, and the
    // flow actor must not wait on a stage that is slow to take its events.
    let (control, receiver, watcher) = ChannelBuilder::<StageEvent, StageState>::new()
        .capacity(CONTROL_CAPACITY)
        .build(StageState::Starting);
    if let Some(steer) = launch.steer {
        // The channel is new and empty: this never waits.
        control
            .send(steer)
            .await
            .map_err(|_| SpawnErr::StartupFailed("the stage's control channel closed".into()))?;
    }
    let settle = launch.identity.settler();
    let supervisor = StageSupervisor::new(launch.identity, slot, retry, inbox);
    let wrapped = WithExternalEvents::new(supervisor, receiver, watcher.clone());
    let ctx = StageCtx {
        work,
        ports: None,
        output: None,
        settle,
    };
    let driver = Driver::new(wrapped, StageState::Starting, ctx);
    let (actor, _join) = Actor::spawn_linked(
        None,
        StageActor::<T, W>(PhantomData),
        driver,
        launch.supervisor,
    )
    .await?;
    Ok(SpawnedStage {
        cell: actor.get_cell(),
        control,
        watcher,
    })
}
