//! Inbox ops inside the writer's transaction: accepting operator input for
//! a live (non-terminal) run, and settling it once its stage handled it.

use rusqlite::{OptionalExtension, params};

use super::ops::OpCtx;
use super::sql;
use crate::records::{InboxEntry, RunStatus, StoreError, WriteOutcome};
use crate::store::sqlite::codec::micros;

impl OpCtx<'_, '_> {
    pub(super) fn accept_inbox(
        &mut self,
        entries: &[InboxEntry],
    ) -> Result<WriteOutcome, StoreError> {
        // A run-wide signal is one entry per stage of one run: its status is
        // read once.
        let mut live_rid = None;
        for entry in entries {
            entry.validate()?;
            let head = self.head(entry.run_id)?;
            if live_rid == Some(head.rid) {
                self.insert_inbox(head.rid, entry)?;
                continue;
            }
            // Read inside the transaction: a terminal status written earlier
            // in the same batch counts.
            let code: i64 = self
                .conn
                .prepare_cached("SELECT status FROM runs WHERE rid = ?1")
                .and_then(|mut s| s.query_row([head.rid], |r| r.get(0)))
                .map_err(sql("read run status"))?;
            if let Some(status) = RunStatus::from_code(code).filter(|s| s.is_terminal()) {
                return Err(StoreError::RunEnded {
                    run_id: entry.run_id,
                    status,
                });
            }
            live_rid = Some(head.rid);
            self.insert_inbox(head.rid, entry)?;
        }
        Ok(WriteOutcome::InboxAccepted)
    }

    /// Inserts an unsettled entry of the run whose row is `rid`; a stored
    /// `(run, id, stage)` is `InboxEntryExists`.
    fn insert_inbox(&mut self, rid: i64, entry: &InboxEntry) -> Result<(), StoreError> {
        let exists = self
            .conn
            .prepare_cached("SELECT 1 FROM inbox WHERE rid = ?1 AND id = ?2 AND stage = ?3")
            .and_then(|mut s| {
                s.query_row(params![rid, entry.id.as_bytes(), entry.stage], |_| Ok(()))
                    .optional()
            })
            .map_err(sql("look up inbox entry"))?;
        if exists.is_some() {
            return Err(StoreError::InboxEntryExists {
                run_id: entry.run_id,
                id: entry.id,
                stage: entry.stage.clone(),
            });
        }
        // An enum of strings and JSON values always encodes.
        let message = serde_json::to_vec(&entry.message).unwrap_or_default();
        self.conn
            .prepare_cached(
                "INSERT INTO inbox(rid, id, stage, message, accepted_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    rid,
                    entry.id.as_bytes(),
                    entry.stage,
                    message,
                    micros(entry.accepted_at)
                ])
            })
            .map_err(sql("accept inbox entry"))?;
        Ok(())
    }

    pub(super) fn settle_inbox(
        &mut self,
        run_id: uuid::Uuid,
        id: uuid::Uuid,
        stage: &str,
        undeliverable: Option<&str>,
    ) -> Result<WriteOutcome, StoreError> {
        let head = match self.head(run_id) {
            Ok(head) => head,
            Err(StoreError::RunNotFound(_)) => {
                return Ok(WriteOutcome::InboxSettled { settled: false });
            }
            Err(other) => return Err(other),
        };
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE inbox SET settled_at = ?4, undeliverable = ?5 \
                 WHERE rid = ?1 AND id = ?2 AND stage = ?3 AND settled_at IS NULL",
            )
            .and_then(|mut s| {
                s.execute(params![
                    head.rid,
                    id.as_bytes(),
                    stage,
                    micros(chrono::Utc::now()),
                    undeliverable
                ])
            })
            .map_err(sql("settle inbox entry"))?;
        Ok(WriteOutcome::InboxSettled {
            settled: changed > 0,
        })
    }
}
