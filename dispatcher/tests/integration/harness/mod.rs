//! Test support: the platform against manifests in a temp folder, with real `.wasm` functions
//! built from the repo (`make test` builds them first), either in this process
//! ([`InProcess`]) or as the real binary ([`Dispatcher`]); the MariaDB the tests share; a load
//! generator; a TCP proxy that can play a database outage; a real HAProxy in front of
//! replicas.

mod db;
mod haproxy;
mod in_process;
mod load;
mod process;
mod proxy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use db::{sql, try_sql, unique_name, PlatformDb};
pub use haproxy::{free_port, HaProxy};
pub use in_process::InProcess;
pub use load::{Load, LoadResult};
pub use process::{bare_command, dispatcher_command, Dispatcher, Options};
pub use proxy::Proxy;

/// The settings an [`InProcess`] platform starts with unless a test changes them.
pub use in_process::config as in_process_config;

/// A platform under test, in this process or a child: where it answers. For helpers that
/// serve tests of both kinds.
pub trait Server {
    /// `http://127.0.0.1:PORT` followed by `path`.
    fn url(&self, path: &str) -> String;
}

impl Server for Dispatcher {
    fn url(&self, path: &str) -> String {
        Dispatcher::url(self, path)
    }
}

impl Server for InProcess {
    fn url(&self, path: &str) -> String {
        InProcess::url(self, path)
    }
}

/// The repo's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A function module built from `functions/<name>`.
pub fn wasm(name: &str) -> PathBuf {
    let path = repo().join(format!("target/wasm32-wasip1/release/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the functions first (`make test` does)",
        path.display()
    );
    path
}

/// A compile cache shared by the tests of one run, so each module compiles once: filled with
/// Cranelift's code of every function module before the first test uses it, as an image's
/// precompiled folder is. Without that, a process killed at a test's end before its
/// background compile is done leaves nothing behind, and every test would compile again with
/// Winch and Cranelift behind, at the cost of the whole suite's CPU. The tests of tiering use
/// caches of their own.
pub fn shared_cache() -> PathBuf {
    static WARM: std::sync::Once = std::sync::Once::new();
    let dir = repo().join("target/test-dispatcher-cache");
    WARM.call_once(|| warm_cache(&dir));
    dir
}

/// `dispatcher check` over a manifest per function module, into `cache`.
fn warm_cache(cache: &Path) {
    let manifests = tempfile::tempdir().unwrap();
    let modules = repo().join("target/wasm32-wasip1/release");
    for entry in std::fs::read_dir(&modules).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        manifest(
            manifests.path(),
            &name,
            &format!(
                "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/{name}\"\n",
                path.display()
            ),
        );
    }
    check_into(manifests.path(), cache);
}

/// `dispatcher check --manifests DIR --cache-dir CACHE`, which must succeed: every module
/// compiled with Cranelift into `cache`.
pub fn check_into(manifests: &Path, cache: &Path) {
    let out = bare_command()
        .arg("check")
        .arg("--manifests")
        .arg(manifests)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dispatcher check of {}: {}",
        manifests.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a `.wasm` made from WAT text into `dir` and returns its path.
pub fn wat_module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let bytes = wat::parse_str(wat).expect("valid WAT");
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A copy of `module` padded with a custom section to `size` bytes or more, at `path`.
pub fn padded(module: &Path, path: &Path, size: usize) {
    let mut bytes = std::fs::read(module).unwrap();
    let name = b"padding";
    let mut content = vec![name.len() as u8];
    content.extend_from_slice(name);
    content.resize(content.len() + size.saturating_sub(bytes.len()), 0);
    bytes.push(0); // custom section
    let mut n = content.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&content);
    std::fs::write(path, bytes).unwrap();
}

/// Writes a manifest file `<name>.toml` into `dir`.
pub fn manifest(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), body).unwrap();
}

/// A manifest for the `probe` test function (functions/probe) at `path`, with extra TOML
/// appended.
pub fn probe(dir: &Path, name: &str, path: &str, extra: &str) {
    manifest(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"{path}\"\n{extra}",
            wasm("probe").display()
        ),
    );
}

/// A blocking-free HTTP client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
