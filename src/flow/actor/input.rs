//! Operator input reaching the flow actor: signals, durable events and
//! replayed items, refused once the run has ended or is being cancelled.

use super::{FlowHost, FlowMsg, RunState};
use crate::flow::control::HandleError;

impl FlowHost {
    /// Handles an `Accept*` message, replying to its sender.
    pub(super) async fn on_input(&mut self, msg: FlowMsg) {
        match msg {
            FlowMsg::AcceptEvent {
                stage,
                payload,
                reply,
            } => {
                let accepted = match self.ended("a durable event") {
                    Some(ended) => Err(ended),
                    None => self.ctx.accept_event(stage, payload).await,
                };
                let _ = reply.send(accepted);
            }
            FlowMsg::AcceptItems {
                stage,
                items,
                reply,
            } => {
                let accepted = match self.ended("replayed items") {
                    Some(ended) => Err(ended),
                    None => self.ctx.accept_items(stage, items).await,
                };
                let _ = reply.send(accepted);
            }
            FlowMsg::AcceptSignal {
                stage,
                name,
                payload,
                reply,
            } => {
                let accepted = self.accept_signal(stage, &name, payload).await;
                let _ = reply.send(accepted);
            }
            _ => {}
        }
    }

    /// The refusal of operator input once the run has ended or is ending.
    pub(super) fn ended(&self, event: &'static str) -> Option<HandleError> {
        let state = self.machine.state();
        (state.is_terminal() || *state == RunState::Cancelling).then_some(HandleError::Finished {
            run_id: self.ctx.run.id,
            event,
        })
    }

    async fn accept_signal(
        &mut self,
        stage: Option<usize>,
        name: &str,
        payload: serde_json::Value,
    ) -> Result<uuid::Uuid, HandleError> {
        if let Some(index) = stage
            && self.ctx.stages.get(index).is_none_or(|s| s.done())
        {
            return Err(self.ctx.stage_not_running(index));
        }
        if let Some(ended) = self.ended("Signal") {
            return Err(ended);
        }
        self.ctx.admit(stage, "Signal")?;
        let run_id = self.ctx.run.id;
        self.ctx
            .accept_signal(stage, name, payload)
            .await
            .map_err(|e| crate::flow::inbox::not_recorded(run_id, "Signal", e))
    }
}
