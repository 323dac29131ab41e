//! A real endpoint: `GET /orders` returning 5 rows from MariaDB. The dispatcher runs
//! `list_orders.wasm` in a fresh instance per request; its database session comes from the
//! host's pool (the manifest allows the `mysql://` URL itself): the host answers the guest's
//! login, and relays the driver's settings query and the `SELECT` over a pre-authenticated
//! backend. The native baseline is the seed's architecture, a long-running hyper server with a
//! connection pool (`native_orders`). Both are loaded with `wrk`; beside req/s, p99 and CPU per
//! request (the server's and MariaDB's), the section counts the backend connections MariaDB
//! saw opened during each measured run, breaks one invocation down from the guest's own
//! timings (`ORDERS_TIMINGS=1`), and splits the dispatcher's CPU between guest code, host code,
//! kernel and libc with `perf record` over an extra load run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use super::Section;
use crate::artifacts::Artifacts;
use crate::perf;
use crate::process::{cpu_time, file_len, read_from, ChildGuard};
use crate::report::Row;
use crate::servers;
use crate::stats::{ms, thousands, us, Summary};
use crate::wrk::{self, WrkReport, SPIKE};

pub const SECTION: Section = Section {
    name: "orders",
    title: "4. GET /orders (5 rows): per-request function on the host's session pool vs native long-running server with a pool (wrk -t2, 16 conns)",
    run,
};

/// MariaDB as the bench reaches it (root, no password, loopback only).
const MARIADB: &str = "127.0.0.1:3306";
const DATABASE: &str = "bench_orders";
const CONNECTIONS: u32 = 16;
const WARMUP: Duration = Duration::from_secs(1);
const DURATION: Duration = Duration::from_secs(5);
/// For the single requests that set up and check the servers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The readiness line of `native_orders`.
const NATIVE_READY: &str = "native_orders listening on ";
/// `dispatcher serve --db-pool-size`: the most backends the orders' pool may open.
const POOL_SIZE: u16 = 16;
/// Targets against the native server of the same run.
const RPS_TARGET: f64 = 0.7;
const RPS_STRETCH: f64 = 0.9;
const CPU_TARGET: f64 = 3.0;
const DB_CPU_TARGET: f64 = 1.3;
/// The extra load run sampled by `perf record`.
const PERF_DURATION: Duration = Duration::from_secs(3);

/// One order, serialized as `orders_db::Order` is (same field order and types).
#[derive(Serialize)]
struct Order {
    order_id: i32,
    product_id: i32,
    quantity: i32,
    amount: f32,
    shipping: f32,
    tax: f32,
    shipping_address: &'static str,
}

/// The seed's two orders and three more; every float is exact in `f32`.
const ORDERS: [Order; 5] = [
    order(1, 12, 2, 56.0, 15.0, 2.0, "Mataderos 2312"),
    order(2, 15, 3, 256.0, 30.0, 16.0, "1234 NW Bobcat"),
    order(3, 12, 1, 28.0, 5.0, 1.0, "Obere Str. 57"),
    order(4, 21, 5, 112.5, 12.25, 8.75, "120 Hanover Sq."),
    order(5, 15, 7, 599.5, 0.0, 47.5, "Avda. de la Constitución 2222"),
];

const fn order(
    order_id: i32,
    product_id: i32,
    quantity: i32,
    amount: f32,
    shipping: f32,
    tax: f32,
    shipping_address: &'static str,
) -> Order {
    Order {
        order_id,
        product_id,
        quantity,
        amount,
        shipping,
        tax,
        shipping_address,
    }
}

