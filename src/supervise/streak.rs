//! The bound on repeating one failure: a step that fails the same way in the
//! same state, again and again, must end the loop rather than spin.

/// How many identical failures in a row (same message, same state, no
/// successful step in between) are fed to the machine; the next one ends the
/// drive loop with [`SupervisorError::RepeatedFailure`](super::SupervisorError::RepeatedFailure).
///
/// Eight leaves room for a machine that counts its own retries in the context
/// (a few attempts before giving up) while a stuck loop stops at once.
pub const MAX_IDENTICAL_FAILURES: u32 = 8;

/// The current run of identical failures.
#[derive(Debug)]
pub(crate) struct FailureStreak<S> {
    last: Option<(String, S)>,
    count: u32,
}

impl<S> Default for FailureStreak<S> {
    fn default() -> Self {
        FailureStreak {
            last: None,
            count: 0,
        }
    }
}

impl<S: Clone + PartialEq> FailureStreak<S> {
    /// Counts `failure` in `state`; returns the length of the streak it extends
    /// (1 when it differs from the previous failure or the state changed).
    pub(crate) fn record(&mut self, failure: &str, state: &S) -> u32 {
        match &self.last {
            Some((message, at)) if message == failure && at == state => self.count += 1,
            _ => {
                self.last = Some((failure.to_owned(), state.clone()));
                self.count = 1;
            }
        }
        self.count
    }

    /// A step succeeded: the streak is over.
    pub(crate) fn clear(&mut self) {
        self.last = None;
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identical_failures_in_one_state_extend_the_streak() {
        let mut streak = FailureStreak::default();
        assert_eq!(streak.record("x", &1), 1);
        assert_eq!(streak.record("x", &1), 2);
        assert_eq!(streak.record("x", &2), 1, "a state change starts over");
        assert_eq!(streak.record("y", &2), 1, "another failure starts over");
        assert_eq!(streak.record("y", &2), 2);
        streak.clear();
        assert_eq!(streak.record("y", &2), 1, "a successful step starts over");
    }
}
