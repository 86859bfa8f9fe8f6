//! Child runs: [`StageContext::start_child`] and [`StageContext::await_child`].
//!
//! A stage starts a run of a registered flow as its run's child (the
//! child's record names its parent in `parent_run_id`; list a run's children
//! with [`RunFilter::parent_run_id`](crate::records::RunFilter::parent_run_id)),
//! then waits for the child's terminal:
//!
//! - **Once per (parent run, key).** The child's own id
//!   ([`RunOptions::id`](crate::flow::RunOptions::id)) is
//!   `"{parent run id}/{key}"`, so a start after a crash or a restart of
//!   the stage finds the child already started (a keyed start), and the
//!   answer is a memo (`@child/{key}`), so a stage running again does not
//!   even ask.
//! - **The store is the truth.** [`await_child`](StageContext::await_child)
//!   reads the child's record and terminal event; the end of a child only
//!   rings a doorbell (in this process, or through a shared journal's
//!   `LISTEN`/`NOTIFY` when the child runs in another process), and a
//!   waiter that misses it reads the store again with capped exponential
//!   backoff (10 ms doubling to 1 s), so it never parks for good — a child
//!   not visible yet is looked for the same way. While it waits the parent's record is
//!   `Waiting` (`{"for": "child", "child": id}` for the stage).
//! - **Recorded once.** The child's terminal is a memo of the parent
//!   (`@child-terminal/{child id}`, first write wins): a stage running again
//!   gets it without waiting. The parent's log has one `child_started` and
//!   one `child_ended` event per child.
//! - **Parent close.** When the parent fails or is cancelled, its children
//!   that have not ended are cancelled, unless started with
//!   [`ParentClose::Abandon`]; a cancelled child's own children follow. A
//!   child resumed after its parent ended so while the process was down is
//!   closed at its resume (once its parent's flow is registered too).
//!
//! ```
//! use troupe::prelude::*;
//! use troupe::stage::StageContext;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let ship = FlowDefinition::<u64>::builder("ship")
//!     .step("label", |ctx: &StageContext| {
//!         let order: u64 = ctx.input().unwrap_or_default();
//!         step_fn(move |_| async move { Ok(serde_json::json!({ "label": order })) })
//!     })
//!     .build()?;
//! let order = FlowDefinition::<u64>::builder("order")
//!     .step("shipment", |ctx: &StageContext| {
//!         let ctx = ctx.clone();
//!         step_fn(move |_| {
//!             let ctx = ctx.clone();
//!             async move {
//!                 let child = ctx.start_child("ship", serde_json::json!(42), "ship-1").await?;
//!                 let output = ctx.await_child(&child).await?;
//!                 Ok(output["steps"]["label"].clone())
//!             }
//!         })
//!     })
//!     .build()?;
//! let runtime = Runtime::builder().memory().register(ship)?.register(order)?.start().await?;
//! let outcome = runtime.start("order").await?.wait().await?;
//! assert_eq!(outcome.status, RunStatus::Finished);
//! let output = outcome.structured_output.unwrap();
//! assert_eq!(output["steps"]["shipment"], serde_json::json!({ "label": 42 }));
//! runtime.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::context::RunContext;

mod terminal;

use super::context::StageContext;
use super::memo::MemoError;
use crate::records::{
    EventKind, FailureEntry, NewEvent, RunFilter, RunStatus, SYSTEM_STEP_ID, StoreError,
    check_run_key,
};
use crate::store::Store;
use crate::supervise::BoxError;
use terminal::ChildTerminal;

/// The first pause between two reads of a child's record.
pub(crate) const FIRST_POLL: Duration = Duration::from_millis(10);
/// The longest pause between two reads of a child's record.
pub(crate) const MAX_POLL: Duration = Duration::from_secs(1);

/// A boxed future of the launcher.
pub(crate) type LaunchFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a stage starts runs and hears of their end: the runtime's, handed
/// to every run's stages.
pub(crate) trait RunLauncher: Send + Sync {
    /// Starts (or finds, by its key) the child run `request` describes;
    /// its run id.
    fn start_child(&self, request: ChildStart) -> LaunchFuture<'_, Result<Uuid, ChildError>>;

    /// Resolves once run `run_id` has ended (a doorbell: the store says
    /// how), live in this process or, on a shared journal, in another;
    /// `None` when no doorbell can tell.
    fn doorbell(&self, run_id: Uuid) -> Option<LaunchFuture<'static, ()>>;

