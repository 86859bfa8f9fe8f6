//! A flow actor asked of the root supervisor, and what waits for it.
//!
//! [`request_flow`] plans a run (its stages, its pipes, what a recovered
//! run already recorded) into a [`FlowRequest`] for the root and a
//! [`PendingFlow`] that becomes the run's [`RunHandle`] once the root has
//! spawned the flow actor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::RuntimeError;
use crate::flow::ErasedDefinition;
use crate::flow::actor::{FlowActor, FlowArgs, FlowMsg};
use crate::flow::{RunHandle, RunOutcome, RunState};
use crate::journal::JournalHandle;
use crate::records::{Checkpoint, Run, StepOutput};
use crate::stage::child::RunLauncher;

/// What the spawn of one flow actor resolves to.
pub(crate) type Spawned = Result<ActorRef<FlowMsg>, SpawnErr>;

/// A spawn under way.
pub(crate) type BoxedSpawn = Pin<Box<dyn Future<Output = Spawned> + Send>>;

/// How the root spawns a flow actor linked to itself (a seam: tests put a
/// failing spawn in; the runtime always uses [`spawn_flow_actor`]).
pub(crate) type SpawnFlow = fn(FlowArgs, ActorCell) -> BoxedSpawn;

/// Spawns the flow actor of `args` linked to `supervisor`.
pub(crate) fn spawn_flow_actor(args: FlowArgs, supervisor: ActorCell) -> BoxedSpawn {
    Box::pin(async move {
        Actor::spawn_linked(None, FlowActor, args, supervisor)
            .await
            .map(|(flow, _join)| flow)
    })
}

/// One flow actor to spawn and who waits for it.
pub(crate) struct FlowRequest {
    pub(crate) args: FlowArgs,
    pub(crate) reply: oneshot::Sender<Spawned>,
}

/// A flow actor asked of the root supervisor, not yet collected.
pub(crate) struct PendingFlow {
    run_id: Uuid,
    spawned: oneshot::Receiver<Spawned>,
    state: watch::Receiver<RunState>,
    outcome: watch::Receiver<Option<RunOutcome>>,
    stage_names: Arc<[String]>,
}

/// What a recovered run takes over: its recorded stage outputs and its
/// last checkpoint.
#[derive(Clone, Copy)]
pub(crate) struct Recovered<'a> {
    pub(crate) outputs: &'a [StepOutput],
    pub(crate) checkpoint: Option<&'a Checkpoint>,
}

/// Plans `run` over `store`: the request for the root supervisor to spawn
/// its flow actor, and what waits for it; `recorded` holds what a recovered
/// run takes over (`None`: a new run); `inbox_waiting`: a new run whose
/// inbox already holds input; `launcher`: how its stages start child runs.
pub(crate) fn request_flow(
    run: Run,
    journal: JournalHandle,
    definition: &dyn ErasedDefinition,
    recorded: Option<Recovered<'_>>,
    inbox_waiting: bool,
    launcher: Option<Arc<dyn RunLauncher>>,
) -> (FlowRequest, PendingFlow) {
    let run_id = run.id;
    let mut plan = definition.plan();
    if let Some(recovered) = recorded {
        plan.resume_from(recovered.outputs, recovered.checkpoint);
    }
    let stage_names = plan.stages.iter().map(|s| s.name.clone()).collect();
    let (state, state_rx) = watch::channel(RunState::Created);
    let (outcome, outcome_rx) = watch::channel(None);
    let args = FlowArgs {
        run,
        journal,
        plan,
        state,
        outcome: Arc::new(outcome),
        recovering: recorded.is_some(),
        inbox_waiting,
        launcher,
    };
    let (reply, spawned) = oneshot::channel();
    let pending = PendingFlow {
        run_id,
        spawned,
        state: state_rx,
        outcome: outcome_rx,
        stage_names,
    };
    (FlowRequest { args, reply }, pending)
}

impl PendingFlow {
    /// The run this waits for.
    pub(crate) fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// Waits for the root to spawn the flow actor; the run's handle.
    pub(crate) async fn spawned(self) -> Result<RunHandle, RuntimeError> {
        let actor = self
            .spawned
            .await
            .map_err(|_| RuntimeError::ShuttingDown)??;
        Ok(RunHandle::new(
            self.run_id,
            actor,
            self.state,
            self.outcome,
            self.stage_names,
        ))
    }
}
