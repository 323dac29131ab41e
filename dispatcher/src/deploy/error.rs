//! Why a change to the deployed set was refused.

use crate::manifest::ManifestErrors;

use super::registry::RouteConflict;

/// Why a change was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A manifest or module that is not valid.
    #[error("{0}")]
    Invalid(ManifestErrors),
    /// A route another function serves.
    #[error("{conflict}")]
    Conflict {
        conflict: RouteConflict,
        errors: ManifestErrors,
    },
    /// No such function (or version).
    #[error("{0}")]
    NotFound(String),
    /// A rollback with nothing to roll back to.
    #[error("{0}")]
    NoVersion(String),
    /// The platform database failed.
    #[error("the platform database failed: {0:#}")]
    Store(anyhow::Error),
}

impl From<anyhow::Error> for DeployError {
    fn from(e: anyhow::Error) -> Self {
        DeployError::Store(e)
    }
}