/// One load test of one server.
struct Measured {
    wrk: WrkReport,
    /// Server CPU (user + system, all threads) per completed request.
    cpu_per_request: Duration,
    /// MariaDB's CPU per completed request over the same run, if its process was found.
    db_cpu_per_request: Option<Duration>,
    /// Connections MariaDB accepted during the run (its `Connections` status before and
    /// after, read on one connection the bench holds across the run, so none is the bench's).
    backends_opened: u64,
}

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    wrk::check_installed()?;
    let init_wasm = wasm(artifacts, "init")?;
    let create_wasm = wasm(artifacts, "create_orders")?;
    let list_wasm = wasm(artifacts, "list_orders")?;
    let native_bin = native_bin(artifacts, "native_orders")?;
    recreate_database(DATABASE)?;
    let db_url = format!("mysql://root@{MARIADB}/{DATABASE}");

    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-orders-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).context("cannot create the manifests folder")?;
    let env = [("DATABASE_URL", db_url.as_str())];
    write_manifest(&manifests, "init", &init_wasm, "/init", "GET", &env)?;
    write_manifest(
        &manifests,
        "create_orders",
        &create_wasm,
        "/create_orders",
        "POST",
        &env,
    )?;
    write_manifest(
        &manifests,
        "list_orders",
        &list_wasm,
        "/orders",
        "GET",
        &[("DATABASE_URL", db_url.as_str()), ("ORDERS_TIMINGS", "1")],
    )?;
    let script = tmp.path().join("get.lua");
    std::fs::write(&script, "wrk.method = \"GET\"\n").context("cannot write the wrk script")?;
    let log = tmp.path().join("dispatcher.log");
    let cache = tmp.path().join("cache");
    // Compiled into the cache first, as a restarted dispatcher finds its modules: `serve` then
    // maps the guest code from the `.cwasm` files (perf attributes its samples to them; code
    // compiled in the serving process would sit in anonymous memory instead).
    precompile(artifacts, &manifests, &cache)?;

    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut dispatcher_cmd = servers::dispatcher_command(artifacts, &manifests, any_port, &cache);
    // An explicit pool bound, and the pool's debug lines (one per backend opened or dropped:
    // never per request) so its own count of opened backends is in the log.
    dispatcher_cmd
        .arg("--db-pool-size")
        .arg(POOL_SIZE.to_string())
        .env("RUST_LOG", "info,dbpool=debug");
    let (mut dispatcher, dispatcher_addr) = servers::start(
        "dispatcher",
        &mut dispatcher_cmd,
        servers::DISPATCHER_READY,
        Some(&log),
    )?;

    // The seed's curl session: create the table, then insert the orders.
    expect(dispatcher_addr, "GET", "/init", b"", br#"{"status":true}"#)?;
    let orders_json = serde_json::to_string(&ORDERS)?;
    expect(
        dispatcher_addr,
        "POST",
        "/create_orders",
        orders_json.as_bytes(),
        br#"{"status":true}"#,
    )?;

    let (mut native, native_addr) = servers::start(
        "native_orders",
        // Its pool bounded as the dispatcher's: both keep at most POOL_SIZE backends.
        Command::new(&native_bin)
            .arg(any_port.to_string())
            .arg(&db_url)
            .arg(POOL_SIZE.to_string()),
        NATIVE_READY,
        Some(&tmp.path().join("native_orders.log")),
    )?;

    // Both must answer exactly what was inserted, byte for byte.
    let from_dispatcher = expect(
        dispatcher_addr,
        "GET",
        "/orders",
        b"",
        orders_json.as_bytes(),
    )?;
    let from_native = expect(native_addr, "GET", "/orders", b"", orders_json.as_bytes())?;
    if from_dispatcher != from_native {
        anyhow::bail!("the dispatcher and native_orders answer different bodies");
    }
    println!(
        "  both answer GET /orders with the same {}-byte body ({} orders)",
        from_native.len(),
        ORDERS.len()
    );

    let db_pid = mariadb_pid();
    if db_pid.is_none() {
        println!("  (MariaDB's process was not found in /proc: its CPU is not reported)");
    }
    let mut status = MariaDbStatus::connect()?;
    let d_url = format!("http://{dispatcher_addr}/orders");
    wrk::run(&d_url, CONNECTIONS, WARMUP, &script)?;
    let log_start = file_len(&log)?;
    let d = measure(&mut dispatcher, db_pid, &mut status, &d_url, &script)?;
    let server_log = parse_log(&read_from(&log, log_start)?);
    let n_url = format!("http://{native_addr}/orders");
    wrk::run(&n_url, CONNECTIONS, WARMUP, &script)?;
    let n = measure(&mut native, db_pid, &mut status, &n_url, &script)?;
    status.close();

    print_run("dispatcher", &d);
    println!("    server log: {}", server_log.describe());
    print_run("native    ", &n);
    let ratio = d.wrk.requests_per_sec / n.wrk.requests_per_sec;
    let cpu_ratio = us(d.cpu_per_request) / us(n.cpu_per_request);
    println!("    dispatcher/native: {ratio:.2}x requests/s, {cpu_ratio:.2}x server CPU/request");

    let stretch = if ratio >= RPS_STRETCH {
        "stretch met"
    } else {
        "stretch missed"
    };
    let mut rows = vec![
        Row::new(
            format!("GET /orders req/s, {CONNECTIONS} conns"),
            with_errors(thousands(d.wrk.requests_per_sec), &d.wrk),
            with_errors(thousands(n.wrk.requests_per_sec), &n.wrk),
        )
        .ratio(d.wrk.requests_per_sec, n.wrk.requests_per_sec)
        .target(
            format!("≥ {RPS_TARGET}x native (stretch {RPS_STRETCH}x: {stretch})"),
            Some(ratio >= RPS_TARGET && d.wrk.non_2xx == 0),
        ),
        Row::new(
            format!("GET /orders p99 latency, {CONNECTIONS} conns"),
            format!("{:.2} ms", ms(d.wrk.p99)),
            format!("{:.2} ms", ms(n.wrk.p99)),
        )
        .ratio(ms(d.wrk.p99), ms(n.wrk.p99)),
        Row::new(
            "GET /orders server CPU/request",
            format!("{:.1} µs", us(d.cpu_per_request)),
            format!("{:.1} µs", us(n.cpu_per_request)),
        )
        .ratio(us(d.cpu_per_request), us(n.cpu_per_request))
        .target(
            format!("≤ {CPU_TARGET}x native"),
            Some(cpu_ratio <= CPU_TARGET),
        ),
    ];
    if let (Some(dd), Some(nd)) = (d.db_cpu_per_request, n.db_cpu_per_request) {
        let db_ratio = us(dd) / us(nd);
        rows.push(
            Row::new(
                "GET /orders MariaDB CPU/request",
                format!("{:.1} µs", us(dd)),
                format!("{:.1} µs", us(nd)),
            )
            .ratio(us(dd), us(nd))
            .target(
                format!("≤ {DB_CPU_TARGET}x native"),
                Some(db_ratio <= DB_CPU_TARGET),
            ),
        );
    }
    rows.push(
        Row::new(
            "MariaDB connections opened during the run",
            format!(
                "{} (pool's log: {} opened, {} dropped)",
                d.backends_opened, server_log.backends_opened, server_log.backends_dropped
            ),
            n.backends_opened.to_string(),
        )
        .target(
            format!("≤ {POOL_SIZE} (the pool size: --db-pool-size {POOL_SIZE})"),
            Some(d.backends_opened <= u64::from(POOL_SIZE)),
        ),
    );
    rows.extend(breakdown(&server_log)?);
    // perf names the dispatcher's own code after its binary's file name.
    let host = artifacts
        .dispatcher
        .file_name()
        .map_or("dispatcher".into(), |n| n.to_string_lossy().into_owned());
    rows.extend(attribute_cpu(
        &dispatcher,
        &host,
        &d_url,
        &script,
        tmp.path(),
    ));
    Ok(rows)
}

