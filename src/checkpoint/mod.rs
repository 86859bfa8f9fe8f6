//! Checkpointed streams: a crash costs at most one checkpoint of work.
//!
//! A flow's run periodically takes a **checkpoint**: it asks its sources to
//! put a barrier into their outputs, behind the items they emitted so far;
//! each stage takes its snapshot when the barrier reaches it (a stage with
//! several inputs first waits for the barrier on every one, holding back
//! the items behind it) and passes the barrier on. When every stage has
//! passed it, the sources' positions and the other stages' states are
//! committed in one journal write. This is the asynchronous barrier
//! snapshotting of Flink (Carbone et al., 2015); several checkpoints may be
//! in flight ([`Checkpoints::max_in_flight`]), and they complete in order.
//!
//! After a crash the run resumes from its last checkpoint: each source is
//! handed its position back and re-emits from there, each transform and
//! sink its state, and the stages that had completed at the checkpoint do
//! not run again. Items after the checkpoint are processed again (at most
//! one interval of them): stage work stays at-least-once, and state is
//! exactly as of the checkpoint plus the replayed window.
//!
//! A stage takes part by implementing `snapshot` and `restore` of its trait
//! ([`Source`](crate::stage::Source), [`Transform`](crate::stage::Transform),
//! [`Sink`](crate::stage::Sink)). Checkpoints are kept only while every
//! running source reports a position: a flow whose sources do not (the
//! default) behaves as before, and a crash restarts its streaming stages
//! from the beginning. A source is asked for its position between calls of
//! `produce`, so one that waits long inside `produce` delays the checkpoint.
//! A stage restarted in-process (after a panic) keeps its pipes but not its
//! logic's state: it starts from what its factory builds.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::{Value, json};
//! use troupe::checkpoint::Checkpoints;
//! use troupe::stage::{Emitter, Produced, Source};
//! use troupe::supervise::BoxError;
//!
//! /// Counts from where it was.
//! struct Numbers { next: u64, end: u64 }
//!
//! impl Source<u64> for Numbers {
//!     async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
//!         for _ in 0..out.room() {
//!             if self.next == self.end {
//!                 break;
//!             }
//!             out.push(self.next);
//!             self.next += 1;
//!         }
//!         Ok(if self.next == self.end { Produced::Done } else { Produced::More })
//!     }
//!     fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
//!         Ok(Some(json!(self.next)))
//!     }
//!     fn restore(&mut self, position: Value) -> Result<(), BoxError> {
//!         self.next = serde_json::from_value(position)?;
//!         Ok(())
//!     }
//! }
//!
//! // Every 100 ms (the default is every second).
//! let _every = Checkpoints::every(Duration::from_millis(100));
//! # let _ = Numbers { next: 0, end: 1 };
//! ```

pub(crate) mod coordinator;
pub(crate) mod link;

use std::time::Duration;

/// When a flow's runs take checkpoints; set with
/// [`FlowBuilder::checkpoints`](crate::flow::FlowBuilder::checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    pub(crate) every: Option<Duration>,
    pub(crate) every_items: Option<u64>,
    pub(crate) timeout: Duration,
    pub(crate) max_in_flight: usize,
}

impl Default for Checkpoints {
    /// Every second; a checkpoint not complete after 10 minutes is abandoned.
    fn default() -> Self {
        Checkpoints {
            every: Some(Duration::from_secs(1)),
            every_items: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_in_flight: Self::DEFAULT_IN_FLIGHT,
        }
    }
}

impl Checkpoints {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
    const DEFAULT_IN_FLIGHT: usize = 16;

    /// A checkpoint every `interval` from the start of the previous one
    /// (later while [`max_in_flight`](Self::max_in_flight) are in flight).
    /// At least a millisecond.
    pub fn every(interval: Duration) -> Self {
        Checkpoints {
            every: Some(interval.max(Duration::from_millis(1))),
            every_items: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_in_flight: Self::DEFAULT_IN_FLIGHT,
        }
    }

    /// A checkpoint each time the sources have emitted `items` more items
    /// (together). At least 1.
    pub fn every_items(items: u64) -> Self {
        Checkpoints {
            every: None,
            every_items: Some(items.max(1)),
            timeout: Self::DEFAULT_TIMEOUT,
            max_in_flight: Self::DEFAULT_IN_FLIGHT,
        }
    }

    /// Also a checkpoint every `interval`, whichever comes first.
    pub fn or_every(mut self, interval: Duration) -> Self {
        self.every = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// No checkpoints: a crash restarts the streaming stages from the start.
    pub fn off() -> Self {
        Checkpoints {
            every: None,
            every_items: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_in_flight: Self::DEFAULT_IN_FLIGHT,
        }
    }

    /// How long a checkpoint may take before it is abandoned (the next one
    /// is then taken). Default 10 minutes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many checkpoints may be in flight at once (default 16, at least
    /// 1). More than one keeps barriers spaced by the interval in the stream
    /// when a source runs far ahead of its sinks (full pipes), so a crash
    /// redoes about one interval of work; a new checkpoint waits while this
    /// many are in flight.
    pub fn max_in_flight(mut self, checkpoints: usize) -> Self {
        self.max_in_flight = checkpoints.max(1);
        self
    }

    /// Whether checkpoints are taken at all.
    pub fn is_on(&self) -> bool {
        self.every.is_some() || self.every_items.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_clamped_and_off_is_off() {
        assert_eq!(
            Checkpoints::every(Duration::ZERO).every,
            Some(Duration::from_millis(1))
        );
        assert_eq!(Checkpoints::every_items(0).every_items, Some(1));
        assert!(!Checkpoints::off().is_on());
        assert!(Checkpoints::default().is_on());
        let both = Checkpoints::every_items(10).or_every(Duration::from_secs(5));
        assert_eq!(both.every, Some(Duration::from_secs(5)));
    }
}
