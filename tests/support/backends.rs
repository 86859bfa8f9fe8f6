//! The stores the run control plane is tested over, and `over_backends!`,
//! which instantiates every case once per store.

use std::sync::Arc;

use troupe::journal::{JournalConfig, JournalHandle};
use troupe::store::{MemoryStore, SqliteStore, Store};

pub type AnyStore = Arc<dyn Store>;

pub async fn memory() -> AnyStore {
    Arc::new(MemoryStore::new())
}

pub async fn sqlite() -> AnyStore {
    Arc::new(SqliteStore::open(":memory:").await.expect("open sqlite"))
}

/// The journal actor's handle over a memory store: what a runtime hands out.
pub async fn journal() -> AnyStore {
    let journal =
        JournalHandle::spawn(Arc::new(MemoryStore::new()), JournalConfig::default(), None)
            .await
            .expect("spawn journal");
    Arc::new(journal)
}

/// `over_backends!(#[test attribute] cases_module; case, ...)` generates one
/// module per backend with one test per case; each case is an async fn taking
/// the store. `cases_module` and this module must be declared at the test
/// crate's root; invoke it inside a module of its own to use it twice.
macro_rules! over_backends {
    (#[$attr:meta] $cases:ident; $($case:ident),* $(,)?) => {
        over_backends!(@backend memory #[$attr] $cases; $($case),*);
        over_backends!(@backend sqlite #[$attr] $cases; $($case),*);
        over_backends!(@backend journal #[$attr] $cases; $($case),*);
    };
    (@backend $backend:ident #[$attr:meta] $cases:ident; $($case:ident),*) => {
        mod $backend {
            $(
                #[$attr]
                async fn $case() {
                    crate::$cases::$case(crate::backends::$backend().await).await;
                }
            )*
        }
    };
}
