//! Durable signal waits: [`StageContext::wait_signal`].
//!
//! Every signal is accepted into the run's inbox before a stage sees it;
//! the flow keeps those of a stage until the stage settles them. A step's
//! signals are settled by the wait that takes one, not when they arrive, so
//! a signal sent before the wait is there when it starts, and one sent
//! while the process was down is there after the resume. What a wait got
//! (the payload, or its timeout) is a memo: the stage running again gets
//! the same answer without waiting.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::context::StageContext;
use super::machine::StageSignal;
use super::memo::MemoError;
use super::timer::timer_now;
use crate::records::{EventKind, NewEvent};
use crate::store::Store;

impl StageContext {
    /// Waits for the signal `name` sent to this run (to every stage, or to
    /// this one): `Some(payload)`, or `None` once `timeout` (from the first
    /// wait, journaled like [`sleep`](Self::sleep)'s deadline) has passed.
    /// The oldest such signal not taken yet is taken; a step waits for one
    /// signal per name (a second wait for `name` returns the first's answer,
    /// as a stage running again after a crash does). Taking it is recorded
    /// in the run's log (`signal_taken`).
    ///
    /// Send signals with [`Runtime::send_signal`](crate::runtime::Runtime::send_signal)
    /// or a [`ControlEvent::Signal`](crate::flow::ControlEvent::Signal),
    /// before or during the wait, while the run lives in this process or
    /// not. Only a step should wait (the other stages hand their signals to
    /// `on_signal`, which settles them).
    pub async fn wait_signal(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, MemoError> {
        let key = format!("signal/{name}");
        if let Some(answer) = self.recorded(&key).await? {
            // Taken before a crash that may have lost its settlement.
            if let (Ok(taken), Some(settler)) = (&answer, &self.settler)
                && let Some(id) = taken.get("id").and_then(|id| id.as_str())
                && let Ok(id) = id.parse()
            {
                settler.settle(id, None);
            }
            return self.answer(&key, answer);
        }
        let deadline = match timeout {
            Some(timeout) => Some(self.deadline(&format!("timer/{key}"), timeout).await?),
            None => None,
        };
        let waiting =
            self.report_wait(json!({ "for": "signal", "signal": name, "deadline": deadline }));
        let taken = self.take(name, deadline).await;
        drop(waiting);
        let answer = match &taken {
            Some(signal) => json!({ "id": signal.id, "payload": signal.payload }),
            None => Value::Null,
        };
        let answer: Value = self.run(&key, || async move { Ok(answer) }).await?;
        if let (Some(signal), Some(settler)) = (&taken, &self.settler)
            && let Some(id) = signal.id
        {
            settler.settle(id, None);
        }
        let taken_event = NewEvent::with_id(
            self.run.run_id,
            format!("signal_taken/{}/{name}", self.stage),
            EventKind::custom(
                "signal_taken",
                json!({ "stage": &*self.stage, "signal": name, "answer": &answer }),
            ),
        );
        self.run
            .journal
            .append(taken_event)
            .await
            .map_err(|source| MemoError::Journal {
                name: key.clone(),
                source,
            })?;
        self.answer(&key, Ok(answer))
    }

    /// The journaled deadline of timer `key`, `timeout` from now the first
    /// time.
    async fn deadline(&self, key: &str, timeout: Duration) -> Result<DateTime<Utc>, MemoError> {
        let span = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let deadline = timer_now()
            .checked_add_signed(span)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.run(key, || async move { Ok(deadline) }).await
    }

    /// The oldest kept signal named `name`, once there is one; `None` at
    /// `deadline`.
    async fn take(&self, name: &str, deadline: Option<DateTime<Utc>>) -> Option<Arc<StageSignal>> {
        let mut signals = self.signals.clone();
        let left = deadline.map(|d| (d - timer_now()).to_std().unwrap_or(Duration::ZERO));
        let wait = signals.wait_for(|kept| kept.iter().any(|s| s.name == name));
        let found = match left {
            Some(left) => tokio::time::timeout(left, wait).await.ok(),
            None => Some(wait.await),
        };
        // A closed channel (the flow is gone) is no signal either: the stage
        // is being stopped.
        found
            .and_then(Result::ok)
            .and_then(|kept| kept.iter().find(|s| s.name == name).cloned())
    }

    fn answer(&self, key: &str, answer: Result<Value, String>) -> Result<Option<Value>, MemoError> {
        match answer {
            Ok(Value::Null) => Ok(None),
            Ok(mut taken) => Ok(Some(taken["payload"].take())),
            Err(message) => Err(MemoError::Failed {
                name: key.to_owned(),
                message,
            }),
        }
    }
}
