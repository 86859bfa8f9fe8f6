//! Continue-as-new chains: a run that ends by continuing as a new run of
//! its flow ([`RunManager::continue_as_new`]), and the listing of a chain
//! ([`RunManager::chain`]).
//!
//! The old run's `ContinuedAsNew` status, its `continued_as_new` audit
//! event, its [`RunContinuedAsNew`](TerminalEvent::RunContinuedAsNew)
//! outcome naming the next run, and the next run's record (`Created`, its
//! `created` audit event) are **one atomic write**: a store holds both runs
//! or neither. The next run's id is [`continued_run_id`] of the old one, so
//! a second attempt to continue the same run names the same run: the store
//! refuses it twice over (a second terminal event, a second insert), and
//! the manager refuses it first ([`RunError::AlreadyTerminal`]).
//!
//! The next run has the old run's flow, goal, owner, origin, parent and key
//! (the key moves along the chain: the ended run no longer holds it), its
//! own input and an empty history; it records the run it continues in
//! [`Run::continued_from`].

use serde_json::{Value, json};
use uuid::Uuid;

use super::error::RunError;
use super::lifecycle::{Change, stored_now};
use super::manager::RunManager;
use crate::records::{
    EventKind, Run, RunStatus, StoreError, TerminalEvent, WriteOp, continued_run_id,
};
use crate::store::Store;

/// The longest chain [`RunManager::chain`] follows before it reports the
/// chain as broken (a loop in damaged records would otherwise never end).
pub const MAX_CHAIN_LEN: usize = 100_000;

impl RunManager {
    /// Ends run `id` (`Running` or `Waiting`) by continuing it as a new run
    /// of its flow with `input`; returns the new run, `Created`.
    ///
    /// One atomic write holds the old run's `ContinuedAsNew` status, its
    /// `continued_as_new` audit event, its
    /// [`RunContinuedAsNew`](TerminalEvent::RunContinuedAsNew) outcome naming
    /// the new run, and the new run (its `created` audit event): a store
    /// holds both runs or neither. The new run's id is
    /// [`continued_run_id`] of the old one's; it has the old run's flow,
    /// goal, owner, origin, parent and key (the key moves along the chain),
    /// its own input, an empty history, and [`Run::continued_from`] naming
    /// the old run. It records the definition the old one started with; a
    /// runtime's run continued by a stage
    /// ([`StageContext::continue_as_new`](crate::stage::StageContext::continue_as_new))
    /// records the definition a fresh start would get instead, and is
    /// started at once.
    ///
    /// Refused with [`RunError::AlreadyTerminal`] for an ended run (one
    /// that continued already included: no second run is created),
    /// [`RunError::CancelPending`] once a cancel was requested, and
    /// [`RunError::InvalidTransition`] for a run not started yet.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use troupe::runs::{CreateManagedInput, RunManager};
    /// use troupe::records::RunStatus;
    /// use troupe::store::MemoryStore;
    ///
    /// let runs = RunManager::new(Arc::new(MemoryStore::new()));
    /// let first = runs.create_managed(CreateManagedInput::new("tail", "follow a log", "me")).await?;
    /// runs.start_running(first.id).await?;
    /// let second = runs.continue_as_new(first.id, serde_json::json!({"offset": 42})).await?;
    /// assert_eq!(second.continued_from, Some(first.id));
    /// assert_eq!(runs.get(first.id).await?.unwrap().status, RunStatus::ContinuedAsNew);
    /// let chain: Vec<_> = runs.chain(second.id).await?.into_iter().map(|r| r.id).collect();
    /// assert_eq!(chain, [first.id, second.id]);
    /// # Ok::<(), troupe::runs::RunError>(())
    /// # }).unwrap();
    /// ```
    pub async fn continue_as_new(&self, id: Uuid, input: Value) -> Result<Run, RunError> {
        self.continue_as_new_on(id, input, None).await
    }

