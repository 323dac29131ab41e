//! Manifest errors: each names the file, the field and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: `{field}`: {message}", file.display())]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// The field at fault (dotted TOML path), or `(file)` for the file as a whole.
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ManifestError {
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError {
            file: file.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in a folder of manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} manifest error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}
