//! A fresh replica of the demo platform: `dispatcher serve --manifests manifests/` (the 12
//! shipped functions, on a catalog database of its own), from spawn to `GET
//! /_dispatcher/health` answering 200 (every function loaded): with an empty compile cache
//! (tiered: Winch first, Cranelift behind; and Cranelift only, for comparison) and with the
//! cache a first start left. Then `GET /orders` and `POST /echo` throughput in the first
//! seconds after a cold start, while Cranelift still works behind, beside the same process
//! once everything is optimized. The start-up baseline is the native hyper echo server's
//! spawn to first 200.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Section;
use crate::artifacts::Artifacts;
use crate::probe;
use crate::process::{free_local_addr, ChildGuard};
use crate::report::Row;
use crate::servers;
use crate::stats::{ms, print_median, thousands};
use crate::wrk;

pub const SECTION: Section = Section {
    name: "replica",
    title: "7. a fresh replica of the demo set (manifests/, 12 functions): spawn to ready, and throughput right after a cold start",
    run,
};

const RUNS: usize = 3;
const POLL: Duration = Duration::from_millis(2);
const GIVE_UP: Duration = Duration::from_secs(120);
/// Issue 16's target for an empty cache on this kind of machine.
const COLD_TARGET: Duration = Duration::from_secs(3);
const CONNECTIONS: u32 = 16;
const LOAD: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The seed's two orders, so that `GET /orders` has rows to return.
const ORDERS: &str = r#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"},{"order_id":2,"product_id":15,"quantity":3,"amount":256.0,"shipping":30.0,"tax":16.0,"shipping_address":"1234 NW Bobcat"}]"#;

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let count = std::fs::read_dir(&manifests)
        .with_context(|| format!("cannot read {}", manifests.display()))?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    println!("  {count} manifests in {}", manifests.display());
    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-replica-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let replica = |db: &Database, cache: &Path, compile: &str, addr: SocketAddr| {
        let mut cmd = servers::dispatcher_command(artifacts, &manifests, addr, cache);
        cmd.env("DATABASE_URL", db.url())
            .env("NOTIFY_URL", "http://127.0.0.1:9/events")
            .arg("--compile")
            .arg(compile);
        cmd
    };

    let (mut cold, mut optimized_behind, mut warm, mut native) = (vec![], vec![], vec![], vec![]);
    for i in 0..RUNS {
        let db = Database::create(&format!("bench_replica_{i}"))?;
        let cache = tmp.path().join(format!("cache-{i}"));
        let log = tmp.path().join(format!("replica-{i}.log"));
        let mut start = Start::spawn("dispatcher (empty cache)", &log, |a| {
            replica(&db, &cache, "tiered", a)
        })?;
        cold.push(start.ready);
        optimized_behind.push(start.wait_optimized()?);
        drop(start);
        let start = Start::spawn("dispatcher (warm cache)", &log, |a| {
            replica(&db, &cache, "tiered", a)
        })?;
        warm.push(start.ready);
        native.push(native_start(artifacts)?);
    }
    let db = Database::create("bench_replica_optimized")?;
    let cache = tmp.path().join("cache-optimized");
    let log = tmp.path().join("replica-optimized.log");
    let cranelift = Start::spawn("dispatcher (empty cache, optimized)", &log, |a| {
        replica(&db, &cache, "optimized", a)
    })?
    .ready;
    println!(
        "  dispatcher, empty cache, --compile optimized: {:.0} ms",
        ms(cranelift)
    );

    let cold = print_median("dispatcher, empty cache, tiered: ready", &cold);
    let behind = print_median(
        "dispatcher, empty cache, tiered: all optimized",
        &optimized_behind,
    );
    let warm = print_median("dispatcher, warm cache: ready", &warm);
    let native = print_median("native hyper echo: first 200", &native);

    // Throughput in the first seconds after a cold start, then once optimized.
    let db = Database::create("bench_replica_load")?;
    let cache = tmp.path().join("cache-load");
    let log = tmp.path().join("replica-load.log");
    let mut start = Start::spawn("dispatcher (load after start)", &log, |a| {
        replica(&db, &cache, "tiered", a)
    })?;
    let get = tmp.path().join("get.lua");
    std::fs::write(&get, "wrk.method = \"GET\"\n").context("cannot write the wrk script")?;
    let post = tmp.path().join("post.lua");
    std::fs::write(&post, wrk::post_script(64)).context("cannot write the wrk script")?;
    start.expect_200("GET", "/init", b"")?;
    start.expect_200("POST", "/create_orders", ORDERS.as_bytes())?;
    let since_ready = start.since_spawn.elapsed() - start.ready;
    println!(
        "  load from {:.0} ms after ready ({} modules still optimizing)",
        ms(since_ready),
        start.optimizing()?
    );
    let orders_early = start.load("GET /orders", "/orders", &get)?;
    let echo_early = start.load("POST /echo", "/echo", &post)?;
    start.wait_optimized()?;
    let orders_late = start.load("GET /orders, optimized", "/orders", &get)?;
    let echo_late = start.load("POST /echo, optimized", "/echo", &post)?;

    let start_row = |measure: &str, d: Duration, target: bool| {
        let row = Row::new(
            measure,
            format!("{:.0} ms", ms(d)),
            format!("{:.1} ms (native echo start)", ms(native)),
        )
        .ratio(ms(d), ms(native));
        if target {
            row.target(
                format!("≤ {} s", COLD_TARGET.as_secs()),
                Some(d <= COLD_TARGET),
            )
        } else {
            row
        }
    };
    let rps_row = |measure: &str, early: f64, late: f64| {
        Row::new(
            measure,
            format!("{} req/s", thousands(early)),
            format!("{} req/s (same process, optimized)", thousands(late)),
        )
        .ratio(early, late)
    };
    Ok(vec![
        start_row(
            &format!("{count} functions, empty cache: ready (tiered)"),
            cold,
            true,
        ),
        start_row(
            &format!("{count} functions, empty cache: all optimized behind"),
            behind,
            false,
        ),
        start_row(
            &format!("{count} functions, empty cache: ready (--compile optimized)"),
            cranelift,
            false,
        ),
        start_row(
            &format!("{count} functions, warm cache: ready"),
            warm,
            false,
        ),
        rps_row(
            "GET /orders right after a cold start",
            orders_early,
            orders_late,
        ),
        rps_row("POST /echo right after a cold start", echo_early, echo_late),
    ])
}