    /// [`continue_as_new`](Self::continue_as_new), the new run recording
    /// `definition` (fingerprint, version) if given.
    pub(crate) async fn continue_as_new_on(
        &self,
        id: Uuid,
        input: Value,
        definition: Option<(String, Option<u32>)>,
    ) -> Result<Run, RunError> {
        let old = self.get(id).await?.ok_or(RunError::NotFound(id))?;
        let mut next = Run::new(&old.controller_id, &old.goal, &old.owner_session_key);
        next.id = continued_run_id(id);
        next.requester_origin = old.requester_origin.clone();
        next.parent_run_id = old.parent_run_id;
        next.key = old.key.clone();
        next.input = input;
        next.continued_from = Some(id);
        (next.fingerprint, next.flow_version) = match definition {
            Some((fingerprint, version)) => (Some(fingerprint), version),
            None => (old.fingerprint.clone(), old.flow_version),
        };
        let now = stored_now();
        (next.created_at, next.updated_at) = (now, now);
        next.validate()?;
        let audit = EventKind::custom(
            super::AuditKind::Created.as_str(),
            json!({ "status": next.status.as_str(), "revision": 0, "runtime": "managed",
                "continued_from": id }),
        );
        let insert = WriteOp::InsertRun {
            run: Box::new(next.clone()),
            audit: Some(audit),
        };
        let change = Change::ContinueAsNew {
            next_run_id: next.id,
        };
        self.change(id, change, Some(insert)).await?;
        Ok(next)
    }

    /// The runs of the continue-as-new chain run `id` belongs to, first to
    /// last, from any of its runs; a run that never continued and does not
    /// continue another is a chain of one. [`RunError::NotFound`] if no run
    /// has this id; [`RunError::BrokenChain`] when the records contradict
    /// each other (a run named as next that is missing or does not name its
    /// predecessor back, a loop). One read per run (two for a run that
    /// continued).
    pub async fn chain(&self, id: Uuid) -> Result<Vec<Run>, RunError> {
        chain(&**self.store(), id).await
    }
}

/// [`RunManager::chain`] over a bare store (for tools that read a journal
/// without a runtime, as the `troupe` CLI does).
pub async fn chain(store: &dyn Store, id: Uuid) -> Result<Vec<Run>, RunError> {
    let start = store.get_run(id).await?.ok_or(RunError::NotFound(id))?;
    let broken = |run_id, why: String| RunError::BrokenChain { run_id, why };
    let mut before = Vec::new();
    let mut first = start.continued_from;
    while let Some(previous) = first {
        if before.len() >= MAX_CHAIN_LEN {
            return Err(broken(id, format!("longer than {MAX_CHAIN_LEN} runs")));
        }
        let run = store
            .get_run(previous)
            .await?
            .ok_or_else(|| broken(previous, "a run continues it, but it is not stored".into()))?;
        first = run.continued_from;
        before.push(run);
    }
    before.reverse();
    let mut chain = before;
    chain.push(start);
    loop {
        if chain.len() > MAX_CHAIN_LEN {
            return Err(broken(id, format!("longer than {MAX_CHAIN_LEN} runs")));
        }
        let Some(last) = chain.last() else {
            return Ok(chain);
        };
        let (last, next_id) = (last.id, next_run_id(store, last).await?);
        let Some(next_id) = next_id else {
            return Ok(chain);
        };
        let next = store.get_run(next_id).await?.ok_or_else(|| {
            broken(
                last,
                format!("it continued as run {next_id}, which is not stored"),
            )
        })?;
        if next.continued_from != Some(last) {
            return Err(broken(
                next_id,
                format!("run {last} continued as it, but it does not say it continues that run"),
            ));
        }
        chain.push(next);
    }
}

/// The run that `run` continued as, if its status is `ContinuedAsNew`: the
/// one its terminal event names, or, if the event is missing (a damaged
/// log), the one [`continued_run_id`] names.
async fn next_run_id(store: &dyn Store, run: &Run) -> Result<Option<Uuid>, StoreError> {
    if run.status != RunStatus::ContinuedAsNew {
        return Ok(None);
    }
    let run_id = run.id;
    Ok(Some(match store.terminal_event(run_id).await? {
        Some(event) => match event.kind {
            EventKind::Terminal(TerminalEvent::RunContinuedAsNew { next_run_id }) => next_run_id,
            _ => continued_run_id(run_id),
        },
        None => continued_run_id(run_id),
    }))
}
