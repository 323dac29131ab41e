//! Bad manifests, as files: each folder under `tests/bad-manifests/` holds one or more
//! manifests and `expected.txt`, whose every line must appear in the error output. The
//! dispatcher must exit non-zero without serving.

use std::path::Path;

use crate::harness::{self, repo, wasm, wat_module};

/// Copies a case into a temp folder beside the modules its manifests name.
fn stage(case: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(case).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(wasm("echo"), dir.path().join("echo.wasm")).unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x01\0\0\0\xff\xff").unwrap();
    wat_module(
        dir.path(),
        "reactor",
        r#"(module (func (export "_initialize")))"#,
    );
    wat_module(
        dir.path(),
        "foreign",
        r#"(module (import "env" "host_magic" (func)) (func (export "_start")))"#,
    );
    dir
}

/// Runs `cmd` to completion, killing it if it is still running after `limit` (a dispatcher
/// that accepted a bad manifest would serve forever).
fn output_within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        // The process may be gone already; then kill(1) fails harmlessly.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    });
    drop(watchdog);
    child.wait_with_output().unwrap()
}

#[test]
fn each_bad_manifest_is_rejected_with_its_expected_error() {
    let cases = repo().join("dispatcher/tests/bad-manifests");
    let mut names: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 15, "the bad-manifest cases are missing");
    let mut failures = Vec::new();
    for case in &names {
        let dir = stage(case);
        std::fs::remove_file(dir.path().join("expected.txt")).unwrap();
        let expected = std::fs::read_to_string(case.join("expected.txt")).unwrap();
        let mut cmd = harness::dispatcher_command(dir.path());
        cmd.arg("--listen").arg("127.0.0.1:0").arg("--no-cache");
        let out = output_within(cmd, std::time::Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let name = case.file_name().unwrap().to_string_lossy();
        if out.status.success() || stdout.contains("listening") {
            failures.push(format!("{name}: the dispatcher accepted it"));
            continue;
        }
        for line in expected.lines().filter(|l| !l.is_empty()) {
            if !stderr.contains(line) {
                failures.push(format!("{name}: missing `{line}` in:\n{stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_shipped_manifests_are_valid() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .arg("check")
        .arg("--manifests")
        .arg(repo().join("manifests"))
        .arg("--cache-dir")
        .arg(harness::shared_cache())
        .env("DATABASE_URL", "mysql://root@127.0.0.1:3306/test")
        .env("NOTIFY_URL", "http://127.0.0.1:9000/events")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("function(s) OK"));
}
