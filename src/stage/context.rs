//! [`StageContext`]: what a stage knows of the run it works for.
//!
//! Every stage factory gets one each time it builds the stage's logic (at
//! the first start and at every restart), so one definition serves many
//! concurrent runs, each with its own input:
//!
//! ```
//! use serde::Deserialize;
//! use troupe::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Order { id: u64, lines: Vec<u64> }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let flow = FlowDefinition::<u64>::builder("orders")
//!     .input::<Order>()
//!     .source("lines", |ctx| {
//!         let order: Order = ctx.input().expect("checked at start");
//!         source_iter(order.lines)
//!     })
//!     .sink("book", |ctx| {
//!         // A stable key per run and stage, e.g. for an external service.
//!         let key = ctx.key("book");
//!         sink_fn(move |_line: u64| Ok(assert!(key.ends_with("/book/book"))))
//!     })
//!     .pipeline(["lines", "book"])
//!     .build()?;
//! let runtime = Runtime::builder().memory().register(flow)?.start().await?;
//! let input = serde_json::json!({"id": 42, "lines": [1, 2, 3]});
//! let run = runtime.start_with("orders", RunOptions::new().input(input)).await?;
//! assert_eq!(run.wait().await?.status, RunStatus::Finished);
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use tokio::sync::watch;

use super::child::RunLauncher;
use super::durable::Settler;
use super::machine::StageSignal;
use crate::journal::JournalHandle;

/// The run a flow's stages work for: fixed for the run's life, shared by
/// its stages.
pub(crate) struct RunContext {
    pub(crate) run_id: Uuid,
    pub(crate) flow: String,
    pub(crate) key: Option<String>,
    pub(crate) input: Value,
    /// Where memos are read and recorded.
    pub(crate) journal: JournalHandle,
    /// How the run's stages start child runs (`None` outside a runtime).
    pub(crate) launcher: Option<Arc<dyn RunLauncher>>,
    /// Numbers the run's durable waits (see `WaitReport`).
    pub(crate) wait_tokens: AtomicU64,
}

impl RunContext {
    /// The context of `run`, as recorded.
    pub(crate) fn of(
        run: &crate::records::Run,
        journal: JournalHandle,
        launcher: Option<Arc<dyn RunLauncher>>,
    ) -> Arc<RunContext> {
        Arc::new(RunContext {
            run_id: run.id,
            flow: run.controller_id.clone(),
            key: run.key.clone(),
            input: run.input.clone(),
            journal,
            launcher,
            wait_tokens: AtomicU64::new(0),
        })
    }
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run_id)
            .field("flow", &self.flow)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The memos of one stage start, read from the journal at its first
/// [`StageContext::run`] and kept up to date by it.
pub(super) type Memos = Arc<tokio::sync::Mutex<Option<HashMap<String, Result<Value, String>>>>>;

/// What a stage knows of the run it works for: the run's id, flow, key and
/// input, the stage's name and which start of the stage this is. Cheap to
/// clone (the run's part is shared).
#[derive(Clone)]
pub struct StageContext {
    pub(super) run: Arc<RunContext>,
    pub(super) stage: Arc<str>,
    generation: u64,
    pub(super) memos: Memos,
    /// The signals accepted for the stage and not settled yet.
    pub(super) signals: watch::Receiver<KeptSignals>,
    /// How the stage settles a signal a wait took (`None` outside a flow).
    pub(super) settler: Option<Arc<Settler>>,
}

impl std::fmt::Debug for StageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageContext")
            .field("run", &self.run)
            .field("stage", &self.stage)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Reports a durable wait to the flow while it lasts (the run is `Waiting`
/// meanwhile); dropped, it reports the wait over, whether it ended or its
/// future was dropped.
pub(super) struct WaitReport<'a>(&'a StageContext, u64);

impl Drop for WaitReport<'_> {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::STAGE_WAITS).decrement(1.0);
        if let Some(settler) = &self.0.settler {
            settler.waiting(self.1, None);
        }
    }
}

impl StageContext {
    /// Reports that the stage waits for `what` until the guard is dropped.
    pub(super) fn report_wait(&self, what: Value) -> WaitReport<'_> {
        let token = self.run.wait_tokens.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::STAGE_WAITS).increment(1.0);
        if let Some(settler) = &self.settler {
            settler.waiting(token, Some(what));
        }
        WaitReport(self, token)
    }
}

/// The signals a flow keeps for one of its stages, oldest first.
pub(crate) type KeptSignals = Vec<Arc<StageSignal>>;

