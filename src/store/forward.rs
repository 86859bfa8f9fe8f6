//! [`store_wrapper!`](crate::store_wrapper): a [`Store`](super::Store)
//! implementation whose required reads forward to an inner store, written once.

/// Implements [`Store`](crate::store::Store) for a wrapper type: the
/// methods you write (at least `apply_batch`) plus every required read,
/// forwarded to the field `reads` names — for wrappers that change only
/// writes (the journal handle, fault injection, test doubles). With
/// `check: method`, each forwarded read first calls
/// `self.method("read_name")?` (`fn(&self, &'static str) -> Result<(), StoreError>`),
/// e.g. to inject faults. Run ownership (`ownership`, `claim_runs`,
/// `renew_leases`, `release_leases`, `lease_lost`, `inbox_doorbell`) is the inner store's and
/// always forwarded. `list_runs` is forwarded too (the inner store may
/// answer it in one query); other provided methods (such as
/// `list_step_outputs_for`) keep their defaults unless you write them.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use troupe::store::{BatchResult, Store, MemoryStore};
/// use troupe::records::WriteOp;
///
/// /// Counts write batches; reads pass straight through.
/// struct Counting {
///     inner: Arc<dyn Store>,
///     batches: AtomicU64,
/// }
///
/// troupe::store_wrapper! {
///     Counting, reads: inner;
///     async fn apply_batch(&self, ops: Vec<WriteOp>) -> BatchResult {
///         self.batches.fetch_add(1, Ordering::Relaxed);
///         self.inner.apply_batch(ops).await
///     }
/// }
/// # let _ = Counting { inner: Arc::new(MemoryStore::new()), batches: AtomicU64::new(0) };
/// ```
#[macro_export]
macro_rules! store_wrapper {
    ($ty:ty, reads: $inner:tt $(, check: $check:ident)?; $($methods:tt)*) => {
        #[$crate::store::__async_trait]
        impl $crate::store::Store for $ty {
            $($methods)*

            async fn get_run(&self, id: $crate::ids::Uuid) -> ::core::result::Result<Option<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("get_run")?;)?
                self.$inner.get_run(id).await
            }

            async fn find_run_by_key(&self, flow: &str, key: &str) -> ::core::result::Result<Option<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("find_run_by_key")?;)?
                self.$inner.find_run_by_key(flow, key).await
            }

            async fn list_runs_by_owner(&self, owner_session_key: &str) -> ::core::result::Result<Vec<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("list_runs_by_owner")?;)?
                self.$inner.list_runs_by_owner(owner_session_key).await
            }

            async fn list_runs_by_status(&self, status: $crate::records::RunStatus) -> ::core::result::Result<Vec<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("list_runs_by_status")?;)?
                self.$inner.list_runs_by_status(status).await
            }

            async fn list_runs(&self, filter: &$crate::records::RunFilter, before: ::core::option::Option<$crate::ids::Uuid>, limit: usize) -> ::core::result::Result<Vec<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("list_runs")?;)?
                self.$inner.list_runs(filter, before, limit).await
            }

            async fn list_runs_missing_terminal_event(&self) -> ::core::result::Result<Vec<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("list_runs_missing_terminal_event")?;)?
                self.$inner.list_runs_missing_terminal_event().await
            }

            async fn list_runs_to_recover(&self) -> ::core::result::Result<Vec<::core::result::Result<$crate::records::Run, $crate::records::DamagedRun>>, $crate::records::StoreError> {
                $(self.$check("list_runs_to_recover")?;)?
                self.$inner.list_runs_to_recover().await
            }

            async fn list_events(&self, run_id: $crate::ids::Uuid, limit: usize) -> ::core::result::Result<Vec<$crate::records::RunEvent>, $crate::records::StoreError> {
                $(self.$check("list_events")?;)?
                self.$inner.list_events(run_id, limit).await
            }

            async fn poll(&self, after: $crate::records::Cursor, limit: usize) -> ::core::result::Result<Vec<$crate::records::RunEvent>, $crate::records::StoreError> {
                $(self.$check("poll")?;)?
                self.$inner.poll(after, limit).await
            }

            async fn latest_cursor(&self) -> ::core::result::Result<$crate::records::Cursor, $crate::records::StoreError> {
                $(self.$check("latest_cursor")?;)?
                self.$inner.latest_cursor().await
            }

            async fn terminal_event(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Option<$crate::records::RunEvent>, $crate::records::StoreError> {
                $(self.$check("terminal_event")?;)?
                self.$inner.terminal_event(run_id).await
            }

            async fn list_step_outputs(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Vec<$crate::records::StepOutput>, $crate::records::StoreError> {
                $(self.$check("list_step_outputs")?;)?
                self.$inner.list_step_outputs(run_id).await
            }

            async fn list_failures(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Vec<$crate::records::FailureEntry>, $crate::records::StoreError> {
                $(self.$check("list_failures")?;)?
                self.$inner.list_failures(run_id).await
            }

            async fn list_memos(&self, run_id: $crate::ids::Uuid, stage: &str) -> ::core::result::Result<Vec<$crate::records::Memo>, $crate::records::StoreError> {
                $(self.$check("list_memos")?;)?
                self.$inner.list_memos(run_id, stage).await
            }

            async fn last_checkpoint(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Option<$crate::records::Checkpoint>, $crate::records::StoreError> {
                $(self.$check("last_checkpoint")?;)?
                self.$inner.last_checkpoint(run_id).await
            }

            async fn list_definitions(&self, name: Option<&str>) -> ::core::result::Result<Vec<$crate::records::DefinitionRecord>, $crate::records::StoreError> {
                $(self.$check("list_definitions")?;)?
                self.$inner.list_definitions(name).await
            }

            async fn list_dead_letters(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Vec<$crate::records::DeadLetter>, $crate::records::StoreError> {
                $(self.$check("list_dead_letters")?;)?
                self.$inner.list_dead_letters(run_id).await
            }

            async fn list_inbox(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Vec<$crate::records::InboxEntry>, $crate::records::StoreError> {
                $(self.$check("list_inbox")?;)?
                self.$inner.list_inbox(run_id).await
            }

            async fn list_steps(&self, run_id: $crate::ids::Uuid) -> ::core::result::Result<Vec<$crate::records::RunStep>, $crate::records::StoreError> {
                $(self.$check("list_steps")?;)?
                self.$inner.list_steps(run_id).await
            }

            fn ownership(&self) -> $crate::store::Ownership {
                self.$inner.ownership()
            }

            async fn claim_runs(&self, flows: &[String], skip: &[$crate::ids::Uuid], limit: usize) -> ::core::result::Result<Vec<$crate::records::Run>, $crate::records::StoreError> {
                $(self.$check("claim_runs")?;)?
                self.$inner.claim_runs(flows, skip, limit).await
            }

            async fn renew_leases(&self) -> ::core::result::Result<$crate::store::Renewal, $crate::records::StoreError> {
                $(self.$check("renew_leases")?;)?
                self.$inner.renew_leases().await
            }

            async fn release_leases(&self, runs: &[$crate::ids::Uuid]) -> ::core::result::Result<(), $crate::records::StoreError> {
                self.$inner.release_leases(runs).await
            }

            fn lease_lost(&self) -> ::core::option::Option<::std::sync::Arc<$crate::store::__Notify>> {
                self.$inner.lease_lost()
            }

            fn inbox_doorbell(&self) -> ::core::option::Option<$crate::store::__broadcast::Receiver<$crate::ids::Uuid>> {
                self.$inner.inbox_doorbell()
            }
        }
    };
}
