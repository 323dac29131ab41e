//! Load tests with `wrk`, and the parsing of its report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// What one `wrk --latency` run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Responses completed (the `N requests in ...` line).
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// The slowest response.
    pub max: Duration,
    /// The `Non-2xx or 3xx responses` line, 0 when absent.
    pub non_2xx: u64,
    /// The `Socket errors` line, when present (connect, read, write, timeout counts).
    pub socket_errors: Option<String>,
}

/// A response this slow is flagged: it is the 40 ms delayed-ACK stall the design warns about.
pub const SPIKE: Duration = Duration::from_millis(40);

impl WrkReport {
    /// Prints a warning line for non-2xx responses, socket errors and responses over [`SPIKE`].
    pub fn print_warnings(&self) {
        if self.non_2xx > 0 {
            println!("    WARNING: {} non-2xx responses", self.non_2xx);
        }
        if let Some(errors) = &self.socket_errors {
            println!("    WARNING: socket errors: {errors}");
        }
        if self.max >= SPIKE {
            println!(
                "    WARNING: slowest response took {:.1} ms (≥ {} ms)",
                self.max.as_secs_f64() * 1e3,
                SPIKE.as_millis()
            );
        }
    }
}

/// Fails with a hint if `wrk` cannot be run.
pub fn check_installed() -> anyhow::Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("wrk not found: run scripts/setup.sh (it installs Debian's wrk)")
        }
        Err(e) => anyhow::bail!("cannot run wrk: {e}"),
    }
}

/// `wrk -t2 -cCONNECTIONS -dDURATION --latency -s SCRIPT URL`.
pub fn run(
    url: &str,
    connections: u32,
    duration: Duration,
    script: &Path,
) -> anyhow::Result<WrkReport> {
    let out = Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .context("cannot run wrk (run scripts/setup.sh)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("cannot read wrk's report:\n{stdout}"))
}

/// Reads the figures out of wrk's text report.
pub fn parse(report: &str) -> anyhow::Result<WrkReport> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut max = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, m, ..] => max = Some(parse_duration(m)?),
            ["50%", d] => p50 = Some(parse_duration(d)?),
            ["99%", d] => p99 = Some(parse_duration(d)?),
            [n, "requests", "in", ..] => requests = Some(n.parse().context("request count")?),
            ["Requests/sec:", r] => requests_per_sec = Some(r.parse().context("Requests/sec")?),
            ["Non-2xx", "or", "3xx", "responses:", n] => non_2xx = n.parse().context("Non-2xx")?,
            ["Socket", "errors:", ..] => {
                socket_errors = Some(line.trim_start_matches("Socket errors:").trim().to_string())
            }
            _ => {}
        }
    }
    Ok(WrkReport {
        requests: requests.context("no `N requests in` line")?,
        requests_per_sec: requests_per_sec.context("no `Requests/sec` line")?,
        p50: p50.context("no 50% latency (was --latency given?)")?,
        p99: p99.context("no 99% latency (was --latency given?)")?,
        max: max.context("no `Latency` line")?,
        non_2xx,
        socket_errors,
    })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("`{text}` has no unit"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration"))?;
    let nanos_per_unit = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => anyhow::bail!("`{text}` has an unknown unit"),
    };
    Ok(Duration::from_nanos((value * nanos_per_unit).round() as u64))
}

/// A Lua script for wrk: `POST` with a body of `body_len` bytes.
pub fn post_script(body_len: usize) -> String {
    format!(
        "wrk.method = \"POST\"\n\
         wrk.body = string.rep(\"x\", {body_len})\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Running 5s test @ http://127.0.0.1:40000/echo
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.33us  301.20us  41.07ms   97.12%
    Req/Sec    19.55k     1.01k   21.40k    72.00%
  Latency Distribution
     50%  380.00us
     75%  420.00us
     90%  510.00us
     99%    1.20ms
  194512 requests in 5.00s, 22.07MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 0
Requests/sec:  38899.12
Transfer/sec:      4.41MB
";

    #[test]
    fn parses_a_full_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 194_512);
        assert!((r.requests_per_sec - 38_899.12).abs() < 1e-6);
        assert_eq!(r.p50, Duration::from_micros(380));
        assert_eq!(r.p99, Duration::from_micros(1200));
        assert_eq!(r.max, Duration::from_micros(41_070));
        assert_eq!(r.non_2xx, 3);
        assert_eq!(
            r.socket_errors.as_deref(),
            Some("connect 0, read 2, write 0, timeout 0")
        );
    }

    #[test]
    fn a_report_without_latency_distribution_is_an_error() {
        let without: String = REPORT
            .lines()
            .filter(|l| !l.trim_start().starts_with("99%"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse(&without).is_err());
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(
            parse_duration("812.00us").unwrap(),
            Duration::from_micros(812)
        );
        assert_eq!(parse_duration("2.00s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.50m").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("12").is_err());
    }
}
