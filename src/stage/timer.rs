//! Durable timers: [`StageContext::sleep`] and [`StageContext::sleep_until`].
//!
//! A timer's deadline is journaled (as the memo `@timer/<name>`) before the
//! stage waits for it, so a stage that runs again — restarted, or resumed by
//! another process after a crash — waits only for what is left of it, and a
//! deadline that passed while the process was down fires at once. Its firing
//! is recorded in the run's log (`timer_fired`, once per timer).

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::context::StageContext;
use super::memo::MemoError;
use crate::records::{EventKind, NewEvent};
use crate::store::Store;

/// The time timers are measured against: the wall clock, or tokio's clock
/// since the first reading if that is ahead (it is, under paused time, so
/// tests can jump a timer's hours; it never runs behind the wall clock).
pub(crate) fn timer_now() -> DateTime<Utc> {
    static BASE: OnceLock<(DateTime<Utc>, tokio::time::Instant)> = OnceLock::new();
    let (wall, instant) = *BASE.get_or_init(|| (Utc::now(), tokio::time::Instant::now()));
    let elapsed = tokio::time::Instant::now().saturating_duration_since(instant);
    let by_tokio = chrono::Duration::from_std(elapsed)
        .ok()
        .and_then(|d| wall.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    by_tokio.max(Utc::now())
}

/// Counts a durable timer in [`TIMERS_ARMED`](crate::metrics::TIMERS_ARMED)
/// while it is waited for.
struct Armed;

impl Armed {
    fn new() -> Armed {
        metrics::gauge!(crate::metrics::TIMERS_ARMED).increment(1.0);
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::TIMERS_ARMED).decrement(1.0);
    }
}

impl StageContext {
    /// Waits `duration` from the first time this stage of this run asked
    /// for timer `name`: a stage that runs again waits only for the rest
    /// (see [`sleep_until`](Self::sleep_until)).
    pub async fn sleep(&self, name: &str, duration: Duration) -> Result<(), MemoError> {
        let span = chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        let deadline = timer_now()
            .checked_add_signed(span)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(name, deadline).await
    }

    /// Waits until `deadline`, the first one journaled for timer `name` of
    /// this stage and run: after a crash or restart, the same call waits for
    /// the journaled deadline (a later `deadline` given then is ignored),
    /// and returns at once if it has passed. The timer's firing is recorded
    /// in the run's log as a `timer_fired` event (once, whatever the
    /// restarts). Name each timer of a stage apart.
    ///
    /// ```
    /// # use troupe::prelude::*;
    /// # use troupe::stage::StageContext;
    /// # use std::time::Duration;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
    /// let flow = FlowDefinition::<u64>::builder("reminder")
    ///     .step("wait-a-day", |ctx: &StageContext| {
    ///         let ctx = ctx.clone();
    ///         step_fn(move |_| {
    ///             let ctx = ctx.clone();
    ///             async move {
    ///                 ctx.sleep("grace", Duration::from_secs(24 * 3600)).await?;
    ///                 Ok(serde_json::json!("reminded"))
    ///             }
    ///         })
    ///     })
    ///     .build()?;
    /// let runtime = Runtime::builder().memory().register(flow)?.start().await?;
    /// let outcome = runtime.start("reminder").await?.wait().await?;
    /// assert_eq!(outcome.status, RunStatus::Finished);
    /// runtime.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn sleep_until(&self, name: &str, deadline: DateTime<Utc>) -> Result<(), MemoError> {
        let key = format!("@timer/{name}");
        let deadline: DateTime<Utc> = self.memoized(&key, || async move { Ok(deadline) }).await?;
        let left = (deadline - timer_now()).to_std().unwrap_or(Duration::ZERO);
        if !left.is_zero() {
            tracing::debug!(run_id = %self.run.run_id, stage = %self.stage, timer = name,
                %deadline, "waiting for a durable timer");
            let _waiting =
                self.report_wait(json!({ "for": "timer", "timer": name, "deadline": deadline }));
            let _armed = Armed::new();
            tokio::time::sleep(left).await;
        }
        let fired = NewEvent::with_id(
            self.run.run_id,
            format!("timer_fired/{}/{name}", self.escaped_stage()),
            EventKind::custom(
                "timer_fired",
                json!({ "stage": &*self.stage, "timer": name, "deadline": deadline }),
            ),
        );
        self.run
            .journal
            .append(fired)
            .await
            .map_err(|source| MemoError::Journal { name: key, source })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Memo;
    use crate::stage::context::tests::ctx;
    use serde_json::Value;

    #[tokio::test(start_paused = true)]
    async fn a_timer_waits_once_for_its_journaled_deadline() {
        let c = ctx(Value::Null).await;
        let before = tokio::time::Instant::now();
        c.sleep("grace", Duration::from_secs(3600)).await.unwrap();
        assert!(before.elapsed() >= Duration::from_secs(3590));
        let memos = c
            .run
            .journal
            .list_memos(c.run_id(), "charge")
            .await
            .unwrap();
        assert_eq!(memos.len(), 1);
        assert_eq!(memos[0].name, "@timer/grace");

        // Again (a restart): the deadline has passed, it returns at once,
        // and the log holds one firing.
        let before = tokio::time::Instant::now();
        c.sleep("grace", Duration::from_secs(3600)).await.unwrap();
        assert!(before.elapsed() < Duration::from_secs(1));
        let fired = c.run.journal.replay(c.run_id()).await.unwrap();
        let fired = fired
            .iter()
            .filter(|e| e.kind.name() == "timer_fired")
            .count();
        assert_eq!(fired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_journaled_before_a_crash_is_kept() {
        let c = ctx(Value::Null).await;
        // Journaled by an earlier process: due in ten minutes.
        let due = timer_now() + chrono::Duration::minutes(10);
        let memo = Memo {
            run_id: c.run_id(),
            stage: "charge".into(),
            name: "@timer/t".into(),
            result: Ok(serde_json::to_value(due).unwrap()),
            at: Utc::now(),
        };
        c.run.journal.record_memo(memo).await.unwrap();
        // Asking for a day now still waits for the journaled ten minutes.
        let before = tokio::time::Instant::now();
        c.sleep("t", Duration::from_secs(24 * 3600)).await.unwrap();
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_secs(590) && waited <= Duration::from_secs(601),
            "{waited:?}"
        );
        // One whose deadline passed while the process was down fires at once.
        let past = Memo {
            run_id: c.run_id(),
            stage: "charge".into(),
            name: "@timer/late".into(),
            result: Ok(serde_json::to_value(timer_now() - chrono::Duration::hours(1)).unwrap()),
            at: Utc::now(),
        };
        c.run.journal.record_memo(past).await.unwrap();
        let before = tokio::time::Instant::now();
        c.sleep("late", Duration::from_secs(60)).await.unwrap();
        assert!(before.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_durations_do_not_panic() {
        let c = ctx(Value::Null).await;
        // Far beyond any calendar: clamped, journaled, and still pending.
        let forever = c.sleep("forever", Duration::MAX);
        let done = tokio::time::timeout(Duration::from_secs(10), forever).await;
        assert!(done.is_err(), "still waiting");
        c.sleep("now", Duration::ZERO).await.unwrap();
    }
}
