//! The metrics troupe records through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (e.g. `metrics-exporter-prometheus`) to read
//! them; without one they cost a relaxed atomic load each. None is recorded
//! per item: counters move per commit, per run, per restart, per dead
//! letter, per wait, and a stage's item counts every few thousand items
//! (after a unit of work that moved few, at once; all at a run's end).
//!
//! ```
//! // The names, for dashboards and alerts.
//! assert_eq!(troupe::metrics::RUNS_ENDED, "troupe_runs_ended_total");
//! ```

/// Journal commits (label `outcome`: `ok` or `failed`).
pub const JOURNAL_COMMITS: &str = "troupe_journal_commits_total";
/// Write ops per journal commit (histogram).
pub const JOURNAL_COMMIT_OPS: &str = "troupe_journal_commit_ops";
/// Journal commit latency, fsync included, in seconds (histogram): from
/// the batch's start to its acknowledgement (every op's statements, then
/// the store's commit).
pub const JOURNAL_COMMIT_SECONDS: &str = "troupe_journal_commit_seconds";
/// SQLite's `COMMIT` of a journal batch, in seconds (histogram): writing
/// the batch's WAL frames and the fsync, the part of
/// [`JOURNAL_COMMIT_SECONDS`] that waits for the disk. (PostgreSQL sends
/// its `COMMIT` with the batch's last statement, one round trip: not split.)
pub const JOURNAL_SYNC_SECONDS: &str = "troupe_journal_sync_seconds";
/// Write requests queued for the journal's next commit (gauge).
pub const JOURNAL_QUEUED: &str = "troupe_journal_queued_requests";
/// Runs started, resumed ones included (label `flow`).
pub const RUNS_STARTED: &str = "troupe_runs_started_total";
/// Runs ended (labels `flow`, `status`).
pub const RUNS_ENDED: &str = "troupe_runs_ended_total";
/// Items a stage took from its input (labels `flow`, `stage`): its rate
/// is the stage's items/s. Reported every few thousand items, not per item.
pub const STAGE_ITEMS_IN: &str = "troupe_stage_items_in_total";
/// Items a stage handed downstream (labels `flow`, `stage`): a source's
/// rate is its items/s. Reported every few thousand items, not per item.
pub const STAGE_ITEMS_OUT: &str = "troupe_stage_items_out_total";
/// Items a stage's upstreams sent it that it has not taken yet, summed
/// over this process's live runs of the flow (gauge; labels `flow`,
/// `stage`; stages with an input only): its pipes' depth, updated when the
/// stage reports its item counts. A run takes its part back when it ends.
pub const STAGE_INPUT_DEPTH: &str = "troupe_stage_input_depth";
/// Attempts at an item (a step: at its work) after a failed one (labels
/// `flow`, `stage`).
pub const ITEM_RETRIES: &str = "troupe_item_retries_total";
/// Stage restarts (labels `flow`, `stage`).
pub const STAGE_RESTARTS: &str = "troupe_stage_restarts_total";
/// Items dead-lettered (labels `flow`, `stage`).
pub const DEAD_LETTERS: &str = "troupe_dead_letters_total";
/// Runs of this runtime whose status is `Waiting` now, hibernated ones
/// included (gauge).
pub const WAITING_RUNS: &str = "troupe_waiting_runs";
/// Durable waits (timers, signal waits) stages are in now (gauge).
pub const STAGE_WAITS: &str = "troupe_stage_waits";
/// Durable timers being waited for in this process (gauge).
pub const TIMERS_ARMED: &str = "troupe_timers_armed";
/// Signals taken by durable waits.
pub const SIGNALS_TAKEN: &str = "troupe_signals_taken_total";
/// Checkpoints committed to the journal.
pub const CHECKPOINTS_COMMITTED: &str = "troupe_checkpoints_committed_total";
/// Checkpoints abandoned (a stage took no snapshot, the timeout passed, or
/// the journal refused the write); the previous one stands.
pub const CHECKPOINTS_ABANDONED: &str = "troupe_checkpoints_abandoned_total";
/// Time from asking the sources for a barrier to the checkpoint's commit,
/// in seconds (histogram).
pub const CHECKPOINT_SECONDS: &str = "troupe_checkpoint_seconds";
/// Runs hibernating in this runtime: no flow or stage actor, only a compact
/// entry waiting for a deadline, a child's end or a message (gauge).
pub const HIBERNATED_RUNS: &str = "troupe_hibernated_runs";
/// Hibernated runs woken (label `by`: `timer`, `child`, `message`).
pub const RUNS_WOKEN: &str = "troupe_runs_woken_total";
/// Runs this runtime claimed from a shared journal after their lease lapsed.
pub const RUNS_CLAIMED: &str = "troupe_runs_claimed_total";
/// Runs whose lease this runtime lost (another process took them over).
pub const LEASES_LOST: &str = "troupe_leases_lost_total";
/// Lease renewals or claims that failed (label `op`: `renew` or `claim`).
pub const LEASE_FAILURES: &str = "troupe_lease_failures_total";
