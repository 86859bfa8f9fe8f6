//! Snapshots: a run's phases and a summary of it, redacted (ids, statuses,
//! counts and its checkpoint's shape) unless the caller asks for full
//! detail; and the loader that reads what a snapshot needs from a store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::checkpoint::CheckpointSummary;
use super::compact::CompactedSpan;
use super::error::ProjectionError;
use super::phase::{PhaseKind, PhaseState, PhaseStatus, RefusedTransition};
use super::projector::{Projection, UnreadableEvent};
use crate::records::{Checkpoint, DeadLetter, Run, RunEvent, RunStatus, StepOutput, TerminalEvent};
use crate::store::Store;

/// How much of the run a snapshot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Ids, statuses and counts only: no input, state, wait, output,
    /// failure reason or item (they may hold personal data or secrets).
    #[default]
    Summary,
    /// The summary plus the user payloads ([`FullDetail`]).
    Full,
}

/// What a snapshot is made from besides the projection: the run's record
/// and the records that are not events of its log.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecords {
    /// The run's record.
    pub run: Run,
    /// Its log, in order.
    pub events: Vec<RunEvent>,
    /// Its stages' recorded outputs.
    pub stage_outputs: Vec<StepOutput>,
    /// The items its stages gave up on.
    pub dead_letters: Vec<DeadLetter>,
    /// Its latest checkpoint, if it has one.
    pub checkpoint: Option<Checkpoint>,
}

impl RunRecords {
    /// Reads run `run_id`'s records from `store`.
    pub async fn load(store: &dyn Store, run_id: Uuid) -> Result<RunRecords, ProjectionError> {
        let read = |source| ProjectionError::Store { run_id, source };
        let run = store.get_run(run_id).await.map_err(read)?;
        let run = run.ok_or(ProjectionError::UnknownRun(run_id))?;
        Ok(RunRecords {
            run,
            events: store.replay(run_id).await.map_err(read)?,
            stage_outputs: store.list_step_outputs(run_id).await.map_err(read)?,
            dead_letters: store.list_dead_letters(run_id).await.map_err(read)?,
            checkpoint: store.last_checkpoint(run_id).await.map_err(read)?,
        })
    }

    /// The projection of the whole log.
    pub fn project(&self) -> Result<Projection, ProjectionError> {
        let mut projection = Projection::new(self.run.id);
        projection.project(&self.events)?;
        Ok(projection)
    }
}

/// Item counts of one stage: from its recorded output (a source, transform
/// or sink records them when it completes) and its dead letters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSummary {
    /// The stage's phase status, if its log named it yet.
    pub status: Option<PhaseStatus>,
    /// Items it took, once it completed.
    pub items_in: Option<u64>,
    /// Items it emitted, once it completed.
    pub items_out: Option<u64>,
    /// Item attempts it retried, once it completed.
    pub retried: Option<u64>,
    /// Items it dead-lettered so far.
    pub dead_letters: u64,
}

/// How many phases of a kind are in each status.
pub type StatusCounts = BTreeMap<PhaseStatus, u64>;

/// A run's summary: ids, statuses and counts; user payloads only in `full`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: Uuid,
    /// Its flow.
    pub flow: String,
    /// The fingerprint of the flow definition it started with (see
    /// [`Run::fingerprint`]): which shape of the flow the phases are of.
    /// `None` for a run recorded without one (before fingerprints, or not
    /// started by a runtime).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The version its definition declared, if any.
    #[serde(default)]
    pub flow_version: Option<u32>,
    /// The caller's id for it, if any.
    pub key: Option<String>,
    /// The run that started it, if any.
    pub parent_run_id: Option<Uuid>,
    /// Its persisted status (the truth; the run phase follows its log).
    pub status: RunStatus,
    /// Whether a cancel is pending or was taken.
    pub cancel_requested: bool,
    /// Its outcome's kind (`RunCompleted`, ...), once recorded.
    pub outcome: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its record last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Events in its log.
    pub journal_events: usize,
    /// Per stage, by name.
    pub stages: BTreeMap<String, StageSummary>,
    /// Items its stages dead-lettered, in all.
    pub dead_letters: u64,
    /// Its durable waits, by status.
    pub waits: StatusCounts,
    /// The runs it started, by status.
    pub children: StatusCounts,
    /// Its latest checkpoint, without the stages' states.
    pub checkpoint: Option<CheckpointSummary>,
    /// The user payloads, with [`Detail::Full`] only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<FullDetail>,
}