    /// Cancels run `run_id` (a child whose parent closed): through its live
    /// flow if it runs here, in the journal otherwise.
    fn cancel(&self, run_id: Uuid, reason: String) -> LaunchFuture<'_, Result<(), BoxError>>;
}

/// A child run to start.
#[derive(Debug, Clone)]
pub(crate) struct ChildStart {
    /// The parent run.
    pub(crate) parent: Uuid,
    /// The child's flow.
    pub(crate) flow: String,
    /// The child's input.
    pub(crate) input: Value,
    /// The child's own id ([`RunOptions::id`](crate::flow::RunOptions::id)).
    pub(crate) id: String,
}

/// What happens to a child that has not ended when its parent fails or is
/// cancelled (as Temporal's parent-close policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentClose {
    /// The child is cancelled (the default); its own children follow their
    /// policies in turn.
    #[default]
    Cancel,
    /// The child runs on to its own end.
    Abandon,
}

/// A child run started by [`StageContext::start_child`]: its id and flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    run_id: Uuid,
    flow: String,
}

impl ChildRun {
    /// The run `run_id` of flow `flow`, to await with
    /// [`StageContext::await_child`] (e.g. one started by another stage and
    /// handed over by id).
    pub fn new(run_id: Uuid, flow: impl Into<String>) -> ChildRun {
        ChildRun {
            run_id,
            flow: flow.into(),
        }
    }

    /// The child's run id.
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// The child's flow.
    pub fn flow(&self) -> &str {
        &self.flow
    }
}

/// Why a child run could not be started or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// No flow of that name is registered on the runtime. Nothing was
    /// started (or journaled): a retry once it is registered can start it.
    #[error(
        "run {parent}: cannot start a child of flow `{flow}`: no such flow is registered (registered: {registered:?})"
    )]
    UnknownFlow {
        /// The parent run.
        parent: Uuid,
        /// The flow asked for.
        flow: String,
        /// The flows that are registered.
        registered: Vec<String>,
    },
    /// The key does not make an acceptable run id (empty, too long or
    /// holding control characters).
    #[error("run {parent}: child key {key:?} is refused: {source}")]
    BadKey {
        /// The parent run.
        parent: Uuid,
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The input for the child could not be turned into JSON, or its flow
    /// refuses it (see [`FlowBuilder::input`](crate::flow::FlowBuilder::input)).
    #[error("run {parent}: the input of child `{key}` of flow `{flow}` is refused: {reason}")]
    BadInput {
        /// The parent run.
        parent: Uuid,
        /// The child's flow.
        flow: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The parent already started a child under this key with another
    /// input.
    #[error(
        "run {parent}: child `{key}` of flow `{flow}` was started before with another input (run {existing})"
    )]
    KeyConflict {
        /// The parent run.
        parent: Uuid,
        /// The child's flow.
        flow: String,
        /// The key.
        key: String,
        /// The child that holds the key.
        existing: Uuid,
    },
    /// The stage does not run inside a runtime, so it cannot start runs.
    #[error("run {parent}: child runs can only be started by a stage of a runtime's run")]
    NoRuntime {
        /// The parent run.
        parent: Uuid,
    },
    /// The runtime could not start the child (it is shutting down, its
    /// flow could not be spawned, the journal failed); the source is the
    /// runtime's [`RuntimeError`](crate::runtime::RuntimeError). Nothing
    /// was journaled in the parent: a retry starts it (or finds it).
    #[error("run {parent}: child `{key}` of flow `{flow}` could not be started: {source}")]
    NotStarted {
        /// The parent run.
        parent: Uuid,
        /// The child's flow.
        flow: String,
        /// The key.
        key: String,
        /// The runtime's error.
        #[source]
        source: BoxError,
    },
    /// Reading or recording the parent's memo of the child failed.
    #[error(transparent)]
    Memo(#[from] MemoError),
    /// An invariant error: something tried to record a status that is not
    /// a child's terminal as one (a run that has not ended, or one that
    /// continued as new, whose chain's last run's terminal is the child's).
    /// Nothing is recorded.
    #[error(
        "child run {child}: `{}` is not a child's terminal and is never recorded as one",
        status.as_str()
    )]
    NotATerminal {
        /// The child run.
        child: Uuid,
        /// The status refused.
        status: RunStatus,
    },
    /// The child ended without finishing: it failed (`reason` is its
    /// failure's) or was cancelled (`reason` is `cancelled:<why>`).
    #[error("child run {child} of flow `{flow}` did not finish: {reason}")]
    Failed {
        /// The child run.
        child: Uuid,
        /// Its flow.
        flow: String,
        /// Its failure's reason, or `cancelled:<why>`.
        reason: String,
    },
}

