//! Step outputs, failure-ledger entries, dead letters, memos and steps
//! inside the writer's transaction.

use super::codec::{decode_memo, pg};
use super::ops::OpCtx;
use crate::records::{
    DeadLetter, FailureEntry, Memo, RunStep, StepOutput, StoreError, WriteOutcome,
};
use crate::store::sqlite::codec::{json_bytes, micros};

impl OpCtx<'_> {
    pub(super) async fn record_output(
        &mut self,
        o: &StepOutput,
    ) -> Result<WriteOutcome, StoreError> {
        o.validate()?;
        self.head(o.run_id).await?;
        let iteration = o.iteration.map(i64::from);
        let inserted = self
            .execute(
                "record step output",
                "INSERT INTO step_outputs(run_id, step_id, loop_id, iteration, at, output) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &o.run_id,
                    &o.step_id,
                    &o.loop_id,
                    &iteration,
                    &micros(o.at),
                    &json_bytes(&o.output),
                ],
            )
            .await?;
        Ok(WriteOutcome::StepOutputRecorded {
            inserted: inserted == 1,
        })
    }

    pub(super) async fn record_failure(
        &mut self,
        f: &FailureEntry,
    ) -> Result<WriteOutcome, StoreError> {
        f.validate()?;
        self.head(f.run_id).await?;
        self.execute(
            "record failure",
            "INSERT INTO failures(run_id, step_id, reason, error_json, at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &f.run_id,
                &f.step_id,
                &f.reason,
                &f.error_json.as_ref().map(json_bytes),
                &micros(f.at),
            ],
        )
        .await?;
        Ok(WriteOutcome::FailureRecorded)
    }

    pub(super) async fn record_dead_letter(
        &mut self,
        d: &DeadLetter,
    ) -> Result<WriteOutcome, StoreError> {
        d.validate()?;
        self.head(d.run_id).await?;
        let errors = serde_json::to_vec(&d.errors).map_err(|e| StoreError::InvalidInput {
            run_id: d.run_id,
            field: "errors",
            value: e.to_string(),
            why: "a dead letter's errors must encode as JSON",
        })?;
        self.execute(
            "record dead letter",
            "INSERT INTO dead_letters(run_id, stage, position, attempts, errors, item, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &d.run_id,
                &d.stage,
                // Stored bit for bit, as revisions are; read back `as u64`.
                &(d.position as i64),
                &i64::from(d.attempts),
                &errors,
                &json_bytes(&d.item),
                &micros(d.at),
            ],
        )
        .await?;
        Ok(WriteOutcome::DeadLetterRecorded)
    }

    pub(super) async fn record_memo(&mut self, m: &Memo) -> Result<WriteOutcome, StoreError> {
        m.validate()?;
        self.head(m.run_id).await?;
        let (ok, result) = match &m.result {
            Ok(value) => (true, json_bytes(value)),
            Err(message) => (
                false,
                json_bytes(&serde_json::Value::String(message.clone())),
            ),
        };
        let inserted = self
            .execute(
                "record memo",
                "INSERT INTO memos(run_id, stage, name, ok, result, at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&m.run_id, &m.stage, &m.name, &ok, &result, &micros(m.at)],
            )
            .await?
            == 1;
        let stored = if inserted {
            m.clone()
        } else {
            let row = self
                .query_opt(
                    "read memo",
                    "SELECT id, stage, name, ok, result, at FROM memos \
                     WHERE run_id = $1 AND stage = $2 AND name = $3",
                    &[&m.run_id, &m.stage, &m.name],
                )
                .await?
                .ok_or_else(|| crate::records::mismatch("record_memo"))?;
            decode_memo(m.run_id, &row)?
        };
        Ok(WriteOutcome::MemoRecorded {
            stored: Box::new(stored),
            inserted,
        })
    }

    pub(super) async fn upsert_step(&mut self, step: &RunStep) -> Result<WriteOutcome, StoreError> {
        step.validate()?;
        self.head(step.run_id).await?;
        let statement = self
            .statements
            .get(
                self.client,
                "INSERT INTO steps(id, run_id, runtime, child_session_key, external_run_id, task, \
                 status, result_json, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (run_id, external_run_id) DO UPDATE SET runtime = excluded.runtime, \
                 child_session_key = coalesce(excluded.child_session_key, steps.child_session_key), \
                 task = excluded.task, status = excluded.status, \
                 result_json = excluded.result_json, updated_at = excluded.updated_at \
                 RETURNING id, child_session_key, created_at",
            )
            .await?;
        let row = self
            .client
            .query_one(
                &statement,
                &[
                    &step.id,
                    &step.run_id,
                    &(step.runtime.code() as i32),
                    &step.child_session_key,
                    &step.external_run_id,
                    &step.task,
                    &(step.status.code() as i32),
                    &step.result_json.as_ref().map(json_bytes),
                    &micros(step.created_at),
                    &micros(step.updated_at),
                ],
            )
            .await
            .map_err(pg("upsert step"))?;
        let mut step = step.clone();
        step.id = row.try_get(0).map_err(pg("upsert step"))?;
        step.child_session_key = row.try_get(1).map_err(pg("upsert step"))?;
        let created: i64 = row.try_get(2).map_err(pg("upsert step"))?;
        step.created_at =
            chrono::DateTime::from_timestamp_micros(created).unwrap_or(step.created_at);
        Ok(WriteOutcome::StepUpserted(step))
    }
}
