//! The source tree keeps the shape the architecture asks for: a thin `main.rs`, files of one
//! concept each, and modules that depend downwards only (no module imports one that,
//! directly or through others, imports it back).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::repo;

fn src() -> PathBuf {
    repo().join("dispatcher/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `runtime::abi` for `runtime/abi/mod.rs` or `runtime/abi.rs`; `` for `lib.rs`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The source without its inline `#[cfg(test)] mod tests { ... }` (tests may import anything).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The longest known module a path like `crate::a::b::Item` or `super::x` names, seen from
/// module `from`.
fn resolve(from: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match segs.first().copied() {
        Some("crate") => base.clear(),
        Some("super") => {
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
            segs.insert(0, "super");
        }
        Some("self") => {}
        _ => return None,
    }
    segs.remove(0);
    let mut best = None;
    for i in 1..=segs.len() {
        let mut m = base.clone();
        m.extend(&segs[..i]);
        let m = m.join("::");
        if modules.contains(&m) {
            best = Some(m);
        }
    }
    best
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    // main.rs is the binary: a crate of its own over the library.
    files.retain(|f| !f.ends_with("main.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let me = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let text = without_tests(&text);
        let mut deps = BTreeSet::new();
        let bytes = text.as_bytes();
        for (i, _) in text.match_indices("::") {
            // The path this `::` belongs to: back to the start of the identifier chain.
            let mut start = i;
            while start > 0
                && (bytes[start - 1].is_ascii_alphanumeric()
                    || bytes[start - 1] == b'_'
                    || bytes[start - 1] == b':')
            {
                start -= 1;
            }
            let mut end = i + 2;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            let path = text[start..end].trim_end_matches(':');
            let rooted = if ["crate", "super", "self"]
                .iter()
                .any(|r| path.starts_with(r))
            {
                path.to_string()
            } else {
                // `use child::Item` inside a module refers to its child.
                format!("self::{path}")
            };
            if let Some(dep) = resolve(&me, &rooted, &modules) {
                if dep != me {
                    deps.insert(dep);
                }
            }
        }
        graph.insert(me, deps);
    }
    graph
}

/// One cycle of the graph, if there is any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(c) = visit(m, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_depend_downwards_only() {
    let graph = graph();
    assert!(
        graph.len() > 40,
        "the scan found only {} modules",
        graph.len()
    );
    assert!(
        graph["http::server"].contains("http::admin"),
        "the scan misses plain dependencies: {:?}",
        graph["http::server"]
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle: {}", cycle.join(" -> "));
    }
    // The runtime knows nothing of manifests, the database or the triggers.
    for (m, deps) in &graph {
        if m == "runtime" || m.starts_with("runtime::") {
            for d in deps {
                assert!(
                    d == "runtime" || d.starts_with("runtime::"),
                    "{m} depends on {d}"
                );
            }
        }
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&g).is_some());
    g.insert("b".to_string(), BTreeSet::new());
    assert!(find_cycle(&g).is_none());
}

#[test]
fn main_is_thin_and_files_hold_one_concept() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in files {
        let lines = std::fs::read_to_string(&f).unwrap().lines().count();
        let limit = if f.ends_with("main.rs") { 100 } else { 500 };
        assert!(
            lines <= limit,
            "{} has {lines} lines: at most {limit}",
            f.display()
        );
    }
}
