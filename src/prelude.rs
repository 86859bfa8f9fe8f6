//! What a flow author types, in one `use`.
//!
//! ```
//! use troupe::prelude::*;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // Register flows on the builder: `start` then resumes their unfinished runs.
//! let runtime = Runtime::builder()
//!     .memory() // `.sqlite(path)` (default `./troupe-data/journal.sqlite`) for a durable journal
//!     .register(
//!         FlowDefinition::<u64>::builder("squares")
//!             .source("numbers", |_| source_iter(1..=10_u64))
//!             .transform("square", |_| transform_fn(|x: u64, out: &mut Emitter<u64>| Ok(out.push(x * x))))
//!             .sink("discard", |_| sink_fn(|_: u64| Ok(())))
//!             .pipeline(["numbers", "square", "discard"])
//!             .build()?,
//!     )?
//!     .start()
//!     .await?;
//! let outcome = runtime.start("squares").await?.wait().await?;
//! assert_eq!(outcome.status, RunStatus::Finished);
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub use crate::async_trait;
pub use crate::checkpoint::Checkpoints;
pub use crate::flow::{
    Backoff, ControlEvent, DeadLetterPolicy, FlowBuilder, FlowDefinition, HandleError, IdReuse,
    RestartPolicy, RestartStrategy, RestartType, RetryPolicy, RunHandle, RunOptions, RunOutcome,
    RunState, Supervision,
};
pub use crate::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, NoAction, StateMachine, StateVariant,
    Transition, fsm,
};
pub use crate::progress::{ProgressWatch, RunProgress, StageProgress, StageStatus};
pub use crate::records::{DeadLetter, RunStatus};
pub use crate::runtime::{Runtime, RuntimeError};
pub use crate::stage::{
    ChildError, ChildRun, Emitter, EventPolicy, MachineContext, MachineStage, MemoError, OnEvent,
    ParentClose, PermanentError, Produced, Sink, Source, StageContext, StageInput, Step,
    StepInputs, Transform, sink_fn, source_iter, step_fn, transform_fn, transform_fsm,
};
pub use crate::supervise::BoxError;
