//! The fuzz targets' entry points (`fuzz/`, `make fuzz`): each takes the fuzzer's bytes and
//! runs them through the real parser or host, as a client, a manifest or a guest would reach
//! it. None may panic, whatever the bytes; the unit test below replays every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through them.
//!
//! Not part of the API: it is public only so that the fuzz crate can link it.

mod guest;

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::manifest::{parse_manifest, Lookup, RoutePattern, RouteTable, WasmSource};

pub use guest::host_abi;

/// A target: the fuzzer's bytes in, a panic if they hurt the platform.
pub type Target = fn(&[u8]);

/// The targets, by the names `fuzz/fuzz_targets/` and the corpus folders use.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("route", route),
    ("schedule", schedule),
    ("cgi", cgi),
    ("multipart", multipart),
    ("host_abi", host_abi),
];

/// The smallest module header: the manifest's `wasm` bytes when they come with it (a deploy).
const WASM_HEADER: &[u8] = b"\0asm\x01\0\0\0";

/// The dispatcher's environment as a manifest's `${VAR}` sees it: two variables set.
fn lookup(name: &str) -> Option<String> {
    match name {
        "DATABASE_URL" => Some("mysql://root@127.0.0.1:3306/test".into()),
        "NOTIFY_URL" => Some("http://127.0.0.1:9000/events".into()),
        _ => None,
    }
}

/// A manifest's text, parsed and validated as a deploy and `dispatcher check` do it (the
/// module comes with the manifest, so no path is read from disk).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    if let Ok(spec) = parse_manifest(text, file, WasmSource::Given(WASM_HEADER.to_vec()), &lookup) {
        assert_eq!(spec.source, text, "the spec keeps the manifest's text");
        let now = fixed_time();
        for s in &spec.schedules {
            let _ = s.next_after(now);
        }
    }
}

/// Route patterns, one per line, bound in a table, and the last line as a request path
/// looked up for GET and POST (patterns on odd lines allow GET only).
pub fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or_default();
    let mut table = RouteTable::default();
    for (i, line) in lines.iter().enumerate().take(32) {
        let Ok(pattern) = RoutePattern::parse(line) else {
            continue;
        };
        assert_eq!(pattern.source(), *line);
        if let Some(m) = pattern.matches(path) {
            // The two halves of a match are the path, split.
            assert_eq!(format!("{}{}", m.script_name, m.raw_path_info), path);
        }
        let methods = (i % 2 == 1).then(|| vec![http::Method::GET]);
        let _ = table.insert(pattern, methods, i);
    }
    for method in [http::Method::GET, http::Method::POST] {
        if let Lookup::Found {
            pattern, matched, ..
        } = table.lookup(&method, path)
        {
            assert_eq!(pattern.matches(path).as_ref(), Some(&matched));
        }
    }
}

/// A schedule: the first line is the cron expression, the second (if not empty) its time
/// zone, the third (if a number) the UTC second to look from. It is read from a manifest's
/// `[[trigger.schedule]]`, and its next fire times and its catch-up fire are computed.
pub fn schedule(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let cron = lines.next().unwrap_or_default();
    let timezone = lines.next().filter(|t| !t.is_empty());
    // Between 1970 and 2200: the platform only ever asks about times near now.
    let now = lines
        .next()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|s| DateTime::from_timestamp(s.rem_euclid(7_258_118_400), 0))
        .unwrap_or_else(fixed_time);
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut toml = format!(
        "name = \"fuzz\"\nwasm = \"fuzz.wasm\"\n[[trigger.schedule]]\ncron = {}\n",
        quote(cron)
    );
    if let Some(tz) = timezone {
        toml.push_str(&format!("timezone = {}\n", quote(tz)));
    }
    let Ok(spec) = parse_manifest(
        &toml,
        Path::new("fuzz.toml"),
        WasmSource::Given(WASM_HEADER.to_vec()),
        &lookup,
    ) else {
        return;
    };
    for s in &spec.schedules {
        let next = s.next_after(now);
        if let Some(next) = next {
            assert!(next > now, "{next} is not after {now}");
        }
        let upcoming = s.upcoming(now, 5);
        assert!(upcoming.windows(2).all(|w| w[0] < w[1]), "{upcoming:?}");
        // An hour back, not the day the platform looks: the fuzzer's time is better spent on
        // more expressions than on stepping through 86400 fires of `* * * * * *`.
        if let Some(latest) = s.latest_before(now, chrono::TimeDelta::hours(1)) {
            assert!(latest <= now, "{latest} is after {now}");
        }
    }
}

/// A guest's stdout, read as a CGI answer.
pub fn cgi(data: &[u8]) {
    if let Ok(response) = crate::function::parse_output(data.to_vec()) {
        assert!(data.ends_with(&response.body));
    }
    let _ = crate::function::explicit_status(data);
}

/// A deploy's request: the first line is its `Content-Type`, the rest its body.
pub fn multipart(data: &[u8]) {
    use futures_util::FutureExt;

    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = http::HeaderValue::from_bytes(content_type).ok();
    let Ok(boundary) = crate::http::parse_boundary(content_type.as_ref()) else {
        return;
    };
    let body = bytes::Bytes::copy_from_slice(body);
    // The whole body is there: reading the form never waits.
    let form = crate::http::parse_form(body, boundary).now_or_never();
    assert!(form.is_some(), "reading a whole form waited");
}

/// 2026-03-29 00:30 UTC: an hour before Europe's clocks go forward.
fn fixed_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_774_744_200, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        out.retain(|p| p.is_file());
        out.sort();
        out
    }

    /// Every seed and every input that once crashed a target still runs through it.
    #[test]
    fn the_corpus_and_the_regressions_pass() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        for (name, target) in TARGETS {
            let seeds = files(&fuzz.join("corpus").join(name));
            assert!(
                seeds.len() >= 3,
                "fuzz/corpus/{name} has {} files",
                seeds.len()
            );
            for file in seeds
                .iter()
                .chain(&files(&fuzz.join("regressions").join(name)))
            {
                let data = std::fs::read(file).unwrap();
                let run = std::panic::catch_unwind(|| target(&data));
                assert!(run.is_ok(), "{name} panics on {}", file.display());
            }
        }
    }
}