impl ChildError {
    /// Whether a retry cannot change it: the child's failure (recorded in
    /// the parent), a refused key or input, a stage outside a runtime, or a
    /// permanent memo error. A stage returning it with `?` then fails at
    /// once instead of being retried; an unknown flow or a start the
    /// runtime could not make is retried per the stage's
    /// [`RetryPolicy`](crate::stage::RetryPolicy).
    pub fn is_permanent(&self) -> bool {
        match self {
            ChildError::Failed { .. }
            | ChildError::BadKey { .. }
            | ChildError::BadInput { .. }
            | ChildError::KeyConflict { .. }
            | ChildError::NoRuntime { .. }
            | ChildError::NotATerminal { .. } => true,
            ChildError::Memo(memo) => memo.is_permanent(),
            ChildError::UnknownFlow { .. } | ChildError::NotStarted { .. } => false,
        }
    }
}

/// What the parent memoizes of a start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StartedChild {
    pub(crate) id: Uuid,
    pub(crate) flow: String,
    #[serde(default)]
    pub(crate) on_parent_close: ParentClose,
}

/// The memo prefix of a start.
pub(crate) const CHILD_MEMO: &str = "@child/";

impl StageContext {
    /// Starts a run of the flow registered as `flow` with `input`, as a
    /// child of this run (see the [module docs](self)), cancelled if this
    /// run fails or is cancelled first. Once per run and `key`: a stage
    /// running again (restarted, or resumed after a crash) gets the child
    /// it started, not a second one. Name each child of a run apart.
    pub async fn start_child(
        &self,
        flow: &str,
        input: impl Serialize,
        key: &str,
    ) -> Result<ChildRun, ChildError> {
        self.start_child_with(flow, input, key, ParentClose::Cancel)
            .await
    }

    /// [`start_child`](Self::start_child), with what becomes of the child
    /// if this run fails or is cancelled before it ends.
    pub async fn start_child_with(
        &self,
        flow: &str,
        input: impl Serialize,
        key: &str,
        on_parent_close: ParentClose,
    ) -> Result<ChildRun, ChildError> {
        let parent = self.run.run_id;
        let memo = format!("{CHILD_MEMO}{key}");
        let started = match self.recorded(&memo).await? {
            Some(recorded) => decode(&memo, recorded)?,
            None => self.launch(flow, input, key, on_parent_close).await?,
        };
        // Again on a stage running again, in case a crash came between the
        // memo and the event (the event's id makes it once).
        let event = NewEvent::with_id(
            parent,
            format!("child_started/{}", started.id),
            EventKind::custom(
                "child_started",
                json!({ "stage": &*self.stage, "key": key, "child": started.id, "flow": &started.flow }),
            ),
        );
        self.run
            .journal
            .append(event)
            .await
            .map_err(|source| MemoError::Journal { name: memo, source })?;
        Ok(ChildRun::new(started.id, started.flow))
    }

    /// Starts (or finds) the child `key` of this run and memoizes it.
    async fn launch(
        &self,
        flow: &str,
        input: impl Serialize,
        key: &str,
        on_parent_close: ParentClose,
    ) -> Result<StartedChild, ChildError> {
        let parent = self.run.run_id;
        let memo = format!("{CHILD_MEMO}{key}");
        let id = format!("{parent}/{key}");
        let bad_key = |source| ChildError::BadKey {
            parent,
            key: key.to_owned(),
            source,
        };
        check_run_key(parent, key).map_err(bad_key)?;
        check_run_key(parent, &id).map_err(bad_key)?;
        let input = serde_json::to_value(input).map_err(|error| ChildError::BadInput {
            parent,
            flow: flow.to_owned(),
            key: key.to_owned(),
            reason: error.to_string(),
        })?;
        let launcher = self
            .run
            .launcher
            .as_ref()
            .ok_or(ChildError::NoRuntime { parent })?;
        let request = ChildStart {
            parent,
            flow: flow.to_owned(),
            input,
            id,
        };
        let child = launcher
            .start_child(request)
            .await
            .map_err(|error| match error {
                ChildError::NotStarted { source, .. } => ChildError::NotStarted {
                    parent,
                    flow: flow.to_owned(),
                    key: key.to_owned(),
                    source,
                },
                ChildError::KeyConflict { existing, .. } => ChildError::KeyConflict {
                    parent,
                    flow: flow.to_owned(),
                    key: key.to_owned(),
                    existing,
                },
                ChildError::BadInput { reason, .. } => ChildError::BadInput {
                    parent,
                    flow: flow.to_owned(),
                    key: key.to_owned(),
                    reason,
                },
                other => other,
            })?;
        let started = StartedChild {
            id: child,
            flow: flow.to_owned(),
            on_parent_close,
        };
        Ok(self.memoized(&memo, || async move { Ok(started) }).await?)
    }

