//! HTTP throughput: `wrk` against the dispatcher serving `echo.wasm` (a fresh instance per
//! request) and against a native hyper echo server, with the server-side CPU per request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::Section;
use crate::artifacts::Artifacts;
use crate::probe;
use crate::process::{cpu_time, file_len, read_from, ChildGuard};
use crate::report::Row;
use crate::servers::{self, ECHO_PATH};
use crate::stats::{ms, thousands, us};
use crate::wrk::{self, WrkReport, SPIKE};

pub const SECTION: Section = Section {
    name: "throughput",
    title: "2. HTTP throughput: dispatcher + echo.wasm vs native hyper echo (wrk -t2, POST 64 B)",
    run,
};

const CONNECTIONS: [u32; 2] = [16, 64];
const WARMUP: Duration = Duration::from_secs(1);
const DURATION: Duration = Duration::from_secs(5);
const BODY_LEN: usize = 64;
/// Target: the dispatcher serves at least this fraction of native's requests per second.
const TARGET_RATIO: f64 = 0.5;
/// Target: server CPU per request (DESIGN.md: Spin 230-310 us, native hyper 8-9 us).
const TARGET_CPU_US: f64 = 30.0;
/// One load test of one server.
pub(super) struct Measured {
    pub(super) wrk: WrkReport,
    /// Server CPU (user + system, all threads) per completed request.
    pub(super) cpu_per_request: Duration,
}

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    wrk::check_installed()?;
    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifests = servers::write_echo_manifests(tmp.path(), &artifacts.echo_wasm)?;
    let script = tmp.path().join("post.lua");
    std::fs::write(&script, wrk::post_script(BODY_LEN)).context("cannot write the wrk script")?;
    let log = tmp.path().join("dispatcher.log");

    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (mut dispatcher, dispatcher_addr) = servers::start(
        "dispatcher",
        &mut servers::dispatcher_command(
            artifacts,
            &manifests,
            any_port,
            &tmp.path().join("cache"),
        ),
        servers::DISPATCHER_READY,
        Some(&log),
    )?;
    let (mut native, native_addr) = servers::start(
        "native_echo",
        &mut servers::native_echo_command(artifacts, any_port),
        servers::NATIVE_READY,
        None,
    )?;
    check_echo("dispatcher", dispatcher_addr)?;
    check_echo("native_echo", native_addr)?;

    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        let log_start = file_len(&log)?;
        let d = measure(&mut dispatcher, dispatcher_addr, connections, &script)?;
        let server_log = scan_log(&log, log_start)?;
        let n = measure(&mut native, native_addr, connections, &script)?;
        print_run("dispatcher", connections, &d);
        println!("    server log: {server_log}");
        print_run("native    ", connections, &n);
        let ratio = d.wrk.requests_per_sec / n.wrk.requests_per_sec;
        println!("    dispatcher/native: {ratio:.2}x requests/s");

        rows.push(
            Row::new(
                format!("HTTP req/s, {connections} conns"),
                thousands(d.wrk.requests_per_sec),
                thousands(n.wrk.requests_per_sec),
            )
            .ratio(d.wrk.requests_per_sec, n.wrk.requests_per_sec)
            .target(
                format!("≥ {TARGET_RATIO}x native"),
                Some(ratio >= TARGET_RATIO),
            ),
        );
        rows.push(
            Row::new(
                format!("HTTP p99 latency, {connections} conns"),
                format!("{:.2} ms", ms(d.wrk.p99)),
                format!("{:.2} ms", ms(n.wrk.p99)),
            )
            .ratio(ms(d.wrk.p99), ms(n.wrk.p99)),
        );
        rows.push(
            Row::new(
                format!("server CPU/request, {connections} conns"),
                format!("{:.1} µs", us(d.cpu_per_request)),
                format!("{:.1} µs", us(n.cpu_per_request)),
            )
            .ratio(us(d.cpu_per_request), us(n.cpu_per_request))
            .target(
                format!("≤ {TARGET_CPU_US} µs (Spin 230–310)"),
                Some(us(d.cpu_per_request) <= TARGET_CPU_US),
            ),
        );
    }
    Ok(rows)
}

