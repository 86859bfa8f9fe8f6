//! [`RunOptions`]: who starts a run, with what input, under which id.

use serde::Serialize;
use serde_json::Value;

/// What a new run is started with: its input, the caller's id for it, and
/// who starts it and why. Built with chained calls; every part is optional.
///
/// ```
/// use troupe::flow::{IdReuse, RunOptions};
///
/// let options = RunOptions::new()
///     .input(serde_json::json!({"order": 42}))
///     .id("order-42")
///     .id_reuse(IdReuse::AfterFailure)
///     .goal("book order 42");
/// assert_eq!(options.run_id(), Some("order-42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    pub(crate) goal: Option<String>,
    pub(crate) owner_session_key: Option<String>,
    pub(crate) requester_origin: Option<String>,
    pub(crate) input: Value,
    /// Why the input could not be turned into JSON, reported by the start.
    pub(crate) input_error: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) id_reuse: IdReuse,
    /// The run that starts this one as its child.
    pub(crate) parent: Option<uuid::Uuid>,
}

/// Whether a start may create a new run under an id whose earlier run has
/// ended. While that run has not ended, a start with its id returns it, or
/// [`RuntimeError::RunIdConflict`](crate::runtime::RuntimeError::RunIdConflict)
/// when the input differs. The store keeps at most one run per flow and id
/// that has not ended, whatever the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdReuse {
    /// Never: the id names one run for good; a start returns that run even
    /// once it has ended (an idempotent start, as with an idempotency key).
    #[default]
    Never,
    /// After the earlier run failed or was cancelled, a start creates a new
    /// run; after it finished, the start returns it.
    AfterFailure,
    /// After the earlier run ended in any way, a start creates a new run.
    AfterEnded,
}

impl RunOptions {
    /// No input, no id, the defaults for the rest.
    pub fn new() -> RunOptions {
        RunOptions::default()
    }

    /// The run's input, as JSON: journaled with the run and given to its
    /// stages ([`StageContext::input`](crate::stage::StageContext::input)).
    /// A value that cannot be turned into JSON (a map with non-string keys)
    /// makes the start fail with
    /// [`RuntimeError::BadInput`](crate::runtime::RuntimeError::BadInput).
    pub fn input(mut self, input: impl Serialize) -> RunOptions {
        match serde_json::to_value(input) {
            Ok(value) => {
                self.input = value;
                self.input_error = None;
            }
            Err(error) => self.input_error = Some(error.to_string()),
        }
        self
    }

    /// The caller's own id for the run, unique per flow among runs that have
    /// not ended: starting it again returns the same run (see [`IdReuse`]).
    /// At most [`MAX_RUN_KEY_LEN`](crate::records::MAX_RUN_KEY_LEN) bytes,
    /// not empty, no control characters.
    pub fn id(mut self, id: impl Into<String>) -> RunOptions {
        self.id = Some(id.into());
        self
    }

    /// Whether a start may reuse the id of a run that has ended (default
    /// [`IdReuse::Never`]).
    pub fn id_reuse(mut self, reuse: IdReuse) -> RunOptions {
        self.id_reuse = reuse;
        self
    }

    /// What the run is for (defaults to the flow's name).
    pub fn goal(mut self, goal: impl Into<String>) -> RunOptions {
        self.goal = Some(goal.into());
        self
    }

    /// The session that owns the run (defaults to `"troupe"`).
    pub fn owner(mut self, owner_session_key: impl Into<String>) -> RunOptions {
        self.owner_session_key = Some(owner_session_key.into());
        self
    }

    /// Where the request came from.
    pub fn origin(mut self, requester_origin: impl Into<String>) -> RunOptions {
        self.requester_origin = Some(requester_origin.into());
        self
    }

    /// The run this one is a child of (its record's `parent_run_id`). Set by
    /// [`StageContext::start_child`](crate::stage::StageContext::start_child),
    /// which also makes the child's id; crate-only, so a run's parent is
    /// always a run that started it.
    pub(crate) fn parent(mut self, parent: uuid::Uuid) -> RunOptions {
        self.parent = Some(parent);
        self
    }

    /// The id chosen with [`id`](Self::id), if any.
    pub fn run_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn input_that_is_not_json_is_kept_as_an_error() {
        let mut bad = BTreeMap::new();
        bad.insert((1, 2), "pair keys");
        let options = RunOptions::new().input(bad);
        assert!(options.input_error.is_some());
        // A later good input replaces it.
        let options = options.input(7);
        assert_eq!((options.input, options.input_error), (Value::from(7), None));
    }
}
