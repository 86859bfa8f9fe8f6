//! Counters the journal keeps for observation (queue depth, batch sizes,
//! commit latency), readable at any time without asking the actor.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of the journal's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Requests accepted by the actor and not yet committed.
    pub queued_requests: u64,
    /// Commits performed (successful or not).
    pub commits: u64,
    /// Commits that failed as a whole.
    pub failed_commits: u64,
    /// Write ops in all commits.
    pub ops: u64,
    /// The largest batch committed, in ops.
    pub max_batch_ops: u64,
    /// Total time spent in commits.
    pub commit_time: Duration,
    /// The slowest commit.
    pub max_commit_time: Duration,
}

#[derive(Default)]
pub(crate) struct Counters {
    queued: AtomicU64,
    commits: AtomicU64,
    failed: AtomicU64,
    ops: AtomicU64,
    max_batch: AtomicU64,
    commit_us: AtomicU64,
    max_commit_us: AtomicU64,
}

impl Counters {
    pub(crate) fn queued(&self, delta: i64) -> u64 {
        let now = if delta >= 0 {
            self.queued.fetch_add(delta as u64, Relaxed) + delta as u64
        } else {
            self.queued.fetch_sub(delta.unsigned_abs(), Relaxed) - delta.unsigned_abs()
        };
        metrics::gauge!(crate::metrics::JOURNAL_QUEUED).set(now as f64);
        now
    }

    pub(crate) fn commit(&self, ops: usize, took: Duration, ok: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Relaxed);
        if !ok {
            self.failed.fetch_add(1, Relaxed);
        }
        self.ops.fetch_add(ops as u64, Relaxed);
        self.max_batch.fetch_max(ops as u64, Relaxed);
        self.commit_us.fetch_add(us, Relaxed);
        self.max_commit_us.fetch_max(us, Relaxed);
        let outcome = if ok { "ok" } else { "failed" };
        metrics::counter!(crate::metrics::JOURNAL_COMMITS, "outcome" => outcome).increment(1);
        metrics::histogram!(crate::metrics::JOURNAL_COMMIT_OPS).record(ops as f64);
        metrics::histogram!(crate::metrics::JOURNAL_COMMIT_SECONDS).record(took.as_secs_f64());
    }

    pub(crate) fn snapshot(&self) -> JournalStats {
        JournalStats {
            queued_requests: self.queued.load(Relaxed),
            commits: self.commits.load(Relaxed),
            failed_commits: self.failed.load(Relaxed),
            ops: self.ops.load(Relaxed),
            max_batch_ops: self.max_batch.load(Relaxed),
            commit_time: Duration::from_micros(self.commit_us.load(Relaxed)),
            max_commit_time: Duration::from_micros(self.max_commit_us.load(Relaxed)),
        }
    }
}
