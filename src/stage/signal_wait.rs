//! Durable signal waits: [`StageContext::wait_signal`].
//!
//! Every signal is accepted into the run's inbox before a stage sees it, and
//! the inbox keeps it, settled or not. A wait looks there for the oldest
//! signal of its name addressed to its stage (or to every stage), so a
//! signal sent before the wait, or while the process was down, is found; the
//! stage's kept signals (a `watch`) only wake it to look again. What the
//! wait got — the signal's id and payload, or its timeout — is a memo: the
//! stage running again gets the same answer without waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::context::StageContext;
use super::memo::MemoError;
use super::timer::timer_now;
use crate::records::{EVERY_STAGE, EventKind, InboxMessage, NewEvent};
use crate::store::Store;

/// A signal wait's memo: the signal taken, or `null` for a timeout.
#[derive(Deserialize)]
struct Taken {
    payload: Value,
}

impl StageContext {
    /// Waits for the signal `name` sent to this run (to every stage, or to
    /// this one): `Some(payload)`, or `None` once `timeout` (from the first
    /// wait, journaled like [`sleep`](Self::sleep)'s deadline) has passed.
    /// The oldest such signal is taken — one sent before the wait, or while
    /// the process was down, included; a stage waits for one signal per
    /// name (a second wait for `name` returns the first's answer, as a stage
    /// running again after a crash does). Taking it is recorded in the
    /// run's log (`signal_taken`); while the stage waits, its run is
    /// `Waiting`.
    ///
    /// Send signals with [`Runtime::send_signal`](crate::runtime::Runtime::send_signal)
    /// or a [`ControlEvent::Signal`](crate::flow::ControlEvent::Signal),
    /// while the run lives in this process or not.
    pub async fn wait_signal(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, MemoError> {
        let key = format!("@signal/{name}");
        if let Some(answer) = self.recorded(&key).await? {
            return self.answer(&key, answer);
        }
        let deadline = match timeout {
            Some(timeout) => Some(
                self.deadline(&format!("@signal-deadline/{name}"), timeout)
                    .await?,
            ),
            None => None,
        };
        let taken = self.take(&key, name, deadline).await?;
        let answer = match taken {
            Some((id, payload)) => json!({ "id": id, "payload": payload }),
            None => Value::Null,
        };
        // The answer and its log event in one commit.
        let taken_event = NewEvent::with_id(
            self.run.run_id,
            format!("signal_taken/{}/{name}", self.escaped_stage()),
            EventKind::custom(
                "signal_taken",
                json!({ "stage": &*self.stage, "signal": name, "answer": &answer }),
            ),
        );
        let stored = self.record(&key, Ok(answer), Some(taken_event)).await?;
        metrics::counter!(crate::metrics::SIGNALS_TAKEN).increment(1);
        self.answer(&key, stored)
    }

    /// The journaled deadline of timer `key`, `timeout` from now the first
    /// time.
    async fn deadline(&self, key: &str, timeout: Duration) -> Result<DateTime<Utc>, MemoError> {
        let span = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let deadline = timer_now()
            .checked_add_signed(span)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.memoized(key, || async move { Ok(deadline) }).await
    }

    /// The oldest signal `name` for this stage in the run's inbox, once
    /// there is one; `None` at `deadline`. Reports the wait to the flow
    /// only if it has to wait.
    async fn take(
        &self,
        key: &str,
        name: &str,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Option<(Uuid, Value)>, MemoError> {
        let mut kept = self.signals.clone();
        let mut waiting = None;
        let mut woken = false;
        loop {
            // Seen before the read: a signal kept after it wakes us again.
            let here = {
                let signals = kept.borrow_and_update();
                signals
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| Some((s.id?, s.payload.clone())))
            };
            // Woken by the flow keeping it: no journal read needed. Else the
            // inbox says (it may have been kept and settled meanwhile).
            if let (true, Some(found)) = (woken, here) {
                return Ok(Some(found));
            }
            if let Some(found) = self.sent(key, name).await? {
                return Ok(Some(found));
            }
            woken = true;
            waiting.get_or_insert_with(|| {
                self.report_wait(json!({ "for": "signal", "signal": name, "deadline": deadline }))
            });
            let left = deadline.map(|d| (d - timer_now()).to_std().unwrap_or(Duration::ZERO));
            let woken = async {
                if kept.changed().await.is_err() {
                    // No flow keeps signals for this stage (it is being
                    // stopped): only the deadline can end the wait.
                    std::future::pending::<()>().await;
                }
            };
            match left {
                Some(left) => {
                    if tokio::time::timeout(left, woken).await.is_err() {
                        return Ok(None);
                    }
                }
                None => woken.await,
            }
        }
    }

    /// The oldest signal `name` addressed to this stage (or to every stage)
    /// in the run's inbox, settled or not.
    async fn sent(&self, key: &str, name: &str) -> Result<Option<(Uuid, Value)>, MemoError> {
        let inbox = self
            .run
            .journal
            .list_inbox(self.run.run_id)
            .await
            .map_err(|source| MemoError::Journal {
                name: key.to_owned(),
                source,
            })?;
        Ok(inbox.into_iter().find_map(|entry| match entry.message {
            InboxMessage::Signal {
                name: sent,
                payload,
            } if sent == name && (*entry.stage == *self.stage || entry.stage == EVERY_STAGE) => {
                Some((entry.id, payload))
            }
            _ => None,
        }))
    }

    fn answer(&self, key: &str, answer: Result<Value, String>) -> Result<Option<Value>, MemoError> {
        match answer {
            Ok(Value::Null) => Ok(None),
            Ok(taken) => serde_json::from_value::<Taken>(taken)
                .map(|t| Some(t.payload))
                .map_err(|source| MemoError::Decode {
                    name: key.to_owned(),
                    expected: "a taken signal",
                    source,
                }),
            Err(message) => Err(MemoError::Failed {
                name: key.to_owned(),
                message,
            }),
        }
    }
}
