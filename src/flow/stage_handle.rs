//! [`StageHandle`]: control events for one stage of a run.

use tokio::sync::oneshot;

use super::actor::FlowMsg;
use super::control::{HandleError, StageControl};
use super::handle::FlowHandle;
use crate::stage::{StageEvent, StageState};

/// A handle to one stage of a run; get it from [`FlowHandle::stage`].
/// Events go to the stage's control channel, where its external-event
/// policy decides when it takes them (between batches while running, at
/// once while paused). Cheap to clone, `Send`.
#[derive(Debug, Clone)]
pub struct StageHandle {
    flow: FlowHandle,
    index: usize,
    name: String,
}

impl StageHandle {
    pub(crate) fn new(flow: FlowHandle, index: usize, name: String) -> Self {
        StageHandle { flow, index, name }
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `event` for the stage; returns the state it was in. A stage
    /// that is not running (completed, or between a failure and its
    /// restart) does not get it: [`HandleError::StageNotRunning`].
    pub async fn send(&self, event: StageControl) -> Result<StageState, HandleError> {
        let event = match event {
            StageControl::Pause => StageEvent::Pause,
            StageControl::Resume => StageEvent::Resume,
            StageControl::Drain => StageEvent::Drain,
            StageControl::Signal { name, payload } => StageEvent::Signal { name, payload },
        };
        let name = event_name(&event);
        let finished = || HandleError::Finished {
            run_id: self.flow.run_id(),
            event: name,
        };
        let (reply, replied) = oneshot::channel();
        let msg = FlowMsg::StageControl {
            stage: self.index,
            event,
            reply,
        };
        if self.flow.outcome().is_some() || self.flow.actor_ref().send_message(msg).is_err() {
            return Err(finished());
        }
        replied.await.unwrap_or_else(|_| Err(finished()))
    }
}

fn event_name(event: &StageEvent) -> &'static str {
    crate::fsm::EventVariant::variant_name(event)
}

impl FlowHandle {
    /// A handle to the stage called `name`.
    pub fn stage(&self, name: &str) -> Result<StageHandle, HandleError> {
        let index = self.stage_names().iter().position(|s| s == name);
        let index = index.ok_or_else(|| HandleError::UnknownStage {
            run_id: self.run_id(),
            stage: name.to_owned(),
        })?;
        Ok(StageHandle::new(self.clone(), index, name.to_owned()))
    }
}
