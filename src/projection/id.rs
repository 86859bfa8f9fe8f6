//! Lifecycle ids: a UUID v5 over a fixed namespace, hashed from what a
//! lifecycle record says (never where it sits in the history) and the
//! number of times the same record occurred before it.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The namespace every lifecycle id is hashed in. Fixed forever: changing
/// it would change every id a UI or a bookmark holds.
pub const LIFECYCLE_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_6e2a_91d4_4b8e_a3c7_5d0e_f4b2_9a13);

/// The id of one lifecycle event: the same record of the same run at the
/// same occurrence has the same id in every projection of it, whatever
/// else the history holds before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LifecycleId(pub Uuid);

impl LifecycleId {
    /// The id of occurrence `occurrence` (from 1) of the record whose
    /// identity is `identity` (its canonical JSON) in run `run_id`.
    pub fn derive(run_id: Uuid, identity: &str, occurrence: u32) -> LifecycleId {
        let name = format!("{run_id}\u{1f}{identity}\u{1f}{occurrence}");
        LifecycleId(Uuid::new_v5(&LIFECYCLE_NAMESPACE, name.as_bytes()))
    }
}

impl fmt::Display for LifecycleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_depends_on_run_identity_and_occurrence_only() {
        let run = Uuid::from_u128(7);
        let a = LifecycleId::derive(run, "{\"x\":1}", 1);
        assert_eq!(a, LifecycleId::derive(run, "{\"x\":1}", 1));
        assert_ne!(a, LifecycleId::derive(run, "{\"x\":1}", 2));
        assert_ne!(a, LifecycleId::derive(run, "{\"x\":2}", 1));
        assert_ne!(a, LifecycleId::derive(Uuid::from_u128(8), "{\"x\":1}", 1));
        assert_eq!(a.0.get_version_num(), 5);
    }
}
