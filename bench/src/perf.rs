//! Where a process spends its CPU, from a `perf record` sample profile split by shared object:
//! JIT-compiled guest code (wasmtime maps each compiled module from its `<hash>.cwasm` cache
//! file, so its samples land in a DSO of that name), the host binary, the kernel, libc.
//!
//! Uses perf's default event (cycles where the hardware has counters, else `cpu-clock`), so it
//! needs no wasmtime profiling option; every failure is an `Err` the caller may print and skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::ChildGuard;

/// Samples per second per CPU.
pub const FREQUENCY: u32 = 999;

/// What perf needs after the load to flush its buffers and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a sample's shared object says about the code it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// JIT-compiled guest code (`*.cwasm`).
    Guest,
    /// Executable anonymous memory (`[JIT] tid N`, `//anon`): code generated in the process
    /// itself, such as a module wasmtime compiled in memory rather than mapped from its cache.
    Jit,
    /// The host binary itself.
    Host,
    Kernel,
    Libc,
    /// Anything else (other libraries, `[vdso]`, `[unknown]`).
    Other,
}

impl Kind {
    pub fn of(dso: &str, host_binary: &str) -> Kind {
        if dso.ends_with(".cwasm") {
            Kind::Guest
        } else if dso.starts_with("[JIT]") || dso.starts_with("//anon") {
            Kind::Jit
        } else if dso == host_binary {
            Kind::Host
        } else if dso.starts_with("[kernel") || dso.starts_with("[guest.kernel") {
            Kind::Kernel
        } else if dso.starts_with("libc.so") || dso.starts_with("libc-") {
            Kind::Libc
        } else {
            Kind::Other
        }
    }
}

/// One line of `perf report --sort dso -n`.
#[derive(Debug, Clone, PartialEq)]
pub struct DsoShare {
    pub dso: String,
    pub percent: f64,
    pub samples: u64,
}

/// A parsed `perf report --stdio --no-children --sort dso -g none -n`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The sampled event, e.g. `cpu-clock:ppp`.
    pub event: String,
    /// Biggest first, as perf prints them.
    pub dsos: Vec<DsoShare>,
}

impl Profile {
    pub fn samples(&self) -> u64 {
        self.dsos.iter().map(|d| d.samples).sum()
    }

    /// Samples of one kind, and their share of all samples (0..=1).
    pub fn share(&self, kind: Kind, host_binary: &str) -> (u64, f64) {
        let samples: u64 = self
            .dsos
            .iter()
            .filter(|d| Kind::of(&d.dso, host_binary) == kind)
            .map(|d| d.samples)
            .sum();
        let total = self.samples();
        let share = if total > 0 {
            samples as f64 / total as f64
        } else {
            0.0
        };
        (samples, share)
    }
}

/// Reads the report's header (`# Samples: 5K of event 'cpu-clock:ppp'`) and its rows
/// (`    41.20%          2051  2b1f...-9c3e.cwasm`).
pub fn parse_report(text: &str) -> anyhow::Result<Profile> {
    let mut event = String::from("unknown event");
    let mut dsos = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            if let Some((_, rest)) = header.split_once("of event '") {
                if let Some((name, _)) = rest.split_once('\'') {
                    event = name.to_string();
                }
            }
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(percent), Some(samples)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(percent) = percent.strip_suffix('%').and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(samples) = samples.parse() else {
            continue;
        };
        let dso = words.collect::<Vec<_>>().join(" ");
        if dso.is_empty() {
            continue;
        }
        dsos.push(DsoShare {
            dso,
            percent,
            samples,
        });
    }
    if dsos.is_empty() {
        anyhow::bail!("perf report listed no samples");
    }
    Ok(Profile { event, dsos })
}

/// Fails unless `perf` can be run.
pub fn check_installed() -> anyhow::Result<()> {
    match Command::new("perf").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => anyhow::bail!(
            "`perf --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("perf is not installed (Debian: linux-perf)")
        }
        Err(e) => anyhow::bail!("cannot run perf: {e}"),
    }
}

