//! Test support: runs the real `dispatcher` binary on port 0 against manifests in a temp
//! folder, with real `.wasm` functions built from the repo (`make test` builds them first).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A compile cache shared by the tests of one run, so each module compiles once.
pub fn shared_cache() -> PathBuf {
    repo().join("target/test-dispatcher-cache")
}

/// Writes a `.wasm` made from WAT text into `dir` and returns its path.
pub fn wat_module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let bytes = wat::parse_str(wat).expect("valid WAT");
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Writes a manifest file `<name>.toml` into `dir`.
pub fn manifest(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), body).unwrap();
}

/// A running dispatcher process; killed on drop.
pub struct Dispatcher {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Everything it wrote to stderr (its log), line by line.
    pub log: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
pub struct Options<'a> {
    pub cache_dir: Option<&'a Path>,
    pub env: Vec<(&'a str, String)>,
    /// More arguments for `serve`.
    pub args: Vec<&'a str>,
}

/// The variables the dispatcher reads, removed so that the caller's environment (a
/// `DATABASE_URL` in the shell, say) cannot leak into a test.
const DISPATCHER_VARS: &[&str] = &[
    "DISPATCHER_LISTEN",
    "DISPATCHER_DB",
    "DATABASE_URL",
    "DISPATCHER_ADMIN_TOKEN",
    "DISPATCHER_MANIFESTS",
    "DISPATCHER_SERVER",
];

/// The `dispatcher` binary, with none of its variables set.
pub fn bare_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatcher"));
    cmd.env("RUST_LOG", "info");
    for v in DISPATCHER_VARS {
        cmd.env_remove(v);
    }
    cmd
}

pub fn dispatcher_command(manifests: &Path) -> Command {
    let mut cmd = bare_command();
    cmd.arg("serve").arg("--manifests").arg(manifests);
    cmd
}

impl Dispatcher {
    pub fn start(manifests: &Path) -> Dispatcher {
        Self::start_with(manifests, Options::default())
    }

    /// A dispatcher without a manifests folder: it serves what its database holds.
    pub fn start_bare(opts: Options<'_>) -> Dispatcher {
        let mut cmd = bare_command();
        cmd.arg("serve");
        Self::spawn(cmd, opts)
    }

    pub fn start_with(manifests: &Path, opts: Options<'_>) -> Dispatcher {
        Self::spawn(dispatcher_command(manifests), opts)
    }

    fn spawn(mut cmd: Command, opts: Options<'_>) -> Dispatcher {
        let cache = opts
            .cache_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(shared_cache);
        cmd.args(&opts.args);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--cache-dir")
            .arg(&cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dispatcher");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("dispatcher listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the dispatcher did not start; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Dispatcher { child, url, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log.lock().unwrap().iter().any(|l| l.contains(needle))
        })
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking-free HTTP client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Runs SQL with the `mariadb` client as root over TCP at 127.0.0.1:3306 and returns its
/// output (tab-separated, no column names).
pub fn sql(statements: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            "-P3306",
            "-uroot",
            "-N",
            "-B",
            "-e",
            statements,
        ])
        .output()
        .expect("the mariadb client (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{statements}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

/// A platform database of the test's own, dropped afterwards.
pub struct PlatformDb {
    pub name: String,
}

impl PlatformDb {
    pub fn create(tag: &str) -> PlatformDb {
        let name = format!("p_{tag}_{}", std::process::id());
        sql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ));
        PlatformDb { name }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    pub fn opts(&self) -> Options<'static> {
        Options {
            env: vec![("DISPATCHER_DB", self.url())],
            ..Options::default()
        }
    }
}

impl Drop for PlatformDb {
    fn drop(&mut self) {
        sql(&format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// Continuous load: `concurrency` clients POST `body` to `url` back to back, on keep-alive
/// connections, until [`Load::stop`].
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<LoadResult>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    /// Each failure: the status (or transport error) and the body.
    pub failures: Vec<String>,
    /// Distinct bodies of successful answers, in the order first seen.
    pub bodies: Vec<String>,
}

impl Load {
    pub fn start(url: String, body: &'static str, concurrency: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let result = Arc::new(Mutex::new(LoadResult::default()));
                let mut tasks = Vec::new();
                for _ in 0..concurrency {
                    let (url, flag, result) = (url.clone(), flag.clone(), result.clone());
                    tasks.push(tokio::spawn(async move {
                        let http = client();
                        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                            let outcome = match http.post(&url).body(body).send().await {
                                Ok(r) => {
                                    let status = r.status();
                                    let text = r.text().await.unwrap_or_default();
                                    if status.is_success() {
                                        Ok(text)
                                    } else {
                                        Err(format!("{status}: {text}"))
                                    }
                                }
                                Err(e) => Err(format!("transport: {e}")),
                            };
                            let mut r = result.lock().unwrap();
                            match outcome {
                                Ok(text) => {
                                    r.ok += 1;
                                    if !r.bodies.contains(&text) {
                                        r.bodies.push(text);
                                    }
                                }
                                Err(e) => r.failures.push(e),
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let seen = std::mem::take(&mut *result.lock().unwrap());
                seen
            })
        });
        Load { stop, thread }
    }

    pub fn stop(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
