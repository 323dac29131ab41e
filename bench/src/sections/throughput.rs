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
use crate::servers::{self, ECHO_PATH, ECHO_STD_PATH};
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
/// Target: server CPU per request at most this multiple of native's in the same run (Spin
/// spends 230-310 us where native hyper spends 10-19 us).
const TARGET_CPU_RATIO: f64 = 2.5;
/// Target: the std-only echo costs at most this multiple of the SDK echo's CPU per request.
const TARGET_STD_RATIO: f64 = 1.2;
/// Target: p99 latency at most native's plus this.
const TARGET_P99_MARGIN: Duration = Duration::from_millis(1);

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
    servers::add_post_function(
        &manifests,
        "echo-std",
        &artifacts.echo_std_wasm,
        ECHO_STD_PATH,
    )?;
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
    check_echo("dispatcher", dispatcher_addr, ECHO_PATH)?;
    check_echo("dispatcher", dispatcher_addr, ECHO_STD_PATH)?;
    check_echo("native_echo", native_addr, ECHO_PATH)?;

    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        let log_start = file_len(&log)?;
        let d = measure(&mut dispatcher, dispatcher_addr, connections, &script)?;
        let plain = measure_path(
            &mut dispatcher,
            dispatcher_addr,
            ECHO_STD_PATH,
            connections,
            &script,
        )?;
        let server_log = scan_log(&log, log_start)?;
        let n = measure(&mut native, native_addr, connections, &script)?;
        print_run("dispatcher", connections, &d);
        print_run("std echo  ", connections, &plain);
        println!("    server log: {server_log}");
        print_run("native    ", connections, &n);
        let ratio = d.wrk.requests_per_sec / n.wrk.requests_per_sec;
        let cpu_ratio = us(d.cpu_per_request) / us(n.cpu_per_request);
        let std_ratio = us(plain.cpu_per_request) / us(d.cpu_per_request);
        println!(
            "    dispatcher/native: {ratio:.2}x requests/s, {cpu_ratio:.2}x CPU/request; std echo/SDK echo: {std_ratio:.2}x CPU/request"
        );

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
        let p99_limit = n.wrk.p99 + TARGET_P99_MARGIN;
        rows.push(
            Row::new(
                format!("HTTP p99 latency, {connections} conns"),
                format!("{:.2} ms", ms(d.wrk.p99)),
                format!("{:.2} ms", ms(n.wrk.p99)),
            )
            .ratio(ms(d.wrk.p99), ms(n.wrk.p99))
            .target(
                format!(
                    "≤ native + {} ms ({:.2} ms)",
                    TARGET_P99_MARGIN.as_millis(),
                    ms(p99_limit)
                ),
                // The target is set at 64 connections; at 16 it is shown for reading.
                (connections == 64).then_some(d.wrk.p99 <= p99_limit),
            ),
        );
        rows.push(
            Row::new(
                format!("server CPU/request, {connections} conns"),
                format!("{:.1} µs", us(d.cpu_per_request)),
                format!("{:.1} µs", us(n.cpu_per_request)),
            )
            .ratio(us(d.cpu_per_request), us(n.cpu_per_request))
            .target(
                format!(
                    "≤ {TARGET_CPU_RATIO}x native ({:.1} µs; Spin 230–310)",
                    us(n.cpu_per_request) * TARGET_CPU_RATIO
                ),
                Some(cpu_ratio <= TARGET_CPU_RATIO),
            ),
        );
        rows.push(
            Row::new(
                format!("std-only echo CPU/request, {connections} conns"),
                format!("{:.1} µs", us(plain.cpu_per_request)),
                format!("{:.1} µs", us(n.cpu_per_request)),
            )
            .ratio(us(plain.cpu_per_request), us(n.cpu_per_request))
            .target(
                format!(
                    "≤ {TARGET_STD_RATIO}x SDK echo ({:.1} µs): {std_ratio:.2}x",
                    us(d.cpu_per_request)
                ),
                Some(std_ratio <= TARGET_STD_RATIO),
            ),
        );
    }
    Ok(rows)
}

/// One request through the server, to fail clearly before any load if it does not echo.
pub(super) fn check_echo(name: &str, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let body = b"bench sanity check";
    let reply = probe::post(addr, path, body, Duration::from_secs(10))
        .with_context(|| format!("{name}: POST {path} failed"))?;
    if reply.status != 200 || reply.body != body {
        anyhow::bail!(
            "{name}: POST {path} answered {} {:?}, expected 200 with the request body",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(())
}

/// A warm-up run, then a measured run of `POST /echo` with the server's CPU time read
/// around it.
pub(super) fn measure(
    server: &mut ChildGuard,
    addr: SocketAddr,
    connections: u32,
    script: &Path,
) -> anyhow::Result<Measured> {
    measure_path(server, addr, ECHO_PATH, connections, script)
}

/// [`measure`] of `POST path`.
pub(super) fn measure_path(
    server: &mut ChildGuard,
    addr: SocketAddr,
    path: &str,
    connections: u32,
    script: &Path,
) -> anyhow::Result<Measured> {
    let url = format!("http://{addr}{path}");
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