/// What a summary leaves out: the run's user payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullDetail {
    /// The run's input.
    pub input: Value,
    /// Its state document.
    pub state: Value,
    /// What it waits for, while it waits.
    pub wait: Option<Value>,
    /// Its outcome, with the output or the failure reason.
    pub outcome: Option<TerminalEvent>,
    /// Each stage's recorded output, by stage.
    pub stage_outputs: BTreeMap<String, Value>,
    /// The items its stages gave up on.
    pub dead_letters: Vec<DeadLetter>,
    /// Its latest checkpoint, with the stages' states.
    pub checkpoint: Option<Checkpoint>,
}

/// A run's lifecycle at one point of its log: its summary, its phases and
/// where each status came from (causation ids), and what the guard refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last journal position (`seq`) projected.
    pub through_seq: u64,
    /// The run, summarized at the detail asked for.
    pub summary: RunSummary,
    /// Every phase with its history (each step names the lifecycle event
    /// that recorded it and the journal event that caused it).
    pub phases: Vec<PhaseState>,
    /// Moves the guard refused.
    pub refused: Vec<RefusedTransition>,
    /// Journal events that could not be read.
    pub unreadable: Vec<UnreadableEvent>,
    /// Lifecycle events not compacted.
    pub lifecycle_events: usize,
    /// The spans compaction folded older lifecycle events into.
    pub compacted: Vec<CompactedSpan>,
}

impl Snapshot {
    /// The snapshot of `projection` over `records` (of the same run).
    pub fn new(projection: &Projection, records: &RunRecords, detail: Detail) -> Snapshot {
        Snapshot {
            through_seq: projection.through_seq(),
            summary: summarize(projection, records, detail),
            phases: projection.phases().cloned().collect(),
            refused: projection.refused().to_vec(),
            unreadable: projection.unreadable().to_vec(),
            lifecycle_events: projection.events().len(),
            compacted: projection.compacted().to_vec(),
        }
    }
}

fn summarize(projection: &Projection, records: &RunRecords, detail: Detail) -> RunSummary {
    let run = &records.run;
    let outcome = records.events.iter().find_map(|e| e.kind.as_terminal());
    let mut stages: BTreeMap<String, StageSummary> = BTreeMap::new();
    let mut waits = StatusCounts::new();
    let mut children = StatusCounts::new();
    for phase in projection.phases() {
        match phase.key.kind {
            PhaseKind::Stage => {
                stages.entry(phase.key.name.clone()).or_default().status = Some(phase.status);
            }
            PhaseKind::Wait => *waits.entry(phase.status).or_default() += 1,
            PhaseKind::Child => *children.entry(phase.status).or_default() += 1,
            PhaseKind::Run => {}
        }
    }
    for output in &records.stage_outputs {
        let stage = stages.entry(output.step_id.clone()).or_default();
        // Counts only: a step's output is its user value, and `result` is
        // what a completion hook returned.
        let count = |field| output.output.get(field).and_then(Value::as_u64);
        stage.items_in = count("items_in");
        stage.items_out = count("items_out");
        stage.retried = count("retried");
    }
    for letter in &records.dead_letters {
        stages.entry(letter.stage.clone()).or_default().dead_letters += 1;
    }
    let full = (detail == Detail::Full).then(|| FullDetail {
        input: run.input.clone(),
        state: run.state_json.clone(),
        wait: run.wait_json.clone(),
        outcome: outcome.cloned(),
        stage_outputs: records
            .stage_outputs
            .iter()
            .map(|o| (o.step_id.clone(), o.output.clone()))
            .collect(),
        dead_letters: records.dead_letters.clone(),
        checkpoint: records.checkpoint.clone(),
    });
    RunSummary {
        run_id: run.id,
        flow: run.controller_id.clone(),
        fingerprint: run.fingerprint.clone(),
        flow_version: run.flow_version,
        key: run.key.clone(),
        parent_run_id: run.parent_run_id,
        status: run.status,
        cancel_requested: run.cancel_requested,
        outcome: outcome.map(|o| o.name().to_owned()),
        created_at: run.created_at,
        updated_at: run.updated_at,
        ended_at: run.ended_at,
        journal_events: records.events.len(),
        stages,
        dead_letters: records.dead_letters.len() as u64,
        waits,
        children,
        checkpoint: records.checkpoint.as_ref().map(CheckpointSummary::of),
        full,
    }
}