/// `dispatcher check --manifests DIR --cache-dir CACHE`: validates and compiles every module
/// into the cache.
fn precompile(artifacts: &Artifacts, manifests: &Path, cache: &Path) -> anyhow::Result<()> {
    let out = Command::new(&artifacts.dispatcher)
        .arg("check")
        .arg("--manifests")
        .arg(manifests)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("DATABASE_URL")
        .env_remove("DISPATCHER_DB")
        .env("NO_COLOR", "1")
        .output()
        .context("cannot run `dispatcher check`")?;
    if !out.status.success() {
        anyhow::bail!(
            "`dispatcher check` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The dispatcher's CPU split by where its samples land (guest code, host code, kernel,
/// libc), from `perf record` over an extra load run; a printed note and one row instead if
/// perf is missing or fails: the section never fails for it.
fn attribute_cpu(
    dispatcher: &ChildGuard,
    host: &str,
    url: &str,
    script: &Path,
    dir: &Path,
) -> Vec<Row> {
    let pid = dispatcher.id();
    let profiled = perf::record(pid, dir, PERF_DURATION, || {
        let before = cpu_time(pid)?;
        let report = wrk::run(url, CONNECTIONS, PERF_DURATION, script)?;
        let cpu = cpu_time(pid)?.saturating_sub(before);
        anyhow::Ok((report, cpu))
    });
    let (profile, (report, cpu), data) = match profiled {
        Ok(p) => p,
        Err(e) => {
            println!("  (perf attribution skipped: {e:#})");
            return vec![Row::new(
                "  dispatcher CPU by code (perf)",
                "skipped (see the section's output)".into(),
                "-".into(),
            )];
        }
    };
    let per_request = if report.requests > 0 {
        us(cpu) / report.requests as f64
    } else {
        0.0
    };
    println!(
        "  dispatcher CPU by code: perf record -F {} over {} s of load ({} samples of {}, {} requests, {:.1} µs/req with perf attached; {}):",
        perf::FREQUENCY,
        PERF_DURATION.as_secs(),
        profile.samples(),
        profile.event,
        report.requests,
        per_request,
        data.display()
    );
    for d in profile.dsos.iter().filter(|d| d.percent >= 0.5) {
        println!(
            "    {:>6.2}%  {:>6}  {:<10} {}",
            d.percent,
            d.samples,
            format!("{:?}", perf::Kind::of(&d.dso, host)).to_lowercase(),
            d.dso
        );
    }
    let kinds = [
        (perf::Kind::Guest, "guest wasm code (*.cwasm)"),
        (
            perf::Kind::Jit,
            "anonymous code ([JIT]: compiled in memory)",
        ),
        (perf::Kind::Host, "dispatcher (host)"),
        (perf::Kind::Kernel, "kernel"),
        (perf::Kind::Libc, "libc"),
        (perf::Kind::Other, "other (libs, vdso, unknown)"),
    ];
    let mut rows = Vec::new();
    for (kind, name) in kinds {
        let (samples, share) = profile.share(kind, host);
        if matches!(kind, perf::Kind::Other | perf::Kind::Jit) && samples == 0 {
            continue;
        }
        rows.push(Row::new(
            format!("  dispatcher CPU by code: {name}"),
            format!(
                "{:.1}% ≈ {:.0} µs/req ({samples} samples)",
                100.0 * share,
                share * per_request
            ),
            "-".into(),
        ));
    }
    rows
}

/// The phases of one invocation, medians over the measured run, printed and as rows.
fn breakdown(log: &LogSummary) -> anyhow::Result<Vec<Row>> {
    let summary = |name: &str, samples: &[u64]| -> anyhow::Result<Summary> {
        let samples: Vec<Duration> = samples.iter().map(|&u| Duration::from_micros(u)).collect();
        Summary::of(&samples).with_context(|| {
            format!("the dispatcher's log has no `{name}` figures for list_orders (is ORDERS_TIMINGS=1 reaching the guest?)")
        })
    };
    let handler = summary("us=", &log.handler_us)?;
    let start = summary("start_us", &log.start_us)?;
    let connect = summary("connect_us", &log.connect_us)?;
    let query = summary("query_us", &log.query_us)?;
    let close = summary("close_us", &log.close_us)?;
    let guest = start.median + connect.median + query.median + close.median;
    let rest = handler.median.saturating_sub(guest);

    println!(
        "  one invocation of list_orders (medians of {} requests / {} guest timings; p99 beside):",
        handler.count, connect.count
    );
    let total = us(handler.median);
    let share = |d: Duration| 100.0 * us(d) / total;
    let phases = [
        ("guest start (main to handler)", Some(start)),
        ("connect: pooled login + settings query", Some(connect)),
        ("query (SELECT *, 5 rows, relayed)", Some(query)),
        ("close (COM_QUIT to the host)", Some(close)),
        ("instantiate + host + response", None),
    ];
    let mut rows = Vec::new();
    for (name, s) in phases {
        let median = s.map_or(rest, |s| s.median);
        let p99 = s.map_or(String::from("(estimate: handler − guest phases)"), |s| {
            format!("p99 {:>7.0} µs", us(s.p99))
        });
        println!(
            "    {name:<38} {:>7.0} µs  {:>4.0}%   {p99}",
            us(median),
            share(median)
        );
        rows.push(Row::new(
            format!("  list_orders: {name}"),
            format!("{:.0} µs ({:.0}%)", us(median), share(median)),
            "-".into(),
        ));
    }
    println!(
        "    {:<38} {:>7.0} µs  100%   p99 {:>7.0} µs",
        "handler total (the log's us=)",
        total,
        us(handler.p99)
    );
    rows.insert(
        0,
        Row::new(
            "  list_orders: handler total, median",
            format!("{total:.0} µs"),
            "-".into(),
        ),
    );
    Ok(rows)
}

/// A warm server loaded for [`DURATION`], with its CPU time (and MariaDB's) and MariaDB's
/// count of connections read around it.
fn measure(
    server: &mut ChildGuard,
    db_pid: Option<u32>,
    status: &mut MariaDbStatus,
    url: &str,
    script: &Path,
) -> anyhow::Result<Measured> {
    server.ensure_running()?;
    let connections_before = status.connections()?;
    let db_before = db_pid.and_then(|pid| cpu_time(pid).ok());
    let before = cpu_time(server.id())?;
    let report = wrk::run(url, CONNECTIONS, DURATION, script)?;
    let after = cpu_time(server.id())?;
    let db_after = db_pid.and_then(|pid| cpu_time(pid).ok());
    let connections_after = status.connections()?;
    server.ensure_running()?;
    if report.requests == 0 {
        anyhow::bail!("wrk completed no requests against {url}");
    }
    let per_request =
        |cpu: Duration| Duration::from_nanos((cpu.as_nanos() / u128::from(report.requests)) as u64);
    Ok(Measured {
        cpu_per_request: per_request(after.saturating_sub(before)),
        db_cpu_per_request: db_before
            .zip(db_after)
            .map(|(b, a)| per_request(a.saturating_sub(b))),
        backends_opened: connections_after.saturating_sub(connections_before),
        wrk: report,
    })
}

/// One connection to MariaDB held across the measured runs, to read its `Connections` status
/// (connection attempts since it started) before and after each: the reads themselves open
/// no connection, so the difference is other clients' only (the servers', and whatever else
/// shares the machine's MariaDB).
struct MariaDbStatus {
    rt: tokio::runtime::Runtime,
    conn: Option<mysql_async::Conn>,
}

impl MariaDbStatus {
    fn connect() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a tokio runtime")?;
        let conn = rt
            .block_on(mysql_async::Conn::new(root_opts()))
            .with_context(|| format!("cannot connect to MariaDB at {MARIADB} as root"))?;
        Ok(MariaDbStatus {
            rt,
            conn: Some(conn),
        })
    }

    fn connections(&mut self) -> anyhow::Result<u64> {
        let conn = self
            .conn
            .as_mut()
            .context("the status connection is closed")?;
        let row: Option<(String, String)> = self
            .rt
            .block_on(conn.query_first("SHOW GLOBAL STATUS LIKE 'Connections'"))
            .context("cannot read MariaDB's Connections status")?;
        let (_, value) = row.context("MariaDB has no Connections status")?;
        value
            .parse()
            .with_context(|| format!("MariaDB's Connections status is not a number: {value:?}"))
    }

    fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            self.rt.block_on(conn.disconnect()).ok();
        }
    }
}

