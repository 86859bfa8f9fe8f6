//! Ending a run by continuing it as a new run: the flow's side of
//! [`StageContext::continue_as_new`](crate::stage::StageContext::continue_as_new).

use std::sync::Arc;

use serde_json::Value;

use super::FlowCtx;
use crate::flow::control::{CONTROL_PLANE_CANCEL_REASON, RunOutcome};
use crate::flow::record::{self, RecordError};
use crate::records::RunStatus;
use crate::runs::{RunError, RunManager, TerminalTarget};

impl FlowCtx {
    /// Ends the run by continuing it as a new run with `input` (one atomic
    /// write through the runtime, which starts the new run; see
    /// [`RunManager::continue_as_new`](crate::runs::RunManager::continue_as_new)),
    /// then publishes and stops as [`terminate`](Self::terminate) does. A
    /// cancel requested through the control plane wins (the run ends
    /// cancelled); a run found ended already (an earlier attempt's write
    /// was durable) publishes what the journal holds.
    pub(super) async fn continue_as_new(&mut self, input: Value) -> Result<(), RecordError> {
        let run_id = self.run.id;
        let written = match self.cell.host() {
            Some(host) => {
                let flow = self.run.controller_id.clone();
                host.continue_as_new(run_id, flow, input).await
            }
            None => {
                let manager = RunManager::new(Arc::new(self.journal.clone()));
                manager.continue_as_new(run_id, input).await
            }
        };
        let mut outcome = RunOutcome {
            run_id,
            status: RunStatus::ContinuedAsNew,
            structured_output: None,
            reason: None,
            recorded: true,
            next_run_id: None,
        };
        let recorded = match written {
            Ok(next) => {
                self.run.status = RunStatus::ContinuedAsNew;
                outcome.next_run_id = Some(next.id);
                Ok(())
            }
            Err(RunError::CancelPending { .. }) => {
                tracing::info!(
                    "cancel requested through the control plane; recording RunCancelled"
                );
                self.cancel_reason
                    .get_or_insert_with(|| CONTROL_PLANE_CANCEL_REASON.to_owned());
                return self.terminate(TerminalTarget::Cancelled).await;
            }
            Err(RunError::AlreadyTerminal { status, .. }) => {
                match record::recorded_outcome(&self.journal, run_id, status).await {
                    Ok(found) => {
                        self.run.status = status;
                        outcome = found;
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error.into()),
        };
        self.conclude(outcome, recorded)
    }
}
