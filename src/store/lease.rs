//! Who may execute a run: [`Ownership`]. An SQLite journal has one owner,
//! the process holding its lock, so every run in it is that process's. A
//! PostgreSQL journal is shared by many processes: each run is executed by
//! the one holding its **lease**, which it claims atomically, renews in
//! batches, and loses when it stops renewing (another process then claims
//! the run with a higher **epoch**). Every write the owner makes for a run
//! is fenced by that epoch in the write's own transaction, so a process
//! that lost a lease commits nothing more for the run
//! ([`StoreError::LeaseLost`](crate::records::StoreError::LeaseLost)).
//!
//! The runtime drives all of this ([`Store::claim_runs`](super::Store::claim_runs),
//! [`Store::renew_leases`](super::Store::renew_leases)); a user only picks
//! the lease's length:
//!
//! ```
//! use std::time::Duration;
//! use troupe::store::{MemoryStore, Ownership, Store};
//!
//! // An in-memory or SQLite store has a single owner: nothing to claim.
//! assert_eq!(MemoryStore::new().ownership(), Ownership::Single);
//! let leased = Ownership::Leased { worker: "web-1".into(), lease: Duration::from_secs(6) };
//! assert_eq!(leased.renew_every(), Some(Duration::from_secs(2)));
//! ```

use std::ops::Range;
use std::time::Duration;

use uuid::Uuid;

/// How a store's runs are owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// One process owns the whole journal (SQLite's lock, or a store in
    /// memory): every unfinished run is its own.
    Single,
    /// Runs are leased one by one to the processes sharing the journal.
    Leased {
        /// This store's worker identity, recorded as each lease's owner.
        worker: String,
        /// How long a lease lasts unless renewed: a dead process's runs are
        /// taken over this long after its last renewal.
        lease: Duration,
    },
}

impl Ownership {
    /// How often leases are renewed: a third of their length, so that two
    /// renewals in a row may fail before a lease lapses. `None` for a
    /// single owner.
    pub fn renew_every(&self) -> Option<Duration> {
        match self {
            Ownership::Single => None,
            Ownership::Leased { lease, .. } => Some(*lease / 3),
        }
    }
}

/// What a [`Store::renew_leases`](super::Store::renew_leases) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Leases renewed.
    pub renewed: usize,
    /// Runs whose lease this store held and has lost since the last
    /// renewal (taken over by another worker, or found so by a fenced
    /// write): their execution here must stop.
    pub lost: Vec<Uuid>,
    /// Runs held here whose record asks for a cancel (written by another
    /// process, e.g. `troupe cancel`).
    pub cancel_requested: Vec<Uuid>,
}

/// The lease epoch some ops of a batch were written under: the ops at
/// `ops` (indexes into the batch) that write for run `run_id` as its owner
/// come from the execution of the run that held its lease at `epoch`. A
/// store that leases runs refuses them with
/// [`StoreError::LeaseLost`](crate::records::StoreError::LeaseLost) unless it
/// still holds the run at that very epoch, so that an execution stopped for a
/// lost lease commits nothing, even once this process holds the run again
/// under a later epoch. The journal fences each run's writes this way
/// ([`Store::apply_fenced_batch`](super::Store::apply_fenced_batch)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The run whose lease the ops were written under.
    pub run_id: Uuid,
    /// The epoch of that lease.
    pub epoch: u64,
    /// The ops it covers, as indexes into the batch.
    pub ops: Range<usize>,
}
