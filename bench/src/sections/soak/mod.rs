//! `make soak`: one dispatcher serving the demo manifests (plus `probe` on an every-second
//! schedule) under mixed load for `SOAK_SECONDS` (default 300): paced `wrk` on `POST /echo`
//! and on the orders endpoints, a deploy and a rollback every few seconds through the CLI,
//! the schedules firing throughout. Its RSS, threads and descriptors are read at rest (load
//! stopped for a moment, so no client connection is counted) after a warm-up and after each
//! fifth of the soak; the section fails if any request, deploy, rollback or scheduled run
//! failed, a fire time ran twice or never, or the footprint grew past its bound.

mod churn;
mod footprint;
mod history;
mod load;
mod verdict;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::orders::{recreate_database, wasm};
use super::Section;
use crate::artifacts::Artifacts;
use crate::probe;
use crate::report::Row;
use crate::servers;
use crate::wrk;
use churn::{Churn, Target};
use footprint::Footprint;
use load::Counts;

pub const SECTION: Section = Section {
    name: "soak",
    title: "soak: mixed load for SOAK_SECONDS (echo, orders, schedules, deploys and rollbacks); nothing may grow",
    run,
};

const PLATFORM_DB: &str = "bench_soak_platform";
const DATA_DB: &str = "bench_soak_data";
const TOKEN: &str = "bench-soak-token";
const DEFAULT_SECONDS: u64 = 300;
/// The soak is measured in this many phases, with a footprint at rest after each.
const PHASES: u32 = 5;
/// One warm-up phase; repeated until no module waits for Cranelift.
const WARMUP: Duration = Duration::from_secs(15);
const MAX_WARMUPS: u32 = 8;
/// Load stopped this long before a footprint at rest.
const QUIET: Duration = Duration::from_secs(3);
/// How often the footprint is read under load (for the peaks).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The seed's two orders, inserted once so that `GET /orders` has rows to return.
const SEED_ORDERS: &str = r#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"},{"order_id":2,"product_id":15,"quantity":3,"amount":256.0,"shipping":30.0,"tax":16.0,"shipping_address":"1234 NW Bobcat"}]"#;

