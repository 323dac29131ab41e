//! Manifests: one TOML file per function, parsed (`Raw*`) and validated into [`FunctionSpec`]s.
//!
//! ```toml
//! name = "echo"
//! wasm = "../target/wasm32-wasip1/release/echo.wasm"
//! [trigger.http]
//! path = "/echo"
//! methods = ["POST"]
//! [env]
//! GREETING = "hi"
//! DATABASE_URL = "${DATABASE_URL}"
//! [limits]
//! memory_mb = 128
//! timeout_ms = 10000
//! max_concurrency = 64
//! ```
//!
//! Every manifest in a folder is validated before anything is served, and all the errors are
//! reported together. Each error names the file, the field and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::runtime::{Endpoint, NetPolicy};
use crate::route::RoutePattern;
use crate::schedule::{RawSchedule, ScheduleSpec};

/// Default linear-memory cap for a function, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Largest memory cap a manifest may ask for, in MiB: the runtime's slot size.
pub use crate::runtime::MAX_MEMORY_MB;
/// Default wall-clock limit for one invocation.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Largest wall-clock limit a manifest may ask for (15 minutes, as Lambda).
pub const MAX_TIMEOUT_MS: u64 = 900_000;
/// Default number of instances of one function in flight at once.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
/// Largest per-function concurrency a manifest may ask for.
pub const MAX_CONCURRENCY: u32 = 1000;

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    /// `name = "echo"`: unique across the platform, `[a-z0-9_-]+`.
    name: String,
    /// `wasm = "../target/wasm32-wasip1/release/echo.wasm"`: relative to the manifest, or absolute.
    wasm: PathBuf,
    /// `[trigger.http]` (and, later, other trigger kinds).
    #[serde(default)]
    trigger: RawTriggers,
    /// `[env]`: variables given to every invocation; `${VAR}` reads the dispatcher's environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `[limits]`: memory, time and concurrency caps.
    #[serde(default)]
    limits: RawLimits,
    /// `[network]`: where the function may connect and listen.
    #[serde(default)]
    network: RawNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    /// `allow = ["db:3306", "127.0.0.1:*"]`: outbound connections.
    #[serde(default)]
    allow: Vec<String>,
    /// `listen = ["127.0.0.1:*"]`: addresses it may bind.
    #[serde(default)]
    listen: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    /// `[trigger.http]`: one route.
    http: Option<RawHttpTrigger>,
    /// `[[trigger.schedule]]`: any number of cron schedules.
    #[serde(default)]
    schedule: Vec<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    /// `path = "/orders/:id"`: exact, with `:params`, or ending in a `/...` wildcard.
    path: String,
    /// `methods = ["GET", "POST"]`: absent means every method.
    methods: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// `memory_mb = 128`
    memory_mb: Option<i64>,
    /// `timeout_ms = 10000`
    timeout_ms: Option<i64>,
    /// `max_concurrency = 64`
    max_concurrency: Option<i64>,
}

/// A validated function, ready to be compiled and served.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Unique function name, used in logs, errors and metrics.
    pub name: String,
    /// The manifest this came from, for error messages.
    pub manifest_path: PathBuf,
    /// Absolute-or-resolved path of the `.wasm` file.
    pub wasm_path: PathBuf,
    /// The module's bytes, read once at load time.
    pub wasm: Vec<u8>,
    /// The manifest's text as written, `${VAR}` unexpanded: what a deploy stores, so that
    /// each replica expands variables from its own environment.
    pub source: String,
    /// The HTTP route, if the function has one.
    pub http: Option<HttpTriggerSpec>,
    /// Cron schedules, if any.
    pub schedules: Vec<ScheduleSpec>,
    /// `[env]` with `${VAR}` already expanded, in a stable order.
    pub env: Vec<(String, String)>,
    /// Resource caps for each invocation.
    pub limits: Limits,
    /// Where the function may connect and listen.
    pub network: Arc<NetPolicy>,
}

/// An HTTP route bound to a function.
#[derive(Debug, Clone)]
pub struct HttpTriggerSpec {
    /// The parsed path pattern.
    pub pattern: RoutePattern,
    /// Allowed methods, upper case; `None` means every method.
    pub methods: Option<Vec<http::Method>>,
}

/// Per-invocation resource caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit for the whole invocation.
    pub timeout: Duration,
    /// Instances of this function in flight at once.
    pub max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_MB << 20,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

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