/// The run's input does not decode as the type a stage asked for.
#[derive(Debug, thiserror::Error)]
#[error("run {run_id} of flow `{flow}`: its input does not decode as {expected}: {source}")]
pub struct InputError {
    /// The run.
    pub run_id: Uuid,
    /// Its flow.
    pub flow: String,
    /// The type asked for.
    pub expected: &'static str,
    /// Why it does not decode.
    #[source]
    pub source: serde_json::Error,
}

impl StageContext {
    pub(crate) fn new(run: Arc<RunContext>, stage: Arc<str>, generation: u64) -> StageContext {
        StageContext {
            run,
            stage,
            generation,
            memos: Memos::default(),
            signals: watch::channel(KeptSignals::new()).1,
            settler: None,
        }
    }

    /// The context of a stage of a running flow: it sees the signals kept
    /// for the stage and settles those its waits take.
    pub(crate) fn with_signals(
        mut self,
        signals: watch::Receiver<KeptSignals>,
        settler: Settler,
    ) -> StageContext {
        self.signals = signals;
        self.settler = Some(Arc::new(settler));
        self
    }

    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.run.run_id
    }

    /// The name of the run's flow.
    pub fn flow(&self) -> &str {
        &self.run.flow
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The caller's own id for the run
    /// ([`RunOptions::id`](crate::flow::RunOptions::id)), if it chose one.
    pub fn run_key(&self) -> Option<&str> {
        self.run.key.as_deref()
    }

    /// The run's input as JSON (`Null` when it was started without one).
    pub fn input_json(&self) -> &Value {
        &self.run.input
    }

    /// The run's input, decoded. A flow that declares its input type
    /// ([`FlowBuilder::input`](crate::flow::FlowBuilder::input)) has it
    /// checked at start, so this decodes for its stages.
    pub fn input<I: DeserializeOwned>(&self) -> Result<I, InputError> {
        I::deserialize(&self.run.input).map_err(|source| InputError {
            run_id: self.run.run_id,
            flow: self.run.flow.clone(),
            expected: std::any::type_name::<I>(),
            source,
        })
    }

    /// Which start of the stage in this process this is: 1 for the first,
    /// one more for each restart by its restart policy. A resumed run's
    /// stages count from 1 again.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A key for `name` that is the same at every start of this stage in
    /// this run, in every process, and differs between runs and stages:
    /// `"{run id}/{stage}/{name}"` (`%` and `/` in the stage's name escaped
    /// as `%25` and `%2F`, so two stages never share a key). Use it as an
    /// idempotency key with an external service.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{}/{}", self.run.run_id, self.escaped_stage(), name)
    }

    /// The stage's name with `%` and `/` escaped (`%25`, `%2F`), so that a
    /// key `{stage}/{name}` names one stage and one name whatever they hold.
    pub(super) fn escaped_stage(&self) -> String {
        self.stage.replace('%', "%25").replace('/', "%2F")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) async fn ctx(input: Value) -> StageContext {
        use crate::store::Store;
        let store = Arc::new(crate::store::MemoryStore::new());
        let journal = JournalHandle::spawn(store, Default::default(), None)
            .await
            .unwrap();
        let mut record = crate::records::Run::new("orders", "goal", "o");
        record.key = Some("order-42".into());
        record.input = input;
        journal.insert_run(record.clone(), None).await.unwrap();
        StageContext::new(RunContext::of(&record, journal, None), "charge".into(), 2)
    }

    #[tokio::test]
    async fn keys_are_stable_per_run_and_stage() {
        let a = ctx(Value::Null).await;
        let b = StageContext::new(a.run.clone(), "charge".into(), 3);
        assert_eq!(a.key("card"), b.key("card"));
        assert_ne!(a.key("card"), a.key("refund"));
        assert_ne!(a.key("card"), ctx(Value::Null).await.key("card"));
        assert_eq!(a.key("card"), format!("{}/charge/card", a.run_id()));
        // A stage named with a slash does not collide with another stage.
        let eu = StageContext::new(a.run.clone(), "billing/eu".into(), 1);
        let billing = StageContext::new(a.run.clone(), "billing".into(), 1);
        assert_ne!(eu.key("x"), billing.key("eu/x"));
        assert_eq!(eu.key("x"), format!("{}/billing%2Feu/x", a.run_id()));
        assert_eq!(
            (a.run_key(), a.flow(), a.stage()),
            (Some("order-42"), "orders", "charge")
        );
        assert_eq!(a.generation(), 2);
    }

    #[tokio::test]
    async fn input_decodes_or_says_why_not() {
        let c = ctx(json!({"id": 7})).await;
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Order {
            id: u64,
        }
        assert_eq!(c.input::<Order>().unwrap(), Order { id: 7 });
        let err = c.input::<Vec<u8>>().unwrap_err();
        assert!(err.to_string().contains("does not decode as"), "{err}");
        assert!(err.to_string().contains("orders"), "{err}");
    }
}
