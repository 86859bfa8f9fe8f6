//! [`RequiredOnly`]: a store that forwards only the required `Store`
//! methods to its inner store, so every provided method (e.g. the run-by-run
//! `list_step_outputs_for`) runs its default implementation.

use std::sync::Arc;

use troupe::records::WriteOp;
use troupe::store::{BatchResult, Store};

pub struct RequiredOnly(pub Arc<dyn Store>);

troupe::store_wrapper! {
    RequiredOnly, reads: 0;
    async fn apply_batch(&self, ops: Vec<WriteOp>) -> BatchResult {
        self.0.apply_batch(ops).await
    }
}
