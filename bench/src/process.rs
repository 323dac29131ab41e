//! Child processes the bench starts (servers, baselines): killed when dropped, even on panic,
//! plus what the sections read about them (readiness line, CPU time).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A running child that is killed and reaped when this is dropped.
pub struct ChildGuard {
    child: Child,
    /// For error messages.
    name: String,
    /// Where its stderr goes, quoted when it dies early.
    log: Option<PathBuf>,
    /// Its stdout lines, read by a thread that keeps draining them so the child never blocks.
    lines: Option<mpsc::Receiver<String>>,
}

impl ChildGuard {
    /// Starts `cmd` with stdin closed, stdout captured line by line and stderr appended to
    /// `log` (or discarded).
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> anyhow::Result<Self> {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Once nobody listens, keep reading anyway so the child never blocks on a pipe.
                tx.send(line).ok();
            }
        });
        Ok(ChildGuard {
            child,
            name: name.to_string(),
            log: log.map(Path::to_path_buf),
            lines: Some(rx),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child prints a line starting with `prefix` and returns the rest of it.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let lines = self.lines.as_ref().context("stdout already consumed")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => anyhow::bail!(
                    "{} printed no `{prefix}` line within {timeout:?}{}",
                    self.name,
                    self.log_tail()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    anyhow::bail!(
                        "{} exited ({status}) before it was ready{}",
                        self.name,
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// Fails if the child has exited, quoting its log.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                anyhow::bail!("{} exited ({status}){}", self.name, self.log_tail())
            }
            Err(e) => anyhow::bail!("cannot check on {}: {e}", self.name),
        }
    }

    /// Waits for the child to exit on its own, up to `timeout` (then it is killed on drop).
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    anyhow::bail!("{} did not exit within {timeout:?}", self.name)
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => anyhow::bail!("cannot wait for {}: {e}", self.name),
            }
        }
    }

    /// The last lines of the child's log, as a suffix for error messages.
    fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n    ");
        format!("; end of {}:\n    {tail}", path.display())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Err(e) = self.child.kill() {
                eprintln!(
                    "bench: cannot kill {} (pid {}): {e}",
                    self.name,
                    self.child.id()
                );
            }
            if let Err(e) = self.child.wait() {
                eprintln!(
                    "bench: cannot reap {} (pid {}): {e}",
                    self.name,
                    self.child.id()
                );
            }
        }
    }
}

/// User plus system CPU time a process (all its threads) has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second()))
        .with_context(|| format!("unexpected {path}: {stat}"))
}

/// utime + stime, in clock ticks, from a `/proc/PID/stat` line (fields 14 and 15; the command
/// name in field 2 may hold spaces and parentheses, so count from its closing one).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3 (state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` to stay free of `unsafe`; 100 if that fails.
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A loopback address with a port that was free a moment ago (for servers whose start-up is
/// timed from spawn, so they cannot report a port of their own choosing first).
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a probe socket")?;
    Ok(listener.local_addr()?)
}

/// A file's length, to read a log from where a measurement starts.
pub fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len())
}

/// A log file's text from byte `offset` on.
pub fn read_from(path: &Path, offset: u64) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    37 5 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
    }

    #[test]
    fn cpu_ticks_reject_a_truncated_line() {
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }
}
