//! The runs started on a runtime: [`RunList`], and [`CancelLiveRuns`], the
//! control-plane observer that passes a cancel on to a live run's flow.

use std::sync::{Mutex, PoisonError, Weak};

use uuid::Uuid;

use crate::flow::{CONTROL_PLANE_CANCEL_REASON, ControlEvent, RunHandle};
use crate::records::Run;
use crate::runs::RunObserver;

/// Handles of the runs started here. Ended runs are dropped when the list
/// has doubled since the last sweep, so a push costs amortized O(1) (a sweep
/// on every push made resuming n runs O(n²)).
#[derive(Default)]
pub(crate) struct RunList {
    handles: Vec<RunHandle>,
    sweep_at: usize,
}

impl RunList {
    /// The fewest handles worth a sweep.
    const MIN_SWEEP: usize = 64;

    /// Adds `handle`; whether the list was swept first (it costs a pass
    /// over the list).
    pub(crate) fn push(&mut self, handle: RunHandle) -> bool {
        let sweep = self.handles.len() >= self.sweep_at;
        if sweep {
            self.handles.retain(|h| !h.has_ended());
            self.sweep_at = (self.handles.len() * 2).max(Self::MIN_SWEEP);
        }
        self.handles.push(handle);
        sweep
    }

    /// The handles of the runs that have not ended.
    pub(crate) fn live(&self) -> Vec<RunHandle> {
        self.handles
            .iter()
            .filter(|h| !h.has_ended())
            .cloned()
            .collect()
    }

    /// The handle of run `run_id`, ended or not, while the list keeps it.
    pub(crate) fn find(&self, run_id: Uuid) -> Option<RunHandle> {
        self.handles.iter().find(|h| h.run_id() == run_id).cloned()
    }

    /// The handle of run `run_id`, if it has not ended.
    fn find_live(&self, run_id: Uuid) -> Option<RunHandle> {
        self.handles
            .iter()
            .find(|h| h.run_id() == run_id && !h.has_ended())
            .cloned()
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
    use std::sync::Arc;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::flow::actor::FlowMsg;
    use crate::flow::{RunOutcome, RunState};
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

    /// A handle to `actor` for a new run id, and the sender of its outcome.
    fn handle(actor: &ActorRef<FlowMsg>) -> (RunHandle, watch::Sender<Option<RunOutcome>>) {
        let (_, state) = watch::channel(RunState::Running);
        let (outcome, outcome_rx) = watch::channel(None);
        let run_id = Uuid::now_v7();
        let handle = RunHandle::new(run_id, actor.clone(), state, outcome_rx, Arc::from([]));
        (handle, outcome)
    }

    fn end(outcome: &watch::Sender<Option<RunOutcome>>, run_id: Uuid) {
        outcome.send_replace(Some(RunOutcome {
            run_id,
            status: RunStatus::Finished,
            structured_output: None,
            reason: None,
            recorded: true,
        }));
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
        let mut outcomes = Vec::new();
        for _ in 0..RunList::MIN_SWEEP {
            let (h, outcome) = handle(&actor);
            end(&outcome, h.run_id());
            list.push(h);
            outcomes.push(outcome);
        }
        // Below the first sweep point every handle stays, ended or not.
        assert_eq!(list.handles.len(), RunList::MIN_SWEEP);
        assert!(list.live().is_empty());
        let (live, _live_outcome) = handle(&actor);
        list.push(live.clone());
        assert_eq!(list.handles.len(), 1, "the ended runs were swept");
        assert_eq!(list.live()[0].run_id(), live.run_id());
        assert_eq!(list.sweep_at, RunList::MIN_SWEEP);
        actor.stop(None);
    }

    #[tokio::test]
    async fn live_runs_are_never_swept_and_sweeps_cost_amortized_constant_time() {
        let (actor, _) = fake_flow().await;
        let mut list = RunList::default();
        let mut outcomes = Vec::new();
        let pushes: usize = 5_000;
        let mut scanned = 0;
        for i in 0..pushes {
            let scan = list.handles.len();
            let (h, outcome) = handle(&actor);
            // Two runs of three end right away; the others stay live.
            if i % 3 != 0 {
                end(&outcome, h.run_id());
            }
            if list.push(h) {
                scanned += scan;
            }
            outcomes.push(outcome);
        }
        let live = list.live();
        assert_eq!(live.len(), pushes.div_ceil(3), "a live run was swept");
        assert!(
            scanned <= 4 * pushes,
            "{scanned} handles scanned for {pushes} pushes"
        );
        assert!(list.handles.len() <= 2 * live.len().max(RunList::MIN_SWEEP));
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_cancel_written_through_the_control_plane_reaches_the_live_flow() {
        let (actor, mut seen) = fake_flow().await;
        let runs = Arc::new(Mutex::new(RunList::default()));
        let observer = CancelLiveRuns(Arc::downgrade(&runs));
        let (live, _outcome) = handle(&actor);
        let (ended, ended_outcome) = handle(&actor);
        end(&ended_outcome, ended.run_id());
        for h in [&live, &ended] {
            runs.lock().unwrap().push(h.clone());
        }
        {
            let list = runs.lock().unwrap();
            assert!(list.find_live(ended.run_id()).is_none());
            assert!(list.find_live(live.run_id()).is_some());
        }

        let mut record = Run::new("flow", "goal", "tests");
        record.id = live.run_id();
        record.cancel_requested = true;
        observer.changed(&record);
        let event = seen.recv().await.unwrap();
        assert!(matches!(event, ControlEvent::Cancel { .. }), "{event:?}");
        drop(runs);
        observer.changed(&record); // the runtime is gone: nothing to do
        actor.stop(None);
    }
}
