//! The root supervisor: parent of the journal actor and of every flow actor.
//!
//! It overrides ractor's default (stop when any child stops or fails): a
//! flow actor that fails — a bug or a panic in the flow's own code, since
//! stage failures stay inside the flow — has its run failed in the journal
//! with the reason and its outcome published, so that no run is left
//! `Running` by a crash that did not take the process down.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::flow::actor::{FlowActor, FlowArgs, FlowMsg};
use crate::flow::record;
use crate::flow::{FlowOutcome, FlowState};
use crate::store::{FlowStatus, FlowStore};

/// Messages of the root supervisor.
pub(crate) enum RootMsg {
    /// Spawns these flow actors, concurrently.
    StartFlows(Vec<FlowRequest>),
}

/// One flow actor to spawn and who waits for it.
pub(crate) struct FlowRequest {
    pub(crate) args: FlowArgs,
    pub(crate) reply: oneshot::Sender<Result<ActorRef<FlowMsg>, SpawnErr>>,
}

pub(crate) struct RootActor;

struct RunEntry {
    run_id: Uuid,
    state: watch::Receiver<FlowState>,
    outcome: Arc<watch::Sender<Option<FlowOutcome>>>,
}

pub(crate) struct RootState {
    store: Option<Arc<dyn FlowStore>>,
    flows: HashMap<ActorId, RunEntry>,
}

/// The root's state before the journal exists; the journal is handed in
/// with [`RootMsg`]s' `FlowArgs` (every flow carries the runtime's store).
pub(crate) fn root_state() -> RootState {
    RootState {
        store: None,
        flows: HashMap::new(),
    }
}

impl Actor for RootActor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootState;

    async fn pre_start(
        &self,
        _: ActorRef<RootMsg>,
        state: RootState,
    ) -> Result<RootState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        root: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::StartFlows(requests) => {
                // Spawned concurrently (each spawn waits for its actor's
                // `pre_start`); a flow that dies at once has its exit
                // queued behind this message, so its entry is in by then.
                let mut spawning = tokio::task::JoinSet::new();
                for FlowRequest { args, reply } in requests {
                    let entry = RunEntry {
                        run_id: args.run.id,
                        state: args.state.subscribe(),
                        outcome: args.outcome.clone(),
                    };
                    root.store.get_or_insert_with(|| args.store.clone());
                    let supervisor = myself.get_cell();
                    spawning.spawn(async move {
                        let spawned = Actor::spawn_linked(None, FlowActor, args, supervisor).await;
                        (spawned.map(|(flow, _join)| flow), entry, reply)
                    });
                }
                while let Some(joined) = spawning.join_next().await {
                    // A panicking spawn drops its reply: the caller sees the
                    // runtime as gone.
                    let Ok((spawned, entry, reply)) = joined else {
                        continue;
                    };
                    if let Ok(flow) = &spawned {
                        root.flows.insert(flow.get_id(), entry);
                    }
                    let _ = reply.send(spawned);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<RootMsg>,
        event: SupervisionEvent,
        root: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            _ => return Ok(()),
        };
        let Some(entry) = root.flows.remove(&cell.get_id()) else {
            // Not a flow: the journal actor. Every later write fails with
            // a typed `JournalClosed`, which fails the runs that need it.
            tracing::error!(actor = %cell.get_id(), reason = ?failure, "journal actor stopped");
            return Ok(());
        };
        if entry.outcome.borrow().is_some() {
            return Ok(());
        }
        let reason = format!(
            "the flow actor stopped without an outcome in state {:?}: {}",
            *entry.state.borrow(),
            failure.as_deref().unwrap_or("no reason given")
        );
        tracing::error!(run_id = %entry.run_id, %reason, "flow actor lost");
        let mut published = reason.clone();
        if let Some(store) = &root.store
            && let Err(error) = record::fail_orphaned(store, entry.run_id, reason).await
        {
            published = format!("{published}; recording the failure failed: {error}");
        }
        entry.outcome.send_replace(Some(FlowOutcome {
            run_id: entry.run_id,
            status: FlowStatus::Failed,
            structured_output: None,
            reason: Some(published),
        }));
        Ok(())
    }
}
