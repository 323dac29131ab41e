//! `serve --watch`: redeploys a manifest, or the `.wasm` it names, when it changes on disk.
//!
//! The folder is polled (a `stat` per file every [`POLL`]) rather than watched with inotify:
//! `cargo build` replaces modules by rename and hard link, editors save by rename, and a poll
//! sees all of these the same way. A change is deployed once it has held still for one poll,
//! so a module caught half-written is not compiled. A deploy that fails is logged and the
//! running version stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::deployments::Deployments;
use super::error::DeployError;
use crate::manifest;

/// How often the folder is looked at.
pub const POLL: Duration = Duration::from_millis(250);

/// What a manifest and its module look like on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    manifest: String,
    wasm: Option<(SystemTime, u64)>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let manifest = std::fs::read_to_string(path).ok()?;
    let wasm = toml::from_str::<toml::Value>(&manifest)
        .ok()
        .and_then(|v| v.get("wasm")?.as_str().map(PathBuf::from))
        .map(|w| path.parent().unwrap_or(Path::new(".")).join(w))
        .and_then(|w| std::fs::metadata(w).ok())
        .and_then(|m| Some((m.modified().ok()?, m.len())));
    Some(Fingerprint { manifest, wasm })
}

fn scan(dir: &Path) -> HashMap<PathBuf, Fingerprint> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| Some((p.clone(), fingerprint(&p)?)))
        .collect()
}

/// Watches `dir` until `shutdown`. What is on disk now counts as deployed already.
pub async fn run(deployments: Arc<Deployments>, dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    tracing::info!(folder = %dir.display(), "watching manifests and modules for changes");
    let mut deployed = scan(&dir);
    let mut last = deployed.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        let now = scan(&dir);
        for (path, print) in &now {
            let settled = last.get(path) == Some(print);
            if !settled || deployed.get(path) == Some(print) {
                continue;
            }
            deployed.insert(path.clone(), print.clone());
            redeploy(&deployments, path).await;
        }
        for path in deployed.keys().filter(|p| !now.contains_key(*p)) {
            tracing::warn!(manifest = %path.display(), "manifest removed from the folder; its function stays deployed (`dispatcher remove NAME` removes it)");
        }
        deployed.retain(|p, _| now.contains_key(p));
        last = now;
    }
}

async fn redeploy(deployments: &Deployments, path: &Path) {
    let spec = match manifest::load_file(path, &|k| std::env::var(k).ok()) {
        Ok(spec) => spec,
        Err(errors) => {
            tracing::error!(
                "not redeployed; the running version stays: {}",
                manifest::ManifestErrors(errors)
            );
            return;
        }
    };
    let source = path.display().to_string();
    match deployments
        .deploy_specs(vec![(spec, source)], "watch")
        .await
    {
        Ok(reports) => {
            for r in reports {
                tracing::info!(function = %r.name, version = r.version, action = r.action.as_str(), "watch");
            }
        }
        Err(DeployError::Invalid(e)) | Err(DeployError::Conflict { errors: e, .. }) => {
            tracing::error!("not redeployed; the running version stays: {e}")
        }
        Err(e) => tracing::error!("not redeployed; the running version stays: {e}"),
    }
}
