//! Flow definitions: recorded once per (name, fingerprint) inside the
//! writer's transaction, and read back.

use tokio_postgres::Client;

use super::codec::pg;
use super::ops::OpCtx;
use crate::records::{DefinitionRecord, RowRef, StoreError, WriteOutcome};
use crate::store::sqlite::codec::micros;
use crate::store::sqlite::definition::{decode_definition, shape_bytes};

impl OpCtx<'_> {
    pub(super) async fn record_definition(
        &mut self,
        definition: &DefinitionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        definition.validate()?;
        let version = definition.version.map(i64::from);
        // The unique (name, fingerprint) keeps it once.
        let written = self
            .execute(
                "record definition",
                "INSERT INTO definitions(name, version, fingerprint, shape, registered_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, fingerprint) DO NOTHING",
                &[
                    &definition.name,
                    &version,
                    &definition.fingerprint,
                    &shape_bytes(definition),
                    &micros(definition.registered_at),
                ],
            )
            .await?;
        Ok(WriteOutcome::DefinitionRecorded {
            inserted: written == 1,
        })
    }
}

/// The definitions named `name` (all without one), by name, then id.
pub(super) async fn list_definitions(
    client: &Client,
    name: Option<&str>,
) -> Result<Vec<DefinitionRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT id, name, version, fingerprint, shape, registered_at FROM definitions \
             WHERE $1::text IS NULL OR name = $1 ORDER BY name, id",
            &[&name],
        )
        .await
        .map_err(pg("read definitions"))?;
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let read = pg("read definitions");
        let id: i64 = row.try_get(0).map_err(read)?;
        let at = RowRef {
            table: "definitions",
            rowid: id,
            run_id: None,
        };
        let get_err = || pg("read definitions");
        found.push(decode_definition(
            &at,
            row.try_get(1).map_err(get_err())?,
            row.try_get(2).map_err(get_err())?,
            row.try_get(3).map_err(get_err())?,
            row.try_get::<_, &[u8]>(4).map_err(get_err())?,
            row.try_get(5).map_err(get_err())?,
        )?);
    }
    Ok(found)
}
