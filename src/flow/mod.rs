//! Flows: sets of stages connected by a topology, supervised as one run.
//!
//! A [`FlowDefinition`] names stages (sources, transforms, sinks, built by
//! factories so they can be restarted), connects them (a [`Topology`],
//! checked before anything starts), gives each a [`RestartPolicy`] and a
//! [`RetryPolicy`] for the items its logic fails on, and the flow a
//! [`Supervision`]. Each run of it is a flow actor driving the flow
//! machine (its states are [`RunState`], declared with `fsm!`): it spawns
//! the stage actors linked to itself, turns every stage exit into a restart,
//! an abandoned stage or a failure event, records stage outputs and the
//! outcome through the journal (one writer), and answers [`ControlEvent`]s
//! sent through a [`RunHandle`]. A [`StageHandle`] steers one stage; a
//! [`TypedStageHandle`] sends it user events of the type it declared
//! ([`FlowBuilder::with_events`], example on
//! [`RunHandle::stage_events`]).
//!
//! Runs are started by a [`Runtime`](crate::runtime::Runtime):
//!
//! ```
//! use troupe::flow::{ControlEvent, FlowDefinition, RunState, HandleError};
//! use troupe::runtime::Runtime;
//! use troupe::stage::{sink_fn, source_iter};
//! use troupe::records::RunStatus;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = Runtime::builder().memory().start().await?;
//! runtime.register(
//!     FlowDefinition::<u64>::builder("ticks")
//!         .source("clock", |_| source_iter(0_u64..)) // endless
//!         .sink("discard", |_| sink_fn(|_: u64| Ok(())))
//!         .pipeline(["clock", "discard"])
//!         .build()?,
//! ).await?;
//! let run = runtime.start("ticks").await?;
//! run.send(ControlEvent::Pause).await?;
//! assert_eq!(run.state(), RunState::Waiting);
//! run.send(ControlEvent::Cancel { reason: "enough".into() }).await?;
//! let outcome = run.wait().await?;
//! assert_eq!(outcome.status, RunStatus::Cancelled);
//! // A finished run refuses further events with a typed error.
//! let late = run.send(ControlEvent::Resume).await;
//! assert!(matches!(late, Err(HandleError::Finished { .. })));
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub(crate) mod actor;
pub(crate) mod cell;
mod context;
mod control;
mod definition;
mod durable_handle;
mod handle;
mod inbox;
mod machine;
mod msg;
mod options;
pub(crate) mod record;
mod restart;
mod resume;
mod sleep;
mod stage_handle;
mod stages;
mod topology;
mod waits;

pub use crate::stage::RetryPolicy;
pub use crate::supervise::Backoff;
pub(crate) use control::CONTROL_PLANE_CANCEL_REASON;
pub use control::{ControlEvent, HandleError, RunOutcome, StageControl};
pub(crate) use definition::ErasedDefinition;
pub use definition::{
    ChangePolicy, DEFAULT_CANCEL_GRACE, DeadLetterPolicy, DefinitionError, EventStageBuilder,
    FlowBuilder, FlowDefinition,
};
pub use durable_handle::DurableStageHandle;
pub(crate) use durable_handle::{accept_event, accept_items, accept_signal};
pub use handle::RunHandle;
pub(crate) use inbox::EVERY_STAGE;
pub use machine::RunState;
pub use options::{IdReuse, RunOptions};
pub use record::RecordError;
pub use restart::{RestartPolicy, RestartStrategy, RestartType, Supervision};
pub use stage_handle::{StageHandle, TypedStageHandle};
pub use topology::{Topology, TopologyError, ValidatedTopology};
