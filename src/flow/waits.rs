//! Stages that wait durably (a timer, a signal): while one does and the
//! flow runs, the run's record is `Waiting` with a `wait_json` saying what
//! for (`{"for": "stages", "stages": {stage: wait}}`), and `Running` again
//! once none does; with `"wake"` (see `sleep.rs`) when every stage not
//! done waits so. An operator's pause (`{"for": "resume"}`) takes over the
//! record while it lasts; a resumed run's stages report their waits again.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::context::FlowCtx;
use super::machine::RunState;
use super::record::{self, RecordError};
use crate::records::{Run, RunStatus};
use crate::stage::StageWait;

/// What the stages of a run wait for, by stage name, then by wait (a stage
/// may wait for several things at once).
pub(crate) type StageWaits = BTreeMap<String, BTreeMap<u64, Value>>;

/// Whether the run's record is `Waiting` because of its stages' waits.
pub(crate) fn waits_for_stages(run: &Run) -> bool {
    run.status == RunStatus::Waiting
        && run
            .wait_json
            .as_ref()
            .and_then(|w| w.get("for"))
            .is_some_and(|f| f == "stages")
}

impl FlowCtx {
    /// Stage `wait.stage` started or stopped waiting.
    pub(crate) async fn stage_waits(&mut self, wait: StageWait) -> Result<(), RecordError> {
        let Some(name) = self.stages.get(wait.stage).map(|s| s.name.clone()) else {
            return Ok(());
        };
        let waits = self.waits.entry(name.clone()).or_default();
        match wait.wait {
            Some(what) => {
                waits.insert(wait.token, what);
            }
            None => {
                waits.remove(&wait.token);
                if waits.is_empty() {
                    self.waits.remove(&name);
                }
            }
        }
        if let Some(stage) = self.stages.get(wait.stage) {
            stage.counters.set_waiting(self.waits.contains_key(&name));
        }
        self.sync_waits().await
    }

    /// Brings the run's record in line with its stages' waits.
    pub(crate) async fn sync_waits(&mut self) -> Result<(), RecordError> {
        let stages = &self.stages;
        self.waits.retain(|name, _| {
            stages
                .iter()
                .any(|s| &s.name == name && !s.completed && s.abandoned.is_none())
        });
        let running = self.cell.state_is(&RunState::Running);
        // Each waiting stage with its latest wait.
        let latest: BTreeMap<&String, &Value> = self
            .waits
            .iter()
            .filter_map(|(stage, waits)| Some((stage, waits.values().next_back()?)))
            .collect();
        let wanted = (running && !latest.is_empty()).then(|| {
            let mut wait = json!({ "for": "stages", "stages": latest });
            // What a later start needs to hibernate the run without
            // starting it (see `sleep.rs`), when it may hibernate.
            if let Some(sleep) = self.sleep_plan() {
                wait["wake"] = sleep.to_json();
            }
            wait
        });
        let journal = self.journal().clone();
        let synced = match (wanted, self.run.status) {
            (Some(wait), RunStatus::Running) => {
                record::set_waiting(&journal, &mut self.run, wait).await
            }
            (Some(wait), RunStatus::Waiting)
                if waits_for_stages(&self.run) && self.run.wait_json.as_ref() != Some(&wait) =>
            {
                record::set_waiting(&journal, &mut self.run, wait).await
            }
            (None, RunStatus::Waiting) if waits_for_stages(&self.run) => {
                record::resume(&journal, &mut self.run).await
            }
            _ => Ok(()),
        };
        // Also after a status change that came before (`Persist`).
        self.cell.set_waiting(self.run.status == RunStatus::Waiting);
        synced
    }
}
