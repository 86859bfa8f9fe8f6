//! [`ProgressWatch`]: waits for a run's progress to change.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{ProgressBoard, RunProgress};

/// Waits for a run's progress to change; get one from
/// [`RunHandle::watch_progress`](crate::flow::RunHandle::watch_progress).
///
/// It wakes on what changes rarely: a stage's state, restart or dead
/// letter, a committed checkpoint, the run's state, hibernation or end.
/// Item and retry counts move without waking it (that would cost the hot
/// path a wake per batch): [`next`](Self::next) with a period reads them
/// as a progress bar does. Nothing runs while nobody waits: no task, no
/// timer.
#[derive(Debug, Clone)]
pub struct ProgressWatch {
    board: Arc<ProgressBoard>,
    /// The change count last seen.
    seen: u64,
    /// Whether the progress after the run's end was handed out.
    saw_end: bool,
}

impl ProgressWatch {
    pub(crate) fn new(board: Arc<ProgressBoard>) -> Self {
        ProgressWatch {
            board,
            // Unseen: the first `changed` returns at once.
            seen: u64::MAX,
            saw_end: false,
        }
    }

    /// The progress now.
    pub fn progress(&self) -> RunProgress {
        self.board.read()
    }

    /// Waits until something changed since the last call (at once on the
    /// first call); `false` once the run has ended and that was seen:
    /// nothing changes any more.
    pub async fn changed(&mut self) -> bool {
        let bell = self.board.bell();
        loop {
            let rung = bell.rung.notified();
            tokio::pin!(rung);
            // Listening before the look: a ring after it still wakes us.
            rung.as_mut().enable();
            let version = bell.version.load(Relaxed);
            if version != self.seen {
                self.seen = version;
                return true;
            }
            if self.board.is_closed() {
                return false;
            }
            rung.await;
        }
    }

    /// Waits for a change or for `period`, whichever comes first, and
    /// returns the progress then; `None` after the progress at the run's
    /// end was returned once. The loop of a progress bar (see the
    /// [module docs](super)).
    pub async fn next(&mut self, period: Duration) -> Option<RunProgress> {
        if self.saw_end {
            return None;
        }
        // A zero period would spin.
        let period = period.max(Duration::from_millis(1));
        let _ = tokio::time::timeout(period, self.changed()).await;
        let progress = self.board.read();
        self.saw_end = progress.ended;
        Some(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{StageSpec, StageStatus};
    use super::*;

    fn board() -> Arc<ProgressBoard> {
        ProgressBoard::new(vec![StageSpec {
            name: "step".into(),
            feeds_from: vec![],
        }])
    }

    #[tokio::test(start_paused = true)]
    async fn changed_wakes_on_a_ring_and_ends_with_the_run() {
        let board = board();
        let mut watch = ProgressWatch::new(board.clone());
        assert!(watch.changed().await, "the first call returns at once");
        let waiting = tokio::spawn(async move {
            let changed = watch.changed().await;
            (changed, watch)
        });
        tokio::task::yield_now().await;
        board.counters(0).set_status(StageStatus::Completed);
        let (changed, mut watch) = waiting.await.unwrap();
        assert!(changed);
        board.close();
        assert!(watch.changed().await, "the end is a change");
        assert!(!watch.changed().await, "then nothing changes");
    }

    #[tokio::test(start_paused = true)]
    async fn next_ticks_with_the_period_and_stops_after_the_end() {
        let board = board();
        let mut watch = ProgressWatch::new(board.clone());
        assert!(watch.next(Duration::from_millis(100)).await.is_some());
        let start = tokio::time::Instant::now();
        board.counters(0).publish_items(0, 5, 0);
        let progress = watch.next(Duration::from_millis(100)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(progress.stages[0].items_out, 5);
        board.close();
        assert!(watch.next(Duration::from_millis(100)).await.unwrap().ended);
        assert_eq!(watch.next(Duration::from_millis(100)).await, None);
    }
}
