//! The soak's HTTP load: `wrk` on `POST /echo` and on a rotation of the orders endpoints, each
//! paced by wrk's `delay()` hook so the soak stays at a steady rate instead of saturating two
//! shared cores. The scripts count every response by status and print the counts when done.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::wrk;

/// One paced client of one endpoint mix.
pub struct Load {
    pub label: &'static str,
    pub path: &'static str,
    pub threads: u32,
    /// At least `threads`; each thread's connections share its ids (see [`ORDERS_SCRIPT`]).
    pub connections: u32,
    /// Sent as the script's `delay()`: milliseconds between a response and the next request
    /// on a connection.
    pub delay_ms: u32,
    pub script: &'static str,
}

/// `POST /echo` with 64 bytes.
pub const ECHO: Load = Load {
    label: "echo",
    path: "/echo",
    threads: 1,
    connections: 8,
    delay_ms: 1,
    script: ECHO_SCRIPT,
};

/// The orders endpoints in turn.
pub const ORDERS: Load = Load {
    label: "orders",
    path: "/orders",
    threads: 2,
    connections: 4,
    delay_ms: 20,
    script: ORDERS_SCRIPT,
};

/// A response slower than this is a wrk `timeout` error.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Counts responses per status in each thread and prints `soak-status CODE COUNT` lines when
/// done (wrk copies a thread's table out with `thread:get`).
const COUNTING: &str = r#"
local threads = {}
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function delay()
  return DELAY_MS
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      io.write(string.format("soak-status %d %d\n", code, n))
    end
  end
end
"#;

const ECHO_SCRIPT: &str = r#"
function init(args)
  statuses = {}
  wrk.method = "POST"
  wrk.body = string.rep("x", 64)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
"#;

/// Each thread creates, reads, updates, counts and deletes orders with an id of its own
/// (`DELETE ... WHERE order_id = id` removes every row the thread created), so the table stays
/// at the seed's rows plus a few and `GET /orders` costs the same at the end as at the start.
const ORDERS_SCRIPT: &str = r#"
function init(args)
  statuses = {}
  step = 0
  local id = 1000 + tid
  local order = string.format('{"order_id":%d,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Soak St. %d"}', id, id)
  local update = string.format('{"order_id":%d,"product_id":15,"quantity":3,"amount":256.0,"shipping":30.0,"tax":16.0,"shipping_address":"Soak Ave. %d"}', id, id)
  local json = { ["Content-Type"] = "application/json" }
  reqs = {
    wrk.format("POST", "/create_order", json, order),
    wrk.format("GET", "/orders"),
    wrk.format("POST", "/update_order", json, update),
    wrk.format("GET", "/order_count"),
    wrk.format("GET", "/delete_order?id=" .. id),
    wrk.format("GET", "/order_stats"),
    wrk.format("GET", "/"),
  }
end
function request()
  step = step % #reqs + 1
  return reqs[step]
end
"#;

/// What one wrk run saw.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub requests: u64,
    /// Responses by status, from the script.
    pub statuses: BTreeMap<u16, u64>,
    /// wrk's socket errors by kind (`connect`, `read`, `write`, `timeout`).
    pub socket_errors: BTreeMap<String, u64>,
    /// The slowest response, in ms.
    pub max_ms: f64,
}

impl Counts {
    /// Responses that were not 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn socket_error_total(&self) -> u64 {
        self.socket_errors.values().sum()
    }

    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        for (k, n) in &other.socket_errors {
            *self.socket_errors.entry(k.clone()).or_default() += n;
        }
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    /// `200: 1234, 503: 2; read errors 1`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        for (kind, n) in self.socket_errors.iter().filter(|(_, n)| **n > 0) {
            parts.push(format!("{kind} errors: {n}"));
        }
        parts.join(", ")
    }
}

/// Runs `load` against `addr` for `duration` (whole seconds), with its script in `dir`.
pub fn run(
    load: &Load,
    addr: SocketAddr,
    duration: Duration,
    dir: &Path,
) -> anyhow::Result<Counts> {
    let script = dir.join(format!("{}.lua", load.label));
    let text = format!("DELAY_MS = {}\n{COUNTING}{}", load.delay_ms, load.script);
    std::fs::write(&script, text).with_context(|| format!("cannot write {}", script.display()))?;
    let out = Command::new("wrk")
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg(format!("--timeout={}s", TIMEOUT.as_secs()))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}{}", load.path))
        .output()
        .context("cannot run wrk (run scripts/setup.sh)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "wrk ({}) failed ({}): {stdout}{}",
            load.label,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("cannot read wrk's report:\n{stdout}"))
}

fn parse(stdout: &str) -> anyhow::Result<Counts> {
    let report = wrk::parse(stdout)?;
    let mut counts = Counts {
        requests: report.requests,
        max_ms: report.max.as_secs_f64() * 1e3,
        ..Counts::default()
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("soak-status ") {
            let (code, n) = rest.split_once(' ').context("a bad soak-status line")?;
            *counts.statuses.entry(code.parse()?).or_default() += n.trim().parse::<u64>()?;
        }
    }
    if let Some(errors) = &report.socket_errors {
        // `connect 0, read 2, write 0, timeout 0`
        for part in errors.split(',') {
            if let Some((kind, n)) = part.trim().split_once(' ') {
                counts
                    .socket_errors
                    .insert(kind.to_string(), n.trim().parse()?);
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_statuses_and_socket_errors() {
        let out = "\
Running 5s test @ http://127.0.0.1:40000/echo
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.33us  301.20us  41.07ms   97.12%
  Latency Distribution
     50%  380.00us
     75%  420.00us
     90%  510.00us
     99%    1.20ms
  1003 requests in 5.00s, 22.07MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  200.60
Transfer/sec:      4.41MB
soak-status 200 1000
soak-status 503 3
";
        let c = parse(out).unwrap();
        assert_eq!(c.requests, 1003);
        assert_eq!(c.non_2xx(), 3);
        assert_eq!(c.socket_error_total(), 3);
        assert_eq!(c.socket_errors["read"], 2);
        assert!((c.max_ms - 41.07).abs() < 1e-9);
        assert_eq!(
            c.describe(),
            "200: 1000, 503: 3, read errors: 2, timeout errors: 1"
        );
    }
}