/// The bench's MariaDB as root over TCP.
fn root_opts() -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some("root"))
        .prefer_socket(false)
}

fn print_run(name: &str, m: &Measured) {
    let w = &m.wrk;
    let db = m.db_cpu_per_request.map_or(String::new(), |d| {
        format!("  MariaDB cpu {:.1} us/req", us(d))
    });
    println!(
        "  {name} c={CONNECTIONS:<3} {:>7} req/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  cpu {:.1} us/req{db}  ({} requests, {} MariaDB connections opened)",
        thousands(w.requests_per_sec),
        ms(w.p50),
        ms(w.p99),
        ms(w.max),
        us(m.cpu_per_request),
        w.requests,
        m.backends_opened
    );
    w.print_warnings();
}

/// A table cell that says when the figure includes failed responses.
fn with_errors(cell: String, w: &WrkReport) -> String {
    if w.non_2xx > 0 {
        format!("{cell} ({} non-2xx!)", w.non_2xx)
    } else {
        cell
    }
}

/// What the dispatcher logged over the measured run.
#[derive(Debug, Default)]
struct LogSummary {
    statuses: BTreeMap<u16, u64>,
    /// The request lines' `us=` (the whole handler, routing to response).
    handler_us: Vec<u64>,
    start_us: Vec<u64>,
    connect_us: Vec<u64>,
    query_us: Vec<u64>,
    close_us: Vec<u64>,
    /// The pool's own `opened a backend connection` lines.
    backends_opened: u64,
    /// The pool's lines about a backend it closed or dropped.
    backends_dropped: u64,
    first_drop: Option<String>,
    slowest: Duration,
    spikes: u64,
    /// Lines at WARN or ERROR, and guest lines other than `timings`.
    warnings: u64,
    first_warning: Option<String>,
}

