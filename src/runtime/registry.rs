//! Flow definitions by name: what a run's `controller_id` resolves to.
//!
//! Recovery (resuming unfinished runs after a restart) looks runs' controller
//! ids up here, so a definition is registered under the same name in every
//! process that may resume its runs.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::flow::ErasedDefinition;

/// The registered flow definitions of a runtime, keyed by name.
#[derive(Default)]
pub(crate) struct Registry {
    definitions: RwLock<HashMap<String, Arc<dyn ErasedDefinition>>>,
}

impl Clone for Registry {
    fn clone(&self) -> Self {
        let map = self
            .definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Registry {
            definitions: RwLock::new(map.clone()),
        }
    }
}

impl Registry {
    /// Registers `definition`; `false` if its name is taken (nothing changes).
    pub(crate) fn register(&self, definition: Arc<dyn ErasedDefinition>) -> bool {
        let mut map = self
            .definitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(definition.name()) {
            return false;
        }
        map.insert(definition.name().to_owned(), definition);
        true
    }

    /// The definition registered as `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn ErasedDefinition>> {
        self.definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The registered names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let map = self
            .definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }
}
