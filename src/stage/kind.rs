//! [`StageKind`]: what a stage does with items. It lives with the stages
//! (the flow's topology names kinds; a stage never needs the flow).

use serde::{Deserialize, Serialize};

/// What a stage does with items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Produces items; has no inputs and at least one output.
    Source,
    /// Turns input items into output items; has inputs and outputs.
    Transform,
    /// Consumes items; has inputs and no outputs.
    Sink,
    /// One unit of workflow-style work; edges only order it after its upstreams.
    Step,
}
