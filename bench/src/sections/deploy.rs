//! Deploy to first response: `dispatcher deploy` of the largest orders function to a running
//! platform (catalog in MariaDB), timed from the CLI's start to the first `200` of its route.
//! Cold: a module this platform never compiled (fresh process, empty compile cache). Cached:
//! the same module again after a `remove`. The baseline is what a deploy replaces: restarting
//! a platform whose manifests folder holds the function, with an empty cache.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::orders::{recreate_database, wasm};
use super::Section;
use crate::artifacts::Artifacts;
use crate::probe;
use crate::process::{free_local_addr, ChildGuard};
use crate::report::Row;
use crate::servers;
use crate::stats::{ms, print_median};

pub const SECTION: Section = Section {
    name: "deploy",
    title: "6. deploy to first response: `dispatcher deploy` of the largest orders function to a running platform",
    run,
};

/// Every orders function; the largest module is the one deployed.
const ORDERS_FUNCTIONS: &[&str] = &[
    "create_order",
    "create_orders",
    "update_order",
    "list_orders",
    "delete_order",
    "order_count",
    "order_stats",
    "get_order_stats",
    "init",
];
const RUNS: usize = 3;
const TOKEN: &str = "bench-admin-token";
const DATA_DB: &str = "bench_deploy_data";
const POLL: Duration = Duration::from_millis(1);
const GIVE_UP: Duration = Duration::from_secs(60);
const COLD_TARGET: Duration = Duration::from_millis(500);
const CACHED_TARGET: Duration = Duration::from_millis(50);

/// The function under test: its route and a request it answers with 200.
struct Subject {
    name: &'static str,
    wasm: PathBuf,
    size: u64,
}

fn largest(artifacts: &Artifacts) -> anyhow::Result<Subject> {
    let mut best: Option<Subject> = None;
    for name in ORDERS_FUNCTIONS {
        let wasm = wasm(artifacts, name)?;
        let size = std::fs::metadata(&wasm)?.len();
        if best.as_ref().is_none_or(|b| size > b.size) {
            best = Some(Subject { name, wasm, size });
        }
    }
    best.context("no orders functions")
}

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    let subject = largest(artifacts)?;
    println!(
        "  function: {} ({:.2} MiB), answered by POST /{} with one order",
        subject.name,
        subject.size as f64 / (1 << 20) as f64,
        subject.name
    );
    recreate_database(DATA_DB)?;
    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-deploy-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifest_dir = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifest_dir)?;
    let manifest = manifest_dir.join(format!("{}.toml", subject.name));
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\nwasm = \"{wasm}\"\n[trigger.http]\npath = \"/{name}\"\nmethods = [\"POST\"]\n[env]\nDATABASE_URL = \"mysql://root@127.0.0.1:3306/{DATA_DB}\"\n[network]\nallow = [\"127.0.0.1:3306\"]\n",
            name = subject.name,
            wasm = subject.wasm.display()
        ),
    )?;
    let route = format!("/{}", subject.name);
    // `init` creates the orders table; it is deployed and invoked once per platform, untimed.
    let init = tmp.path().join("init.toml");
    std::fs::write(
        &init,
        format!(
            "name = \"init\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/init\"\n[env]\nDATABASE_URL = \"mysql://root@127.0.0.1:3306/{DATA_DB}\"\n[network]\nallow = [\"127.0.0.1:3306\"]\n",
            wasm(artifacts, "init")?.display()
        ),
    )?;

    let (mut cold, mut cached, mut restart) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let catalog = format!("bench_deploy_catalog_{i}");
        recreate_database(&catalog)?;
        let cache = tmp.path().join(format!("cache-{i}"));
        let addr = free_local_addr()?;
        let log = tmp.path().join(format!("dispatcher-{i}.log"));
        let mut cmd = platform_command(artifacts, addr, &cache, &catalog);
        let (_platform, addr) = servers::start(
            "dispatcher (deploy target)",
            &mut cmd,
            servers::DISPATCHER_READY,
            Some(&log),
        )?;
        cli(artifacts, addr, &["deploy", &init.display().to_string()])?;
        cli(artifacts, addr, &["invoke", "init"])?;
        cold.push(deploy_to_first_response(
            artifacts, addr, &manifest, &route,
        )?);
        cli(artifacts, addr, &["remove", subject.name])?;
        cached.push(deploy_to_first_response(
            artifacts, addr, &manifest, &route,
        )?);

        // The baseline: a restart that deploys the folder, cache empty.
        let addr = free_local_addr()?;
        let cache = tmp.path().join(format!("restart-cache-{i}"));
        let mut cmd = servers::dispatcher_command(artifacts, &manifest_dir, addr, &cache);
        restart.push(spawn_to_first_response(&mut cmd, addr, &route)?);
        recreate_database(&catalog).ok();
    }
    let cold = print_median("deploy, never compiled", &cold);
    let cached = print_median("deploy, compiled before", &cached);
    let restart = print_median("restart with the manifest (baseline)", &restart);
    Ok(vec![
        Row::new(
            "deploy -> first 200, cold",
            format!("{:.0} ms", ms(cold)),
            format!("{:.0} ms restart", ms(restart)),
        )
        .ratio(ms(cold), ms(restart))
        .target("<= 500 ms", Some(cold <= COLD_TARGET)),
        Row::new(
            "deploy -> first 200, cached",
            format!("{:.1} ms", ms(cached)),
            format!("{:.0} ms restart", ms(restart)),
        )
        .ratio(ms(cached), ms(restart))
        .target("<= 50 ms", Some(cached <= CACHED_TARGET)),
    ])
}

