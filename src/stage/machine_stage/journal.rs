//! A durable machine stage's state in the journal: written whenever the
//! machine's state variant (or its timer's deadline) changed, at most once
//! per unit of work, and read back by every start of the stage.
//!
//! Each write is a memo of the stage named `@machine/<seq>` (zero-padded,
//! so the last one sorts last), with a `stage_machine_state` event in the
//! run's log in the same commit. Memos rather than a checkpoint or a log
//! event: a start reads only its own stage's memos (one indexed read, which
//! its memo cache makes anyway, not the run's whole log), a memo's first
//! write wins (a write repeated after a failure is harmless), and no schema
//! changes. A checkpoint is a run-wide cut its coordinator owns, taken
//! only while sources report positions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Codec;
use crate::records::{EventKind, NewEvent};
use crate::stage::context::StageContext;
use crate::stage::memo::MemoError;
use crate::stage::timer::timer_now;

/// The names of a machine's journaled states start with this.
const PREFIX: &str = "@machine/";

/// Why a machine stage could not journal or read back its state.
#[derive(Debug, thiserror::Error)]
pub enum MachineStageError {
    /// The state or context did not turn into JSON.
    #[error("machine stage `{stage}`: its state or context cannot be journaled as JSON: {source}")]
    Encode {
        /// The stage.
        stage: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The journaled state does not decode as the machine's state and
    /// context types: they changed since it was written (declare a new
    /// flow version, see [`FlowBuilder::version`](crate::flow::FlowBuilder::version)).
    #[error(
        "machine stage `{stage}`: its journaled state `{memo}` does not decode as its state and context types (did they change?): {source}"
    )]
    Decode {
        /// The stage.
        stage: String,
        /// The memo holding it.
        memo: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Writing or reading the journal failed (retried with the stage).
    #[error("machine stage `{stage}`: the journal failed: {source}")]
    Journal {
        /// The stage.
        stage: String,
        /// The journal's error (boxed: it is large, and rare).
        #[source]
        source: Box<MemoError>,
    },
}

/// What is journaled: the state, the context, the timer's deadline.
#[derive(Serialize, Deserialize)]
struct Journaled {
    state: Value,
    context: Value,
    deadline: Option<DateTime<Utc>>,
}

/// A machine's state, context and deadline, read back.
pub(super) struct Saved<S, C> {
    pub(super) state: S,
    pub(super) context: C,
    pub(super) deadline: Option<Instant>,
}

/// `state`, `context` and `deadline` as JSON (what is journaled, and a
/// checkpoint's snapshot of the stage).
pub(super) fn to_json<S, C>(
    stage: &StageContext,
    codec: &Codec<S, C>,
    state: &S,
    context: &C,
    deadline: Option<Instant>,
) -> Result<Value, MachineStageError> {
    let encoded = (codec.encode)(state, context).and_then(|(state, context)| {
        // The deadline as wall-clock time: a tokio instant means nothing
        // to the next process.
        let deadline = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            timer_now() + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::MAX)
        });
        serde_json::to_value(Journaled {
            state,
            context,
            deadline,
        })
    });
    encoded.map_err(|source| MachineStageError::Encode {
        stage: stage.stage().to_owned(),
        source,
    })
}

/// What [`to_json`] made, read back (`memo` names it, for errors); a
/// deadline that passed is due now.
pub(super) fn from_json<S, C>(
    stage: &StageContext,
    codec: &Codec<S, C>,
    memo: &str,
    value: Value,
) -> Result<Saved<S, C>, MachineStageError> {
    let decoded = Journaled::deserialize(value).and_then(|j| {
        let (state, context) = (codec.decode)(j.state, j.context)?;
        let deadline = j.deadline.map(|d| {
            let left = (d - timer_now()).to_std().unwrap_or_default();
            Instant::now() + left
        });
        Ok(Saved {
            state,
            context,
            deadline,
        })
    });
    decoded.map_err(|source| MachineStageError::Decode {
        stage: stage.stage().to_owned(),
        memo: memo.to_owned(),
        source,
    })
}

/// The state last journaled for the stage and its number, if any.
pub(super) async fn load<S, C>(
    stage: &StageContext,
    codec: &Codec<S, C>,
) -> Result<Option<(u64, Saved<S, C>)>, MachineStageError> {
    let latest = stage
        .latest_memo(PREFIX)
        .await
        .map_err(|source| MachineStageError::Journal {
            stage: stage.stage().to_owned(),
            source: Box::new(source),
        })?;
    let Some((memo, result)) = latest else {
        return Ok(None);
    };
    let seq = memo[PREFIX.len()..].parse::<u64>().unwrap_or(0);
    // Only values are journaled here; an error result is someone else's.
    let value = result.unwrap_or(Value::Null);
    Ok(Some((seq, from_json(stage, codec, &memo, value)?)))
}

/// Journals `value` (from [`to_json`]) as the stage's state number `seq`,
/// in state variant `variant`, and logs it in the run's log.
pub(super) async fn save(
    stage: &StageContext,
    seq: u64,
    variant: &str,
    value: Value,
) -> Result<(), MachineStageError> {
    let name = format!("{PREFIX}{seq:020}");
    let logged = NewEvent::new(
        stage.run_id(),
        EventKind::custom(
            "stage_machine_state",
            json!({ "stage": stage.stage(), "state": variant, "seq": seq }),
        ),
    );
    // The first write of a number wins: a rewrite changes nothing.
    let _stored = stage
        .record(&name, Ok(value), Some(logged))
        .await
        .map_err(|source| MachineStageError::Journal {
            stage: stage.stage().to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::context::tests::ctx;
    use std::time::Duration;

    fn codec() -> Codec<String, u32> {
        Codec {
            encode: super::super::encode::<String, u32>,
            decode: super::super::decode::<String, u32>,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_state_written_is_read_back_with_its_deadline() {
        let stage = ctx(Value::Null).await;
        assert!(load(&stage, &codec()).await.unwrap().is_none());
        let deadline = Instant::now() + Duration::from_secs(60);
        for (seq, state) in [(1, "Open"), (2, "Closed"), (10, "Reopened")] {
            let value = to_json(&stage, &codec(), &state.to_owned(), &seq, Some(deadline));
            save(&stage, seq.into(), state, value.unwrap())
                .await
                .unwrap();
        }
        // A later start reads the journal afresh.
        let later = StageContext::new(stage.run.clone(), "charge".into(), 2);
        let (seq, saved) = load(&later, &codec()).await.unwrap().unwrap();
        assert_eq!(
            (seq, saved.state.as_str(), saved.context),
            (10, "Reopened", 10)
        );
        let left = saved.deadline.unwrap() - Instant::now();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_is_due_now_and_a_bad_value_says_which_memo() {
        let stage = ctx(Value::Null).await;
        let value = json!({"state": "Open", "context": 1, "deadline": "2001-01-01T00:00:00Z"});
        let saved = from_json(&stage, &codec(), "@machine/1", value).unwrap();
        assert!(saved.deadline.unwrap() <= Instant::now());
        let value = json!({"state": 7, "context": 1, "deadline": null});
        let error = from_json(&stage, &codec(), "@machine/2", value)
            .err()
            .unwrap();
        assert!(
            matches!(&error, MachineStageError::Decode { memo, .. } if memo == "@machine/2"),
            "{error}"
        );
        assert!(error.to_string().contains("did they change"), "{error}");
    }
}