/// What one phase of load did.
#[derive(Default)]
struct Phase {
    echo: Counts,
    orders: Counts,
    /// The largest footprint seen under load.
    peak: Footprint,
}

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    wrk::check_installed()?;
    let seconds = soak_seconds()?;
    recreate_database(PLATFORM_DB)?;
    recreate_database(DATA_DB)?;
    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-soak-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifests = tmp.path().join("manifests");
    copy_demo_manifests(artifacts, &manifests)?;
    let probe_manifest = super::schedule::probe_manifest(&wasm(artifacts, "probe")?);
    std::fs::write(manifests.join("probe.toml"), &probe_manifest)
        .context("cannot write the probe's manifest")?;

    let log = tmp.path().join("dispatcher.log");
    let mut cmd = platform_command(artifacts, &manifests, &tmp.path().join("cache"));
    let (mut dispatcher, addr) = servers::start(
        "dispatcher",
        &mut cmd,
        servers::DISPATCHER_READY,
        Some(&log),
    )?;
    let pid = dispatcher.id();
    println!(
        "  dispatcher pid {pid} on {addr}: the demo manifests and probe (every second), platform database {PLATFORM_DB}"
    );
    expect_ok(probe::get(addr, "/init", REQUEST_TIMEOUT), "GET /init")?;
    expect_ok(
        probe::post(
            addr,
            "/create_orders",
            SEED_ORDERS.as_bytes(),
            REQUEST_TIMEOUT,
        ),
        "POST /create_orders",
    )?;

    let read_manifest = |name: &str| {
        let file = manifests.join(format!("{name}.toml"));
        std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))
    };
    let targets = vec![
        Target {
            name: "echo".into(),
            manifest: read_manifest("echo")?,
            modules: vec![artifacts.echo_std_wasm.clone(), artifacts.echo_wasm.clone()],
        },
        Target {
            name: "list_orders".into(),
            manifest: read_manifest("list_orders")?,
            modules: vec![wasm(artifacts, "list_orders")?],
        },
        Target {
            name: "probe".into(),
            manifest: probe_manifest,
            modules: vec![wasm(artifacts, "probe")?],
        },
    ];
    let mut churn = Churn::new(&artifacts.dispatcher, addr, TOKEN, tmp.path(), targets);
    let mut total = Phase::default();

    // Warm-up: every churned module seen once and every module compiled by Cranelift, then
    // one more phase on Cranelift's code, so that the start is not the compiler's memory.
    let warm_started = Instant::now();
    let mut optimized = false;
    for i in 1..=MAX_WARMUPS {
        let phase = run_phase(pid, addr, WARMUP, &mut churn, tmp.path())?;
        add(&mut total, &phase);
        if optimized {
            break;
        }
        let optimizing = health(addr)?.optimizing;
        optimized = optimizing == 0;
        if !optimized {
            println!("  warm-up {i}: {optimizing} module(s) still waiting for Cranelift");
        }
    }
    dispatcher.ensure_running()?;
    let start = at_rest(pid)?;
    let soak_started = Utc::now();
    println!(
        "  warm-up done after {:.0} s; soaking for {seconds} s in {PHASES} phases",
        warm_started.elapsed().as_secs_f64()
    );
    print_footprint("start (at rest)", &start, None);

    let phase_length = Duration::from_secs((seconds / u64::from(PHASES)).max(5));
    let mut timeline = vec![start];
    let mut peak = Footprint::default();
    for i in 1..=PHASES {
        let phase = run_phase(pid, addr, phase_length, &mut churn, tmp.path())?;
        add(&mut total, &phase);
        peak = max_of(peak, phase.peak);
        dispatcher.ensure_running()?;
        let rest = at_rest(pid)?;
        print_footprint(&format!("after phase {i}/{PHASES}"), &rest, Some(&phase));
        timeline.push(rest);
    }
    let soak_ended = Utc::now();
    let end = *timeline.last().context("no footprint")?;
    print_footprint("peak under load", &peak, None);

    // Fire times wholly inside the soak: from the first second after its start to the last
    // whole second before its end (a fire is logged within milliseconds, see section 5).
    let first = second_floor(soak_started)? + TimeDelta::seconds(1);
    let last = second_floor(soak_ended)? - TimeDelta::seconds(1);
    let log_text =
        std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
    let runs = history::load(PLATFORM_DB, &log_text, first, last)?;
    let problems = verdict::LogProblems::scan(&log_text);

    let verdict = verdict::Verdict {
        seconds,
        start,
        end,
        echo: &total.echo,
        orders: &total.orders,
        churn: &churn.tally,
        runs: &runs,
        log: &problems,
    };
    let (rows, failures) = verdict.judge();
    verdict.print(&failures);
    drop(dispatcher);
    if failures.is_empty() {
        history::drop_databases(&[PLATFORM_DB, DATA_DB])?;
        Ok(rows)
    } else {
        // Kept for a post-mortem: the log, the manifests, the databases.
        let kept = tmp.keep();
        anyhow::bail!(
            "{} (the log is kept in {}, the databases {PLATFORM_DB} and {DATA_DB} too)",
            failures.join("; "),
            kept.join("dispatcher.log").display()
        )
    }
}

/// `SOAK_SECONDS`, or the default.
fn soak_seconds() -> anyhow::Result<u64> {
    match std::env::var("SOAK_SECONDS") {
        Ok(s) if !s.trim().is_empty() => {
            let n: u64 = s
                .trim()
                .parse()
                .with_context(|| format!("SOAK_SECONDS={s} is not a number of seconds"))?;
            anyhow::ensure!(n >= 10, "SOAK_SECONDS={n}: at least 10");
            Ok(n)
        }
        _ => Ok(DEFAULT_SECONDS),
    }
}

/// Runs both loads and the churn for `length`, reading the footprint every few seconds.
fn run_phase(
    pid: u32,
    addr: SocketAddr,
    length: Duration,
    churn: &mut Churn,
    dir: &Path,
) -> anyhow::Result<Phase> {
    let until = Instant::now() + length;
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| load::run(&load::ECHO, addr, length, dir));
        let orders = scope.spawn(|| load::run(&load::ORDERS, addr, length, dir));
        let churned = scope.spawn(|| churn.run_until(until));
        let mut peak = Footprint::default();
        while !(echo.is_finished() && orders.is_finished() && churned.is_finished()) {
            if let Ok(now) = footprint::read(pid) {
                peak = max_of(peak, now);
            }
            std::thread::sleep(SAMPLE_EVERY.min(until.saturating_duration_since(Instant::now())));
            if Instant::now() >= until {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        churned
            .join()
            .map_err(|_| anyhow::anyhow!("the churn thread panicked"))?;
        let join = |h: std::thread::ScopedJoinHandle<'_, anyhow::Result<Counts>>| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
        };
        Ok(Phase {
            echo: join(echo)?,
            orders: join(orders)?,
            peak,
        })
    })
}

