//! The root supervisor: parent of the journal actor and of every flow actor.
//!
//! It overrides ractor's default (stop when any child stops or fails): a
//! flow actor that fails — a bug or a panic in the flow's own code, since
//! stage failures stay inside the flow — has its run failed in the journal
//! with the reason and its outcome published, so that no run is left
//! `Running` by a crash that did not take the process down.

use std::collections::HashMap;
use std::sync::Arc;

use super::spawn::{FlowRequest, SpawnFlow, spawn_flow_actor};
use crate::flow::RunOutcome;
use crate::flow::actor::HIBERNATED;
use crate::flow::cell::{Route, RunCell};
use crate::flow::record::{self, Orphaned};
use crate::journal::JournalHandle;
use crate::records::RunStatus;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

/// Messages of the root supervisor.
pub(crate) enum RootMsg {
    /// Spawns these flow actors, concurrently.
    StartFlows(Vec<FlowRequest>),
}

pub(crate) struct RootActor;

struct RunEntry {
    cell: Arc<RunCell>,
    /// Where the run's failure is recorded if its flow dies without an outcome.
    journal: JournalHandle,
}

pub(crate) struct RootState {
    flows: HashMap<ActorId, RunEntry>,
    spawn: SpawnFlow,
}

/// The root's state before the journal exists; the journal comes with
/// each [`RootMsg`]'s `FlowArgs` (every flow carries the runtime's store).
pub(crate) fn root_state() -> RootState {
    root_state_with(spawn_flow_actor)
}

/// [`root_state`] with another way to spawn flow actors (tests).
pub(crate) fn root_state_with(spawn: SpawnFlow) -> RootState {
    RootState {
        flows: HashMap::new(),
        spawn,
    }
}

/// A spawn task that panicked (or was cancelled) answers its caller with
/// this instead of leaving it to take the runtime for gone.
fn spawn_panicked(error: &tokio::task::JoinError) -> SpawnErr {
    tracing::error!(%error, "spawning a flow actor panicked");
    SpawnErr::StartupFailed(format!("spawning the flow actor failed: {error}").into())
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
                let mut waiting = HashMap::with_capacity(requests.len());
                for FlowRequest { args, reply } in requests {
                    let entry = RunEntry {
                        cell: args.cell.clone(),
                        journal: args.journal.clone(),
                    };
                    let task = spawning.spawn((root.spawn)(args, myself.get_cell()));
                    waiting.insert(task.id(), (entry, reply));
                }
                while let Some(joined) = spawning.join_next_with_id().await {
                    let (task, spawned) = match joined {
                        Ok(done) => done,
                        Err(error) => (error.id(), Err(spawn_panicked(&error))),
                    };
                    let Some((entry, reply)) = waiting.remove(&task) else {
                        continue;
                    };
                    if let Ok(flow) = &spawned {
                        // Before the reply: the run's messages go to it now.
                        entry.cell.set_route(Route::Live(flow.clone()));
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
        // A flow that hibernated left its run to the runtime.
        if entry.cell.has_ended() || failure.as_deref() == Some(HIBERNATED) {
            return Ok(());
        }
        let run_id = entry.cell.run_id;
        let reason = format!(
            "the flow actor stopped without an outcome in state {:?}: {}",
            entry.cell.state(),
            failure.as_deref().unwrap_or("no reason given")
        );
        tracing::error!(%run_id, %reason, "flow actor lost");
        let failed = |reason, recorded| RunOutcome {
            run_id,
            status: RunStatus::Failed,
            structured_output: None,
            reason: Some(reason),
            recorded,
            next_run_id: None,
        };
        let outcome = match record::fail_orphaned(&entry.journal, run_id, reason.clone()).await {
            Ok(Orphaned::Failed) => failed(reason, true),
            Ok(Orphaned::AlreadyEnded(recorded)) => {
                // The flow recorded its outcome but died before publishing
                // it (or the run was ended through the control plane): the
                // journal's outcome is the truth.
                tracing::info!(%run_id, status = recorded.status.as_str(),
                    "the lost flow's run had already ended; publishing its recorded outcome");
                recorded
            }
            Err(error) => failed(
                format!("{reason}; recording the failure failed: {error}"),
                false,
            ),
        };
        entry.cell.publish(outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::ErasedDefinition;
    use crate::flow::actor::FlowArgs;
    use crate::flow::{FlowDefinition, RunOptions};
    use crate::runtime::RuntimeError;
    use crate::runtime::spawn::BoxedSpawn;
    use crate::runtime::start::Starter;
    use crate::stage::{sink_fn, source_iter};
    use crate::store::{MemoryStore, Store};

    /// The spawn of a run whose goal is `"panic"` panics.
    fn panics_on_goal(args: FlowArgs, supervisor: ractor::ActorCell) -> BoxedSpawn {
        Box::pin(async move {
            assert_ne!(args.run.goal, "panic", "injected: the spawn panics");
            spawn_flow_actor(args, supervisor).await
        })
    }

    #[tokio::test]
    async fn a_panicking_spawn_is_answered_and_the_rest_of_its_batch_starts() {
        let store = Arc::new(MemoryStore::new());
        let journal = JournalHandle::spawn(store.clone(), Default::default(), None)
            .await
            .unwrap();
        let endless = FlowDefinition::<u64>::builder("endless")
            .source("numbers", |_| source_iter(0_u64..))
            .sink("discard", |_| sink_fn(|_: u64| Ok(())))
            .pipeline(["numbers", "discard"])
            .build()
            .unwrap();
        let (root, _) = Actor::spawn(None, RootActor, root_state_with(panics_on_goal))
            .await
            .unwrap();
        let starter = Starter {
            journal: journal.clone(),
            root: root.clone(),
            runs: Arc::default(),
            launcher: None,
            host: None,
            hibernate_after: None,
        };
        let mut requests = Vec::new();
        let mut pending = Vec::new();
        for goal in ["first", "panic", "last"] {
            let options = RunOptions::new().goal(goal);
            let run = record::create(&journal, &endless, options).await.unwrap();
            let (request, flow) =
                starter.request_flow(run, &endless as &dyn ErasedDefinition, None, false, None);
            requests.push(request);
            pending.push(flow);
        }
        root.send_message(RootMsg::StartFlows(requests)).unwrap();
        let mut handles = Vec::new();
        for (goal, flow) in ["first", "panic", "last"].into_iter().zip(pending) {
            match (goal, flow.spawned().await) {
                ("panic", Err(RuntimeError::Spawn(SpawnErr::StartupFailed(error)))) => {
                    let error = error.to_string();
                    assert!(error.contains("panic"), "{error}");
                }
                ("panic", other) => panic!("the panicking spawn answered {other:?}"),
                (_, spawned) => handles.push(spawned.unwrap()),
            }
        }
        // The others were registered: a flow that dies has its run failed.
        for handle in &handles {
            handle.actor_ref().kill();
            let outcome = handle.wait().await.unwrap();
            assert_eq!(outcome.status, RunStatus::Failed);
            let record = store.get_run(handle.run_id()).await.unwrap().unwrap();
            assert_eq!(record.status, RunStatus::Failed);
        }
        root.stop_and_wait(None, None).await.unwrap();
    }
}
