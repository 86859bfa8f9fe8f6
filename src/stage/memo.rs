//! Memoized side effects: [`StageContext::run`] and [`MemoError`].

use std::future::Future;

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::context::StageContext;
use crate::records::{Memo, NewEvent, StoreError, WriteOp, WriteOutcome, mismatch};
use crate::store::Store;
use crate::supervise::BoxError;

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
    /// The store refused to keep the value (e.g. JSON nested deeper than
    /// [`MAX_JSON_DEPTH`](crate::records::MAX_JSON_DEPTH)), so no retry
    /// can journal it.
    #[error("side effect `{name}`: its value cannot be journaled: {source}")]
    Refused {
        /// The effect.
        name: String,
        /// The store's refusal.
        #[source]
        source: StoreError,
    },
    /// The name starts with `@`, which troupe's own memos use (durable
    /// timers and waits).
    #[error("side effect `{name}`: names starting with `@` are troupe's own")]
    ReservedName {
        /// The name.
        name: String,
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
            MemoError::Failed { .. }
                | MemoError::Encode { .. }
                | MemoError::Decode { .. }
                | MemoError::Refused { .. }
                | MemoError::ReservedName { .. }
        )
    }
}

/// The first character of troupe's own memo names.
pub(super) const RESERVED: char = '@';

impl StageContext {
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
        if name.starts_with(RESERVED) {
            return Err(MemoError::ReservedName {
                name: name.to_owned(),
            });
        }
        self.memoized(name, effect).await
    }

    /// [`run`](Self::run) without the name check: troupe's own memos (timer
    /// deadlines, signal answers) are named `@...`.
    pub(super) async fn memoized<T, F, Fut>(&self, name: &str, effect: F) -> Result<T, MemoError>
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
        let stored = self.record(name, result, None).await?;
        self.decode(name, stored)
    }

    /// Records `result` as the memo `name` unless one is recorded, with
    /// `event` (if any) appended to the run's log in the same commit; the
    /// memo's stored result (the first one recorded wins).
    pub(super) async fn record(
        &self,
        name: &str,
        result: Result<Value, String>,
        event: Option<NewEvent>,
    ) -> Result<Result<Value, String>, MemoError> {
        let memo = Memo {
            run_id: self.run.run_id,
            stage: self.stage.to_string(),
            name: name.to_owned(),
            result,
            at: Utc::now(),
        };
        let mut ops = vec![WriteOp::RecordMemo(Box::new(memo))];
        ops.extend(event.map(WriteOp::Append));
        let journal_error = |source| match source {
            // The value cannot be kept (nested too deep): no retry helps.
            StoreError::InvalidInput { .. } => MemoError::Refused {
                name: name.to_owned(),
                source,
            },
            source => MemoError::Journal {
                name: name.to_owned(),
                source,
            },
        };
        let mut results = self
            .run
            .journal
            .apply_batch(ops)
            .await
            .map_err(journal_error)?
            .into_iter();
        let (stored, inserted) = match results.next() {
            Some(Ok(WriteOutcome::MemoRecorded { stored, inserted })) => (stored, inserted),
            Some(Err(error)) => return Err(journal_error(error)),
            _ => return Err(journal_error(mismatch("record_memo"))),
        };
        if let Some(Err(error)) = results.next() {
            // The memo is durable; only its log event is missing.
            tracing::warn!(run_id = %self.run.run_id, stage = %self.stage, name, %error,
                "the memo's log event was not recorded");
        }
        if !inserted {
            tracing::debug!(run_id = %self.run.run_id, stage = %self.stage, name,
                "side effect already journaled by another start; its result wins");
        }
        if let Some(memos) = self.memos.lock().await.as_mut() {
            memos.insert(name.to_owned(), stored.result.clone());
        }
        Ok(stored.result)
    }

    /// The journaled result of effect `name`, reading the stage's memos
    /// from the journal the first time.
    pub(super) async fn recorded(
        &self,
        name: &str,
    ) -> Result<Option<Result<Value, String>>, MemoError> {
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

    /// The journaled memo whose name, starting with `prefix`, sorts last
    /// (its name and result), reading the stage's memos from the journal
    /// the first time.
    pub(super) async fn latest_memo(
        &self,
        prefix: &str,
    ) -> Result<Option<(String, Result<Value, String>)>, MemoError> {
        self.recorded(prefix).await?;
        let memos = self.memos.lock().await;
        let latest = memos
            .iter()
            .flatten()
            .filter(|(name, _)| name.starts_with(prefix))
            .max_by(|a, b| a.0.cmp(b.0));
        Ok(latest.map(|(name, result)| (name.clone(), result.clone())))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::context::tests::ctx;

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
        // Troupe's own names are refused; a value too deep is refused for good.
        let reserved = c.run("@timer/x", || async { Ok(1_u8) }).await.unwrap_err();
        assert!(matches!(reserved, MemoError::ReservedName { .. }) && reserved.is_permanent());
        let mut deep = serde_json::json!(1);
        for _ in 0..150 {
            deep = serde_json::json!([deep]);
        }
        let refused = c.run("deep", || async { Ok(deep) }).await.unwrap_err();
        assert!(
            matches!(refused, MemoError::Refused { .. }) && refused.is_permanent(),
            "{refused}"
        );
        // As a stage error it is permanent too.
        let boxed: BoxError = again.into();
        assert!(crate::stage::dead_letter::is_permanent(&boxed));
    }
}
