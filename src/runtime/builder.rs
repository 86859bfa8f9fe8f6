//! [`RuntimeBuilder`]: where the journal lives, then `start`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ractor::Actor;

use super::registry::Registry;
use super::root::{RootActor, root_state};
use super::{Runtime, RuntimeError};
use crate::journal::{JournalConfig, JournalHandle};
use crate::store::{FlowStore, MemoryStore, SqliteStore};

/// Where the journal lives when none is chosen.
pub const DEFAULT_JOURNAL_PATH: &str = "./troupe-data/journal.sqlite";

#[derive(Debug, Clone)]
enum Location {
    Sqlite(PathBuf),
    Memory,
}

/// Configures and starts a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    location: Location,
    journal: JournalConfig,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            location: Location::Sqlite(PathBuf::from(DEFAULT_JOURNAL_PATH)),
            journal: JournalConfig::default(),
        }
    }
}

impl RuntimeBuilder {
    /// Journal in an SQLite database at `path` (its directory is created).
    pub fn sqlite(mut self, path: impl AsRef<Path>) -> Self {
        self.location = Location::Sqlite(path.as_ref().to_path_buf());
        self
    }

    /// Journal in memory: nothing survives the process (for tests).
    pub fn memory(mut self) -> Self {
        self.location = Location::Memory;
        self
    }

    /// Options of the journal actor.
    pub fn journal_config(mut self, config: JournalConfig) -> Self {
        self.journal = config;
        self
    }

    /// Opens the journal, spawns the root supervisor and the journal actor
    /// under it, and runs the journal's recovery scan (terminal records a
    /// crash left half-written are repaired; unfinished runs are listed in
    /// [`Runtime::recovery`]). Call inside a tokio runtime.
    pub async fn start(self) -> Result<Runtime, RuntimeError> {
        let (store, path): (Arc<dyn FlowStore>, _) = match &self.location {
            Location::Memory => (Arc::new(MemoryStore::new()), None),
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| RuntimeError::CreateDir {
                        dir: dir.to_path_buf(),
                        source,
                    })?;
                }
                let store = SqliteStore::open(path).await?;
                (Arc::new(store), Some(path.clone()))
            }
        };
        let (root, _join) = Actor::spawn(None, RootActor, root_state()).await?;
        let opened = JournalHandle::open(store, self.journal, Some(root.get_cell())).await;
        let (journal, recovery) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                root.kill();
                return Err(error.into());
            }
        };
        tracing::info!(
            journal = ?path,
            unfinished = recovery.unfinished.len(),
            repaired = recovery.repaired.len(),
            "runtime started"
        );
        Ok(Runtime::new(
            journal,
            root,
            Registry::default(),
            recovery,
            path,
        ))
    }
}