/// Where a manifest's module comes from.
pub enum WasmSource<'a> {
    /// Read the `wasm` path from disk, relative to this folder.
    Relative(&'a Path),
    /// The bytes came with the manifest (a deploy); the `wasm` path only names them.
    Given(Vec<u8>),
    /// The module is already known (a catalog entry whose module is compiled): the bytes
    /// are not needed, and `FunctionSpec::wasm` stays empty.
    Known,
}

/// Validates a manifest's text. `file` names it in errors.
pub fn parse_manifest(
    text: &str,
    file: &Path,
    wasm: WasmSource<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<FunctionSpec, Vec<ManifestError>> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
            .unwrap_or_default();
        let msg = e.message().trim().replace('\n', " ");
        vec![ManifestError::new(
            file,
            "(file)",
            format!("invalid manifest: {msg}{line}"),
        )]
    })?;
    let mut spec = parse_raw(raw, file, wasm, lookup)?;
    spec.source = text.to_string();
    Ok(spec)
}

/// Validates a parsed manifest.
fn parse_raw(
    raw: RawManifest,
    file: &Path,
    source: WasmSource<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<FunctionSpec, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let err = |field: &str, msg: String| ManifestError::new(file, field, msg);

    if !valid_name(&raw.name) {
        errors.push(err(
            "name",
            format!(
                "`{}` is not a valid function name: expected 1 to 64 characters of [a-z0-9_-]",
                raw.name
            ),
        ));
    }

    let known = matches!(source, WasmSource::Known);
    let (wasm_path, read) = match source {
        WasmSource::Relative(base) if !raw.wasm.is_absolute() => {
            let path = base.join(&raw.wasm);
            let read = std::fs::read(&path);
            (path, read)
        }
        WasmSource::Relative(_) => (raw.wasm.clone(), std::fs::read(&raw.wasm)),
        WasmSource::Given(bytes) => (raw.wasm.clone(), Ok(bytes)),
        WasmSource::Known => (raw.wasm.clone(), Ok(Vec::new())),
    };
    let wasm = match read {
        Ok(bytes) if known => bytes,
        Ok(bytes) if bytes.starts_with(b"\0asm") => bytes,
        Ok(_) => {
            errors.push(err(
                "wasm",
                format!(
                    "{} is not a WebAssembly module: expected a binary `.wasm` file (it must start with \\0asm)",
                    wasm_path.display()
                ),
            ));
            Vec::new()
        }
        Err(e) => {
            errors.push(err(
                "wasm",
                format!("cannot read {}: {e}", wasm_path.display()),
            ));
            Vec::new()
        }
    };

    let http = raw.trigger.http.as_ref().and_then(|h| {
        let pattern = match RoutePattern::parse(&h.path) {
            Ok(p) => Some(p),
            Err(msg) => {
                errors.push(err("trigger.http.path", msg));
                None
            }
        };
        let methods = match &h.methods {
            None => Some(None),
            Some(list) if list.is_empty() => {
                errors.push(err(
                    "trigger.http.methods",
                    "the list is empty: expected HTTP methods such as [\"GET\", \"POST\"], or no `methods` for all".into(),
                ));
                None
            }
            Some(list) => {
                let mut out = Vec::new();
                for m in list {
                    let upper = m.to_ascii_uppercase();
                    match http::Method::from_bytes(upper.as_bytes()) {
                        Ok(method) if !upper.is_empty() => out.push(method),
                        _ => errors.push(err(
                            "trigger.http.methods",
                            format!("`{m}` is not an HTTP method: expected a token such as GET or POST"),
                        )),
                    }
                }
                Some(Some(out))
            }
        };
        Some(HttpTriggerSpec {
            pattern: pattern?,
            methods: methods?,
        })
    });
    let mut schedules: Vec<ScheduleSpec> = Vec::new();
    for (i, rs) in raw.trigger.schedule.iter().enumerate() {
        match ScheduleSpec::parse(rs, i) {
            Ok(spec) if schedules.iter().any(|s| s.name == spec.name) => errors.push(err(
                &format!("trigger.schedule[{i}].name"),
                format!("`{}` is already the name of another schedule of this function: expected a unique name", spec.name),
            )),
            Ok(spec) => schedules.push(spec),
            Err(errs) => errors.extend(errs.into_iter().map(|(f, m)| err(&f, m))),
        }
    }
    if raw.trigger.http.is_none() && raw.trigger.schedule.is_empty() {
        errors.push(err(
            "trigger",
            "the function has no trigger: expected a `[trigger.http]` section or `[[trigger.schedule]]` entries".into(),
        ));
    }

    let mut env = Vec::new();
    for (key, value) in &raw.env {
        if !valid_env_key(key) {
            errors.push(err(
                &format!("env.{key}"),
                "not a valid variable name: expected letters, digits and `_`, not starting with a digit".into(),
            ));
            continue;
        }
        match expand_vars(value, lookup) {
            Ok(v) => env.push((key.clone(), v)),
            Err(msg) => errors.push(err(&format!("env.{key}"), msg)),
        }
    }

    let limits = parse_limits(&raw.limits, &mut |field, msg| errors.push(err(field, msg)));

    let mut endpoints = |list: &[String], field: &str| -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let field = format!("network.{field}[{i}]");
            match expand_vars(entry, lookup).and_then(|e| Endpoint::parse(&e)) {
                Ok(e) => out.push(e),
                Err(msg) => errors.push(err(&field, msg)),
            }
        }
        out
    };
    let network = NetPolicy {
        allow: endpoints(&raw.network.allow, "allow"),
        listen: endpoints(&raw.network.listen, "listen"),
    };

    if errors.is_empty() {
        Ok(FunctionSpec {
            name: raw.name,
            manifest_path: file.to_path_buf(),
            wasm_path,
            wasm,
            source: String::new(),
            http,
            schedules,
            env,
            limits,
            network: Arc::new(network),
        })
    } else {
        Err(errors)
    }
}

