//! Validation: a manifest's text to a [`FunctionSpec`], or every problem it has.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::database::DatabaseUrl;
use super::error::ManifestError;
use super::raw::{RawLimits, RawManifest};
use super::route::RoutePattern;
use super::schedule::ScheduleSpec;
use super::spec::{
    FunctionSpec, HttpTriggerSpec, Limits, MAX_CONCURRENCY, MAX_DB_SESSIONS, MAX_LOG_KB,
    MAX_LOOKUPS, MAX_MEMORY_MB, MAX_SOCKETS, MAX_TIMEOUT_MS,
};
use crate::runtime::{Endpoint, NetPolicy};

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
        ..NetPolicy::default()
    };
    let mut databases = Vec::new();
    if raw.network.pool != Some(false) {
        for (i, entry) in raw.network.allow.iter().enumerate() {
            let Ok(expanded) = expand_vars(entry, lookup) else {
                continue; // reported above
            };
            match DatabaseUrl::parse(&expanded) {
                Some(Ok(db)) => databases.push(db),
                Some(Err(msg)) => errors.push(err(&format!("network.allow[{i}]"), msg)),
                None => {}
            }
        }
    }

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
            databases,
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
    let counts: [(&str, Option<i64>, u32, &str, &mut u32); 6] = [
        (
            "limits.max_concurrency",
            raw.max_concurrency,
            MAX_CONCURRENCY,
            "instances",
            &mut limits.max_concurrency,
        ),
        (
            "limits.max_sockets",
            raw.max_sockets,
            MAX_SOCKETS,
            "sockets",
            &mut limits.max_sockets,
        ),
        (
            "limits.max_db_sessions",
            raw.max_db_sessions,
            MAX_DB_SESSIONS,
            "sessions",
            &mut limits.max_db_sessions,
        ),
        (
            "limits.max_connections",
            raw.max_connections,
            MAX_SOCKETS,
            "connections",
            &mut limits.max_connections,
        ),
        (
            "limits.max_lookups",
            raw.max_lookups,
            MAX_LOOKUPS,
            "look-ups",
            &mut limits.max_lookups,
        ),
        (
            "limits.max_log_kb",
            raw.max_log_kb,
            MAX_LOG_KB,
            "KiB",
            &mut limits.max_log_kb,
        ),
    ];
    for (field, value, max, unit, into) in counts {
        if let Some(n) = check(field, value, 1, i64::from(max), unit) {
            *into = n as u32;
        }
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
            max_sockets: None,
            max_db_sessions: None,
            max_connections: Some(0),
            max_lookups: None,
            max_log_kb: Some(100_000),
        };
        let l = parse_limits(&raw, &mut |f, m| errs.push(format!("{f}: {m}")));
        assert_eq!(l.timeout, Duration::from_millis(5));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("limits.memory_mb: 0 is out of range"));
        assert!(errs[1].starts_with("limits.max_concurrency"));
        assert!(errs[2].starts_with("limits.max_connections: 0 is out of range"));
        assert!(errs[3].starts_with("limits.max_log_kb: 100000 is out of range"));
    }
}
