//! What a run's stage counters report to the `metrics` facade: items in and
//! out, item retries (counters) and input depth (a gauge), each labelled
//! with the flow and the stage.
//!
//! The handles are registered once per flow ([`FlowMeter`]) and shared by
//! its runs: a run adds to them what its counters moved since it last
//! reported, never per item: after a unit of work (a batch) that moved few
//! items (a trickle: each is worth reporting), once [`REPORT_EVERY`] items
//! moved since the last report (a full pipeline reports every few
//! batches, not each), at a retry, and at the run's end (so the totals are
//! exact). Without a recorder the handles are no-ops.
//!
//! The depth gauge is additive across a flow's runs: each run adds the
//! change of its own depth and takes back what it added when it ends, so
//! the gauge is the sum over the runs this process has live.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{Counter, Gauge, Label};

use super::board::StageCounters;

/// One stage's metric handles.
#[derive(Debug)]
pub(crate) struct StageHandles {
    items_in: Counter,
    items_out: Counter,
    retries: Counter,
    /// `None` for a stage with no input (a source, a step).
    depth: Option<Gauge>,
}

/// A flow's metric handles, one set per stage, in declaration order.
/// Registered with the recorder installed when it is made.
#[derive(Debug)]
pub(crate) struct FlowMeter {
    stages: Box<[Arc<StageHandles>]>,
}

impl FlowMeter {
    /// The handles of flow `flow` whose stages are `stages`: each stage's
    /// name, whether it takes items from upstream and whether it hands
    /// items downstream. A stage gets no series for what it never moves.
    pub(crate) fn new<'a>(
        flow: &str,
        stages: impl IntoIterator<Item = (&'a str, bool, bool)>,
    ) -> Self {
        let flow = metrics::SharedString::from(flow.to_owned());
        let stages = stages
            .into_iter()
            .map(|(stage, has_input, has_output)| {
                let labels = [
                    Label::new("flow", flow.clone()),
                    Label::new("stage", stage.to_owned()),
                ];
                let counter = |moves: bool, name: &'static str| {
                    if moves {
                        metrics::counter!(name, labels.iter())
                    } else {
                        Counter::noop()
                    }
                };
                Arc::new(StageHandles {
                    items_in: counter(has_input, crate::metrics::STAGE_ITEMS_IN),
                    items_out: counter(has_output, crate::metrics::STAGE_ITEMS_OUT),
                    retries: counter(true, crate::metrics::ITEM_RETRIES),
                    depth: has_input
                        .then(|| metrics::gauge!(crate::metrics::STAGE_INPUT_DEPTH, labels.iter())),
                })
            })
            .collect();
        FlowMeter { stages }
    }

    /// Stage `index`'s handles (`None` past the last stage).
    pub(crate) fn stage(&self, index: usize) -> Option<Arc<StageHandles>> {
        self.stages.get(index).cloned()
    }
}

/// Set when a run's stage stops adding to its depth gauge (the run ended).
const CLOSED: u64 = u64::MAX;

/// Items (in plus out) a stage moves before it reports them, at the most.
pub(crate) const REPORT_EVERY: u64 = 4096;

/// A unit of work that moved fewer items (in plus out) reports at once.
const TRICKLE: u64 = 64;

/// One stage of one run, as its metrics see it.
#[derive(Debug)]
pub(crate) struct StageMeter {
    handles: Arc<StageHandles>,
    /// The stages whose items it takes (their counters, for its depth).
    upstream: Box<[Arc<StageCounters>]>,
    /// What this run's stage added to the depth gauge ([`CLOSED`] once it
    /// took it back for good).
    depth_added: AtomicU64,
    /// The counts last reported to the handles (raised with `fetch_max`,
    /// so that a report at the run's end and the stage's own never count
    /// an item twice).
    reported_in: AtomicU64,
    reported_out: AtomicU64,
    reported_retries: AtomicU64,
}

impl StageMeter {
    pub(crate) fn new(handles: Arc<StageHandles>, upstream: Box<[Arc<StageCounters>]>) -> Self {
        StageMeter {
            handles,
            upstream,
            depth_added: AtomicU64::new(0),
            reported_in: AtomicU64::new(0),
            reported_out: AtomicU64::new(0),
            reported_retries: AtomicU64::new(0),
        }
    }

