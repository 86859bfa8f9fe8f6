//! Flows: sets of stages connected by a topology, supervised as one run.
//!
//! This release holds the flow's restart policies ([`restart`]); the flow
//! actor that applies them to its stage actors comes with the runtime.

pub mod restart;
