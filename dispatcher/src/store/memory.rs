//! Platform state of a dispatcher without a database: fires, run history, the catalog and
//! its modules, for as long as the process lives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::records::{FireKey, History, Snapshot};
use crate::api::{FireStatus, RunRecord, Version};

/// Fires, attempts and modules.
#[derive(Default)]
pub struct MemoryState {
    pub(super) next_id: u64,
    pub(super) fires: HashMap<u64, MemFire>,
    pub(super) keys: HashMap<FireKey, u64>,
    pub(super) attempts: Vec<(u64, RunRecord)>,
    /// Deployed modules by content hash.
    pub(super) modules: HashMap<String, Arc<[u8]>>,
}

pub(super) struct MemFire {
    pub(super) key: FireKey,
    pub(super) status: FireStatus,
}

/// The catalog of a dispatcher without a database.
#[derive(Default, Clone)]
pub struct MemoryCatalog {
    pub(super) generation: u64,
    pub(super) current: BTreeMap<String, Option<u32>>,
    pub(super) versions: BTreeMap<String, Vec<Version>>,
}

impl MemoryCatalog {
    pub(super) fn snapshot(&self) -> Snapshot {
        let current = self
            .current
            .iter()
            .filter_map(|(name, v)| {
                let v = (*v)?;
                self.versions.get(name)?.iter().find(|r| r.version == v)
            })
            .cloned()
            .collect();
        Snapshot {
            generation: self.generation,
            current,
        }
    }

    pub(super) fn history(&self, name: &str) -> History {
        History {
            current: self.current.get(name).copied().flatten(),
            versions: self.versions.get(name).cloned().unwrap_or_default(),
        }
    }
}
