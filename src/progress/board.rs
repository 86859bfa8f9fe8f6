//! The counters behind [`RunProgress`]: one [`StageCounters`] per stage,
//! shared by the stage's actors (every start of it), its flow actors
//! (every wake of the run) and the run's handles, and the run's
//! [`ProgressBoard`] around them. Writers pay a relaxed atomic store or
//! add per unit of work (a batch), never a lock or a message; only rare
//! changes (a state, a restart, a dead letter, a checkpoint) ring the
//! board's bell, which wakes [`ProgressWatch`](super::ProgressWatch)es.
//! A run's board made from its flow's [`FlowMeter`] also reports what its
//! counters move to the `metrics` facade (see [`meter`](super::meter)).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

use tokio::sync::Notify;

use super::meter::{FlowMeter, StageMeter};
use super::{RunProgress, StageProgress, StageStatus};

/// What a [`ProgressWatch`](super::ProgressWatch) waits on: a count of
/// changes, and a `Notify` rung with each.
#[derive(Debug, Default)]
pub(crate) struct Bell {
    pub(super) version: AtomicU64,
    pub(super) rung: Notify,
}

impl Bell {
    /// Something a watcher wants to know changed. `notify_waiters` costs a
    /// lock, which is why only rare changes ring.
    pub(crate) fn ring(&self) {
        self.version.fetch_add(1, Relaxed);
        self.rung.notify_waiters();
    }
}

/// One stage's counters. Aligned to a cache line: stages on different
/// cores never write the same line.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct StageCounters {
    status: AtomicU8,
    waiting: AtomicBool,
    items_in: AtomicU64,
    items_out: AtomicU64,
    /// Retries of items (published from the ports) or of a step (added).
    retries: AtomicU64,
    restarts: AtomicU64,
    dead_letters: AtomicU64,
    /// The newest checkpoint barrier the stage passed (0: none).
    barrier: AtomicU64,
    bell: Arc<Bell>,
    /// What the counters report to the `metrics` facade, if the run does.
    meter: Option<Box<StageMeter>>,
}

impl StageCounters {
    fn new(bell: Arc<Bell>, meter: Option<Box<StageMeter>>) -> Self {
        StageCounters {
            status: AtomicU8::new(StageStatus::Pending as u8),
            waiting: AtomicBool::new(false),
            items_in: AtomicU64::new(0),
            items_out: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            barrier: AtomicU64::new(0),
            bell,
            meter,
        }
    }

    /// Items handed downstream, as last published.
    pub(super) fn items_out(&self) -> u64 {
        self.items_out.load(Relaxed)
    }

    #[cfg(test)]
    pub(super) fn meter(&self) -> Option<&StageMeter> {
        self.meter.as_deref()
    }

    /// The stage's state is `status` now (rings if it changed). A load
    /// and a compare when it did not: called on every dispatch.
    #[inline]
    pub(crate) fn set_status(&self, status: StageStatus) {
        let status = status as u8;
        if self.status.load(Relaxed) != status && self.status.swap(status, Relaxed) != status {
            self.bell.ring();
        }
    }

    /// The stage failed (its actor died without saying so), unless it is
    /// already in a final state.
    pub(crate) fn set_failed(&self) {
        self.set_final(StageStatus::Failed);
    }

    /// The stage is in `status` now, unless it is already in a final state.
    fn set_final(&self, status: StageStatus) {
        let now = StageStatus::from_code(self.status.load(Relaxed));
        if !now.is_final() {
            self.waiting.store(false, Relaxed);
            self.set_status(status);
        }
    }

    /// Whether the stage waits durably now (a timer, a signal, a child).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        if self.waiting.swap(waiting, Relaxed) != waiting {
            self.bell.ring();
        }
    }

    /// The stage's item counts as its ports keep them (absolute: they
    /// survive restarts with the ports, and start from a checkpoint's, see
    /// [`start_at`](Self::start_at)). What they moved since the last call
    /// goes to the metrics.
    #[inline]
    pub(crate) fn publish_items(&self, items_in: u64, items_out: u64, retried: u64) {
        let was_in = self.items_in.swap(items_in, Relaxed);
        let was_out = self.items_out.swap(items_out, Relaxed);
        self.retries.store(retried, Relaxed);
        if let Some(meter) = &self.meter {
            let moved = items_in.saturating_sub(was_in) + items_out.saturating_sub(was_out);
            meter.published(moved, items_in, items_out, retried);
        }
    }

    /// The stage's item counts at the checkpoint its run resumes from:
    /// progress starts there, the metrics count only what moves after.
    pub(crate) fn start_at(&self, items_in: u64, items_out: u64) {
        self.items_in.store(items_in, Relaxed);
        self.items_out.store(items_out, Relaxed);
        if let Some(meter) = &self.meter {
            meter.start_at(items_in, items_out);
        }
    }

    /// A step tries again after a failed attempt.
    pub(crate) fn add_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
        if let Some(meter) = &self.meter {
            meter.retried();
        }
    }

    /// The stage is started again after an exit.
    pub(crate) fn add_restart(&self) {
        self.restarts.fetch_add(1, Relaxed);
        self.bell.ring();
    }

    /// The stage's dead letters in this run (absolute: a resumed run
    /// counts those in the journal).
    pub(crate) fn set_dead_letters(&self, n: u64) {
        if self.dead_letters.swap(n, Relaxed) != n {
            self.bell.ring();
        }
    }

    /// The stage passed checkpoint `id`'s barrier (took its snapshot).
    pub(crate) fn passed_barrier(&self, id: u64) {
        self.barrier.fetch_max(id, Relaxed);
    }

    fn status(&self) -> StageStatus {
        let status = StageStatus::from_code(self.status.load(Relaxed));
        if status == StageStatus::Running && self.waiting.load(Relaxed) {
            StageStatus::Waiting
        } else {
            status
        }
    }
}