/// The footprint once load has stopped for [`QUIET`].
fn at_rest(pid: u32) -> anyhow::Result<Footprint> {
    std::thread::sleep(QUIET);
    footprint::read(pid)
}

fn add(total: &mut Phase, phase: &Phase) {
    total.echo.add(&phase.echo);
    total.orders.add(&phase.orders);
    total.peak = max_of(total.peak, phase.peak);
}

/// The larger of each figure.
fn max_of(a: Footprint, b: Footprint) -> Footprint {
    Footprint {
        rss_kib: a.rss_kib.max(b.rss_kib),
        threads: a.threads.max(b.threads),
        fds: a.fds.max(b.fds),
        db_sockets: a.db_sockets.max(b.db_sockets),
        other_sockets: a.other_sockets.max(b.other_sockets),
    }
}

fn print_footprint(label: &str, f: &Footprint, phase: Option<&Phase>) {
    let load = phase.map_or(String::new(), |p| {
        format!(
            "; phase: echo {} requests, orders {} requests, max {:.0} / {:.0} ms",
            p.echo.requests, p.orders.requests, p.echo.max_ms, p.orders.max_ms
        )
    });
    println!(
        "  {label:<18} RSS {:7.1} MiB  threads {:3}  fds {:3} (database {:2}, other sockets {:2}){load}",
        f.rss_mib(),
        f.threads,
        f.fds,
        f.db_sockets,
        f.other_sockets
    );
}

fn second_floor(t: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    t.duration_trunc(TimeDelta::seconds(1))
        .context("cannot round the clock")
}

fn health(addr: SocketAddr) -> anyhow::Result<dispatcher::api::Health> {
    let reply = probe::get(addr, "/_dispatcher/health", REQUEST_TIMEOUT)
        .context("GET /_dispatcher/health")?;
    serde_json::from_slice(&reply.body).with_context(|| {
        format!(
            "GET /_dispatcher/health answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    })
}

fn expect_ok(reply: std::io::Result<probe::Reply>, what: &str) -> anyhow::Result<()> {
    let reply = reply.with_context(|| format!("{what} failed"))?;
    anyhow::ensure!(
        reply.status == 200,
        "{what} answered {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    Ok(())
}

/// `dispatcher serve` of `manifests` with the admin API on, its platform state in
/// [`PLATFORM_DB`] and the orders functions' data in [`DATA_DB`]. Request lines are left out
/// of the log (`request=warn`): at this rate they would be gigabytes.
fn platform_command(artifacts: &Artifacts, manifests: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(&artifacts.dispatcher);
    cmd.arg("serve")
        .arg("--manifests")
        .arg(manifests)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("DISPATCHER_MANIFESTS")
        .env(
            "DISPATCHER_DB",
            format!("mysql://root@127.0.0.1:3306/{PLATFORM_DB}"),
        )
        .env(
            "DATABASE_URL",
            format!("mysql://root@127.0.0.1:3306/{DATA_DB}"),
        )
        // `notify` is deployed but never called.
        .env("NOTIFY_URL", "http://127.0.0.1:9/events")
        .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info,request=warn")
        .env("NO_COLOR", "1");
    cmd
}

/// Copies `manifests/` into `to`, each `wasm` path pointing at the module the bench built.
fn copy_demo_manifests(artifacts: &Artifacts, to: &Path) -> anyhow::Result<()> {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let entries =
        std::fs::read_dir(&from).with_context(|| format!("cannot list {}", from.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut out = String::new();
        for line in text.lines() {
            match module_stem(line) {
                Some(stem) => {
                    out.push_str(&format!(
                        "wasm = {:?}\n",
                        wasm(artifacts, &stem)?.to_string_lossy()
                    ));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        let file = to.join(path.file_name().context("a manifest without a name")?);
        std::fs::write(&file, out).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// `echo` from `wasm = "../target/wasm32-wasip1/release/echo.wasm"`.
fn module_stem(line: &str) -> Option<String> {
    let value = line.strip_prefix("wasm")?.trim_start().strip_prefix('=')?;
    let path = PathBuf::from(value.trim().trim_matches('"'));
    Some(path.file_stem()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_module_of_a_manifest_line() {
        assert_eq!(
            module_stem("wasm = \"../target/wasm32-wasip1/release/list_orders.wasm\"").as_deref(),
            Some("list_orders")
        );
        assert_eq!(module_stem("name = \"wasm\""), None);
        assert_eq!(module_stem("wasm_dir = 1").as_deref(), None);
    }
}
