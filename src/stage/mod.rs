//! Stages: the units of work of a flow.
//!
//! This release holds the data plane between stages ([`pipe`]); the stage
//! actors that host supervised handlers come with the runtime.

pub mod pipe;
