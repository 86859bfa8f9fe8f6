//! [`StageHandle`]: control events for one stage of a run;
//! [`TypedStageHandle`]: the user events of one stage, of the type it declared.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use super::actor::FlowMsg;
use super::control::{HandleError, StageControl};
use super::handle::RunHandle;
use crate::stage::durable::Envelope;
use crate::stage::events::EventPort;
use crate::stage::{StageEvent, StageSignal, StageState};

/// A handle to one stage of a run; get it from [`RunHandle::stage`].
/// Events go to the stage's control channel, where its external-event
/// policy decides when it takes them (between batches while running, at
/// once while paused). Cheap to clone, `Send`.
#[derive(Debug, Clone)]
pub struct StageHandle {
    flow: RunHandle,
    index: usize,
    name: String,
}

impl StageHandle {
    pub(crate) fn new(flow: RunHandle, index: usize, name: String) -> Self {
        StageHandle { flow, index, name }
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `event` for the stage; returns the state it was in. A
    /// completed stage does not get it: [`HandleError::StageNotRunning`].
    /// A pause, resume or drain reaching a stage between a failure and its
    /// restart is kept for the restart (`Ok`), so is a `Signal`, which is
    /// durable: it is accepted into the run's inbox (the journal) before the
    /// stage sees it, and handed to the stage again after a restart or a
    /// crash until the stage's `on_signal` has taken it (at-least-once; to
    /// learn its inbox id, send it with
    /// [`Runtime::send_signal`](crate::runtime::Runtime::send_signal)); if
    /// the stage ends first, or its `on_signal` panics, the signal is
    /// settled undeliverable in the inbox and the failure ledger.
    pub async fn send(&self, event: StageControl) -> Result<StageState, HandleError> {
        let event = match event {
            StageControl::Pause => StageEvent::Pause,
            StageControl::Resume => StageEvent::Resume,
            StageControl::Drain => StageEvent::Drain,
            StageControl::Signal { name, payload } => StageEvent::Signal(Arc::new(StageSignal {
                name,
                payload,
                id: None,
            })),
        };
        let name = event_name(&event);
        let stage = self.index;
        self.flow
            .ask(name, |reply| FlowMsg::StageControl {
                stage,
                event: event.clone(),
                reply,
            })
            .await
    }
}

fn event_name(event: &StageEvent) -> &'static str {
    crate::fsm::EventVariant::variant_name(event)
}

impl RunHandle {
    /// A handle to the stage called `name`.
    pub fn stage(&self, name: &str) -> Result<StageHandle, HandleError> {
        let index = self.stage_index(name)?;
        Ok(StageHandle::new(self.clone(), index, name.to_owned()))
    }

    /// The sending end of stage `index`'s event queue (`None`: it declares
    /// no events).
    pub(crate) async fn event_port(
        &self,
        index: usize,
        event: &'static str,
    ) -> Result<Option<EventPort>, HandleError> {
        self.ask(event, |reply| FlowMsg::StageEvents {
            stage: index,
            reply,
        })
        .await
    }

    pub(crate) fn stage_index(&self, name: &str) -> Result<usize, HandleError> {
        let index = self.stage_names().iter().position(|s| s == name);
        index.ok_or_else(|| HandleError::UnknownStage {
            run_id: self.run_id(),
            stage: name.to_owned(),
        })
    }
}

/// A handle sending user events of type `Ev` to one stage, which declared
/// that type when its flow was built
/// ([`FlowBuilder::with_events`](super::FlowBuilder::with_events)); get it
/// from [`RunHandle::stage_events`]. The events wait in the stage's own
/// queue (kept across the stage's restarts) until its
/// [`EventPolicy`](crate::stage::EventPolicy) lets it take them. Cheap to
/// clone, `Send`.
pub struct TypedStageHandle<Ev> {
    flow: RunHandle,
    name: String,
    sender: mpsc::Sender<Envelope<Ev>>,
    doorbell: Arc<Notify>,
}

impl<Ev> Clone for TypedStageHandle<Ev> {
    fn clone(&self) -> Self {
        TypedStageHandle {
            flow: self.flow.clone(),
            name: self.name.clone(),
            sender: self.sender.clone(),
            doorbell: self.doorbell.clone(),
        }
    }
}

impl<Ev> std::fmt::Debug for TypedStageHandle<Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedStageHandle")
            .field("run_id", &self.flow.run_id())
            .field("stage", &self.name)
            .field("event", &std::any::type_name::<Ev>())
            .finish()
    }
}

