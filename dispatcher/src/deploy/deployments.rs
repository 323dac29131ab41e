//! Deploys on a running platform: validate, compile, record a version in the catalog, swap.
//!
//! Every change (a deploy from the admin API, the manifests folder at start-up or `--watch`,
//! a rollback, a removal) goes the same way: everything expensive (parsing, compiling,
//! storing the module) happens first, then the catalog lock is taken, this replica catches up
//! with the catalog, the new registry is built and checked for route conflicts, the version
//! is committed, and only then is the registry swapped. A refused change touches nothing.
//! Other replicas see the new generation within [`SYNC_EVERY`] and load what changed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::Mutex;

use super::error::DeployError;
use super::registry::{Live, Registry};
use crate::api::{Action, Report, Version};
use crate::dbpool::Pools;
use crate::function::Function;
use crate::manifest::{self, FunctionSpec, ManifestError, ManifestErrors, WasmSource};
use crate::runtime::{Origin, Runtime};
use crate::store::{NewVersion, Store};
use crate::telemetry::Telemetry;

/// A deploy request: a manifest's text and its module.
pub struct Upload {
    pub manifest: String,
    /// Names the manifest in errors (its file name).
    pub label: PathBuf,
    pub wasm: Vec<u8>,
    /// Where it came from, for the history.
    pub source: String,
    pub by: String,
}

/// A spec ready to be committed: parsed, compiled, its module stored.
struct Candidate {
    function: Arc<Function>,
    /// Until it is stored in the catalog.
    wasm: Vec<u8>,
}

/// The deployed set of one replica, and the only way to change it.
pub struct Deployments {
    pub(super) runtime: Runtime,
    /// The database session pools that functions' `mysql://` endpoints are served from.
    pub(super) pools: Arc<Pools>,
    pub(super) store: Arc<Store>,
    pub(super) live: Arc<Live>,
    /// Deploy, compile and catalog metrics; handed to every function built here.
    pub(super) telemetry: Arc<Telemetry>,
    /// Orders this process's changes, and holds the catalog generation `live` reflects
    /// (`None`: not reached yet, or something failed to load).
    pub(super) synced: Mutex<Option<u64>>,
    /// Versions that failed to load here, so each failure is logged once.
    pub(super) failing: std::sync::Mutex<HashSet<(String, u32)>>,
}

