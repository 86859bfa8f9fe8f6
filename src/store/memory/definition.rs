//! The memory store's flow definitions, with the same rules as SQLite's.

use super::{MemState, Undo};
use crate::records::{DefinitionRecord, StoreError, WriteOutcome};

impl MemState {
    /// Keeps `definition` unless one with its name and fingerprint is kept.
    pub(super) fn record_definition(
        &mut self,
        definition: DefinitionRecord,
        undo: &mut Vec<Undo>,
    ) -> Result<WriteOutcome, StoreError> {
        definition.validate()?;
        let known = self
            .definitions
            .iter()
            .any(|d| d.name == definition.name && d.fingerprint == definition.fingerprint);
        if known {
            return Ok(WriteOutcome::DefinitionRecorded { inserted: false });
        }
        self.definitions.push(definition);
        undo.push(Undo::PushDefinition);
        Ok(WriteOutcome::DefinitionRecorded { inserted: true })
    }

    /// The definitions named `name` (all without one), by name, then in recording order.
    pub(super) fn definitions_named(&self, name: Option<&str>) -> Vec<DefinitionRecord> {
        let mut found: Vec<DefinitionRecord> = self
            .definitions
            .iter()
            .filter(|d| name.is_none_or(|n| d.name == n))
            .cloned()
            .collect();
        // Stable: the recording order stays within a name.
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }
}
