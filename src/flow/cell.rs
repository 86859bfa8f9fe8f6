//! [`RunCell`]: what a run is to its runtime across the flow actors that
//! drive it. A hibernated run has no flow actor; a woken one gets a new one.
//! The cell outlives them: it owns the state and outcome a [`RunHandle`]
//! watches and says where the run's messages go now ([`Route`]).
//!
//! [`RunHandle`]: super::RunHandle

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ractor::ActorRef;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::actor::FlowMsg;
use super::control::RunOutcome;
use super::machine::RunState;
pub(crate) use super::sleep::Sleep;
use crate::progress::{ProgressBoard, StageStatus};
use crate::records::RunStatus;

/// Where a run's messages go.
#[derive(Clone)]
pub(crate) enum Route {
    /// To its live flow actor.
    Live(ActorRef<FlowMsg>),
    /// Nowhere yet: it hibernates (its next message wakes it).
    Hibernated,
    /// Nowhere yet: a new flow actor is being started for it.
    Waking,
    /// Nowhere: it cannot be woken (the runtime is shutting down).
    Gone,
}

/// The runtime, as a run's cell sees it: where a hibernating run goes and
/// what wakes it.
pub(crate) trait RunHost: Send + Sync {
    /// Whether the run may hibernate for `sleep` (every child it awaits
    /// runs in this runtime, so that its end is heard of).
    fn may_hibernate(&self, sleep: &Sleep) -> bool;

    /// The run of `cell`, whose flow actor and stages are gone, hibernates
    /// until `sleep` says or a message comes.
    fn hibernate(&self, cell: &Arc<RunCell>, sleep: Sleep);

    /// Wakes run `run_id` if it hibernates; whether a wake is under way
    /// (false once the runtime shuts down).
    fn wake(&self, run_id: Uuid) -> bool;

    /// Run `run_id` has ended (the runs awaiting it as a child wake).
    fn ended(&self, run_id: Uuid);

    /// Ends run `run_id` of flow `flow` by continuing it as a new run with
    /// `input`, on the definition a fresh start of `flow` gets (see
    /// [`RunManager::continue_as_new`](crate::runs::RunManager::continue_as_new)),
    /// and starts the new run here unless the runtime is shutting down (its
    /// next start resumes it then); the new run's record.
    fn continue_as_new(
        &self,
        run_id: Uuid,
        flow: String,
        input: serde_json::Value,
    ) -> HostFuture<Result<crate::records::Run, crate::runs::RunError>>;

    /// A handle to run `run_id`: the one kept here, or one made from the
    /// journal for a run that has ended; `None` for a run that neither runs
    /// here nor has ended (or cannot be read).
    fn handle(&self, run_id: Uuid) -> HostFuture<Option<super::RunHandle>>;
}

/// A future a [`RunHost`] returns.
pub(crate) type HostFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What a run publishes: its state and outcome, and the channels of the
/// handles watching them. A channel is made for the first handle, and let
/// go of when its run hibernates with no handle watching (each costs
/// ~400 bytes, a hibernated run should cost less than 1 KB).
struct Published {
    state: RunState,
    outcome: Option<Box<RunOutcome>>,
    /// The run is executed by another process now (its lease was lost).
    moved: bool,
    state_tx: Option<watch::Sender<RunState>>,
    outcome_tx: Option<watch::Sender<Option<RunOutcome>>>,
}

/// One run as its runtime keeps it, live or hibernated (see the module docs).
pub(crate) struct RunCell {
    pub(crate) run_id: Uuid,
    published: Mutex<Published>,
    pub(crate) stages: Arc<[String]>,
    route: Mutex<Route>,
    /// Rung at every change of `route`.
    moved: Notify,
    /// Messages on their way to the run's flow: it does not hibernate
    /// while there are any (a woken run would sleep again before its
    /// waking message came).
    holds: AtomicUsize,
    /// The run's status is `Waiting`: counted in the waiting-runs gauge.
    waiting: AtomicBool,
    pub(crate) host: Option<Weak<dyn RunHost>>,
    /// The run's live counters, across its flow actors.
    pub(crate) progress: Arc<ProgressBoard>,
}

impl Drop for RunCell {
    fn drop(&mut self) {
        // The runtime let go of the run: its progress changes no more.
        self.progress.close();
        self.set_waiting(false);
    }
}

impl RunCell {
    /// A new run's cell, its flow actor still to come.
    pub(crate) fn new(
        run_id: Uuid,
        stages: Arc<[String]>,
        progress: Arc<ProgressBoard>,
        host: Option<Weak<dyn RunHost>>,
    ) -> Arc<RunCell> {
        Arc::new(RunCell {
            run_id,
            published: Mutex::new(Published {
                state: RunState::Created,
                outcome: None,
                moved: false,
                state_tx: None,
                outcome_tx: None,
            }),
            stages,
            route: Mutex::new(Route::Waking),
            moved: Notify::new(),
            holds: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            host,
            progress,
        })
    }

    /// The runtime, if the run has one and it is still there.
    pub(crate) fn host(&self) -> Option<Arc<dyn RunHost>> {
        self.host.as_ref()?.upgrade()
    }

