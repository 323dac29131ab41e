//! Following the catalog: what other replicas deployed, loaded here.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use futures_util::StreamExt;

use super::deployments::{compile_parallelism, env_lookup, Deployments};
use super::registry::Registry;
use crate::api::Version;
use crate::function::Function;
use crate::manifest::{self, ManifestErrors, WasmSource};
use crate::store::Snapshot;

/// How often a replica checks the catalog for changes made elsewhere.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);

impl Deployments {
    /// Catches up with changes other replicas made to the catalog.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let generation = self.store.catalog_generation().await?;
        self.telemetry
            .metrics
            .catalog_generation
            .set(generation as i64);
        if *self.synced.lock().await == Some(generation) {
            return Ok(());
        }
        let mut synced = self.synced.lock().await;
        let snapshot = self.store.catalog_snapshot().await?;
        self.apply(&mut synced, snapshot).await;
        Ok(())
    }

    /// Polls the catalog every [`SYNC_EVERY`] until `shutdown`. A database that goes away is
    /// logged once; the replica keeps serving what it has.
    pub async fn sync_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(SYNC_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            match self.sync().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the platform database is back: deploys sync again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cannot read the deploy catalog: {e:#}; serving what is loaded until it is back");
                }
                Err(_) => {}
            }
        }
    }

    /// Makes `live` match a catalog snapshot: keeps what is unchanged, loads what is new.
    /// Returns whether everything loaded. If something did not (its module could not be
    /// fetched, say), the generation is not marked as reached, so the next sync tries again;
    /// meanwhile the version served before, if any, stays.
    pub(super) async fn apply(&self, synced: &mut Option<u64>, snapshot: Snapshot) -> bool {
        if *synced == Some(snapshot.generation) {
            return true;
        }
        let live = self.live.load();
        let unchanged = |record: &Version| {
            live.functions.get(&record.name).filter(|f| {
                f.deployed.version == record.version
                    && f.deployed.module_hash == record.module_hash
                    && f.deployed.manifest == record.manifest
            })
        };
        // What changed is loaded a few modules at a time (a fresh replica loads everything).
        let mut changed: Vec<Version> = snapshot
            .current
            .iter()
            .filter(|r| unchanged(r).is_none())
            .cloned()
            .collect();
        // The largest first, so that no core idles at the end while one big module compiles.
        changed.sort_by_key(|r| std::cmp::Reverse(r.module_size));
        let hold = self.runtime.hold_background();
        let mut loaded: HashMap<String, Result<Arc<Function>, String>> =
            futures_util::stream::iter(changed)
                .map(|record| async move {
                    let result = self.load(&record).await;
                    (record.name, result)
                })
                .buffer_unordered(compile_parallelism())
                .collect()
                .await;
        drop(hold);
        let mut functions = Vec::new();
        let mut complete = true;
        for record in &snapshot.current {
            let Some(result) = loaded.remove(&record.name) else {
                functions.extend(unchanged(record).cloned());
                continue;
            };
            let key = (record.name.clone(), record.version);
            match result {
                Ok(f) => {
                    tracing::info!(
                        function = %record.name,
                        version = record.version,
                        origin = ?f.module.origin,
                        "loaded from the catalog"
                    );
                    self.failing_set().remove(&key);
                    functions.push(f);
                }
                Err(e) => {
                    complete = false;
                    // Said once per version; the retries every sync are quiet.
                    if self.failing_set().insert(key) {
                        tracing::error!(
                            function = %record.name,
                            version = record.version,
                            "cannot serve this version on this replica (retrying at every sync): {e}"
                        );
                    }
                    if let Some(f) = live.functions.get(&record.name) {
                        functions.push(f.clone());
                    }
                }
            }
        }
        let (registry, conflicts) = Registry::assemble(functions);
        for c in conflicts {
            tracing::error!(function = %c.function, "not served: {c}");
        }
        self.live.store(registry);
        *synced = complete.then_some(snapshot.generation);
        self.published(*synced);
        complete
    }

    fn failing_set(&self) -> std::sync::MutexGuard<'_, HashSet<(String, u32)>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds a function from a catalog record: the module from this process or the compile
    /// cache if seen before, else fetched from the catalog and compiled.
    pub(super) async fn load(&self, record: &Version) -> Result<Arc<Function>, String> {
        let label = PathBuf::from(format!("{} v{}", record.name, record.version));
        let spec =
            manifest::parse_manifest(&record.manifest, &label, WasmSource::Known, &env_lookup)
                .map_err(|e| ManifestErrors(e).to_string())?;
        let module = match self.runtime.prepare_known(&record.module_hash) {
            Some(m) => m.map_err(|e| e.to_string())?,
            None => {
                let wasm = self
                    .store
                    .module(&record.module_hash)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let runtime = self.runtime.clone();
                tokio::task::spawn_blocking(move || runtime.prepare(&wasm))
                    .await
                    .map_err(|e| format!("the compile task failed: {e}"))?
                    .map_err(|e| e.to_string())?
            }
        };
        self.telemetry.compiled(&module);
        let spec = self.with_pools(spec)?;
        Ok(Function::new(spec, module, record.clone(), &self.telemetry))
    }
}