impl<Ev: Send + 'static> TypedStageHandle<Ev> {
    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `event` for the stage, waiting while its queue is full.
    /// A stage that has completed or was cancelled takes no more events
    /// ([`HandleError::StageNotRunning`]), nor does a finished run
    /// ([`HandleError::Finished`]). An event accepted (`Ok`) by a stage that
    /// then completes is handed to it before it completes, whatever its
    /// policy; see [`EventPolicy`](crate::stage::EventPolicy).
    pub async fn send(&self, event: Ev) -> Result<(), HandleError> {
        self.check_running()?;
        let sent = self.sender.send(Envelope::plain(event)).await;
        self.delivered(sent.is_ok())
    }

    /// Queues `event` without waiting: [`HandleError::Busy`] if the queue is full.
    pub fn try_send(&self, event: Ev) -> Result<(), HandleError> {
        self.check_running()?;
        match self.sender.try_send(Envelope::plain(event)) {
            Ok(()) => self.delivered(true),
            Err(mpsc::error::TrySendError::Full(_)) => Err(HandleError::Busy {
                run_id: self.flow.run_id(),
                stage: self.name.clone(),
                event: std::any::type_name::<Ev>(),
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => self.delivered(false),
        }
    }

    fn check_running(&self) -> Result<(), HandleError> {
        if self.flow.has_ended() {
            return Err(HandleError::Finished {
                run_id: self.flow.run_id(),
                event: std::any::type_name::<Ev>(),
            });
        }
        Ok(())
    }

    /// Rings the stage (so a stage waiting for input looks at its queue),
    /// or says why the event was refused: the queue is closed once the
    /// stage has ended, or the flow with it.
    fn delivered(&self, sent: bool) -> Result<(), HandleError> {
        if sent {
            self.doorbell.notify_one();
            return Ok(());
        }
        self.check_running()?;
        Err(HandleError::StageNotRunning {
            run_id: self.flow.run_id(),
            stage: self.name.clone(),
        })
    }
}

impl RunHandle {
    /// A handle sending events of type `Ev` to the stage called `name`.
    /// The type is checked here: [`HandleError::EventType`] if the stage
    /// declared another type or none; a stage that has completed gives
    /// [`HandleError::StageNotRunning`].
    ///
    /// ```
    /// use troupe::flow::{ControlEvent, FlowDefinition, HandleError};
    /// use troupe::runtime::Runtime;
    /// use troupe::stage::{Emitter, EventPolicy, OnEvent, Transform, sink_fn, source_iter};
    /// use troupe::supervise::BoxError;
    ///
    /// /// Multiplies each item by its factor, which an operator can change.
    /// struct Scale(u64);
    /// impl Transform<u64> for Scale {
    ///     async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
    ///         out.push(x * self.0);
    ///         Ok(())
    ///     }
    /// }
    /// struct SetFactor(u64);
    /// impl OnEvent<SetFactor> for Scale {
    ///     async fn on_event(&mut self, SetFactor(f): SetFactor) -> Result<(), BoxError> {
    ///         self.0 = f;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let runtime = Runtime::builder().memory().start().await?;
    /// runtime.register(
    ///     FlowDefinition::<u64>::builder("scaled")
    ///         .source("numbers", |_| source_iter(0_u64..))
    ///         .with_events::<SetFactor>(EventPolicy::default())
    ///         .transform("scale", |_| Scale(1))
    ///         .sink("discard", |_| sink_fn(|_: u64| Ok(())))
    ///         .pipeline(["numbers", "scale", "discard"])
    ///         .build()?,
    /// ).await?;
    /// let run = runtime.start("scaled").await?;
    /// let scale = run.stage_events::<SetFactor>("scale").await?;
    /// scale.send(SetFactor(10)).await?;
    /// // The wrong type is a typed error, not a panic.
    /// let wrong = run.stage_events::<String>("scale").await;
    /// assert!(matches!(wrong, Err(HandleError::EventType { .. })));
    /// run.send(ControlEvent::Cancel { reason: "enough".into() }).await?;
    /// run.wait().await?;
    /// runtime.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn stage_events<Ev: Send + 'static>(
        &self,
        name: &str,
    ) -> Result<TypedStageHandle<Ev>, HandleError> {
        let index = self.stage_index(name)?;
        let port = self.event_port(index, "stage_events").await?;
        let asked = std::any::type_name::<Ev>();
        let wrong = |declared: String| HandleError::EventType {
            run_id: self.run_id(),
            stage: name.to_owned(),
            declared,
            asked,
        };
        let Some(port) = port else {
            return Err(wrong("no user events".to_owned()));
        };
        if port.redeliver.is_some() {
            // Durable events go through the inbox only: a plain send would
            // reach the stage unjournaled, with an id nobody issued.
            let declared = format!(
                "durable events `{}` (send them with `durable_stage_events`)",
                port.type_name()
            );
            return Err(wrong(declared));
        }
        let sender = port
            .sender::<Ev>()
            .ok_or_else(|| wrong(format!("events of type `{}`", port.type_name())))?;
        Ok(TypedStageHandle {
            flow: self.clone(),
            name: name.to_owned(),
            sender,
            doorbell: port.doorbell.clone(),
        })
    }
}
