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
        cell.shed();
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

    /// Every hibernated run that awaits children, with them.
    pub(crate) fn parents(&self) -> Vec<(Uuid, Vec<Uuid>)> {
        self.lock()
            .runs
            .iter()
            .filter(|(_, sleeper)| !sleeper.children.is_empty())
            .map(|(run, sleeper)| (*run, sleeper.children.to_vec()))
            .collect()
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

/// What the timer task works for: the runtime (a stand-in in tests).
pub(crate) trait Wakes: Send + Sync + 'static {
    /// The hibernated runs.
    fn sleepers(&self) -> &Sleepers;
    /// Wakes run `run`, due now.
    fn wake_due(&self, run: Uuid);
}

impl Wakes for Launcher {
    fn sleepers(&self) -> &Sleepers {
        &self.sleepers
    }

    fn wake_due(&self, run: Uuid) {
        self.wake_run(run);
    }
}

/// The runtime's one timer: wakes each hibernated run at its deadline.
/// Ends once the runtime is gone.
pub(crate) async fn run_timer<W: Wakes>(host: Weak<W>, timer: Arc<Notify>) {
    loop {
        let rung = timer.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let next = {
            let Some(host) = host.upgrade() else {
                return;
            };
            let (due, next) = host.sleepers().due(timer_now());
            for run in due {
                host.wake_due(run);
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

    /// A stand-in runtime recording when each run was woken.
    #[derive(Default)]
    struct Woken {
        sleepers: Sleepers,
        at: Mutex<Vec<(Uuid, tokio::time::Instant)>>,
    }

    impl Wakes for Woken {
        fn sleepers(&self) -> &Sleepers {
            &self.sleepers
        }

        fn wake_due(&self, run: Uuid) {
            self.at
                .lock()
                .unwrap()
                .push((run, tokio::time::Instant::now()));
        }
    }

    impl Woken {
        /// Lists `run` as due `after` from now, as `put` does.
        fn due_in(&self, run: Uuid, after: Duration) {
            let at = timer_now() + chrono::Duration::from_std(after).unwrap();
            let earliest = self.sleepers.lock().deadlines.insert(at, run);
            if earliest {
                self.sleepers.timer.notify_one();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_task_wakes_each_run_at_its_deadline_and_ends_with_its_runtime() {
        let host = Arc::new(Woken::default());
        let task = tokio::spawn(run_timer(Arc::downgrade(&host), host.sleepers.timer()));
        let start = tokio::time::Instant::now();
        let (hour, minute, now) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        host.due_in(hour, Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Earlier than the one the task sleeps for: it wakes for it.
        host.due_in(minute, Duration::from_secs(60));
        host.due_in(now, Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
        let woken: Vec<(Uuid, Duration)> = host
            .at
            .lock()
            .unwrap()
            .iter()
            .map(|(run, at)| (*run, *at - start))
            .collect();
        let expected = [(now, 10), (minute, 70), (hour, 3600)];
        assert_eq!(woken.len(), expected.len(), "{woken:?}");
        for ((run, at), (due, secs)) in woken.iter().zip(expected) {
            // Never early; late by at most tokio's timer resolution.
            let due_at = Duration::from_secs(secs);
            assert_eq!(*run, due, "{woken:?}");
            assert!(
                *at >= due_at && *at <= due_at + Duration::from_millis(1),
                "{woken:?}"
            );
        }
        assert_eq!(host.sleepers.lock().deadlines.next(), None);
        drop(host);
        task.await.unwrap();
    }
}
