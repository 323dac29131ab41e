//! The real `dispatcher` binary as a child process on port 0: for the tests that read its log,
//! signal or restart it, run its CLI, or give it environment variables of its own.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{shared_cache, wait_until};

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
    /// `--listen`: `127.0.0.1:0` (a free port) unless given, e.g. to restart on the same port.
    pub listen: Option<String>,
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
            .arg(opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
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

    /// Its open descriptors and resident memory (KiB), from /proc.
    pub fn usage(&self) -> (usize, u64) {
        let pid = self.child.id();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        (fds, rss)
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
