//! Identifiers shared by every layer.
//!
//! Ids are small `Copy` numbers so that they travel in events, spans and
//! journal rows without allocation. A [`WriterId`] names whoever writes a
//! completion to the journal; a stage writes under its own [`StageId`].
//!
//! ```
//! use troupe::ids::{StageId, WriterId};
//! const INGEST: StageId = StageId::new_const(7);
//! let writer = WriterId::from(INGEST);
//! assert_eq!(writer.get(), 7);
//! assert_eq!(INGEST.to_string(), "stage-7");
//! assert_eq!(writer.to_string(), "writer-7");
//! ```

/// Run ids (time-ordered UUID v7) as they appear in records and handles,
/// re-exported so users need no `uuid` dependency of their own.
pub use uuid::Uuid;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one stage of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageId(u64);

impl StageId {
    /// A stage id from its number, usable in `const` items.
    pub const fn new_const(n: u64) -> Self {
        StageId(n)
    }

    /// The id's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage-{}", self.0)
    }
}

/// Identifies a writer of completion events: a stage (through
/// `From<StageId>`, same number) or a system component. Stage ids and other
/// writer ids share one number space, so whoever allocates writer ids for
/// system components keeps them apart from the stage ids in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriterId(u64);

impl WriterId {
    /// A writer id from its number, usable in `const` items.
    pub const fn new_const(n: u64) -> Self {
        WriterId(n)
    }

    /// The id's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<StageId> for WriterId {
    fn from(stage: StageId) -> Self {
        WriterId(stage.0)
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writer-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_plain_numbers() {
        let stage = StageId::new_const(42);
        assert_eq!(serde_json::to_string(&stage).unwrap(), "42");
        let writer: WriterId = serde_json::from_str("42").unwrap();
        assert_eq!(writer, WriterId::from(stage));
    }
}
