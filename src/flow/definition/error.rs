//! [`DefinitionError`]: why a flow definition was rejected, with the flow
//! (and stage, edge or size) a user needs to fix it.

use crate::flow::topology::TopologyError;

/// Why a flow definition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The stages and edges do not form a valid topology.
    #[error("flow `{flow}`: {source}")]
    Topology {
        /// The flow.
        flow: String,
        /// What is wrong with it.
        #[source]
        source: TopologyError,
    },
    /// An edge connects a step with a source, transform or sink: steps order
    /// work, they carry no items.
    #[error("flow `{flow}`: edge `{from}` -> `{to}` connects a step with a streaming stage")]
    StepWiredToStream {
        /// The flow.
        flow: String,
        /// Upstream end.
        from: String,
        /// Downstream end.
        to: String,
    },
    /// A restart policy names a stage that is not declared.
    #[error("flow `{flow}`: a restart policy names `{stage}`, which is not a declared stage")]
    UnknownStage {
        /// The flow.
        flow: String,
        /// The name.
        stage: String,
    },
    /// A stage's event queue is larger than [`MAX_EVENT_CAPACITY`](crate::stage::MAX_EVENT_CAPACITY).
    #[error("flow `{flow}`: stage `{stage}` asks for an event queue of {capacity}; at most {max}")]
    EventCapacity {
        /// The flow.
        flow: String,
        /// The stage.
        stage: String,
        /// What its [`EventPolicy`](crate::stage::EventPolicy) asks for.
        capacity: usize,
        /// [`MAX_EVENT_CAPACITY`](crate::stage::MAX_EVENT_CAPACITY).
        max: usize,
    },
    /// A size of the flow's pipes ([`FlowBuilder::pipes`](super::FlowBuilder::pipes)) is too large.
    #[error("flow `{flow}`: pipe {field} {value} is too large; at most {max}")]
    PipeSize {
        /// The flow.
        flow: String,
        /// `"batch_size"` or `"capacity"`.
        field: &'static str,
        /// The size asked for.
        value: usize,
        /// [`MAX_BATCH_SIZE`](crate::stage::pipe::MAX_BATCH_SIZE) or [`MAX_PIPE_CAPACITY`](crate::stage::pipe::MAX_PIPE_CAPACITY).
        max: usize,
    },
}