/// How many modules compile at once: one per core (each compile is parallel inside too, so
/// this mostly overlaps a module's serial phases with another's).
pub(super) fn compile_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// `${VAR}` in manifests reads this process's environment: each replica expands its own.
pub(super) fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl Deployments {
    /// The deployed set of what the catalog holds now.
    pub async fn start(
        runtime: Runtime,
        store: Arc<Store>,
        pools: Arc<Pools>,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Arc<Deployments>> {
        let deployments = Arc::new(Deployments {
            runtime,
            pools,
            store,
            telemetry,
            live: Arc::new(Live::new(Registry::default())),
            synced: Mutex::new(None),
            failing: std::sync::Mutex::default(),
        });
        deployments.sync().await?;
        Ok(deployments)
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Updates the metrics of what this replica serves, after `live` changed.
    pub(super) fn published(&self, synced: Option<u64>) {
        let m = &self.telemetry.metrics;
        m.functions.set(self.live.peek().functions.len() as i64);
        if let Some(generation) = synced {
            m.applied_generation.set(generation as i64);
            if m.catalog_generation.get() < generation as i64 {
                m.catalog_generation.set(generation as i64);
            }
        }
    }

    /// Counts the changes a deploy, rollback or removal made.
    fn counted(&self, reports: &[Report]) {
        for r in reports {
            let labels = crate::telemetry::ActionLabels {
                action: r.action.as_str(),
            };
            self.telemetry.metrics.deploys.get_or_create(&labels).inc();
        }
    }

    /// Modules still serving from baseline code while Cranelift compiles them.
    pub fn optimizing(&self) -> usize {
        self.runtime.optimizing()
    }

    /// Deploys one uploaded manifest and module.
    pub async fn deploy(&self, up: Upload) -> Result<Report, DeployError> {
        let spec = manifest::parse_manifest(
            &up.manifest,
            &up.label,
            WasmSource::Given(up.wasm),
            &env_lookup,
        )
        .map_err(|e| DeployError::Invalid(ManifestErrors(e)))?;
        let mut reports = self.deploy_specs(vec![(spec, up.source)], &up.by).await?;
        Ok(reports.remove(0))
    }

    /// Deploys specs (with their sources) as one change: all of them or none. A spec equal
    /// to what is deployed (same manifest text, same module) is a no-op.
    pub async fn deploy_specs(
        &self,
        specs: Vec<(FunctionSpec, String)>,
        by: &str,
    ) -> Result<Vec<Report>, DeployError> {
        // Compile and store first, outside the lock; a few modules at a time (the start-up
        // folder is a dozen).
        let mut errors = Vec::new();
        let mut candidates = Vec::new();
        let hold = self.runtime.hold_background();
        // The largest first, so that no core idles at the end while one big module compiles.
        let mut specs: Vec<_> = specs.into_iter().enumerate().collect();
        specs.sort_by_key(|(_, (spec, _))| std::cmp::Reverse(spec.wasm.len()));
        let mut compiled: Vec<_> =
            futures_util::stream::iter(specs)
                .map(|(i, (spec, source))| async move {
                    (i, self.stored_candidate(spec, source, by).await)
                })
                .buffer_unordered(compile_parallelism())
                .collect()
                .await;
        drop(hold);
        compiled.sort_by_key(|(i, _)| *i);
        for (_, result) in compiled {
            match result {
                Ok(c) => candidates.push(c),
                Err(DeployError::Invalid(mut e)) => errors.append(&mut e.0),
                Err(e) => return Err(e),
            }
        }
        if !errors.is_empty() {
            return Err(DeployError::Invalid(ManifestErrors(errors)));
        }

        let mut synced = self.synced.lock().await;
        let mut tx = self.store.begin_change().await?;
        let snapshot = tx.snapshot().await?;
        let complete = self.apply(&mut synced, snapshot).await;
        let mut next: Option<Registry> = None;
        let mut reports = Vec::new();
        let mut conflicts = Vec::new();
        for c in candidates {
            let live = self.live.load();
            let base = next.as_ref().unwrap_or(live.as_ref());
            if let Some(cur) = base.functions.get(&c.function.spec.name) {
                if cur.deployed.manifest == c.function.deployed.manifest
                    && cur.deployed.module_hash == c.function.deployed.module_hash
                {
                    reports.push(Report {
                        name: cur.spec.name.clone(),
                        version: cur.deployed.version,
                        action: Action::Unchanged,
                        module_hash: cur.deployed.module_hash.clone(),
                        module_size: cur.deployed.module_size,
                        compiled: None,
                        load_ms: 0,
                    });
                    continue;
                }
            }
            let d = &c.function.deployed;
            let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
            let version = tx
                .add_version(&NewVersion {
                    name: &d.name,
                    manifest: &d.manifest,
                    module_hash: &d.module_hash,
                    module_size: d.module_size,
                    source: &d.source,
                    deployed_by: &d.deployed_by,
                    deployed_at: now,
                })
                .await?;
            let mut deployed = d.clone();
            deployed.version = version;
            deployed.deployed_at = crate::store::text(now.naive_utc());
            let function = Function::new(
                c.function.spec.clone(),
                c.function.module.clone(),
                deployed,
                &self.telemetry,
            );
            match base.with(function) {
                Ok(r) => next = Some(r),
                Err(conflict) => {
                    let f = &c.function.spec;
                    let e = ManifestError::new(
                        &f.manifest_path,
                        "trigger.http.path",
                        format!(
                            "route {} belongs to function `{}`: expected a path (or methods) that no other function serves",
                            conflict.route, conflict.owner
                        ),
                    );
                    errors.push(e);
                    conflicts.push(conflict);
                    continue;
                }
            }
            reports.push(Report {
                name: c.function.spec.name.clone(),
                version,
                action: Action::Deployed,
                module_hash: c.function.deployed.module_hash.clone(),
                module_size: c.function.deployed.module_size,
                compiled: Some(c.function.module.origin == Origin::Compiled),
                load_ms: c.function.module.load_time.as_millis() as u64,
            });
        }
        if !errors.is_empty() {
            // The transaction is dropped: nothing was written.
            let conflict = conflicts.remove(0);
            return Err(DeployError::Conflict {
                conflict,
                errors: ManifestErrors(errors),
            });
        }
        if let Some(next) = next {
            let generation = tx.commit().await?;
            self.live.store(next);
            *synced = complete.then_some(generation);
            self.published(*synced);
            for r in reports.iter().filter(|r| r.action == Action::Deployed) {
                tracing::info!(
                    function = %r.name,
                    version = r.version,
                    hash = &r.module_hash[..12],
                    compiled = r.compiled,
                    load_ms = r.load_ms,
                    "deployed"
                );
            }
        }
        self.counted(&reports);
        Ok(reports)
    }

    /// [`Self::candidate`], then the module's bytes stored in the catalog (content-addressed,
    /// so a change refused later leaves no version, only bytes a later deploy may reuse),
    /// while the other modules of the change still compile.
    async fn stored_candidate(
        &self,
        spec: FunctionSpec,
        source: String,
        by: &str,
    ) -> Result<Candidate, DeployError> {
        let mut c = self.candidate(spec, source, by).await?;
        let wasm = std::mem::take(&mut c.wasm);
        self.store
            .put_module(&c.function.deployed.module_hash, &wasm)
            .await?;
        Ok(c)
    }

    /// Compiles the spec's module (or finds it compiled) and builds the function; its
    /// version is filled in at commit.
    async fn candidate(
        &self,
        mut spec: FunctionSpec,
        source: String,
        by: &str,
    ) -> Result<Candidate, DeployError> {
        let wasm = std::mem::take(&mut spec.wasm);
        let runtime = self.runtime.clone();
        let (prepared, wasm) = tokio::task::spawn_blocking(move || {
            let r = runtime.prepare(&wasm);
            (r, wasm)
        })
        .await
        .map_err(|e| DeployError::Store(anyhow::anyhow!("the compile task failed: {e}")))?;
        let module = prepared.map_err(|e| {
            DeployError::Invalid(ManifestErrors(vec![ManifestError::new(
                &spec.manifest_path,
                "wasm",
                format!("{}: {e}", spec.wasm_path.display()),
            )]))
        })?;
        let deployed = Version {
            name: spec.name.clone(),
            version: 0,
            manifest: spec.source.clone(),
            module_hash: module.hash.clone(),
            module_size: wasm.len() as u64,
            source,
            deployed_by: by.to_string(),
            deployed_at: String::new(),
        };
        let spec = self
            .with_pools(spec)
            .map_err(|e| DeployError::Store(anyhow::anyhow!("{e}")))?;
        self.telemetry.compiled(&module);
        Ok(Candidate {
            function: Function::new(spec, module, deployed, &self.telemetry),
            wasm,
        })
    }

    /// The spec with its pooled databases served by the host's session pools.
    pub(super) fn with_pools(&self, mut spec: FunctionSpec) -> Result<FunctionSpec, String> {
        if !spec.databases.is_empty() {
            let policy = self
                .pools
                .policy(&spec.network, &spec.databases)
                .map_err(|e| format!("cannot open a database session pool: {e}"))?;
            spec.network = Arc::new(policy);
        }
        Ok(spec)
    }

    /// Makes an earlier version current again: the one before the current version, or `to`.
    /// A removed function comes back at its latest version (or `to`).
    pub async fn rollback(&self, name: &str, to: Option<u32>) -> Result<Report, DeployError> {
        let mut synced = self.synced.lock().await;
        let mut tx = self.store.begin_change().await?;
        let snapshot = tx.snapshot().await?;
        let complete = self.apply(&mut synced, snapshot).await;
        let history = tx.history(name).await?;
        if history.versions.is_empty() {
            return Err(DeployError::NotFound(format!(
                "no function named `{name}` was ever deployed"
            )));
        }
        let target = match (to, history.current) {
            (Some(v), _) => history
                .versions
                .iter()
                .find(|r| r.version == v)
                .ok_or_else(|| {
                    DeployError::NotFound(format!(
                        "function `{name}` has no version {v}: expected 1 to {}",
                        history.versions.len()
                    ))
                })?,
            (None, Some(cur)) => history
                .versions
                .iter()
                .rev()
                .find(|r| r.version < cur)
                .ok_or_else(|| {
                    DeployError::NoVersion(format!(
                        "function `{name}` is at version {cur}: there is no earlier version to roll back to"
                    ))
                })?,
            (None, None) => history.versions.last().expect("not empty"),
        };
        let started = Instant::now();
        let function = self.load(target).await.map_err(|e| {
            DeployError::Invalid(ManifestErrors(vec![ManifestError::new(
                Path::new(&target.source),
                "wasm",
                e,
            )]))
        })?;
        let report = Report {
            name: name.to_string(),
            version: target.version,
            action: Action::RolledBack,
            module_hash: target.module_hash.clone(),
            module_size: target.module_size,
            compiled: Some(function.module.origin == Origin::Compiled),
            load_ms: started.elapsed().as_millis() as u64,
        };
        if history.current == Some(target.version) {
            return Ok(Report {
                action: Action::Unchanged,
                ..report
            });
        }
        let next = self
            .live
            .load()
            .with(function)
            .map_err(|conflict| DeployError::Conflict {
                errors: ManifestErrors(vec![ManifestError::new(
                    Path::new(&target.source),
                    "trigger.http.path",
                    conflict.to_string(),
                )]),
                conflict,
            })?;
        tx.set_current(name, Some(target.version)).await?;
        let generation = tx.commit().await?;
        self.live.store(next);
        *synced = complete.then_some(generation);
        self.published(*synced);
        self.counted(std::slice::from_ref(&report));
        tracing::info!(function = name, version = target.version, "rolled back");
        Ok(report)
    }

    /// Stops serving a function: its route is 404 for new requests; requests in flight
    /// finish on the version they started with. Its history stays.
    pub async fn remove(&self, name: &str) -> Result<Report, DeployError> {
        let mut synced = self.synced.lock().await;
        let mut tx = self.store.begin_change().await?;
        let snapshot = tx.snapshot().await?;
        let current = snapshot.current.iter().find(|r| r.name == name).cloned();
        let complete = self.apply(&mut synced, snapshot).await;
        let Some(current) = current else {
            return Err(DeployError::NotFound(format!(
                "no function named `{name}` is deployed"
            )));
        };
        tx.set_current(name, None).await?;
        let generation = tx.commit().await?;
        self.live.store(self.live.load().without(name));
        *synced = complete.then_some(generation);
        self.published(*synced);
        tracing::info!(function = name, version = current.version, "removed");
        let report = Report {
            name: name.to_string(),
            version: current.version,
            action: Action::Removed,
            module_hash: current.module_hash,
            module_size: current.module_size,
            compiled: None,
            load_ms: 0,
        };
        self.counted(std::slice::from_ref(&report));
        Ok(report)
    }
}
