//! [`FaultyStore`]: a wrapper that makes chosen operations fail, for tests of
//! the failure paths (terminalization, repair, the journal's per-request results).

use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::traits::Store;
use crate::records::StepOutput;
use crate::records::StoreError;
use crate::records::{WriteOp, WriteOutcome};

/// A fault to inject. `op` is a [`WriteOp::name`] (e.g. `"append_terminal_if_absent"`,
/// `"record_failure"`) or a read method's name (e.g. `"get_run"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `count` matching operations fail with [`StoreError::Injected`]
    /// without touching the inner store.
    Fail {
        /// The operation.
        op: &'static str,
        /// How many times.
        count: usize,
    },
    /// The next `count` matching writes are applied, then reported as failed
    /// with [`StoreError::AckLost`]: the write happened, the caller does not know.
    LoseAck {
        /// The operation.
        op: &'static str,
        /// How many times.
        count: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Fail,
    LoseAck,
}

/// Wraps a store and injects [`Fault`]s.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use troupe::store::{Fault, Store, MemoryStore};
/// use troupe::records::{Run, StoreError};
///
/// let store = FaultyStore::new(Arc::new(MemoryStore::new()));
/// store.inject(Fault::LoseAck { op: "insert_run", count: 1 });
/// let run = Run::new("c", "g", "o");
/// assert!(matches!(store.insert_run(run.clone(), None).await, Err(StoreError::AckLost { .. })));
/// assert!(store.get_run(run.id).await?.is_some(), "the write happened");
/// # Ok::<(), StoreError>(())
/// # }).unwrap();
/// # use troupe::store::FaultyStore;
/// ```
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Mutex<Vec<Fault>>,
    fired: Mutex<Vec<&'static str>>,
}

impl FaultyStore {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: Mutex::new(Vec::new()),
            fired: Mutex::new(Vec::new()),
        }
    }

    /// Arms a fault; faults for the same op fire in the order they were armed.
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// The names of the operations that faults fired on, in order.
    pub fn fired(&self) -> Vec<&'static str> {
        self.fired.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Consumes one armed fault for `op`, if any.
    fn take(&self, op: &'static str) -> Option<Effect> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let i = faults.iter().position(|f| match f {
            Fault::Fail { op: o, count } | Fault::LoseAck { op: o, count } => {
                *o == op && *count > 0
            }
        })?;
        let effect = match &mut faults[i] {
            Fault::Fail { count, .. } => {
                *count -= 1;
                Effect::Fail
            }
            Fault::LoseAck { count, .. } => {
                *count -= 1;
                Effect::LoseAck
            }
        };
        faults.retain(|f| {
            !matches!(
                f,
                Fault::Fail { count: 0, .. } | Fault::LoseAck { count: 0, .. }
            )
        });
        self.fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op);
        Some(effect)
    }

    fn check_read(&self, op: &'static str) -> Result<(), StoreError> {
        match self.take(op) {
            Some(_) => Err(StoreError::Injected { op }),
            None => Ok(()),
        }
    }
}

crate::store_wrapper! {
    FaultyStore, reads: inner, check: check_read;
    async fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        let plan: Vec<(&'static str, Option<Effect>)> = ops
            .iter()
            .map(|op| (op.name(), self.take(op.name())))
            .collect();
        let forwarded: Vec<WriteOp> = ops
            .into_iter()
            .zip(&plan)
            .filter(|(_, (_, effect))| *effect != Some(Effect::Fail))
            .map(|(op, _)| op)
            .collect();
        let mut inner = if forwarded.is_empty() {
            Vec::new()
        } else {
            self.inner.apply_batch(forwarded).await?
        }
        .into_iter();
        Ok(plan
            .into_iter()
            .map(|(op, effect)| match effect {
                Some(Effect::Fail) => Err(StoreError::Injected { op }),
                Some(Effect::LoseAck) => match inner.next() {
                    Some(_) => Err(StoreError::AckLost { op }),
                    None => Err(StoreError::OutcomeMismatch { op }),
                },
                None => inner
                    .next()
                    .unwrap_or(Err(StoreError::OutcomeMismatch { op })),
            })
            .collect())
    }

    async fn list_step_outputs_for(&self, run_ids: &[Uuid]) -> Result<Vec<StepOutput>, StoreError> {
        self.check_read("list_step_outputs_for")?;
        self.inner.list_step_outputs_for(run_ids).await
    }

}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::records::{Checkpoint, Run};
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn checkpoint_writes_and_reads_can_be_made_to_fail() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        let run = Run::new("flow", "goal", "owner");
        store.insert_run(run.clone(), None).await.expect("insert");
        let checkpoint = |id| Checkpoint::new(run.id, id, BTreeMap::new());

        store.inject(Fault::Fail {
            op: "record_checkpoint",
            count: 1,
        });
        let failed = store.record_checkpoint(checkpoint(1)).await;
        assert!(matches!(
            failed,
            Err(StoreError::Injected {
                op: "record_checkpoint"
            })
        ));
        assert_eq!(store.last_checkpoint(run.id).await.expect("read"), None);

        store.inject(Fault::LoseAck {
            op: "record_checkpoint",
            count: 1,
        });
        let lost = store.record_checkpoint(checkpoint(1)).await;
        assert!(matches!(lost, Err(StoreError::AckLost { .. })));
        store.inject(Fault::Fail {
            op: "last_checkpoint",
            count: 1,
        });
        let read = store.last_checkpoint(run.id).await;
        assert!(matches!(
            read,
            Err(StoreError::Injected {
                op: "last_checkpoint"
            })
        ));
        let stored = store.last_checkpoint(run.id).await.expect("read");
        assert_eq!(
            stored.map(|c| c.id),
            Some(1),
            "the lost ack's write happened"
        );
        assert_eq!(
            store.fired(),
            ["record_checkpoint", "record_checkpoint", "last_checkpoint"]
        );
    }
}
