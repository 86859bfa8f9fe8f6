//! [`DurableStageHandle`]: durable user events for one stage of a run.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::actor::FlowMsg;
use super::control::HandleError;
use super::handle::RunHandle;
use crate::stage::Durable;

/// A handle sending durable events of type `E` to one stage, which declared
/// them with
/// [`FlowBuilder::with_durable_events`](super::FlowBuilder::with_durable_events);
/// get it from [`RunHandle::durable_stage_events`]. Cheap to clone, `Send`.
pub struct DurableStageHandle<E> {
    flow: RunHandle,
    index: usize,
    name: String,
    _event: PhantomData<fn(E)>,
}

impl<E> Clone for DurableStageHandle<E> {
    fn clone(&self) -> Self {
        DurableStageHandle {
            flow: self.flow.clone(),
            index: self.index,
            name: self.name.clone(),
            _event: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for DurableStageHandle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStageHandle")
            .field("run_id", &self.flow.run_id())
            .field("stage", &self.name)
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E: Serialize + DeserializeOwned + Send + 'static> DurableStageHandle<E> {
    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `event` durably: returns its inbox id once it is in the
    /// journal (it then waits in the stage's queue, in the order sent, and
    /// reaches the stage as a [`Durable<E>`] with that id). Refused with
    /// [`HandleError::Finished`] once the run has ended or is being
    /// cancelled, [`HandleError::StageNotRunning`] once the stage has
    /// completed, [`HandleError::NotRecorded`] if the journal failed the
    /// write (nothing was accepted).
    pub async fn send(&self, event: &E) -> Result<Uuid, HandleError> {
        let run_id = self.flow.run_id();
        let payload = serde_json::to_value(event).map_err(|e| HandleError::EventRefused {
            run_id,
            stage: self.name.clone(),
            reason: format!("does not encode as JSON: {e}"),
        })?;
        accept_event(&self.flow, self.index, payload).await
    }
}

/// Asks the run's flow to accept a durable event (as JSON) for stage `index`.
pub(crate) async fn accept_event(
    flow: &RunHandle,
    index: usize,
    payload: serde_json::Value,
) -> Result<Uuid, HandleError> {
    flow.ask("a durable event", |reply| FlowMsg::AcceptEvent {
        stage: index,
        payload: payload.clone(),
        reply,
    })
    .await
}

/// Asks the run's flow to accept items (as JSON) replayed into stage `index`.
pub(crate) async fn accept_items(
    flow: &RunHandle,
    index: usize,
    items: Vec<serde_json::Value>,
) -> Result<Vec<Uuid>, HandleError> {
    flow.ask("replayed items", |reply| FlowMsg::AcceptItems {
        stage: index,
        items: items.clone(),
        reply,
    })
    .await
}

/// Asks the run's flow to accept a signal for stage `index` or every stage.
pub(crate) async fn accept_signal(
    flow: &RunHandle,
    index: Option<usize>,
    name: String,
    payload: serde_json::Value,
) -> Result<Uuid, HandleError> {
    flow.ask("Signal", |reply| FlowMsg::AcceptSignal {
        stage: index,
        name: name.clone(),
        payload: payload.clone(),
        reply,
    })
    .await
}

impl RunHandle {
    /// Sends the signal `name` with `payload` (any serializable value) to
    /// every stage of the run that is not done, durably: returns its inbox
    /// id once it is in the journal. A step waiting for it with
    /// [`StageContext::wait_signal`](crate::stage::StageContext::wait_signal)
    /// takes it (now, or when it starts waiting); the other stages get it in
    /// `on_signal`. Refused with [`HandleError::Finished`] once the run has
    /// ended or is being cancelled, and [`HandleError::EventRefused`] for a
    /// payload that does not encode as JSON.
    pub async fn signal(&self, name: &str, payload: impl Serialize) -> Result<Uuid, HandleError> {
        let payload = serde_json::to_value(payload).map_err(|e| HandleError::EventRefused {
            run_id: self.run_id(),
            stage: crate::records::EVERY_STAGE.to_owned(),
            reason: format!("does not encode as JSON: {e}"),
        })?;
        accept_signal(self, None, name.to_owned(), payload).await
    }

    /// A handle sending durable events of type `E` to the stage called
    /// `name`, which must have declared them with
    /// [`FlowBuilder::with_durable_events::<E>`](super::FlowBuilder::with_durable_events)
    /// ([`HandleError::EventType`] otherwise).
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use troupe::prelude::*;
    /// use troupe::stage::Durable;
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct SetFactor(u64);
    ///
    /// struct Scale(u64);
    /// impl Transform<u64> for Scale {
    ///     async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
    ///         out.push(x * self.0);
    ///         Ok(())
    ///     }
    /// }
    /// impl OnEvent<Durable<SetFactor>> for Scale {
    ///     async fn on_event(&mut self, e: Durable<SetFactor>) -> Result<(), BoxError> {
    ///         self.0 = e.event.0; // e.id deduplicates, if it must
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let runtime = Runtime::builder().memory().start().await?;
    /// runtime.register(
    ///     FlowDefinition::<u64>::builder("scaled")
    ///         .source("numbers", |_| source_iter(0_u64..))
    ///         .with_durable_events::<SetFactor>(EventPolicy::default())
    ///         .transform("scale", |_| Scale(1))
    ///         .sink("discard", |_| sink_fn(|_: u64| Ok(())))
    ///         .pipeline(["numbers", "scale", "discard"])
    ///         .build()?,
    /// ).await?;
    /// let run = runtime.start("scaled").await?;
    /// let scale = run.durable_stage_events::<SetFactor>("scale").await?;
    /// let id = scale.send(&SetFactor(10)).await?; // in the journal now
    /// # let _ = id;
    /// run.send(ControlEvent::Cancel { reason: "enough".into() }).await?;
    /// run.wait().await?;
    /// runtime.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn durable_stage_events<E>(
        &self,
        name: &str,
    ) -> Result<DurableStageHandle<E>, HandleError>
    where
        E: Serialize + DeserializeOwned + Send + 'static,
    {
        let index = self.stage_index(name)?;
        let port = self.event_port(index, "durable_stage_events").await?;
        let declared = match &port {
            None => "no user events".to_owned(),
            Some(p) if p.redeliver.is_none() => format!("plain events of type `{}`", p.type_name()),
            Some(p) => format!("events of type `{}`", p.type_name()),
        };
        let takes = port
            .as_ref()
            .is_some_and(|p| p.redeliver.is_some() && p.sender::<Durable<E>>().is_some());
        if !takes {
            return Err(HandleError::EventType {
                run_id: self.run_id(),
                stage: name.to_owned(),
                declared,
                asked: std::any::type_name::<Durable<E>>(),
            });
        }
        Ok(DurableStageHandle {
            flow: self.clone(),
            index,
            name: name.to_owned(),
            _event: PhantomData,
        })
    }
}