    fn published(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Receivers of the run's state and outcome.
    pub(crate) fn subscribe(
        &self,
    ) -> (
        watch::Receiver<RunState>,
        watch::Receiver<Option<RunOutcome>>,
    ) {
        let mut published = self.published();
        let Published {
            state,
            outcome,
            state_tx,
            outcome_tx,
            moved,
        } = &mut *published;
        if *moved {
            // Closed at once: nothing will be published here any more.
            return (
                watch::channel(state.clone()).1,
                watch::channel(outcome.as_deref().cloned()).1,
            );
        }
        let state = state_tx
            .get_or_insert_with(|| watch::channel(state.clone()).0)
            .subscribe();
        let outcome = outcome_tx
            .get_or_insert_with(|| watch::channel(outcome.as_deref().cloned()).0)
            .subscribe();
        (state, outcome)
    }

    /// The run's state.
    pub(crate) fn state(&self) -> RunState {
        self.published().state.clone()
    }

    /// Whether the run's state is `state`.
    pub(crate) fn state_is(&self, state: &RunState) -> bool {
        self.published().state == *state
    }

    /// Publishes the run's state, if it changed.
    pub(crate) fn set_state(&self, state: &RunState) {
        let mut published = self.published();
        if published.state == *state {
            return;
        }
        published.state.clone_from(state);
        if let Some(tx) = &published.state_tx {
            tx.send_replace(state.clone());
        }
        self.progress.ring();
    }

    /// Whether the run's status is `Waiting` now (for the
    /// [`WAITING_RUNS`](crate::metrics::WAITING_RUNS) gauge, moved on a change).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        if self.waiting.swap(waiting, Ordering::Relaxed) != waiting {
            let gauge = metrics::gauge!(crate::metrics::WAITING_RUNS);
            if waiting {
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
        }
    }

    /// Lets go of the channels no handle watches (the run hibernates).
    pub(crate) fn shed(&self) {
        let mut published = self.published();
        if published
            .state_tx
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            published.state_tx = None;
        }
        if published
            .outcome_tx
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            published.outcome_tx = None;
        }
    }

    /// Whether the run has ended, or is no longer this runtime's to run.
    pub(crate) fn has_ended(&self) -> bool {
        let published = self.published();
        published.outcome.is_some() || published.moved
    }

    /// Whether the run is executed by another process now.
    pub(crate) fn has_moved(&self) -> bool {
        self.published().moved
    }

    /// The run's lease was lost: another process executes it now. It counts
    /// as ended here; its watchers are let go (a handle's `wait` answers
    /// `HandleError::Moved`). Its flow actor, if live, for the caller to
    /// kill; `None` also when the run had ended already.
    pub(crate) fn hand_over(&self) -> Option<ActorRef<FlowMsg>> {
        let route = self.route();
        {
            let mut published = self.published();
            if published.outcome.is_some() || published.moved {
                return None;
            }
            published.moved = true;
            published.state_tx = None;
            published.outcome_tx = None;
        }
        self.set_waiting(false);
        self.set_route(Route::Gone);
        match route {
            Route::Live(actor) => Some(actor),
            _ => None,
        }
    }

    /// Publishes the run's outcome (once: a later one is ignored) and tells
    /// the runtime.
    pub(crate) fn publish(&self, outcome: RunOutcome) {
        let first = {
            let mut published = self.published();
            let first = published.outcome.is_none();
            if first {
                self.progress.end(match outcome.status {
                    RunStatus::Cancelled => StageStatus::Cancelled,
                    RunStatus::ContinuedAsNew => StageStatus::Completed,
                    _ => StageStatus::Failed,
                });
                if let Some(tx) = &published.outcome_tx {
                    tx.send_replace(Some(outcome.clone()));
                }
                published.outcome = Some(Box::new(outcome));
            }
            first
        };
        self.set_waiting(false);
        self.set_route(Route::Gone);
        if first && let Some(host) = self.host() {
            host.ended(self.run_id);
        }
    }

    /// Where the run's messages go now.
    pub(crate) fn route(&self) -> Route {
        self.route
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_route(&self, route: Route) {
        let hibernated = matches!(route, Route::Hibernated);
        *self.route.lock().unwrap_or_else(PoisonError::into_inner) = route;
        self.progress.set_hibernated(hibernated);
        self.moved.notify_waiters();
    }

    /// Keeps the run from hibernating until the guard is dropped (a
    /// message is on its way to it).
    pub(crate) fn hold(&self) -> Hold<'_> {
        self.holds.fetch_add(1, Ordering::SeqCst);
        Hold(self)
    }

    /// Whether a message is on its way to the run.
    pub(crate) fn held(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }

    /// Whether the run hibernates.
    pub(crate) fn is_hibernated(&self) -> bool {
        matches!(self.route(), Route::Hibernated)
    }

    /// The run's live flow actor, waking the run first if it hibernates;
    /// `None` once it cannot have one (ended, or the runtime is going).
    pub(crate) async fn actor(&self) -> Option<ActorRef<FlowMsg>> {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Listening before the look: a move after it still wakes us.
            moved.as_mut().enable();
            match self.route() {
                Route::Live(actor) => return Some(actor),
                Route::Gone => return None,
                Route::Hibernated => {
                    let waking = self.host().is_some_and(|host| host.wake(self.run_id));
                    if !waking {
                        return None;
                    }
                }
                Route::Waking => {}
            }
            if self.has_ended() {
                return None;
            }
            moved.await;
        }
    }

    /// Waits until the run has ended or hibernates.
    pub(crate) async fn settled(&self) {
        let (_, mut outcome) = self.subscribe();
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.has_ended() || self.is_hibernated() {
                return;
            }
            tokio::select! {
                _ = outcome.changed() => {}
                () = moved => {}
            }
        }
    }
}

/// A message on its way to a run ([`RunCell::hold`]).
pub(crate) struct Hold<'a>(&'a RunCell);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::SeqCst) == 1
            && let Route::Live(actor) = self.0.route()
        {
            // The last one answered: the flow may sleep now.
            let _ = actor.send_message(FlowMsg::Reconsider);
        }
    }
}