fn parse_limits(raw: &RawLimits, err: &mut dyn FnMut(&str, String)) -> Limits {
    let mut limits = Limits::default();
    let mut check = |field: &str, value: Option<i64>, min: i64, max: i64, unit: &str| {
        let v = value?;
        if v < min || v > max {
            err(
                field,
                format!("{v} is out of range: expected {min} to {max} {unit}"),
            );
            None
        } else {
            Some(v as u64)
        }
    };
    if let Some(mb) = check(
        "limits.memory_mb",
        raw.memory_mb,
        1,
        MAX_MEMORY_MB as i64,
        "MiB",
    ) {
        limits.memory_bytes = mb << 20;
    }
    if let Some(ms) = check(
        "limits.timeout_ms",
        raw.timeout_ms,
        1,
        MAX_TIMEOUT_MS as i64,
        "ms",
    ) {
        limits.timeout = Duration::from_millis(ms);
    }
    if let Some(n) = check(
        "limits.max_concurrency",
        raw.max_concurrency,
        1,
        MAX_CONCURRENCY as i64,
        "instances",
    ) {
        limits.max_concurrency = n as u32;
    }
    limits
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replaces each `${VAR}` in `value` with `lookup(VAR)`. `$$` is a literal `$`.
pub fn expand_vars(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{value}`: expected `${{NAME}}`"))?;
            let var = &body[..end];
            if !valid_env_key(var) {
                return Err(format!(
                    "`${{{var}}}` is not a valid variable reference: expected `${{NAME}}` with letters, digits and `_`"
                ));
            }
            let v = lookup(var).ok_or_else(|| {
                format!("`${{{var}}}` is not set in the dispatcher's environment: expected `{var}` to be set when the dispatcher starts")
            })?;
            out.push_str(&v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(k: &str) -> Option<String> {
        (k == "DB").then(|| "mysql://x".to_string())
    }

    #[test]
    fn expands_variables() {
        assert_eq!(expand_vars("a${DB}b", &lookup).unwrap(), "amysql://xb");
        assert_eq!(expand_vars("$$1 $x", &lookup).unwrap(), "$1 $x");
        assert!(expand_vars("${NOPE}", &lookup)
            .unwrap_err()
            .contains("`${NOPE}` is not set"));
        assert!(expand_vars("${DB", &lookup)
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn names() {
        assert!(valid_name("create_order-2"));
        assert!(!valid_name("Echo"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn limits_ranges() {
        let mut errs = Vec::new();
        let raw = RawLimits {
            memory_mb: Some(0),
            timeout_ms: Some(5),
            max_concurrency: Some(100_000),
        };
        let l = parse_limits(&raw, &mut |f, m| errs.push(format!("{f}: {m}")));
        assert_eq!(l.timeout, Duration::from_millis(5));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("limits.memory_mb: 0 is out of range"));
        assert!(errs[1].starts_with("limits.max_concurrency"));
    }
}
