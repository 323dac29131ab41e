//! The read side of the deployed set: what `list` and `show` answer, and the run history of
//! a function's schedules.

use super::deployments::Deployments;
use super::error::DeployError;
use crate::api::{Details, RunRecord, Summary};
use crate::function::Function;

/// One function as `list` shows it.
fn summary(f: &Function) -> Summary {
    Summary {
        name: f.spec.name.clone(),
        version: f.deployed.version,
        route: f.route_text(),
        schedules: f
            .spec
            .schedules
            .iter()
            .map(|s| format!("{} \"{}\" {}", s.name, s.expression, s.timezone))
            .collect(),
        deployed_at: f.deployed.deployed_at.clone(),
        deployed_by: f.deployed.deployed_by.clone(),
        source: f.deployed.source.clone(),
        module_hash: f.deployed.module_hash.clone(),
        module_size: f.deployed.module_size,
    }
}

impl Deployments {
    /// The recent attempts of `function`'s schedules, newest first.
    pub async fn runs(&self, function: &str, limit: u64) -> anyhow::Result<Vec<RunRecord>> {
        self.store.runs(Some(function), limit).await
    }

    /// Every function served now.
    pub fn list(&self) -> Vec<Summary> {
        self.live
            .peek()
            .functions
            .values()
            .map(|f| summary(f))
            .collect()
    }

    /// One function with its history.
    pub async fn show(&self, name: &str) -> Result<Details, DeployError> {
        let history = self.store.history(name).await?;
        if history.versions.is_empty() {
            return Err(DeployError::NotFound(format!(
                "no function named `{name}` was ever deployed"
            )));
        }
        Ok(Details {
            current: self.live.peek().functions.get(name).map(|f| summary(f)),
            current_version: history.current,
            versions: history.versions,
        })
    }
}