/// What the board knows of a stage besides its counters.
#[derive(Debug)]
pub(crate) struct StageSpec {
    /// The stage's name.
    pub(crate) name: String,
    /// The stages whose items it takes (none for a source or a step).
    pub(crate) feeds_from: Vec<usize>,
}

/// A run's counters (see the module docs). Owned by the run's cell, so it
/// outlives its flow actors, and by its handles, so a handle reads the
/// final counts after the run ended.
#[derive(Debug)]
pub(crate) struct ProgressBoard {
    specs: Box<[StageSpec]>,
    stages: Box<[Arc<StageCounters>]>,
    bell: Arc<Bell>,
    /// The newest checkpoint committed (0: none).
    committed: AtomicU64,
    hibernated: AtomicBool,
    /// The run ended, or its runtime let go of it: nothing changes any more.
    closed: AtomicBool,
}

impl ProgressBoard {
    /// A board whose counters report to no metrics.
    pub(crate) fn new(specs: Vec<StageSpec>) -> Arc<Self> {
        let bell = Arc::new(Bell::default());
        let stages = specs
            .iter()
            .map(|_| Arc::new(StageCounters::new(bell.clone(), None)))
            .collect();
        Self::with_stages(specs, stages, bell)
    }

    /// A run's board whose counters report to its flow's `meter`.
    pub(crate) fn metered(meter: &FlowMeter, specs: Vec<StageSpec>) -> Arc<Self> {
        let bell = Arc::new(Bell::default());
        // Each stage after its upstreams: its meter holds their counters.
        let mut built: Vec<Option<Arc<StageCounters>>> = vec![None; specs.len()];
        while built.iter().any(Option::is_none) {
            let before = built.iter().filter(|c| c.is_some()).count();
            for (index, spec) in specs.iter().enumerate() {
                if built[index].is_some() {
                    continue;
                }
                let upstream: Option<Box<[Arc<StageCounters>]>> = spec
                    .feeds_from
                    .iter()
                    .map(|&u| built.get(u).cloned().flatten())
                    .collect();
                let Some(upstream) = upstream else { continue };
                let meter = meter
                    .stage(index)
                    .map(|handles| Box::new(StageMeter::new(handles, upstream)));
                built[index] = Some(Arc::new(StageCounters::new(bell.clone(), meter)));
            }
            if built.iter().filter(|c| c.is_some()).count() == before {
                // A cycle (a validated topology has none): unmetered.
                for slot in built.iter_mut().filter(|c| c.is_none()) {
                    *slot = Some(Arc::new(StageCounters::new(bell.clone(), None)));
                }
            }
        }
        let stages = built.into_iter().flatten().collect();
        Self::with_stages(specs, stages, bell)
    }

