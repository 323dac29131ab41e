//! Manifests on disk: a folder of `*.toml` files, or one file.

use std::path::{Path, PathBuf};

use super::error::ManifestError;
use super::parse::{parse_manifest, WasmSource};
use super::spec::FunctionSpec;

/// Reads and validates every `*.toml` file in `dir` (not recursive), with `lookup` giving the
/// values for `${VAR}` references. Returns the valid specs and every error found, so that one
/// run reports all problems. A manifest whose name is already taken is left out. Route
/// conflicts are the registry's to find, as it binds routes.
pub fn load_dir(
    dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Vec<FunctionSpec>, Vec<ManifestError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let msg = format!("cannot read the manifests folder: {e}");
            return (Vec::new(), vec![ManifestError::new(dir, "(folder)", msg)]);
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        let msg = "no manifests found: expected one or more `*.toml` files";
        return (Vec::new(), vec![ManifestError::new(dir, "(folder)", msg)]);
    }

    let mut errors = Vec::new();
    let mut specs: Vec<FunctionSpec> = Vec::new();
    for file in &files {
        match load_file(file, lookup) {
            Ok(spec) => match specs.iter().find(|s| s.name == spec.name) {
                Some(first) => errors.push(ManifestError::new(
                    file,
                    "name",
                    format!(
                        "`{}` is already the name of the function in {}: expected a unique name",
                        spec.name,
                        first.manifest_path.display()
                    ),
                )),
                None => specs.push(spec),
            },
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    (specs, errors)
}

/// Reads and validates one manifest file; its `wasm` path is read from disk.
pub fn load_file(
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<FunctionSpec, Vec<ManifestError>> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![ManifestError::new(
            file,
            "(file)",
            format!("cannot read: {e}"),
        )]
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    parse_manifest(&text, file, WasmSource::Relative(base), lookup)
}
