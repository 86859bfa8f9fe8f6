//! The runtime: one journal actor, a root supervisor, a registry of flow
//! definitions, and the runs started on it.
//!
//! ```
//! use troupe::flow::FlowDefinition;
//! use troupe::runtime::Runtime;
//! use troupe::stage::{Emitter, sink_fn, source_iter, transform_fn};
//! use troupe::records::RunStatus;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = Runtime::builder().memory().start().await?;
//! runtime.register(
//!     FlowDefinition::<u64>::builder("squares")
//!         .source("numbers", |_| source_iter(1..=1000_u64))
//!         .transform("square", |_| transform_fn(|x: u64, out: &mut Emitter<u64>| Ok(out.push(x * x))))
//!         .sink("discard", |_| sink_fn(|_: u64| Ok(())))
//!         .pipeline(["numbers", "square", "discard"])
//!         .build()?,
//! ).await?;
//! let run = runtime.start("squares").await?;
//! let outcome = run.wait().await?;
//! assert_eq!(outcome.status, RunStatus::Finished);
//! assert_eq!(outcome.structured_output.unwrap()["steps"]["discard"]["items_in"], 1000);
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod builder;
mod continued;
mod counts;
mod input;
mod keyed;
mod launch;
mod leases;
mod live;
mod registry;
mod resume;
mod root;
#[allow(clippy::module_inception)]
mod runtime;
mod sleepers;
mod spawn;
mod start;
mod versions;
mod wake;

pub use builder::{DEFAULT_HIBERNATE_AFTER, DEFAULT_JOURNAL_PATH, RuntimeBuilder};
pub use counts::RunCounts;
pub use input::{ReplayInto, Replayed};
pub use resume::{ResumeError, ResumeFailure, ResumeReport};
pub use runtime::{Runtime, RuntimeError};
pub use versions::DefinitionMismatch;