/// `dispatcher serve` with the admin API on, its catalog in `catalog`, no manifests.
fn platform_command(
    artifacts: &Artifacts,
    addr: SocketAddr,
    cache: &Path,
    catalog: &str,
) -> Command {
    let mut cmd = Command::new(&artifacts.dispatcher);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("DATABASE_URL")
        .env_remove("DISPATCHER_MANIFESTS")
        .env(
            "DISPATCHER_DB",
            format!("mysql://root@127.0.0.1:3306/{catalog}"),
        )
        .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
        .env("NO_COLOR", "1");
    cmd
}

/// Runs the CLI against the platform at `addr` and fails on a non-zero exit.
fn cli(artifacts: &Artifacts, addr: SocketAddr, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(&artifacts.dispatcher)
        .args(args)
        .env("DISPATCHER_SERVER", format!("http://{addr}"))
        .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
        .output()
        .context("cannot run the dispatcher CLI")?;
    anyhow::ensure!(
        out.status.success(),
        "dispatcher {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// From starting `dispatcher deploy` to the first 200 of the route.
fn deploy_to_first_response(
    artifacts: &Artifacts,
    addr: SocketAddr,
    manifest: &Path,
    route: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    cli(
        artifacts,
        addr,
        &["deploy", &manifest.display().to_string()],
    )?;
    let deployed = started.elapsed();
    let first = first_200(addr, route, started, || Ok(()))?;
    println!(
        "    deploy returned after {:6.1} ms, first 200 after {:6.1} ms",
        ms(deployed),
        ms(first)
    );
    Ok(first)
}

fn spawn_to_first_response(
    cmd: &mut Command,
    addr: SocketAddr,
    route: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = ChildGuard::spawn("dispatcher (restart)", cmd, None)?;
    first_200(addr, route, started, || child.ensure_running())
}

/// One order, as `create_orders` takes them.
const ORDER: &[u8] = br#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"}]"#;

/// Polls `POST route` with one order until it answers 200.
fn first_200(
    addr: SocketAddr,
    route: &str,
    started: Instant,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    loop {
        match probe::post(addr, route, ORDER, Duration::from_secs(10)) {
            Ok(reply) if reply.status == 200 => return Ok(started.elapsed()),
            Ok(reply) if reply.status == 404 => {}
            // A restarted platform answers 503 `starting` until its functions are loaded.
            Ok(reply)
                if reply.status == 503 && reply.body.starts_with(br#"{"error":"starting""#) =>
            {
                alive()?
            }
            Ok(reply) => anyhow::bail!(
                "POST {route} answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
            Err(_) => alive()?,
        }
        if started.elapsed() > GIVE_UP {
            anyhow::bail!("POST {route} did not answer 200 within {GIVE_UP:?}");
        }
        std::thread::sleep(POLL);
    }
}
