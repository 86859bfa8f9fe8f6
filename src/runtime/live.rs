//! The runs started on a runtime: [`RunList`], and [`CancelLiveRuns`], the
//! control-plane observer that passes a cancel on to a live run's flow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use uuid::Uuid;

use crate::flow::cell::RunCell;
use crate::flow::{CONTROL_PLANE_CANCEL_REASON, ControlEvent, RunHandle};
use crate::records::Run;
use crate::runs::RunObserver;

/// The runs started here, live or hibernated, by id. Ended runs are dropped
/// when the list has doubled since the last sweep, so a push costs
/// amortized O(1) (a sweep on every push made resuming n runs O(n²)).
#[derive(Default)]
pub(crate) struct RunList {
    cells: HashMap<Uuid, Arc<RunCell>>,
    sweep_at: usize,
}

impl RunList {
    /// The fewest runs worth a sweep.
    const MIN_SWEEP: usize = 64;

    /// Adds the run of `cell`; whether the list was swept first (it costs
    /// a pass over the list).
    pub(crate) fn push(&mut self, cell: Arc<RunCell>) -> bool {
        let sweep = self.cells.len() >= self.sweep_at;
        if sweep {
            self.cells.retain(|_, c| !c.has_ended());
            self.sweep_at = (self.cells.len() * 2).max(Self::MIN_SWEEP);
        }
        self.cells.insert(cell.run_id, cell);
        sweep
    }

    /// The handles of the runs that have not ended.
    pub(crate) fn live(&self) -> Vec<RunHandle> {
        self.cells
            .values()
            .filter(|c| !c.has_ended())
            .map(RunHandle::new)
            .collect()
    }

    /// The handles of the runs that have neither ended nor hibernated.
    pub(crate) fn awake(&self) -> Vec<RunHandle> {
        self.cells
            .values()
            .filter(|c| !c.has_ended() && !c.is_hibernated())
            .map(RunHandle::new)
            .collect()
    }

    /// The handle of run `run_id`, ended or not, while the list keeps it.
    pub(crate) fn find(&self, run_id: Uuid) -> Option<RunHandle> {
        self.cells.get(&run_id).map(RunHandle::new)
    }

    /// The cell of run `run_id`, if it has not ended.
    pub(crate) fn cell(&self, run_id: Uuid) -> Option<&Arc<RunCell>> {
        self.cells.get(&run_id).filter(|c| !c.has_ended())
    }

    /// The handle of run `run_id`, if it has not ended.
    pub(crate) fn find_live(&self, run_id: Uuid) -> Option<RunHandle> {
        self.cell(run_id).map(RunHandle::new)
    }

    /// The ids of the runs kept that have not ended (live or hibernated).
    pub(crate) fn unended_ids(&self) -> Vec<Uuid> {
        (self.cells.values())
            .filter(|c| !c.has_ended())
            .map(|c| c.run_id)
            .collect()
    }

    /// How many runs that have not ended are kept (live or hibernated).
    pub(crate) fn unended(&self) -> usize {
        self.cells.values().filter(|c| !c.has_ended()).count()
    }
}

/// Passes a cancel (or an end) written through [`Runtime::runs`](super::Runtime::runs)
/// on to the run's live flow, so a control-plane cancel does not wait for
/// the flow to finish on its own (and no stage output is recorded after it).
pub(crate) struct CancelLiveRuns(pub(crate) Weak<Mutex<RunList>>);

