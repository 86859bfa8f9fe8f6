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
use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::journal::JournalHandle;
use crate::records::{Memo, StoreError};
use crate::store::Store;
use crate::supervise::BoxError;

/// The run a flow's stages work for: fixed for the run's life, shared by
/// its stages.
pub(crate) struct RunContext {
    pub(crate) run_id: Uuid,
    pub(crate) flow: String,
    pub(crate) key: Option<String>,
    pub(crate) input: Value,
    /// Where memos are read and recorded.
    pub(crate) journal: JournalHandle,
}

impl RunContext {
    /// The context of `run`, as recorded.
    pub(crate) fn of(run: &crate::records::Run, journal: JournalHandle) -> Arc<RunContext> {
        Arc::new(RunContext {
            run_id: run.id,
            flow: run.controller_id.clone(),
            key: run.key.clone(),
            input: run.input.clone(),
            journal,
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
type Memos = Arc<tokio::sync::Mutex<Option<HashMap<String, Result<Value, String>>>>>;

/// What a stage knows of the run it works for: the run's id, flow, key and
/// input, the stage's name and which start of the stage this is. Cheap to
/// clone (the run's part is shared).
#[derive(Debug, Clone)]
pub struct StageContext {
    run: Arc<RunContext>,
    stage: Arc<str>,
    generation: u64,
    memos: Memos,
}

/// Why [`StageContext::run`] did not return the effect's value.
///
/// A stage that returns it with `?` has it retried or not as its kind
/// says: [`Failed`](Self::Failed), [`Encode`](Self::Encode) and
/// [`Decode`](Self::Decode) are permanent (retrying cannot change them: the
/// item is dead-lettered at once, the step fails), the others are retried
/// per the stage's [`RetryPolicy`](crate::stage::RetryPolicy).
#[derive(Debug, thiserror::Error)]
pub enum MemoError {
    /// The effect failed with a [`PermanentError`](crate::stage::PermanentError),
    /// now or in an earlier start: the failure is journaled and returned
    /// again instead of calling the effect.
    #[error("side effect `{name}` failed for good: {message}")]
    Failed {
        /// The effect.
        name: String,
        /// Its error's message.
        message: String,
    },
    /// The effect failed with another error: nothing is journaled, so a
    /// retry calls it again.
    #[error("side effect `{name}` failed: {source}")]
    Transient {
        /// The effect.
        name: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// Reading or recording the memo failed; the effect may have run (at
    /// most this once more than its memo says).
    #[error("side effect `{name}`: the journal failed: {source}")]
    Journal {
        /// The effect.
        name: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The effect's value could not be turned into JSON, so it was not
    /// journaled.
    #[error("side effect `{name}`: its value cannot be journaled as JSON: {source}")]
    Encode {
        /// The effect.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The journaled value does not decode as the type asked for (the code
    /// changed since it was recorded?).
    #[error("side effect `{name}`: its journaled value does not decode as {expected}: {source}")]
    Decode {
        /// The effect.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl MemoError {
    /// Whether a retry cannot change it.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            MemoError::Failed { .. } | MemoError::Encode { .. } | MemoError::Decode { .. }
        )
    }
}

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
        }
    }

    /// Runs the side effect `effect` once per run, stage and `name`: its
    /// value is journaled before it is returned, and a later call with the
    /// same name — after a crash, a retry or a restart of the stage —
    /// returns the journaled value without calling `effect` again. Name
    /// each effect of a stage apart (`"charge"`, `format!("line-{i}")`).
    ///
    /// An effect that fails with a
    /// [`PermanentError`](crate::stage::PermanentError) has its failure
    /// journaled too ([`MemoError::Failed`], now and on every later call);
    /// any other error is not journaled, so a retry calls the effect again
    /// ([`MemoError::Transient`]). The window: a crash after `effect`
    /// returned and before its memo was durable runs it again, so an effect
    /// on another system should still carry an idempotency key
    /// ([`key`](Self::key)).
    ///
    /// ```
    /// # use troupe::prelude::*;
    /// # use troupe::stage::StageContext;
    /// # use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let charged = Arc::new(AtomicU32::new(0));
    /// let c = charged.clone();
    /// let flow = FlowDefinition::<u64>::builder("checkout")
    ///     .step("charge", move |ctx: &StageContext| {
    ///         let (ctx, c) = (ctx.clone(), c.clone());
    ///         step_fn(move |_| {
    ///             let (ctx, c) = (ctx.clone(), c.clone());
    ///             async move {
    ///                 let receipt: String = ctx
    ///                     .run("charge-card", || async move {
    ///                         c.fetch_add(1, Ordering::SeqCst);
    ///                         Ok("receipt-1".to_owned())
    ///                     })
    ///                     .await?;
    ///                 Ok(serde_json::json!({ "receipt": receipt }))
    ///             }
    ///         })
    ///     })
    ///     .build()?;
    /// let runtime = Runtime::builder().memory().register(flow)?.start().await?;
    /// let outcome = runtime.start("checkout").await?.wait().await?;
    /// assert_eq!(outcome.status, RunStatus::Finished);
    /// assert_eq!(charged.load(Ordering::SeqCst), 1);
    /// runtime.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn run<T, F, Fut>(&self, name: &str, effect: F) -> Result<T, MemoError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, BoxError>>,
    {
        if let Some(result) = self.recorded(name).await? {
            return self.decode(name, result);
        }
        let result = match effect().await {
            Ok(value) => Ok(
                serde_json::to_value(&value).map_err(|source| MemoError::Encode {
                    name: name.to_owned(),
                    source,
                })?,
            ),
            Err(error) if crate::stage::dead_letter::is_permanent(&error) => Err(error.to_string()),
            Err(source) => {
                return Err(MemoError::Transient {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        let memo = Memo {
            run_id: self.run.run_id,
            stage: self.stage.to_string(),
            name: name.to_owned(),
            result,
            at: Utc::now(),
        };
        let (stored, inserted) =
            self.run
                .journal
                .record_memo(memo)
                .await
                .map_err(|source| MemoError::Journal {
                    name: name.to_owned(),
                    source,
                })?;
        if !inserted {
            tracing::debug!(run_id = %self.run.run_id, stage = %self.stage, name,
                "side effect already journaled by another start; its result wins");
        }
        if let Some(memos) = self.memos.lock().await.as_mut() {
            memos.insert(name.to_owned(), stored.result.clone());
        }
        self.decode(name, stored.result)
    }

    /// The journaled result of effect `name`, reading the stage's memos
    /// from the journal the first time.
    async fn recorded(&self, name: &str) -> Result<Option<Result<Value, String>>, MemoError> {
        let mut memos = self.memos.lock().await;
        if memos.is_none() {
            let listed = self
                .run
                .journal
                .list_memos(self.run.run_id, &self.stage)
                .await
                .map_err(|source| MemoError::Journal {
                    name: name.to_owned(),
                    source,
                })?;
            *memos = Some(listed.into_iter().map(|m| (m.name, m.result)).collect());
        }
        Ok(memos.as_ref().and_then(|m| m.get(name).cloned()))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        name: &str,
        result: Result<Value, String>,
    ) -> Result<T, MemoError> {
        match result {
            Ok(value) => T::deserialize(value).map_err(|source| MemoError::Decode {
                name: name.to_owned(),
                expected: std::any::type_name::<T>(),
                source,
            }),
            Err(message) => Err(MemoError::Failed {
                name: name.to_owned(),
                message,
            }),
        }
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
    /// `"{run id}/{stage}/{name}"`. Use it as an idempotency key with an
    /// external service.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{}/{}", self.run.run_id, self.stage, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn ctx(input: Value) -> StageContext {
        let store = Arc::new(crate::store::MemoryStore::new());
        let journal = JournalHandle::spawn(store, Default::default(), None)
            .await
            .unwrap();
        let mut record = crate::records::Run::new("orders", "goal", "o");
        record.key = Some("order-42".into());
        record.input = input;
        journal.insert_run(record.clone(), None).await.unwrap();
        StageContext::new(RunContext::of(&record, journal), "charge".into(), 2)
    }

    #[tokio::test]
    async fn keys_are_stable_per_run_and_stage() {
        let a = ctx(Value::Null).await;
        let b = StageContext::new(a.run.clone(), "charge".into(), 3);
        assert_eq!(a.key("card"), b.key("card"));
        assert_ne!(a.key("card"), a.key("refund"));
        assert_ne!(a.key("card"), ctx(Value::Null).await.key("card"));
        assert_eq!(a.key("card"), format!("{}/charge/card", a.run_id()));
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

    #[tokio::test]
    async fn an_effect_runs_once_per_name_and_its_result_is_journaled() {
        let c = ctx(Value::Null).await;
        let calls = std::sync::atomic::AtomicU32::new(0);
        let call = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, BoxError>(vec![1_u64, 2])
        };
        assert_eq!(c.run("a", call).await.unwrap(), vec![1, 2]);
        assert_eq!(c.run("a", call).await.unwrap(), vec![1, 2]);
        // A new start of the stage reads the journal.
        let restarted = StageContext::new(c.run.clone(), "charge".into(), 3);
        let again: Vec<u64> = restarted
            .run("a", || async { panic!("journaled: not called again") })
            .await
            .unwrap();
        assert_eq!(again, vec![1, 2]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another stage's effect of the same name is its own.
        let other = StageContext::new(c.run.clone(), "refund".into(), 1);
        assert_eq!(other.run("a", || async { Ok(7_u8) }).await.unwrap(), 7);
        // The journaled value must decode as asked.
        let err = restarted
            .run::<String, _, _>("a", || async { Ok(String::new()) })
            .await;
        assert!(matches!(err, Err(MemoError::Decode { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_journaled_and_a_transient_one_is_not() {
        let c = ctx(Value::Null).await;
        let err = c
            .run::<u8, _, _>("flaky", || async { Err("timeout".into()) })
            .await
            .unwrap_err();
        assert!(matches!(err, MemoError::Transient { .. }) && !err.is_permanent());
        // Not journaled: the next call runs the effect.
        assert_eq!(c.run("flaky", || async { Ok(5_u8) }).await.unwrap(), 5);

        let permanent = || async {
            Err::<u8, BoxError>(crate::stage::PermanentError::new("card declined").into())
        };
        let err = c.run("pay", permanent).await.unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("card declined"), "{err}");
        let again = StageContext::new(c.run.clone(), "charge".into(), 9)
            .run::<u8, _, _>("pay", || async { panic!("journaled: not called again") })
            .await
            .unwrap_err();
        assert!(
            matches!(&again, MemoError::Failed { message, .. } if message.contains("declined"))
        );
        // As a stage error it is permanent too.
        let boxed: BoxError = again.into();
        assert!(crate::stage::dead_letter::is_permanent(&boxed));
    }
}