impl LogSummary {
    fn describe(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let mut text = format!(
            "statuses {{{}}}, slowest handler {:.2} ms, {} over {} ms, {} warnings/errors",
            statuses.join(", "),
            ms(self.slowest),
            self.spikes,
            SPIKE.as_millis(),
            self.warnings
        );
        if let Some(w) = &self.first_warning {
            text.push_str(&format!(" (first: {w})"));
        }
        text.push_str(&format!(
            "; pool: {} backends opened, {} dropped",
            self.backends_opened, self.backends_dropped
        ));
        if let Some(d) = &self.first_drop {
            text.push_str(&format!(" (first: {d})"));
        }
        text
    }
}

/// Reads tracing's lines: `... INFO request: function="list_orders" ...
/// status=200 us=812` and `... INFO guest: timings start_us=.. connect_us=.. query_us=..
/// close_us=.. function=list_orders`, and the pool's `... DEBUG dbpool: opened a backend
/// connection pool=.. backend=..` (and its lines about backends it closed).
fn parse_log(text: &str) -> LogSummary {
    let mut s = LogSummary::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let level = words.get(1).copied().unwrap_or("");
        let target = words.get(2).copied().unwrap_or("");
        let is_timings = target == "guest:" && words.contains(&"timings");
        if level == "WARN" || level == "ERROR" || (target == "guest:" && !is_timings) {
            s.warnings += 1;
            s.first_warning.get_or_insert_with(|| line.to_string());
        }
        let field = |name: &str| -> Option<u64> {
            words
                .iter()
                .find_map(|w| w.strip_prefix(name).and_then(|v| v.parse().ok()))
        };
        if target == "dbpool:" {
            if line.contains("opened a backend connection") {
                s.backends_opened += 1;
            } else if line.contains("closed") || line.contains("dropped") {
                s.backends_dropped += 1;
                s.first_drop.get_or_insert_with(|| line.to_string());
            }
        }
        if is_timings {
            let phases = (
                field("start_us="),
                field("connect_us="),
                field("query_us="),
                field("close_us="),
            );
            if let (Some(start), Some(connect), Some(query), Some(close)) = phases {
                s.start_us.push(start);
                s.connect_us.push(connect);
                s.query_us.push(query);
                s.close_us.push(close);
            }
        } else if target == "request:" && line.contains("list_orders") {
            if let Some(status) = field("status=") {
                *s.statuses.entry(status as u16).or_default() += 1;
            }
            if let Some(micros) = field("us=") {
                s.handler_us.push(micros);
                let took = Duration::from_micros(micros);
                s.slowest = s.slowest.max(took);
                s.spikes += u64::from(took >= SPIKE);
            }
        }
    }
    s
}