impl RunObserver for CancelLiveRuns {
    fn changed(&self, run: &Run) {
        if !(run.cancel_requested || run.status.is_terminal()) {
            return;
        }
        let Some(runs) = self.0.upgrade() else { return };
        let live = runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find_live(run.id);
        let Some(handle) = live else { return };
        let reason = CONTROL_PLANE_CANCEL_REASON.to_owned();
        tokio::spawn(async move {
            // A flow that is already ending rejects it; it ends anyway.
            let _ = handle.send(ControlEvent::Cancel { reason }).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc;

    use super::*;
    use crate::flow::RunOutcome;
    use crate::flow::actor::FlowMsg;
    use crate::flow::cell::Route;
    use crate::records::RunStatus;

    /// Stands in for a flow actor: answers control events and reports them.
    struct FakeFlow;

    impl Actor for FakeFlow {
        type Msg = FlowMsg;
        type State = mpsc::UnboundedSender<ControlEvent>;
        type Arguments = mpsc::UnboundedSender<ControlEvent>;

        async fn pre_start(
            &self,
            _: ActorRef<FlowMsg>,
            seen: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(seen)
        }

        async fn handle(
            &self,
            _: ActorRef<FlowMsg>,
            msg: FlowMsg,
            seen: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let FlowMsg::Control { event, reply } = msg {
                let _ = seen.send(event);
                let _ = reply.send(Ok(()));
            }
            Ok(())
        }
    }

    /// A new run's cell, routed to `actor`.
    fn cell(actor: &ActorRef<FlowMsg>) -> Arc<RunCell> {
        let board = crate::progress::ProgressBoard::new(Vec::new());
        let cell = RunCell::new(Uuid::now_v7(), Arc::from([]), board, None);
        cell.set_route(Route::Live(actor.clone()));
        cell
    }

    fn end(cell: &RunCell) {
        cell.publish(RunOutcome {
            run_id: cell.run_id,
            status: RunStatus::Finished,
            structured_output: None,
            reason: None,
            recorded: true,
            next_run_id: None,
        });
    }

    async fn fake_flow() -> (ActorRef<FlowMsg>, mpsc::UnboundedReceiver<ControlEvent>) {
        let (seen, seen_rx) = mpsc::unbounded_channel();
        let (actor, _) = Actor::spawn(None, FakeFlow, seen).await.unwrap();
        (actor, seen_rx)
    }

    #[tokio::test]
    async fn ended_runs_are_swept_only_once_the_list_has_doubled() {
        let (actor, _) = fake_flow().await;
        let mut list = RunList::default();
        for _ in 0..RunList::MIN_SWEEP {
            let c = cell(&actor);
            end(&c);
            list.push(c);
        }
        // Below the first sweep point every run stays, ended or not.
        assert_eq!(list.cells.len(), RunList::MIN_SWEEP);
        assert!(list.live().is_empty());
        let live = cell(&actor);
        list.push(live.clone());
        assert_eq!(list.cells.len(), 1, "the ended runs were swept");
        assert_eq!(list.live()[0].run_id(), live.run_id);
        assert_eq!(list.sweep_at, RunList::MIN_SWEEP);
        actor.stop(None);
    }

    #[tokio::test]
    async fn live_runs_are_never_swept_and_sweeps_cost_amortized_constant_time() {
        let (actor, _) = fake_flow().await;
        let mut list = RunList::default();
        let pushes: usize = 5_000;
        let mut scanned = 0;
        for i in 0..pushes {
            let scan = list.cells.len();
            let c = cell(&actor);
            // Two runs of three end right away; the others stay live.
            if i % 3 != 0 {
                end(&c);
            }
            if list.push(c) {
                scanned += scan;
            }
        }
        let live = list.live();
        assert_eq!(live.len(), pushes.div_ceil(3), "a live run was swept");
        assert_eq!(list.unended(), live.len());
        assert!(
            scanned <= 4 * pushes,
            "{scanned} runs scanned for {pushes} pushes"
        );
        assert!(list.cells.len() <= 2 * live.len().max(RunList::MIN_SWEEP));
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_cancel_written_through_the_control_plane_reaches_the_live_flow() {
        let (actor, mut seen) = fake_flow().await;
        let runs = Arc::new(Mutex::new(RunList::default()));
        let observer = CancelLiveRuns(Arc::downgrade(&runs));
        let live = cell(&actor);
        let ended = cell(&actor);
        end(&ended);
        for c in [&live, &ended] {
            runs.lock().unwrap().push(c.clone());
        }
        {
            let list = runs.lock().unwrap();
            assert!(list.find_live(ended.run_id).is_none());
            assert!(list.find_live(live.run_id).is_some());
        }

        let mut record = Run::new("flow", "goal", "tests");
        record.id = live.run_id;
        record.cancel_requested = true;
        observer.changed(&record);
        let event = seen.recv().await.unwrap();
        assert!(matches!(event, ControlEvent::Cancel { .. }), "{event:?}");
        drop(runs);
        observer.changed(&record); // the runtime is gone: nothing to do
        actor.stop(None);
    }
}