/// A dispatcher spawned on a free port, timed to its first health 200.
struct Start {
    child: ChildGuard,
    addr: SocketAddr,
    since_spawn: Instant,
    ready: Duration,
}

impl Start {
    fn spawn(
        name: &str,
        log: &Path,
        command: impl FnOnce(SocketAddr) -> Command,
    ) -> anyhow::Result<Start> {
        let addr = free_local_addr()?;
        let mut cmd = command(addr);
        let since_spawn = Instant::now();
        let mut child = ChildGuard::spawn(name, &mut cmd, Some(log))?;
        loop {
            match probe::get(addr, "/_dispatcher/health", REQUEST_TIMEOUT) {
                Ok(reply) if reply.status == 200 => break,
                _ => {
                    child.ensure_running()?;
                    if since_spawn.elapsed() > GIVE_UP {
                        anyhow::bail!("{name} was not ready within {GIVE_UP:?}");
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
        let ready = since_spawn.elapsed();
        Ok(Start {
            child,
            addr,
            since_spawn,
            ready,
        })
    }

    /// Modules still compiling behind, from health.
    fn optimizing(&self) -> anyhow::Result<u64> {
        let reply = probe::get(self.addr, "/_dispatcher/health", REQUEST_TIMEOUT)?;
        let health: serde_json::Value =
            serde_json::from_slice(&reply.body).context("health is not JSON")?;
        health["optimizing"]
            .as_u64()
            .with_context(|| format!("health has no `optimizing`: {health}"))
    }

    /// Waits until nothing is optimizing; the time since spawn.
    fn wait_optimized(&mut self) -> anyhow::Result<Duration> {
        super::startup::wait_optimized(&mut self.child, self.addr)?;
        Ok(self.since_spawn.elapsed())
    }

    fn expect_200(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<()> {
        let reply = match method {
            "GET" => probe::get(self.addr, path, REQUEST_TIMEOUT)?,
            _ => probe::post(self.addr, path, body, REQUEST_TIMEOUT)?,
        };
        if reply.status != 200 {
            anyhow::bail!(
                "{method} {path} answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        Ok(())
    }

    fn load(&self, what: &str, path: &str, script: &Path) -> anyhow::Result<f64> {
        let report = wrk::run(
            &format!("http://{}{path}", self.addr),
            CONNECTIONS,
            LOAD,
            script,
        )?;
        report.print_warnings();
        println!(
            "  {what}: {} req/s, p99 {:.1} ms",
            thousands(report.requests_per_sec),
            ms(report.p99)
        );
        Ok(report.requests_per_sec)
    }
}

fn native_start(artifacts: &Artifacts) -> anyhow::Result<Duration> {
    let native = |addr| servers::native_echo_command(artifacts, addr);
    Ok(super::startup::first_response("native_echo", native, None)?.0)
}

/// A database of the bench's own (catalog and orders), dropped at the end.
struct Database {
    name: String,
}

impl Database {
    fn create(name: &str) -> anyhow::Result<Database> {
        mysql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ))?;
        Ok(Database {
            name: name.to_string(),
        })
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = mysql(&format!("DROP DATABASE IF EXISTS {}", self.name)) {
            eprintln!("  warning: cannot drop {}: {e:#}", self.name);
        }
    }
}

fn mysql(statements: &str) -> anyhow::Result<()> {
    let out = Command::new("mysql")
        .args(["-h127.0.0.1", "-P3306", "-uroot", "-e", statements])
        .output()
        .context("cannot run the mysql client (scripts/setup.sh installs mariadb-client)")?;
    if !out.status.success() {
        anyhow::bail!("mysql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
