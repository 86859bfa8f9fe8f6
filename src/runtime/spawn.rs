//! A flow actor asked of the root supervisor, and what waits for it.
//!
//! [`Starter::request_flow`] plans a run (its stages, its pipes, what a recovered
//! run already recorded) into a [`FlowRequest`] for the root and a
//! [`PendingFlow`] that becomes the run's [`RunHandle`] once the root has
//! spawned the flow actor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::RuntimeError;
use super::start::Starter;
use crate::flow::ErasedDefinition;
use crate::flow::RunHandle;
use crate::flow::actor::{FlowActor, FlowArgs, FlowMsg};
use crate::flow::cell::RunCell;
use crate::records::{Checkpoint, Run, StepOutput};

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
    cell: Arc<RunCell>,
    spawned: oneshot::Receiver<Spawned>,
}

/// What a recovered run takes over: its recorded stage outputs and its
/// last checkpoint.
#[derive(Clone, Copy)]
pub(crate) struct Recovered<'a> {
    pub(crate) outputs: &'a [StepOutput],
    pub(crate) checkpoint: Option<&'a Checkpoint>,
}

impl Starter {
    /// Plans `run`: the request for the root supervisor to spawn its flow
    /// actor, and what waits for it; `recorded` holds what a recovered run
    /// takes over (`None`: a new run); `inbox_waiting`: a new run whose
    /// inbox already holds input; `cell`: the run's cell if it has one (a
    /// hibernated run woken), else a new one is made.
    pub(crate) fn request_flow(
        &self,
        run: Run,
        definition: &dyn ErasedDefinition,
        recorded: Option<Recovered<'_>>,
        inbox_waiting: bool,
        cell: Option<Arc<RunCell>>,
    ) -> (FlowRequest, PendingFlow) {
        // The cell first: a woken run's plan counts on the board it had.
        let cell = cell.unwrap_or_else(|| {
            let (stages, board) = (definition.stage_names(), definition.progress_board());
            RunCell::new(run.id, stages, board, self.host.clone())
        });
        let mut plan = definition.plan(&cell.progress);
        if let Some(recovered) = recorded {
            plan.resume_from(recovered.outputs, recovered.checkpoint);
        }
        let args = FlowArgs {
            journal: self.journal.for_execution(&run),
            run,
            plan,
            cell: cell.clone(),
            hibernate_after: self.hibernate_after,
            recovering: recorded.is_some(),
            inbox_waiting,
            launcher: self.launcher.clone(),
        };
        let (reply, spawned) = oneshot::channel();
        (FlowRequest { args, reply }, PendingFlow { cell, spawned })
    }
}

impl PendingFlow {
    /// The run this waits for.
    pub(crate) fn run_id(&self) -> Uuid {
        self.cell.run_id
    }

    /// The run's cell.
    pub(crate) fn cell(&self) -> &Arc<RunCell> {
        &self.cell
    }

    /// Waits for the root to spawn the flow actor; the run's handle.
    pub(crate) async fn spawned(self) -> Result<RunHandle, RuntimeError> {
        self.spawned
            .await
            .map_err(|_| RuntimeError::ShuttingDown)??;
        Ok(RunHandle::new(&self.cell))
    }
}
