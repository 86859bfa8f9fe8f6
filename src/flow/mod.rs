//! Flows: sets of stages connected by a topology, supervised as one run.
//!
//! This release holds a flow's shape ([`topology`]) and its stages' restart
//! policies ([`restart`]); the flow actor that applies them comes with the runtime.

pub mod restart;
pub mod topology;