/// One request through the server, to fail clearly before any load if it does not echo.
pub(super) fn check_echo(name: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let body = b"bench sanity check";
    let reply = probe::post(addr, ECHO_PATH, body, Duration::from_secs(10))
        .with_context(|| format!("{name}: POST {ECHO_PATH} failed"))?;
    if reply.status != 200 || reply.body != body {
        anyhow::bail!(
            "{name}: POST {ECHO_PATH} answered {} {:?}, expected 200 with the request body",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(())
}

/// A warm-up run, then a measured run with the server's CPU time read around it.
pub(super) fn measure(
    server: &mut ChildGuard,
    addr: SocketAddr,
    connections: u32,
    script: &Path,
) -> anyhow::Result<Measured> {
    let url = format!("http://{addr}{ECHO_PATH}");
    wrk::run(&url, connections, WARMUP, script)?;
    server.ensure_running()?;
    let before = cpu_time(server.id())?;
    let report = wrk::run(&url, connections, DURATION, script)?;
    let after = cpu_time(server.id())?;
    server.ensure_running()?;
    if report.requests == 0 {
        anyhow::bail!("wrk completed no requests against {url}");
    }
    let cpu = after.saturating_sub(before);
    Ok(Measured {
        cpu_per_request: Duration::from_nanos(
            (cpu.as_nanos() / u128::from(report.requests)) as u64,
        ),
        wrk: report,
    })
}

pub(super) fn print_run(name: &str, connections: u32, m: &Measured) {
    let w = &m.wrk;
    println!(
        "  {name} c={connections:<3} {:>9} req/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  cpu {:.1} us/req  ({} requests)",
        thousands(w.requests_per_sec),
        ms(w.p50),
        ms(w.p99),
        ms(w.max),
        us(m.cpu_per_request),
        w.requests
    );
    w.print_warnings();
}

/// What the dispatcher logged from `offset` on: its one line per request and any warnings.
#[derive(Debug, Default)]
struct LogSummary {
    statuses: BTreeMap<u16, u64>,
    slowest: Duration,
    spikes: u64,
    warnings: u64,
    first_warning: Option<String>,
}

impl std::fmt::Display for LogSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        write!(
            f,
            "statuses {{{}}}, slowest handler {:.2} ms, {} over {} ms, {} warnings/errors",
            statuses.join(", "),
            ms(self.slowest),
            self.spikes,
            SPIKE.as_millis(),
            self.warnings
        )?;
        if let Some(w) = &self.first_warning {
            write!(f, " (first: {w})")?;
        }
        Ok(())
    }
}

fn scan_log(path: &Path, offset: u64) -> anyhow::Result<LogSummary> {
    Ok(parse_log(&read_from(path, offset)?))
}

/// Reads tracing's `... INFO request: function="echo" ... status=200 us=153`.
fn parse_log(text: &str) -> LogSummary {
    let mut summary = LogSummary::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let level = words.nth(1).unwrap_or("");
        if level == "WARN" || level == "ERROR" {
            summary.warnings += 1;
            summary
                .first_warning
                .get_or_insert_with(|| line.to_string());
        }
        for word in line.split_whitespace() {
            if let Some(status) = word.strip_prefix("status=").and_then(|s| s.parse().ok()) {
                *summary.statuses.entry(status).or_default() += 1;
            } else if let Some(micros) = word.strip_prefix("us=").and_then(|s| s.parse().ok()) {
                let took = Duration::from_micros(micros);
                summary.slowest = summary.slowest.max(took);
                summary.spikes += u64::from(took >= SPIKE);
            }
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_statuses_spikes_and_warnings() {
        let log = "\
2025-01-01T00:00:00.000001Z  INFO request: function=\"echo\" method=POST path=\"/echo\" status=200 us=150
2025-01-01T00:00:00.000002Z  INFO request: function=\"echo\" method=POST path=\"/echo\" status=503 us=41000
2025-01-01T00:00:00.000003Z  WARN dispatcher::http::response: invocation failed: no instance slot was free
";
        let s = parse_log(log);
        assert_eq!(s.statuses.get(&200), Some(&1));
        assert_eq!(s.statuses.get(&503), Some(&1));
        assert_eq!(s.slowest, Duration::from_millis(41));
        assert_eq!(s.spikes, 1);
        assert_eq!(s.warnings, 1);
        assert!(s.first_warning.unwrap().contains("no instance slot"));
    }
}
