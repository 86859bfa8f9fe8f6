//! Live progress of a run: per stage its state, items in and out, pipe
//! depth, restarts, retries, dead letters and last checkpoint, read from
//! counters the stages keep as they work — never from the journal, never
//! by asking an actor — so reading it every 100 ms costs a few relaxed
//! atomic loads per stage.
//!
//! Read it with [`RunHandle::progress`](crate::flow::RunHandle::progress),
//! or wait for its next change with a [`ProgressWatch`]
//! ([`RunHandle::watch_progress`](crate::flow::RunHandle::watch_progress)).
//!
//! ```
//! use std::time::Duration;
//! use troupe::flow::FlowDefinition;
//! use troupe::runtime::Runtime;
//! use troupe::stage::{sink_fn, source_iter};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = Runtime::builder().memory().start().await?;
//! runtime.register(
//!     FlowDefinition::<u64>::builder("count")
//!         .source("numbers", |_| source_iter(1..=1000_u64))
//!         .sink("discard", |_| sink_fn(|_: u64| Ok(())))
//!         .pipeline(["numbers", "discard"])
//!         .build()?,
//! ).await?;
//! let run = runtime.start("count").await?;
//!
//! // A progress bar's loop: the progress at each change, or every 100 ms.
//! let mut watch = run.watch_progress();
//! while let Some(progress) = watch.next(Duration::from_millis(100)).await {
//!     let sink = progress.stage("discard").unwrap();
//!     println!("{} items taken, {} queued", sink.items_in, sink.pipe_depth);
//! }
//! // The final counts stay readable once the run ended.
//! assert_eq!(run.progress().stage("discard").unwrap().items_in, 1000);
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! What counts, and from when: the counters belong to the run as its
//! runtime keeps it, so a stage's restart and the run's hibernation keep
//! them. A run resumed after its process restarted starts from its last
//! checkpoint's item counts (or zero without one) and from the dead
//! letters in its journal; its restarts and retries count from zero.

mod board;
mod meter;
mod watch;

pub(crate) use board::{ProgressBoard, StageCounters, StageSpec};
pub(crate) use meter::FlowMeter;
pub use watch::ProgressWatch;

/// A run's progress at one moment: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunProgress {
    /// Each stage's, in declaration order.
    pub stages: Vec<StageProgress>,
    /// The newest checkpoint committed to the journal (the one a restart
    /// resumes from), if any.
    pub last_checkpoint: Option<u64>,
    /// Whether the run hibernates: no actors, its stages wait durably.
    pub hibernated: bool,
    /// Whether the run has ended (or its runtime let go of it): these are
    /// its final counts.
    pub ended: bool,
}

impl RunProgress {
    /// The progress of the stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageProgress> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// One stage's progress at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageProgress {
    /// The stage's name.
    pub name: String,
    /// Where it is in its life.
    pub state: StageStatus,
    /// Items it took from its input (a source: 0), dead-lettered ones
    /// included, counted per batch of work.
    pub items_in: u64,
    /// Items it handed downstream (a sink: 0).
    pub items_out: u64,
    /// Items its upstreams sent it that it has not taken yet: in its
    /// pipes, or in the batch it works through (0 for sources and steps).
    /// Derived from the counters, so it is exact at rest and off by up to
    /// a batch while items move.
    pub pipe_depth: u64,
    /// Times the stage was started again after an exit.
    pub restarts: u64,
    /// Attempts at an item (a step: at its work) after a failed one.
    pub retries: u64,
    /// Items it gave up on (journaled as dead letters).
    pub dead_letters: u64,
    /// The newest checkpoint whose barrier it passed (its snapshot taken);
    /// [`RunProgress::last_checkpoint`] says which one is committed.
    pub last_checkpoint: Option<u64>,
}

/// Where a stage is in its life, as its progress shows it (the states of
/// [`StageState`](crate::stage::StageState), without a failure's reason,
/// plus the stage's life in its run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum StageStatus {
    /// Not started yet (a step waiting for the steps before it, a stage of
    /// a run that is starting).
    Pending = 0,
    /// Taking over its ends of the pipes.
    Starting,
    /// Working.
    Running,
    /// A step waiting durably: for a timer, a signal or a child run.
    Waiting,
    /// Paused by a control event.
    Paused,
    /// Finishing its input and completing.
    Draining,
    /// Done: its work is complete; its output is recorded, or being
    /// recorded (the run's outcome waits for it).
    Completed,
    /// Its last start failed (a restart, if its policy allows one, makes
    /// it `Starting` again).
    Failed,
    /// Cancelled.
    Cancelled,
    /// Given up for this run without a restart; the run carries on without it.
    Abandoned,
}

impl StageStatus {
    const ALL: [StageStatus; 10] = [
        StageStatus::Pending,
        StageStatus::Starting,
        StageStatus::Running,
        StageStatus::Waiting,
        StageStatus::Paused,
        StageStatus::Draining,
        StageStatus::Completed,
        StageStatus::Failed,
        StageStatus::Cancelled,
        StageStatus::Abandoned,
    ];

    fn from_code(code: u8) -> Self {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(StageStatus::Pending)
    }

    /// Whether the stage stopped (for good, unless a failed one restarts).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StageStatus::Completed
                | StageStatus::Failed
                | StageStatus::Cancelled
                | StageStatus::Abandoned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for status in StageStatus::ALL {
            assert_eq!(StageStatus::from_code(status as u8), status);
        }
        assert_eq!(StageStatus::from_code(200), StageStatus::Pending);
    }
}
