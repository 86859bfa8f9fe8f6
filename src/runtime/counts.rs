//! [`RunCounts`]: what a runtime's runs cost now, live and hibernated.

use std::sync::PoisonError;

use super::Runtime;

/// How many runs a runtime holds and what they cost in actors
/// ([`Runtime::run_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunCounts {
    /// Runs not ended that have a flow actor (or are being given one).
    pub live: usize,
    /// Runs not ended that hibernate: no actor, a compact entry each.
    pub hibernated: usize,
    /// Flow and stage actors alive under the runtime (the journal's aside).
    pub actors: usize,
}

impl Runtime {
    /// How many runs are live and hibernating, and how many flow and stage
    /// actors exist (see [`RuntimeBuilder::hibernate_after`](super::RuntimeBuilder::hibernate_after)).
    pub fn run_counts(&self) -> RunCounts {
        let unended = self
            .launcher
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unended();
        let hibernated = self.launcher.sleepers.len();
        let journal = self.journal().actor().get_id();
        let actors = self
            .root
            .get_children()
            .iter()
            .filter(|flow| flow.get_id() != journal)
            .map(|flow| 1 + flow.get_children().len())
            .sum();
        RunCounts {
            live: unended.saturating_sub(hibernated),
            hibernated,
            actors,
        }
    }
}
