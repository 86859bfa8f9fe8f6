//! Starting a run under the caller's id ([`RunOptions::id`]): a flow has at
//! most one run per id that has not ended, and starting an id again returns
//! that run instead of a second one.
//!
//! Two starts of one id in this process are serialized by a lock per (flow,
//! id), held from the look-up until the new run's handle is in the run
//! list, so the second finds the first's run. The store enforces the rule
//! on its own too ([`StoreError::RunKeyTaken`](crate::records::StoreError::RunKeyTaken)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

use super::RuntimeError;
use super::start::Starter;
use crate::flow::record::{RecordError, recorded_outcome};
use crate::flow::{ErasedDefinition, IdReuse, RunHandle, RunOptions};
use crate::records::{RunStatus, check_run_key};
use crate::store::Store;

type KeyLock = Arc<tokio::sync::Mutex<()>>;

/// One lock per (flow, id) being started; an entry lives while someone
/// holds or waits for it.
#[derive(Default)]
pub(crate) struct KeyLocks(Mutex<HashMap<(String, String), KeyLock>>);

/// Held while a start of one (flow, id) looks the id up and creates its run.
pub(crate) struct KeyGuard {
    locks: Arc<KeyLocks>,
    key: (String, String),
    lock: KeyLock,
    /// `Some` until dropped (first, in `drop`: it holds a clone of `lock`).
    held: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut map = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        self.held = None;
        // The map's clone and ours: nobody holds or waits, so the entry can
        // go (a waiter cloned it under the map's lock, which we hold).
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

impl KeyLocks {
    async fn lock(self: &Arc<Self>, flow: &str, id: &str) -> KeyGuard {
        let key = (flow.to_owned(), id.to_owned());
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(key.clone()).or_default().clone()
        };
        let held = lock.clone().lock_owned().await;
        KeyGuard {
            locks: self.clone(),
            key,
            lock,
            held: Some(held),
        }
    }
}

/// What a start with an id found.
pub(crate) enum Keyed {
    /// The run the id names, which the start returns.
    Existing(RunHandle),
    /// No run the start must return: it creates one, holding the guard
    /// until the run's handle is listed.
    New(KeyGuard),
}

/// Looks up the run `options` names by id (when it names one) for a start
/// of `definition`. `None` when the start names no id.
pub(crate) async fn look_up(
    starter: &Starter,
    locks: &Arc<KeyLocks>,
    definition: &dyn ErasedDefinition,
    options: &RunOptions,
) -> Result<Option<Keyed>, RuntimeError> {
    let Some(id) = options.id.as_deref() else {
        return Ok(None);
    };
    let flow = definition.name();
    check_run_key(uuid::Uuid::nil(), id).map_err(|error| RuntimeError::BadRunId {
        flow: flow.to_owned(),
        why: match error {
            crate::records::StoreError::InvalidInput { why, .. } => why,
            _ => "it is not a valid run id",
        },
    })?;
    let guard = locks.lock(flow, id).await;
    let Some(run) = starter.journal.find_run_by_key(flow, id).await? else {
        return Ok(Some(Keyed::New(guard)));
    };
    let ended = run.status.is_terminal();
    let reusable = match options.id_reuse {
        IdReuse::Never => false,
        IdReuse::AfterFailure => matches!(run.status, RunStatus::Failed | RunStatus::Cancelled),
        IdReuse::AfterEnded => true,
    };
    if ended && reusable {
        return Ok(Some(Keyed::New(guard)));
    }
    // The id moves along a continue-as-new chain: the run found may be a
    // later one of it, whose input is its own; the start's is compared with
    // the chain's first run's.
    let first_input = match run.continued_from {
        None => None,
        Some(_) => {
            let manager =
                crate::runs::RunManager::new(std::sync::Arc::new(starter.journal.clone()));
            let chain = manager
                .chain(run.id)
                .await
                .map_err(|error| RuntimeError::from(RecordError::from(error)))?;
            chain.into_iter().next().map(|first| first.input)
        }
    };
    if *first_input.as_ref().unwrap_or(&run.input) != options.input {
        return Err(RuntimeError::RunIdConflict {
            flow: flow.to_owned(),
            id: id.to_owned(),
            existing: run.id,
        });
    }
    let listed = starter
        .runs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .find(run.id);
    if let Some(handle) = listed {
        return Ok(Some(Keyed::Existing(handle)));
    }
    if ended {
        let outcome = recorded_outcome(&starter.journal, run.id, run.status).await?;
        let handle = RunHandle::ended(outcome, definition.stage_names());
        return Ok(Some(Keyed::Existing(handle)));
    }
    Err(RuntimeError::RunIdNotLive {
        flow: flow.to_owned(),
        id: id.to_owned(),
        existing: run.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(locks: &KeyLocks) -> usize {
        locks.0.lock().unwrap().len()
    }

    #[tokio::test]
    async fn an_entry_lives_while_someone_holds_or_waits_for_it() {
        let locks = Arc::new(KeyLocks::default());
        for i in 0..100 {
            drop(locks.lock("orders", &format!("order-{i}")).await);
        }
        assert_eq!(entries(&locks), 0, "uncontended locks leave nothing behind");

        let first = locks.lock("orders", "a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock("orders", "a").await) })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(entries(&locks), 1, "kept for the waiter");
        waiter.await.unwrap();
        assert_eq!(entries(&locks), 0);
    }
}