    /// The run resumes with these counts (a checkpoint's): only what moves
    /// after them is reported.
    pub(crate) fn start_at(&self, items_in: u64, items_out: u64) {
        self.reported_in.fetch_max(items_in, Relaxed);
        self.reported_out.fetch_max(items_out, Relaxed);
    }

    /// The stage published its counts (`moved`: items in plus out since its
    /// last publication); reports them if it is time (see the module docs).
    #[inline]
    pub(crate) fn published(&self, moved: u64, items_in: u64, items_out: u64, retried: u64) {
        if moved >= TRICKLE && retried == self.reported_retries.load(Relaxed) {
            let reported = self.reported_in.load(Relaxed) + self.reported_out.load(Relaxed);
            if (items_in + items_out).saturating_sub(reported) < REPORT_EVERY {
                return;
            }
        }
        self.report(items_in, items_out, retried);
        if let Some(gauge) = &self.handles.depth {
            let sent: u64 = self.upstream.iter().map(|u| u.items_out()).sum();
            self.set_depth(gauge, sent.saturating_sub(items_in));
        }
    }

    /// Adds to the handles what the counts moved since the last report.
    fn report(&self, items_in: u64, items_out: u64, retried: u64) {
        let handles = &self.handles;
        for (reported, now, counter) in [
            (&self.reported_in, items_in, &handles.items_in),
            (&self.reported_out, items_out, &handles.items_out),
            (&self.reported_retries, retried, &handles.retries),
        ] {
            let was = reported.fetch_max(now, Relaxed);
            if now > was {
                counter.increment(now - was);
            }
        }
    }

    /// A step tried its work again (its retries are added, not published).
    pub(crate) fn retried(&self) {
        self.reported_retries.fetch_add(1, Relaxed);
        self.handles.retries.increment(1);
    }

    /// Adds the change of this run's depth to the gauge, unless closed.
    fn set_depth(&self, gauge: &Gauge, depth: u64) {
        let added = self.depth_added.load(Relaxed);
        if added == CLOSED || added == depth {
            return;
        }
        // Only the stage publishes; a failed exchange means the run ended.
        if self
            .depth_added
            .compare_exchange(added, depth, Relaxed, Relaxed)
            .is_ok()
        {
            gauge.increment(depth as f64 - added as f64);
        }
    }

    /// The run ended with these counts: reports what is left of them,
    /// takes back what it added to the depth gauge, and adds nothing more.
    pub(crate) fn close(&self, items_in: u64, items_out: u64, retried: u64) {
        self.report(items_in, items_out, retried);
        let added = self.depth_added.swap(CLOSED, Relaxed);
        if let (Some(gauge), true) = (&self.handles.depth, added != CLOSED && added > 0) {
            gauge.decrement(added as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ProgressBoard;
    use crate::progress::board::tests::two_stages;

    #[test]
    fn a_closed_stage_adds_nothing_more() {
        // No recorder: the handles are no-ops, the bookkeeping is ours.
        let meter = FlowMeter::new("f", [("src", false, true), ("sink", true, false)]);
        let board = ProgressBoard::metered(&meter, two_stages());
        board.counters(0).publish_items(0, 10, 0);
        board.counters(1).publish_items(4, 0, 0);
        let sink = board.counters(1);
        let added = || sink.meter().map(|m| m.depth_added.load(Relaxed));
        assert_eq!(added(), Some(6));
        // A full pipeline reports every REPORT_EVERY items, the rest at the end.
        let reported = || sink.meter().map(|m| m.reported_in.load(Relaxed));
        assert_eq!(reported(), Some(4));
        board.counters(1).publish_items(4 + 100, 0, 0);
        assert_eq!(reported(), Some(4), "a batch of 100 waits");
        board.counters(1).publish_items(4 + REPORT_EVERY, 0, 0);
        assert_eq!(reported(), Some(4 + REPORT_EVERY));
        board
            .counters(1)
            .publish_items(4 + REPORT_EVERY + 200, 0, 0);
        assert_eq!(reported(), Some(4 + REPORT_EVERY));
        board.close();
        assert_eq!(
            reported(),
            Some(4 + REPORT_EVERY + 200),
            "reported at the end"
        );
        assert_eq!(added(), Some(CLOSED));
        board.counters(1).publish_items(5, 0, 0);
        assert_eq!(added(), Some(CLOSED));
    }
}
