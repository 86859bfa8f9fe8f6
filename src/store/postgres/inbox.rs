//! Inbox ops inside the writer's transaction: accepting operator input for
//! a live (non-terminal) run, and settling it once its stage handled it;
//! the doorbell that tells other processes (`NOTIFY`).

use uuid::Uuid;

use super::codec::pg;
use super::lease::Standing;
use super::ops::OpCtx;
use crate::records::{InboxEntry, Run, RunStatus, StoreError, WriteOutcome};
use crate::store::sqlite::codec::micros;

impl OpCtx<'_> {
    pub(super) async fn accept_inbox(
        &mut self,
        entries: &[InboxEntry],
    ) -> Result<WriteOutcome, StoreError> {
        // A run-wide signal is one entry per stage of one run: its status is
        // read once.
        let mut live = None;
        for entry in entries {
            entry.validate()?;
            self.head(entry.run_id).await?;
            if live != Some(entry.run_id) {
                // Read inside the transaction: a terminal status written
                // earlier in the same batch counts.
                let row = self
                    .query_opt(
                        "read run status",
                        "SELECT status FROM runs WHERE id = $1",
                        &[&entry.run_id],
                    )
                    .await?
                    .ok_or(StoreError::RunNotFound(entry.run_id))?;
                let code: i32 = row.try_get(0).map_err(pg("read run status"))?;
                if let Some(status) = RunStatus::from_code(code.into()).filter(|s| s.is_terminal())
                {
                    return Err(StoreError::RunEnded {
                        run_id: entry.run_id,
                        status,
                    });
                }
                live = Some(entry.run_id);
            }
            self.insert_inbox(entry).await?;
        }
        self.ring_owners(entries).await?;
        Ok(WriteOutcome::InboxAccepted)
    }

    /// Tells the processes listening on this schema's doorbell that the
    /// runs of `entries` that this store does not hold have input: their
    /// owner hands it over (delivered at commit; dropped with a rolled-back
    /// op). A run held here gets its input in-process.
    async fn ring_owners(&mut self, entries: &[InboxEntry]) -> Result<(), StoreError> {
        let lease = self.lease;
        let mut rung = Vec::new();
        for entry in entries {
            let held = matches!(lease.standing(entry.run_id), Standing::Held(_));
            if !held && !rung.contains(&entry.run_id) {
                rung.push(entry.run_id);
            }
        }
        for run_id in rung {
            self.ring(run_id).await?;
        }
        Ok(())
    }

    /// Rings the doorbell for an updated run whom another process may be
    /// watching: a child run that ended (its parent's watcher, wherever it
    /// is, reads its terminal at once), or a cancel requested for a run
    /// this store does not hold (its owner cancels it at once, not at its
    /// next renewal).
    pub(super) async fn ring_watchers(&mut self, run: &Run) -> Result<(), StoreError> {
        let ended_child = run.status.is_terminal() && run.parent_run_id.is_some();
        let cancel_elsewhere = run.cancel_requested
            && !run.status.is_terminal()
            && !matches!(self.lease.standing(run.id), Standing::Held(_));
        if ended_child || cancel_elsewhere {
            self.ring(run.id).await?;
        }
        Ok(())
    }

    /// `NOTIFY`s this schema's doorbell with `run_id` (delivered at commit,
    /// dropped with a rolled-back op).
    async fn ring(&mut self, run_id: Uuid) -> Result<(), StoreError> {
        let payload = run_id.to_string();
        let channel = &self.lease.doorbell;
        self.execute(
            "ring the doorbell",
            "SELECT pg_notify($1, $2)",
            &[channel, &payload],
        )
        .await?;
        Ok(())
    }

    /// Inserts an unsettled entry; a stored `(run, id, stage)` is `InboxEntryExists`.
    async fn insert_inbox(&mut self, entry: &InboxEntry) -> Result<(), StoreError> {
        let exists = self
            .query_opt(
                "look up inbox entry",
                "SELECT 1 FROM inbox WHERE run_id = $1 AND id = $2 AND stage = $3",
                &[&entry.run_id, &entry.id, &entry.stage],
            )
            .await?;
        if exists.is_some() {
            return Err(StoreError::InboxEntryExists {
                run_id: entry.run_id,
                id: entry.id,
                stage: entry.stage.clone(),
            });
        }
        // An enum of strings and JSON values always encodes.
        let message = serde_json::to_vec(&entry.message).unwrap_or_default();
        self.execute(
            "accept inbox entry",
            "INSERT INTO inbox(run_id, id, stage, message, accepted_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &entry.run_id,
                &entry.id,
                &entry.stage,
                &message,
                &micros(entry.accepted_at),
            ],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn settle_inbox(
        &mut self,
        run_id: Uuid,
        id: Uuid,
        stage: &str,
        undeliverable: Option<&str>,
    ) -> Result<WriteOutcome, StoreError> {
        match self.head(run_id).await {
            Ok(_) => {}
            Err(StoreError::RunNotFound(_)) => {
                return Ok(WriteOutcome::InboxSettled { settled: false });
            }
            Err(other) => return Err(other),
        }
        let changed = self
            .execute(
                "settle inbox entry",
                "UPDATE inbox SET settled_at = $4, undeliverable = $5 \
                 WHERE run_id = $1 AND id = $2 AND stage = $3 AND settled_at IS NULL",
                &[
                    &run_id,
                    &id,
                    &stage,
                    &micros(chrono::Utc::now()),
                    &undeliverable,
                ],
            )
            .await?;
        Ok(WriteOutcome::InboxSettled {
            settled: changed > 0,
        })
    }
}
