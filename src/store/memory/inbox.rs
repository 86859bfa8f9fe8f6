//! The memory store's inbox ops, with the same rules as SQLite's.

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use super::{MemState, Undo};
use crate::records::{InboxEntry, Settled, StoreError, WriteOutcome};

impl MemState {
    pub(super) fn accept_inbox(
        &mut self,
        entries: Vec<InboxEntry>,
        undo: &mut Vec<Undo>,
    ) -> Result<WriteOutcome, StoreError> {
        for mut entry in entries {
            entry.validate()?;
            let status = self.flow(entry.run_id)?.status;
            if status.is_terminal() {
                return Err(StoreError::RunEnded {
                    run_id: entry.run_id,
                    status,
                });
            }
            let same = |e: &InboxEntry| {
                e.run_id == entry.run_id && e.id == entry.id && e.stage == entry.stage
            };
            if self.inbox.iter().any(same) {
                return Err(StoreError::InboxEntryExists {
                    run_id: entry.run_id,
                    id: entry.id,
                    stage: entry.stage,
                });
            }
            entry.settled = None;
            self.inbox.push(entry);
            undo.push(Undo::PushInbox);
        }
        Ok(WriteOutcome::InboxAccepted)
    }

    pub(super) fn settle_inbox(
        &mut self,
        run_id: Uuid,
        id: Uuid,
        stage: &str,
        undeliverable: Option<String>,
        undo: &mut Vec<Undo>,
    ) -> WriteOutcome {
        let found = self.inbox.iter().position(|e| {
            e.run_id == run_id && e.id == id && e.stage == stage && e.settled.is_none()
        });
        let Some(i) = found else {
            return WriteOutcome::InboxSettled { settled: false };
        };
        self.inbox[i].settled = Some(Settled {
            at: Utc::now().trunc_subsecs(6),
            undeliverable,
        });
        undo.push(Undo::Unsettle(i));
        WriteOutcome::InboxSettled { settled: true }
    }
}
