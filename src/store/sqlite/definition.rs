//! Reading recorded flow definitions, and decoding a definition row (shared
//! with the PostgreSQL store).

use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::types::Value as Sql;

use super::codec::time;
use crate::records::{DefinitionRecord, FlowShape, RowRef, StoreError};

/// The `shape` column of a definition: its stages, edges and input as JSON.
pub(crate) fn shape_bytes(definition: &DefinitionRecord) -> Vec<u8> {
    // Strings and lists of strings always encode.
    serde_json::to_vec(&definition.shape).unwrap_or_default()
}

/// Decodes a stored definition: a damaged column is a typed error naming
/// the row, never a panic.
pub(crate) fn decode_definition(
    row: &RowRef,
    name: String,
    version: Option<i64>,
    fingerprint: String,
    shape: &[u8],
    registered_at: i64,
) -> Result<DefinitionRecord, StoreError> {
    let version = version
        .map(|v| {
            u32::try_from(v).map_err(|_| StoreError::CorruptRow {
                row: row.clone(),
                column: "version",
                value: v.to_string(),
            })
        })
        .transpose()?;
    let shape: FlowShape =
        serde_json::from_slice(shape).map_err(|e| StoreError::CorruptPayload {
            row: row.clone(),
            column: "shape",
            source: Arc::new(e),
        })?;
    Ok(DefinitionRecord {
        name,
        version,
        fingerprint,
        shape,
        registered_at: time(row, "registered_at", registered_at)?,
    })
}

/// The definitions named `name` (all without one), by name, then id.
pub(crate) fn list_definitions(
    conn: &Connection,
    name: Option<&str>,
) -> Result<Vec<DefinitionRecord>, StoreError> {
    let read = StoreError::sqlite("read definitions");
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, name, version, fingerprint, shape, registered_at FROM definitions \
             WHERE ?1 IS NULL OR name = ?1 ORDER BY name, id",
        )
        .map_err(StoreError::sqlite("read definitions"))?;
    let rows = stmt
        .query_map([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Sql>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(read)?;
    let mut found = Vec::new();
    for row in rows {
        let (id, name, version, fingerprint, shape, at) =
            row.map_err(StoreError::sqlite("read definitions"))?;
        let at_row = RowRef {
            table: "definitions",
            rowid: id,
            run_id: None,
        };
        let shape = match shape {
            Sql::Blob(bytes) => bytes,
            Sql::Text(text) => text.into_bytes(),
            other => {
                return Err(StoreError::CorruptRow {
                    row: at_row,
                    column: "shape",
                    value: format!("{other:?}"),
                });
            }
        };
        found.push(decode_definition(
            &at_row,
            name,
            version,
            fingerprint,
            &shape,
            at,
        )?);
    }
    Ok(found)
}
