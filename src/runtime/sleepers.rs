//! The runtime's hibernated runs ([`Sleepers`]): a compact entry per run
//! (its cell, its flow, its earliest deadline, the children it awaits), one
//! deadline queue for all of them ([`Deadlines`]), and the one task that
//! sleeps until the earliest deadline ([`run_timer`]). No task, actor or
//! tokio timer per run, and no polling: the task is woken by the deadline
//! it sleeps for or by an earlier one coming in.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::launch::Launcher;
use crate::flow::ErasedDefinition;
use crate::flow::cell::{Route, RunCell, Sleep};
use crate::stage::timer::timer_now;

/// The deadlines of hibernated runs, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines(BTreeSet<(DateTime<Utc>, Uuid)>);

impl Deadlines {
    /// Adds run `run`'s deadline `at`; whether it is now the earliest.
    pub(crate) fn insert(&mut self, at: DateTime<Utc>, run: Uuid) -> bool {
        self.0.insert((at, run));
        self.0.first() == Some(&(at, run))
    }

    /// Removes run `run`'s deadline `at`.
    pub(crate) fn remove(&mut self, at: DateTime<Utc>, run: Uuid) {
        self.0.remove(&(at, run));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<DateTime<Utc>> {
        self.0.first().map(|(at, _)| *at)
    }

    /// Takes out the runs whose deadline is at or before `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<Uuid> {
        let mut due = Vec::new();
        while let Some(&(at, run)) = self.0.first()
            && at <= now
        {
            self.0.pop_first();
            due.push(run);
        }
        due
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// One hibernated run.
pub(crate) struct Sleeper {
    pub(crate) cell: Arc<RunCell>,
    pub(crate) definition: Arc<dyn ErasedDefinition>,
    deadline: Option<DateTime<Utc>>,
    children: Box<[Uuid]>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<Uuid, Sleeper>,
    deadlines: Deadlines,
    /// Child run → the hibernated runs awaiting it.
    awaited: HashMap<Uuid, Vec<Uuid>>,
}

/// The hibernated runs of a runtime (see the module docs).
pub(crate) struct Sleepers {
    inner: Mutex<Inner>,
    /// Rung when an earlier deadline comes in (and when this is dropped).
    timer: Arc<Notify>,
    /// Set when the runtime shuts down or is dropped: nothing is woken
    /// from then on (the runs stay as the journal has them).
    closed: AtomicBool,
}

impl Default for Sleepers {
    fn default() -> Self {
        Sleepers {
            inner: Mutex::default(),
            timer: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        // The timer task finds its runtime gone and ends.
        self.timer.notify_one();
    }
}

impl Sleepers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The run of `cell` hibernates for `sleep`. `ended` says whether a
    /// child has ended (or is not in this runtime): asked under the lock
    /// after the run is listed as awaiting it, so an end is never missed;
    /// such a run is due at once.
    pub(crate) fn put(
        &self,
        cell: &Arc<RunCell>,
        definition: Arc<dyn ErasedDefinition>,
        sleep: Sleep,
        ended: impl Fn(Uuid) -> bool,
    ) {
        let run = cell.run_id;
        let mut inner = self.lock();
        for child in &sleep.children {
            inner.awaited.entry(*child).or_default().push(run);
        }
        let deadline = if sleep.children.iter().any(|c| ended(*c)) {
            Some(DateTime::<Utc>::MIN_UTC)
        } else {
            sleep.deadline
        };
        let earliest = deadline.is_some_and(|at| inner.deadlines.insert(at, run));
        let sleeper = Sleeper {
            cell: cell.clone(),
            definition,
            deadline,
            children: sleep.children.into_boxed_slice(),
        };
        if inner.runs.insert(run, sleeper).is_none() {
            metrics::gauge!(crate::metrics::HIBERNATED_RUNS).increment(1.0);
        }
        // Under the lock: a wake cannot come between the entry and the route.
        cell.set_route(Route::Hibernated);
        drop(inner);
        if earliest {
            self.timer.notify_one();
        }
    }

    /// Takes run `run` out, moving it to `Waking`; `None` if it does not
    /// hibernate.
    pub(crate) fn take(&self, run: Uuid) -> Option<Sleeper> {
        let mut inner = self.lock();
        let sleeper = inner.runs.remove(&run)?;
        if let Some(at) = sleeper.deadline {
            inner.deadlines.remove(at, run);
        }
        for child in &sleeper.children {
            if let Some(parents) = inner.awaited.get_mut(child) {
                parents.retain(|p| *p != run);
                if parents.is_empty() {
                    inner.awaited.remove(child);
                }
            }
        }
        sleeper.cell.set_route(Route::Waking);
        drop(inner);
        metrics::gauge!(crate::metrics::HIBERNATED_RUNS).decrement(1.0);
        Some(sleeper)
    }

    /// The hibernated runs awaiting child `child`.
    pub(crate) fn awaiting(&self, child: Uuid) -> Vec<Uuid> {
        self.lock().awaited.get(&child).cloned().unwrap_or_default()
    }

    /// Takes out the runs due at `now`; the next deadline after them.
    fn due(&self, now: DateTime<Utc>) -> (Vec<Uuid>, Option<DateTime<Utc>>) {
        let mut inner = self.lock();
        let due = inner.deadlines.pop_due(now);
        for run in &due {
            // Out of the queue already: `take` must not look for it there.
            if let Some(sleeper) = inner.runs.get_mut(run) {
                sleeper.deadline = None;
            }
        }
        (due, inner.deadlines.next())
    }

    /// Wakes nothing from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many runs hibernate.
    pub(crate) fn len(&self) -> usize {
        self.lock().runs.len()
    }
}

/// The runtime's one timer: wakes each hibernated run at its deadline.
/// Ends once the runtime is gone.
pub(crate) async fn run_timer(launcher: Weak<Launcher>, timer: Arc<Notify>) {
    loop {
        let rung = timer.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let next = {
            let Some(launcher) = launcher.upgrade() else {
                return;
            };
            let (due, next) = launcher.sleepers.due(timer_now());
            for run in due {
                launcher.wake_run(run);
            }
            next
        };
        match next {
            Some(at) => {
                let left = (at - timer_now()).to_std().unwrap_or(Duration::ZERO);
                tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    () = rung => {}
                }
            }
            None => rung.await,
        }
    }
}

impl Sleepers {
    /// The doorbell of the timer task.
    pub(crate) fn timer(&self) -> Arc<Notify> {
        self.timer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_900_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn deadlines_come_out_earliest_first_and_only_when_due() {
        let mut deadlines = Deadlines::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert!(deadlines.insert(at(30), a), "the first is the earliest");
        assert!(deadlines.insert(at(10), b), "an earlier one is");
        assert!(!deadlines.insert(at(20), c), "a later one is not");
        assert_eq!(deadlines.next(), Some(at(10)));
        assert!(deadlines.pop_due(at(9)).is_empty());
        assert_eq!(deadlines.pop_due(at(20)), [b, c]);
        assert_eq!(deadlines.next(), Some(at(30)));
        assert_eq!(deadlines.len(), 1);
        assert_eq!(deadlines.pop_due(at(100)), [a]);
        assert_eq!(deadlines.next(), None);
    }

    #[test]
    fn runs_due_at_the_same_instant_are_kept_apart_and_removable() {
        let mut deadlines = Deadlines::default();
        let runs: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for run in &runs {
            deadlines.insert(at(5), *run);
        }
        assert_eq!(deadlines.len(), 3);
        deadlines.remove(at(5), runs[1]);
        deadlines.remove(at(6), runs[0]); // not its deadline: nothing removed
        let mut due = deadlines.pop_due(at(5));
        due.sort();
        assert_eq!(due, [runs[0], runs[2]]);
    }

    /// The timer task, against a launcherless stand-in: a run whose
    /// deadline comes is taken out exactly then.
    #[tokio::test(start_paused = true)]
    async fn the_queue_wakes_for_an_earlier_deadline_without_polling() {
        let sleepers = Sleepers::default();
        let now = timer_now();
        let later = now + chrono::Duration::hours(1);
        let sooner = now + chrono::Duration::minutes(1);
        let mut inner = sleepers.lock();
        assert!(inner.deadlines.insert(later, Uuid::now_v7()));
        assert!(inner.deadlines.insert(sooner, Uuid::now_v7()));
        drop(inner);
        let (due, next) = sleepers.due(now);
        assert!(due.is_empty());
        assert_eq!(next, Some(sooner));
        tokio::time::sleep(Duration::from_secs(61)).await;
        let (due, next) = sleepers.due(timer_now());
        assert_eq!(due.len(), 1);
        assert_eq!(next, Some(later));
    }
}