    /// Waits for `child`'s terminal (see the [module docs](self)) and
    /// returns its structured output (`{"steps": {...}}`) once it finished,
    /// or [`ChildError::Failed`] once it failed (its reason) or was
    /// cancelled (`cancelled:<why>`). The terminal is recorded in this run
    /// once: a stage running again gets the same answer without waiting.
    pub async fn await_child(&self, child: &ChildRun) -> Result<Value, ChildError> {
        let memo = format!("@child-terminal/{}", child.run_id);
        let terminal: ChildTerminal = self
            .memoized(&memo, || async {
                Ok::<_, BoxError>(self.child_terminal(child.run_id).await)
            })
            .await?;
        let event = NewEvent::with_id(
            self.run.run_id,
            format!("child_ended/{}", child.run_id),
            EventKind::custom(
                "child_ended",
                json!({ "stage": &*self.stage, "child": child.run_id, "flow": &child.flow, "terminal": &terminal }),
            ),
        );
        self.run
            .journal
            .append(event)
            .await
            .map_err(|source| MemoError::Journal { name: memo, source })?;
        let failed = |reason| ChildError::Failed {
            child: child.run_id,
            flow: child.flow.clone(),
            reason,
        };
        match terminal {
            ChildTerminal::Finished { output } => Ok(output),
            ChildTerminal::Failed { reason } => Err(failed(reason)),
            ChildTerminal::Cancelled { reason } => Err(failed(format!("cancelled:{reason}"))),
        }
    }
}

/// Decodes a memo of this module.
fn decode<T: serde::de::DeserializeOwned>(
    name: &str,
    recorded: Result<Value, String>,
) -> Result<T, MemoError> {
    let value = recorded.map_err(|message| MemoError::Failed {
        name: name.to_owned(),
        message,
    })?;
    T::deserialize(value).map_err(|source| MemoError::Decode {
        name: name.to_owned(),
        expected: std::any::type_name::<T>(),
        source,
    })
}

/// Applies the parent-close policy to the children of `run`, which failed
/// or was cancelled: each child that has not ended is cancelled unless it
/// was started with [`ParentClose::Abandon`]. `stages` are the run's stage
/// names (whose memos say each child's policy; a child found without one
/// is cancelled, the default). A child that cannot be cancelled gets a
/// ledger entry in the parent's failure ledger.
pub(crate) async fn close_children(run: &RunContext, stages: &[String], why: &str) {
    let Some(launcher) = &run.launcher else {
        return;
    };
    let journal = &run.journal;
    let parent = run.run_id;
    let filter = RunFilter {
        parent_run_id: Some(parent),
        ..RunFilter::default()
    };
    let mut children = Vec::new();
    let mut before = None;
    loop {
        match journal.list_runs(&filter, before, CHILD_PAGE).await {
            Ok(page) => {
                before = page.last().map(|r| r.id);
                let last = page.len() < CHILD_PAGE;
                children.extend(page.into_iter().filter(|r| !r.status.is_terminal()));
                if last {
                    break;
                }
            }
            Err(error) => {
                ledger(
                    journal,
                    parent,
                    format!("listing its children failed: {error}"),
                )
                .await;
                return;
            }
        }
    }
    if children.is_empty() {
        return;
    }
    let mut abandoned = std::collections::HashSet::new();
    for stage in stages {
        let memos = match journal.list_memos(parent, stage).await {
            Ok(memos) => memos,
            Err(error) => {
                tracing::warn!(run_id = %parent, stage, %error,
                    "reading a stage's memos failed; its children get the default policy");
                continue;
            }
        };
        for memo in memos {
            if !memo.name.starts_with(CHILD_MEMO) {
                continue;
            }
            if let Ok(Ok(started)) = memo.result.map(serde_json::from_value::<StartedChild>)
                && started.on_parent_close == ParentClose::Abandon
            {
                abandoned.insert(started.id);
            }
        }
    }
    for child in children {
        if abandoned.contains(&child.id) {
            continue;
        }
        let reason = format!("parent run {parent} {why}");
        tracing::info!(run_id = %parent, child = %child.id, "cancelling a child of an ended parent");
        if let Err(error) = launcher.cancel(child.id, reason).await {
            ledger(
                journal,
                parent,
                format!("cancelling child run {} failed: {error}", child.id),
            )
            .await;
        }
    }
}

