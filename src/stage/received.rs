//! The received batch a stage works through, and its item in hand.
//!
//! The batch is kept whole and walked with a cursor: the item in hand is
//! the one at the cursor, and it stays in the batch until an attempt at it
//! succeeds or it is dead-lettered, so a failed, panicked or killed attempt
//! loses nothing. An attempt gets a clone (the logic takes items by value);
//! nothing else is moved or copied per item.

use std::collections::VecDeque;

use crate::records::MAX_DEAD_LETTER_ERRORS;
use crate::supervise::BoxError;

/// A stage's received batch, its cursor and what is known of the item in hand.
#[derive(Debug)]
pub(crate) struct Received<T> {
    /// The received batch being worked through: items before `next` are
    /// done with.
    batch: Vec<T>,
    /// The index in `batch` of the item in hand, or of the next item.
    next: usize,
    /// Whether an attempt at the item at `next` began and did not succeed
    /// yet: the next attempt is a retry.
    in_hand: bool,
    /// The outbox's length when the item in hand was taken: what its failed
    /// attempts emitted lies beyond it (the outbox is not sent meanwhile).
    pub(super) held_mark: usize,
    /// Failed attempts at the item in hand in this start (a restart gives
    /// the item the full retry policy again).
    pub(super) failed_attempts: u32,
    /// Failed attempts at the item in hand in every start.
    pub(super) held_failures: u32,
    /// The errors of the item in hand's last failed attempts (at most
    /// [`MAX_DEAD_LETTER_ERRORS`]), for its dead letter.
    pub(super) held_errors: VecDeque<String>,
}

/// What [`Received::begin_attempt`] hands out.
pub(crate) enum Attempt<T> {
    /// A first attempt at the next item.
    First(T),
    /// Another attempt at the item in hand; `mark` is the outbox length
    /// to cut back to (what the failed attempts emitted is dropped).
    Retry { item: T, mark: usize },
}

impl<T> Received<T> {
    /// An empty batch, without allocating.
    pub(crate) fn new() -> Self {
        Received {
            batch: Vec::new(),
            next: 0,
            in_hand: false,
            held_mark: 0,
            failed_attempts: 0,
            held_failures: 0,
            held_errors: VecDeque::new(),
        }
    }

    /// Whether items wait to be worked on (the one in hand included).
    pub(crate) fn has_items(&self) -> bool {
        self.next < self.batch.len()
    }

    /// Takes a received batch; only when no item waits (callers check
    /// [`has_items`](Self::has_items)), so nothing is dropped.
    pub(crate) fn refill(&mut self, batch: Vec<T>) {
        debug_assert!(
            !self.has_items(),
            "a received batch with items was refilled"
        );
        self.batch = batch;
        self.next = 0;
        self.in_hand = false;
    }

    /// Drops every waiting item, the one in hand included.
    pub(crate) fn clear(&mut self) {
        self.batch = Vec::new();
        self.next = 0;
        self.in_hand = false;
        self.forget_failures();
    }

    /// The item in hand, if an attempt at it began and did not succeed.
    pub(crate) fn held(&self) -> Option<&T> {
        self.batch.get(self.next).filter(|_| self.in_hand)
    }

    /// The attempt at the item in hand succeeded (or it was dead-lettered):
    /// the next item is next.
    pub(crate) fn settle(&mut self) {
        if !self.in_hand {
            return;
        }
        self.in_hand = false;
        self.next += 1;
        if self.held_failures != 0 || self.failed_attempts != 0 {
            self.forget_failures();
        }
    }

    fn forget_failures(&mut self) {
        self.failed_attempts = 0;
        self.held_failures = 0;
        self.held_errors.clear();
    }

    /// The attempt at the item in hand failed with `error`; how many have
    /// in this start.
    pub(crate) fn attempt_failed(&mut self, error: &BoxError) -> u32 {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        self.held_failures = self.held_failures.saturating_add(1);
        if self.held_errors.len() == MAX_DEAD_LETTER_ERRORS {
            self.held_errors.pop_front();
        }
        self.held_errors.push_back(error.to_string());
        self.failed_attempts
    }
}

impl<T: Clone> Received<T> {
    /// A clone of the item to attempt next: the one in hand again if an
    /// attempt at it did not succeed, else the next one, which `outbox_len`
    /// marks as its start in the outbox. `None` once the batch is done.
    pub(crate) fn begin_attempt(&mut self, outbox_len: usize) -> Option<Attempt<T>> {
        let item = self.batch.get(self.next)?.clone();
        if self.in_hand {
            return Some(Attempt::Retry {
                item,
                mark: self.held_mark,
            });
        }
        self.in_hand = true;
        self.held_mark = outbox_len;
        Some(Attempt::First(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(attempt: Option<Attempt<u32>>) -> u32 {
        match attempt {
            Some(Attempt::First(item)) => item,
            _ => panic!("not a first attempt"),
        }
    }

    #[test]
    fn an_item_stays_in_hand_until_settled_and_its_retry_cuts_the_outbox_back() {
        let mut received = Received::new();
        received.refill(vec![1, 2]);
        assert_eq!(first(received.begin_attempt(5)), 1);
        assert_eq!(received.held(), Some(&1));
        assert_eq!(received.attempt_failed(&"no".into()), 1);
        match received.begin_attempt(9) {
            Some(Attempt::Retry { item: 1, mark: 5 }) => {}
            _ => panic!("not a retry of item 1 back to mark 5"),
        }
        received.settle();
        assert_eq!(received.held(), None);
        assert!(received.held_errors.is_empty());
        assert_eq!(first(received.begin_attempt(0)), 2);
        received.settle();
        assert!(!received.has_items());
        assert!(received.begin_attempt(0).is_none());
    }

    #[test]
    fn only_the_last_errors_are_kept() {
        let mut received = Received::new();
        received.refill(vec![7]);
        first(received.begin_attempt(0));
        for n in 0..MAX_DEAD_LETTER_ERRORS + 2 {
            received.attempt_failed(&format!("e{n}").into());
        }
        assert_eq!(received.held_errors.len(), MAX_DEAD_LETTER_ERRORS);
        assert_eq!(received.held_errors.front().map(String::as_str), Some("e2"));
        received.clear();
        assert!(!received.has_items());
        assert_eq!(received.held_failures, 0);
    }
}
