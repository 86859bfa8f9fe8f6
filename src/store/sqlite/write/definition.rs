//! Recording a flow definition inside the writer's transaction: once per
//! (name, fingerprint), the first record kept.

use rusqlite::params;

use super::ops::OpCtx;
use super::sql;
use crate::records::{DefinitionRecord, StoreError, WriteOutcome};
use crate::store::sqlite::codec::micros;
use crate::store::sqlite::definition::shape_bytes;

impl OpCtx<'_, '_> {
    pub(super) fn record_definition(
        &mut self,
        definition: &DefinitionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        definition.validate()?;
        // The unique (name, fingerprint) keeps it once.
        let written = self
            .conn
            .prepare_cached(
                "INSERT INTO definitions(name, version, fingerprint, shape, registered_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name, fingerprint) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    definition.name,
                    definition.version.map(i64::from),
                    definition.fingerprint,
                    shape_bytes(definition),
                    micros(definition.registered_at),
                ])
            })
            .map_err(sql("record definition"))?;
        Ok(WriteOutcome::DefinitionRecorded {
            inserted: written == 1,
        })
    }
}