    fn with_stages(
        specs: Vec<StageSpec>,
        stages: Box<[Arc<StageCounters>]>,
        bell: Arc<Bell>,
    ) -> Arc<Self> {
        Arc::new(ProgressBoard {
            specs: specs.into(),
            stages,
            bell,
            committed: AtomicU64::new(0),
            hibernated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// A board for a run known only from the journal: no stage counts.
    pub(crate) fn closed(names: &[String]) -> Arc<Self> {
        let specs = names
            .iter()
            .map(|name| StageSpec {
                name: name.clone(),
                feeds_from: Vec::new(),
            })
            .collect();
        let board = Self::new(specs);
        board.closed.store(true, Relaxed);
        board
    }

    /// Stage `index`'s counters; past the last stage (a board of another
    /// flow's shape: never), counters nobody reads.
    pub(crate) fn counters(&self, index: usize) -> Arc<StageCounters> {
        match self.stages.get(index) {
            Some(counters) => counters.clone(),
            None => Arc::new(StageCounters::new(self.bell.clone(), None)),
        }
    }

    pub(super) fn bell(&self) -> &Bell {
        &self.bell
    }

    /// Checkpoint `id` is committed (or the run resumed from it).
    pub(crate) fn checkpoint_committed(&self, id: u64) {
        if self.committed.fetch_max(id, Relaxed) < id {
            self.bell.ring();
        }
    }

    /// Something of the run itself changed (its state).
    pub(crate) fn ring(&self) {
        self.bell.ring();
    }

    /// The run hibernates, or no longer does.
    pub(crate) fn set_hibernated(&self, hibernated: bool) {
        if self.hibernated.swap(hibernated, Relaxed) != hibernated {
            self.bell.ring();
        }
    }

    /// The run ended: its stages that had not stopped (killed after a
    /// cancel's grace, never started) show `unfinished`; then nothing
    /// changes any more.
    pub(crate) fn end(&self, unfinished: StageStatus) {
        for stage in self.stages.iter() {
            stage.set_final(unfinished);
        }
        self.close();
    }

    /// Nothing changes any more: the run ended or its runtime is gone.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Relaxed) {
            for stage in self.stages.iter() {
                if let Some(meter) = &stage.meter {
                    let (items_in, items_out) = (stage.items_in.load(Relaxed), stage.items_out());
                    meter.close(items_in, items_out, stage.retries.load(Relaxed));
                }
            }
            self.bell.ring();
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// The counters now: relaxed loads, no lock.
    pub(crate) fn read(&self) -> RunProgress {
        let loaded: Vec<(u64, u64)> = self
            .stages
            .iter()
            .map(|c| (c.items_in.load(Relaxed), c.items_out.load(Relaxed)))
            .collect();
        let stages = self
            .specs
            .iter()
            .zip(self.stages.iter())
            .zip(&loaded)
            .map(|((spec, c), &(items_in, items_out))| {
                // Each upstream hands every output every item it counts out.
                let sent: u64 = spec
                    .feeds_from
                    .iter()
                    .filter_map(|&u| loaded.get(u))
                    .map(|&(_, out)| out)
                    .sum();
                let barrier = c.barrier.load(Relaxed);
                StageProgress {
                    name: spec.name.clone(),
                    state: c.status(),
                    items_in,
                    items_out,
                    pipe_depth: sent.saturating_sub(items_in),
                    restarts: c.restarts.load(Relaxed),
                    retries: c.retries.load(Relaxed),
                    dead_letters: c.dead_letters.load(Relaxed),
                    last_checkpoint: (barrier > 0).then_some(barrier),
                }
            })
            .collect();
        let committed = self.committed.load(Relaxed);
        RunProgress {
            stages,
            last_checkpoint: (committed > 0).then_some(committed),
            hibernated: self.hibernated.load(Relaxed),
            ended: self.is_closed(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A source `src` feeding a sink `sink`.
    pub(in crate::progress) fn two_stages() -> Vec<StageSpec> {
        vec![
            StageSpec {
                name: "src".into(),
                feeds_from: vec![],
            },
            StageSpec {
                name: "sink".into(),
                feeds_from: vec![0],
            },
        ]
    }

    fn board() -> Arc<ProgressBoard> {
        ProgressBoard::new(two_stages())
    }

    #[test]
    fn pipe_depth_is_what_upstream_sent_and_the_stage_did_not_take() {
        let board = board();
        board.counters(0).publish_items(0, 10, 0);
        board.counters(1).publish_items(4, 0, 0);
        let progress = board.read();
        assert_eq!(progress.stages[0].pipe_depth, 0);
        assert_eq!(progress.stages[1].pipe_depth, 6);
        // A replayed item counts in, never below zero.
        board.counters(1).publish_items(11, 0, 0);
        assert_eq!(board.read().stages[1].pipe_depth, 0);
    }

    #[test]
    fn only_rare_changes_ring() {
        let board = board();
        let stage = board.counters(1);
        let version = || board.bell().version.load(Relaxed);
        stage.publish_items(1, 1, 0);
        stage.add_retry();
        stage.passed_barrier(3);
        assert_eq!(version(), 0);
        stage.set_status(StageStatus::Running);
        stage.set_status(StageStatus::Running);
        assert_eq!(version(), 1);
        stage.set_waiting(true);
        assert_eq!(board.read().stages[1].state, StageStatus::Waiting);
        stage.add_restart();
        stage.set_dead_letters(1);
        stage.set_dead_letters(1);
        board.checkpoint_committed(2);
        board.checkpoint_committed(1);
        assert_eq!(version(), 5);
        let read = board.read();
        assert_eq!(read.last_checkpoint, Some(2));
        assert_eq!(read.stages[1].last_checkpoint, Some(3));
        assert_eq!(read.stages[1].retries, 1);
    }

    #[test]
    fn a_final_state_is_not_overwritten_by_a_late_failure() {
        let board = board();
        let stage = board.counters(0);
        stage.set_status(StageStatus::Completed);
        stage.set_failed();
        assert_eq!(board.read().stages[0].state, StageStatus::Completed);
        stage.set_status(StageStatus::Running);
        stage.set_failed();
        assert_eq!(board.read().stages[0].state, StageStatus::Failed);
    }

    #[test]
    fn the_end_stops_the_stages_still_going() {
        let board = board();
        board.counters(0).set_status(StageStatus::Completed);
        board.counters(1).set_status(StageStatus::Running);
        board.counters(1).set_waiting(true);
        board.end(StageStatus::Cancelled);
        let read = board.read();
        assert!(read.ended);
        assert_eq!(read.stages[0].state, StageStatus::Completed);
        assert_eq!(read.stages[1].state, StageStatus::Cancelled);
    }
}
