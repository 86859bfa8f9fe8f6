//! Flows: sets of stages connected by a topology, supervised as one run.
//!
//! A [`FlowDefinition`] names stages (sources, transforms, sinks, built by
//! factories so they can be restarted), connects them ([`topology`]) and
//! gives each a [`restart`] policy. Each run of it is a flow actor driving the flow machine ([`machine`], declared with `fsm!`):
//! it spawns the stage actors linked to itself, turns every stage exit into a
//! restart or a failure event, records stage outputs and the outcome through
//! one writer ([`record`]), and answers [`ControlEvent`]s sent through a
//! [`FlowHandle`].
//!
//! Runs are started by a [`Runtime`](crate::runtime::Runtime); see its docs
//! for an end-to-end example.

pub(crate) mod actor;
mod context;
pub mod control;
pub mod definition;
pub mod handle;
pub mod machine;
pub mod record;
pub mod restart;
pub mod stage_handle;
pub mod topology;

pub use control::{ControlEvent, FlowOutcome, HandleError, StageControl};
pub use definition::{DefinitionError, FlowBuilder, FlowDefinition};
pub use handle::FlowHandle;
pub use machine::{FlowEvent, FlowState};
pub use record::{RecordError, RunOptions};
pub use stage_handle::StageHandle;