/// Drops and creates database `name` on the bench's MariaDB (as root, over TCP).
pub(super) fn recreate_database(name: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    rt.block_on(async {
        let mut conn = mysql_async::Conn::new(root_opts()).await.with_context(|| {
            format!("cannot connect to MariaDB at {MARIADB} as root (run `make database`)")
        })?;
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .await?;
        conn.query_drop(format!("CREATE DATABASE `{name}`")).await?;
        conn.disconnect().await?;
        anyhow::Ok(())
    })
    .with_context(|| format!("cannot recreate database {name}"))
}

/// `target/wasm32-wasip1/<profile>/<name>.wasm`, beside the bench's own modules, absolute.
pub(super) fn wasm(artifacts: &Artifacts, name: &str) -> anyhow::Result<PathBuf> {
    let dir = artifacts
        .echo_wasm
        .parent()
        .context("echo.wasm has no parent folder")?;
    let path = dir.join(format!("{name}.wasm"));
    path.canonicalize().with_context(|| {
        format!(
            "{} is missing: build the functions first (`make functions` or `make bench`)",
            path.display()
        )
    })
}

/// A native binary of this package, beside the dispatcher's.
fn native_bin(artifacts: &Artifacts, name: &str) -> anyhow::Result<PathBuf> {
    let dir = artifacts
        .dispatcher
        .parent()
        .context("the dispatcher has no parent folder")?;
    let path = dir.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{} is missing: run `cargo build --release -p bench --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// One HTTP function's manifest, with the bench's MariaDB allowed.
fn write_manifest(
    dir: &Path,
    name: &str,
    wasm: &Path,
    path: &str,
    method: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    // `{:?}` quotes a string as a TOML basic string would (escapes included).
    let env: String = env.iter().map(|(k, v)| format!("{k} = {v:?}\n")).collect();
    // As the shipped manifests: the database URL itself, so sessions come from the host's pool.
    let allow = format!("mysql://root@{MARIADB}/{DATABASE}");
    let manifest = format!(
        "name = {name:?}\n\
         wasm = {:?}\n\
         \n\
         [trigger.http]\n\
         path = {path:?}\n\
         methods = [{method:?}]\n\
         \n\
         [env]\n\
         {env}\
         \n\
         [network]\n\
         allow = [{allow:?}]\n\
         \n\
         [limits]\n\
         max_concurrency = 256\n",
        wasm.to_string_lossy()
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, manifest).with_context(|| format!("cannot write {}", file.display()))
}

/// Sends one request and fails unless it answers 200 with `want`; returns the body.
fn expect(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    want: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let (status, got) = request(addr, method, path, body)
        .with_context(|| format!("{method} {path} on {addr} failed"))?;
    if status != 200 || got != want {
        anyhow::bail!(
            "{method} {path} on {addr} answered {status} {:?}, expected 200 {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        );
    }
    Ok(got)
}

/// One HTTP/1.1 request on its own connection (`Connection: close`): status and body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let mut content = raw[head_end + 4..].to_vec();
    if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        content = dechunk(&content).context("bad chunked body")?;
    } else if let Some(len) = header("content-length").and_then(|l| l.parse().ok()) {
        content.truncate(len);
    }
    Ok((status, content))
}

/// Decodes a whole `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// The pid of MariaDB's server (`mariadbd`, or `mysqld` on older installs), from /proc.
fn mariadb_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            matches!(comm.trim(), "mariadbd" | "mysqld").then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_timings_and_handler_times() {
        let log = "\
2026-01-01T00:00:00.000001Z  INFO guest: timings start_us=40 connect_us=300 query_us=120 close_us=30 function=list_orders
2026-01-01T00:00:00.000002Z  INFO request: function=list_orders method=GET path=\"/orders\" status=200 us=700
2026-01-01T00:00:00.000003Z  INFO guest: database unavailable: refused function=list_orders
2026-01-01T00:00:00.000004Z  INFO request: function=list_orders method=GET path=\"/orders\" status=503 us=41000
2026-01-01T00:00:00.000005Z DEBUG dbpool: opened a backend connection pool=root@127.0.0.1:3306/bench_orders backend=7
2026-01-01T00:00:00.000006Z DEBUG dbpool: a session ended mid-exchange; its backend is closed pool=root@127.0.0.1:3306/bench_orders backend=7
2026-01-01T00:00:00.000007Z  INFO dbpool: database session pool ready pool=root@127.0.0.1:3306/bench_orders addr=127.0.0.1:40000 max=16
";
        let s = parse_log(log);
        assert_eq!(s.start_us, [40]);
        assert_eq!(s.connect_us, [300]);
        assert_eq!(s.query_us, [120]);
        assert_eq!(s.close_us, [30]);
        assert_eq!(s.handler_us, [700, 41000]);
        assert_eq!(s.statuses.get(&503), Some(&1));
        assert_eq!(s.spikes, 1);
        assert_eq!(s.warnings, 1);
        assert!(s.first_warning.unwrap().contains("unavailable"));
        assert_eq!(s.backends_opened, 1);
        assert_eq!(s.backends_dropped, 1);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n").unwrap(),
            b"hello!"
        );
        assert!(dechunk(b"5\r\nhel").is_none());
    }

    #[test]
    fn the_orders_serialize_as_the_function_answers() {
        let json = serde_json::to_string(&ORDERS[..1]).unwrap();
        assert_eq!(
            json,
            r#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"}]"#
        );
    }
}
