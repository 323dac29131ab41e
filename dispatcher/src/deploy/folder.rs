//! A folder of manifests deployed as one change: `serve --manifests` at start-up and `check`.

use std::path::Path;
use std::sync::Arc;

use super::deployments::{env_lookup, Deployments};
use super::error::DeployError;
use crate::api::Action;
use crate::manifest::{self, FunctionSpec, ManifestErrors};
use crate::store::Store;

impl Deployments {
    /// Deploys every manifest of a folder as one change, or reports every problem (the
    /// manifests', and the valid manifests' modules and routes) and changes nothing.
    pub async fn deploy_folder(&self, dir: &Path) -> anyhow::Result<()> {
        let (specs, mut errors) = manifest::load_dir(dir, &env_lookup);
        if !errors.is_empty() {
            // Report the valid manifests' own problems too (modules, routes), without deploying.
            let scratch = Deployments::start(
                self.runtime.clone(),
                Arc::new(Store::memory()),
                self.pools.clone(),
                self.telemetry.clone(),
            )
            .await?;
            if let Err(e) = scratch.deploy_specs(with_source(specs), "check").await {
                errors.extend(refused(e)?.0);
            }
            return Err(ManifestErrors(errors).into());
        }
        match self.deploy_specs(with_source(specs), "manifests").await {
            Ok(reports) => {
                for r in reports.iter().filter(|r| r.action == Action::Unchanged) {
                    tracing::info!(function = %r.name, version = r.version, "unchanged");
                }
                Ok(())
            }
            Err(e) => Err(refused(e)?.into()),
        }
    }
}

/// Each spec with its manifest's path, which the history records as its source.
fn with_source(specs: Vec<FunctionSpec>) -> Vec<(FunctionSpec, String)> {
    specs
        .into_iter()
        .map(|s| {
            let source = s.manifest_path.display().to_string();
            (s, source)
        })
        .collect()
}

/// The manifest errors of a refused deploy; other failures pass through.
fn refused(e: DeployError) -> anyhow::Result<ManifestErrors> {
    match e {
        DeployError::Invalid(errors) | DeployError::Conflict { errors, .. } => Ok(errors),
        other => Err(other.into()),
    }
}