/// Samples process `pid` (all its threads) while `load` runs, into `dir/perf.data`, and
/// returns the split by shared object together with what `load` returned.
pub fn record<T>(
    pid: u32,
    dir: &Path,
    load_duration: Duration,
    load: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(Profile, T, PathBuf)> {
    check_installed()?;
    let data = dir.join("perf.data");
    let log = dir.join("perf-record.log");
    // perf follows the pid for as long as its `sleep` runs: the load plus a margin either side.
    let window = load_duration + Duration::from_secs(1);
    let mut perf = ChildGuard::spawn(
        "perf record",
        Command::new("perf")
            .arg("record")
            .arg("-F")
            .arg(FREQUENCY.to_string())
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .arg("--")
            .arg("sleep")
            .arg(format!("{:.3}", window.as_secs_f64())),
        Some(&log),
    )?;
    // Attaching takes a moment; a perf that cannot sample at all exits at once.
    std::thread::sleep(Duration::from_millis(300));
    perf.ensure_running()?;
    let loaded = load()?;
    let status = perf.wait(window + STOP_TIMEOUT)?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow::bail!("perf record exited ({status}): {}", text.trim());
    }
    let out = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(&data)
        .args([
            "--stdio",
            "--no-children",
            "--sort",
            "dso",
            "-g",
            "none",
            "-n",
        ])
        .output()
        .context("cannot run perf report")?;
    if !out.status.success() {
        anyhow::bail!(
            "perf report exited ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let profile = parse_report(&String::from_utf8_lossy(&out.stdout))?;
    Ok((profile, loaded, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
# To display the perf.data header info, please use --header/--header-only options.
#
#
# Total Lost Samples: 0
#
# Samples: 5K of event 'cpu-clock:ppp'
# Event count (approx.): 5005005000
#
# Overhead       Samples  Shared Object
# ........  ............  ..........................................................
#
    41.20%          2062  dispatcher
    30.10%          1506  [kernel.kallsyms]
    20.00%          1001  8d0c4e1f2a-0b9f.cwasm
     6.70%           335  libc.so.6
     1.00%            50  [unknown]
     1.00%            51  libgcc_s.so.1
     0.02%             1  [JIT] tid 4242


#
# (Tip: Skip collecting build-id when recording: perf record -B)
#
";

    #[test]
    fn a_report_splits_into_guest_host_kernel_libc() {
        let p = parse_report(REPORT).unwrap();
        assert_eq!(p.event, "cpu-clock:ppp");
        assert_eq!(p.dsos.len(), 7);
        assert_eq!(p.samples(), 5006);
        assert_eq!(p.dsos[6].dso, "[JIT] tid 4242");
        assert_eq!(p.share(Kind::Jit, "dispatcher").0, 1);
        assert_eq!(p.dsos[2].dso, "8d0c4e1f2a-0b9f.cwasm");
        assert_eq!(p.dsos[2].percent, 20.0);
        assert_eq!(p.share(Kind::Guest, "dispatcher").0, 1001);
        assert_eq!(p.share(Kind::Host, "dispatcher").0, 2062);
        assert_eq!(p.share(Kind::Kernel, "dispatcher").0, 1506);
        assert_eq!(p.share(Kind::Libc, "dispatcher").0, 335);
        assert_eq!(p.share(Kind::Other, "dispatcher").0, 101);
        let (_, guest) = p.share(Kind::Guest, "dispatcher");
        assert!((guest - 1001.0 / 5006.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_report_is_an_error() {
        let empty = "# Samples: 0  of event 'cycles'\n#\n";
        assert!(parse_report(empty).is_err());
    }

    #[test]
    fn shared_objects_are_classified() {
        assert_eq!(Kind::of("abc.cwasm", "dispatcher"), Kind::Guest);
        assert_eq!(Kind::of("[kernel.vmlinux]", "dispatcher"), Kind::Kernel);
        assert_eq!(Kind::of("libc-2.31.so", "dispatcher"), Kind::Libc);
        assert_eq!(Kind::of("libm.so.6", "dispatcher"), Kind::Other);
        assert_eq!(Kind::of("[vdso]", "dispatcher"), Kind::Other);
        assert_eq!(Kind::of("[JIT] tid 28511", "dispatcher"), Kind::Jit);
    }
}
