//! What a run's stage counters report to the `metrics` facade: items in and
//! out, item retries (counters) and input depth (a gauge), each labelled
//! with the flow and the stage.
//!
//! The handles are registered once per flow ([`FlowMeter`]) and shared by
//! its runs: a run adds to them what its counters moved since their last
//! publication, once per unit of work (a batch), never per item. Without a
//! recorder the handles are no-ops and a publication costs a branch each.
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

/// One stage of one run, as its metrics see it.
#[derive(Debug)]
pub(crate) struct StageMeter {
    handles: Arc<StageHandles>,
    /// The stages whose items it takes (their counters, for its depth).
    upstream: Box<[Arc<StageCounters>]>,
    /// What this run's stage added to the depth gauge ([`CLOSED`] once it
    /// took it back for good).
    depth_added: AtomicU64,
}

impl StageMeter {
    pub(crate) fn new(handles: Arc<StageHandles>, upstream: Box<[Arc<StageCounters>]>) -> Self {
        StageMeter {
            handles,
            upstream,
            depth_added: AtomicU64::new(0),
        }
    }

    /// The stage's counters moved by these amounts; `items_in` is its
    /// count of items taken now.
    #[inline]
    pub(crate) fn moved(&self, d_in: u64, d_out: u64, d_retries: u64, items_in: u64) {
        let handles = &self.handles;
        if d_in > 0 {
            handles.items_in.increment(d_in);
        }
        if d_out > 0 {
            handles.items_out.increment(d_out);
        }
        if d_retries > 0 {
            handles.retries.increment(d_retries);
        }
        if let Some(gauge) = &handles.depth {
            let sent: u64 = self.upstream.iter().map(|u| u.items_out()).sum();
            self.set_depth(gauge, sent.saturating_sub(items_in));
        }
    }

    /// A step tried its work again.
    pub(crate) fn retried(&self) {
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

    /// The run ended: takes back what it added to the depth gauge, and
    /// adds nothing more.
    pub(crate) fn close(&self) {
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
        board.close();
        assert_eq!(added(), Some(CLOSED));
        board.counters(1).publish_items(5, 0, 0);
        assert_eq!(added(), Some(CLOSED));
    }
}
