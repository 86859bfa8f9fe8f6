//! Flow definitions by name and version: what a run's `controller_id` (and
//! recorded fingerprint) resolves to.
//!
//! Recovery (resuming unfinished runs after a restart) looks runs' controller
//! ids up here, so a definition is registered under the same name in every
//! process that may resume its runs. Several versions of a flow may be
//! registered: new runs start on the highest; a run resumes on the one
//! whose fingerprint it recorded, else as the highest's [`ChangePolicy`] says.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::flow::{ChangePolicy, ErasedDefinition};

/// The registered flow definitions of a runtime, by name, each name's
/// versions in ascending order (unversioned first).
#[derive(Default)]
pub(crate) struct Registry {
    definitions: RwLock<HashMap<String, Vec<Arc<dyn ErasedDefinition>>>>,
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

/// Which definition a run resumes on.
pub(crate) enum Resolved {
    /// This one.
    On(Arc<dyn ErasedDefinition>),
    /// None of its flow is registered.
    NotRegistered,
    /// Its recorded fingerprint matches none registered, and the newest's
    /// policy does not take it.
    Refused {
        /// The newest registered definition of its flow.
        newest: Arc<dyn ErasedDefinition>,
    },
}

impl Registry {
    /// Registers `definition`; `false` if its name and version are taken
    /// (nothing changes).
    pub(crate) fn register(&self, definition: Arc<dyn ErasedDefinition>) -> bool {
        let mut map = self
            .definitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let versions = map.entry(definition.name().to_owned()).or_default();
        match versions.binary_search_by_key(&definition.version(), |d| d.version()) {
            Ok(_) => false,
            Err(at) => {
                versions.insert(at, definition);
                true
            }
        }
    }

    /// Whether a definition named `name` is registered under `version`.
    pub(crate) fn has(&self, name: &str, version: Option<u32>) -> bool {
        self.definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|versions| versions.iter().any(|d| d.version() == version))
    }

    /// The newest definition registered as `name`: the one new runs start on.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn ErasedDefinition>> {
        self.definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .and_then(|versions| versions.last())
            .cloned()
    }

    /// Which definition a run of `name` that recorded `fingerprint` and
    /// `version` resumes on: the one with its fingerprint; the newest for a
    /// run without one (recorded before fingerprints); else what the
    /// newest's [`ChangePolicy`] says.
    pub(crate) fn resolve(
        &self,
        name: &str,
        fingerprint: Option<&str>,
        version: Option<u32>,
    ) -> Resolved {
        let map = self
            .definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(newest) = map.get(name).and_then(|v| v.last()) else {
            return Resolved::NotRegistered;
        };
        let versions = &map[name];
        let Some(fingerprint) = fingerprint else {
            return Resolved::On(newest.clone());
        };
        if let Some(same) = versions.iter().find(|d| d.fingerprint() == fingerprint) {
            return Resolved::On(same.clone());
        }
        let chosen = match newest.change_policy() {
            ChangePolicy::Refuse => None,
            ChangePolicy::ResumeWithNew => Some(newest),
            ChangePolicy::ResumeWithRecordedVersion => {
                versions.iter().find(|d| d.version() == version)
            }
        };
        match chosen {
            Some(definition) => Resolved::On(definition.clone()),
            None => Resolved::Refused {
                newest: newest.clone(),
            },
        }
    }

    /// Every registered definition, by name, then version.
    pub(crate) fn all(&self) -> Vec<Arc<dyn ErasedDefinition>> {
        let map = self
            .definitions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        names.into_iter().flat_map(|n| map[n].clone()).collect()
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