/// How many children a page of [`close_children`]'s listing holds.
const CHILD_PAGE: usize = 500;

/// Records `reason` in the failure ledger of run `run_id`.
async fn ledger(journal: &crate::journal::JournalHandle, run_id: Uuid, reason: String) {
    tracing::error!(%run_id, %reason, "parent-close policy not applied");
    let entry = FailureEntry {
        run_id,
        step_id: SYSTEM_STEP_ID.to_owned(),
        reason: format!("parent-close policy: {reason}"),
        error_json: None,
        at: chrono::Utc::now(),
    };
    if let Err(error) = journal.record_failure(entry).await {
        tracing::error!(%run_id, %error, "recording a failure ledger entry failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::journal::JournalHandle;
    use crate::records::Run;
    use crate::runs::RunManager;

    /// A launcher whose doorbell never rings (a muted notifier), counting
    /// how often a waiter asked for it (once per read of the store).
    #[derive(Default)]
    struct Muted(AtomicUsize);

    impl RunLauncher for Muted {
        fn start_child(&self, _: ChildStart) -> LaunchFuture<'_, Result<Uuid, ChildError>> {
            Box::pin(async { unreachable!("not started here") })
        }

        fn doorbell(&self, _: Uuid) -> Option<LaunchFuture<'static, ()>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Some(Box::pin(std::future::pending()))
        }

        fn cancel(&self, _: Uuid, _: String) -> LaunchFuture<'_, Result<(), BoxError>> {
            Box::pin(async { Ok(()) })
        }
    }

    async fn parent(muted: &Arc<Muted>) -> (StageContext, JournalHandle) {
        let store = Arc::new(crate::store::MemoryStore::new());
        let journal = JournalHandle::spawn(store, Default::default(), None)
            .await
            .unwrap();
        let record = Run::new("order", "goal", "o");
        journal.insert_run(record.clone(), None).await.unwrap();
        let launcher: Arc<dyn RunLauncher> = muted.clone();
        let run = RunContext::of(&record, journal.clone(), Some(launcher));
        (StageContext::new(run, "shipment".into(), 1), journal)
    }

    #[tokio::test(start_paused = true)]
    async fn a_muted_doorbell_degrades_to_capped_backoff_polling() {
        let muted = Arc::new(Muted::default());
        let (ctx, journal) = parent(&muted).await;
        let child = ChildRun::new(Uuid::now_v7(), "ship");
        let waiter = tokio::spawn({
            let (ctx, child) = (ctx.clone(), child.clone());
            async move { ctx.await_child(&child).await }
        });
        // Not visible for a minute: read with backoff, capped at a second.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let reads = muted.0.load(Ordering::SeqCst);
        // 10 ms doubling reaches the cap after 7 reads (1.27 s), then one
        // read a second: far from 10 ms polls, and never parked for good.
        assert!((55..=75).contains(&reads), "{reads} reads in a minute");
        assert!(!waiter.is_finished());

        let mut run = Run::new("ship", "late", "o");
        run.id = child.run_id();
        journal.insert_run(run, None).await.unwrap();
        let manager = RunManager::new(Arc::new(journal.clone()));
        manager.start_running(child.run_id()).await.unwrap();
        manager.fail(child.run_id(), "lost").await.unwrap();
        let started = tokio::time::Instant::now();
        let answer = waiter.await.unwrap();
        assert!(started.elapsed() <= MAX_POLL, "{:?}", started.elapsed());
        assert!(
            matches!(&answer, Err(ChildError::Failed { reason, .. }) if reason == "lost"),
            "{answer:?}"
        );
        // Recorded once: asked again, the memo answers without a read.
        let before = muted.0.load(Ordering::SeqCst);
        let again = ctx.await_child(&child).await;
        assert!(matches!(again, Err(ChildError::Failed { .. })), "{again:?}");
        assert_eq!(muted.0.load(Ordering::SeqCst), before);
        let memos = journal.list_memos(ctx.run_id(), "shipment").await.unwrap();
        assert_eq!(memos.len(), 1);
    }

    #[tokio::test]
    async fn a_stage_outside_a_runtime_cannot_start_children() {
        let ctx = crate::stage::context::tests::ctx(Value::Null).await;
        let error = ctx.start_child("ship", 1, "a").await.unwrap_err();
        assert!(matches!(error, ChildError::NoRuntime { .. }), "{error}");
        assert!(error.is_permanent());
    }
}
