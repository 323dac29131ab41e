//! First response after start-up: from spawning the server to its first `200` for
//! `POST /echo`, polling every millisecond. The dispatcher starts once with an empty compile
//! cache (it compiles `echo.wasm`) and once with the cache that start left behind.

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
use crate::servers::{self, ECHO_PATH};
use crate::stats::{ms, print_median};

pub const SECTION: Section = Section {
    name: "startup",
    title: "3. first response after start-up: spawn to first 200 of POST /echo",
    run,
};

/// Each start is repeated this many times; the median is reported.
const RUNS: usize = 3;
const POLL: Duration = Duration::from_millis(1);
const GIVE_UP: Duration = Duration::from_secs(60);
/// Cranelift behind, one module at a time on one core: a dozen 2 MB modules take under a minute.
const OPTIMIZE_GIVE_UP: Duration = Duration::from_secs(180);
/// DESIGN.md's yardsticks: the seed app on WasmEdge 44 ms, Spin 61 ms (native 4 ms).
const TARGET: Duration = Duration::from_millis(44);

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifests = servers::write_echo_manifests(tmp.path(), &artifacts.echo_wasm)?;

    let (mut cold, mut warm, mut native) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let cache = tmp.path().join(format!("cache-{i}"));
        let log = tmp.path().join(format!("dispatcher-{i}.log"));
        let dispatcher = |addr| servers::dispatcher_command(artifacts, &manifests, addr, &cache);
        let (took, mut child, addr) =
            first_response("dispatcher (empty cache)", dispatcher, Some(&log))?;
        cold.push(took);
        // Tiered: the cache gets Cranelift's code once the background compile is done.
        wait_optimized(&mut child, addr)?;
        drop(child);
        if is_empty_dir(&cache) {
            println!(
                "  WARNING: the cache is still empty after a start: the warm start compiles again"
            );
        }
        warm.push(first_response("dispatcher (warm cache)", dispatcher, Some(&log))?.0);
        native.push(
            first_response(
                "native_echo",
                |addr| servers::native_echo_command(artifacts, addr),
                None,
            )?
            .0,
        );
    }
    let cold = print_median("dispatcher, empty cache (compiles)", &cold);
    let warm = print_median("dispatcher, warm cache (loads)", &warm);
    let native = print_median("native hyper echo", &native);

    let row = |measure: &str, d: Duration| {
        Row::new(
            measure,
            format!("{:.1} ms", ms(d)),
            format!("{:.1} ms", ms(native)),
        )
        .ratio(ms(d), ms(native))
        .target(
            format!("< {} ms (WasmEdge 44, Spin 61)", TARGET.as_millis()),
            Some(d < TARGET),
        )
    };
    Ok(vec![
        row("first response, empty cache", cold),
        row("first response, warm cache", warm),
    ])
}

/// Spawns the server that `command` builds for a free port and times until its first `200`;
/// the server is still running.
pub(super) fn first_response(
    name: &str,
    command: impl FnOnce(SocketAddr) -> Command,
    log: Option<&Path>,
) -> anyhow::Result<(Duration, ChildGuard, SocketAddr)> {
    let addr = free_local_addr()?;
    let mut cmd = command(addr);
    let started = Instant::now();
    let mut child = ChildGuard::spawn(name, &mut cmd, log)?;
    loop {
        match probe::post(addr, ECHO_PATH, b"ping", Duration::from_secs(5)) {
            Ok(reply) if reply.status == 200 => return Ok((started.elapsed(), child, addr)),
            // The dispatcher answers 503 `starting` until its functions are loaded.
            Ok(reply) if reply.status == 503 => {
                child.ensure_running()?;
                std::thread::sleep(POLL);
            }
            Ok(reply) => anyhow::bail!(
                "{name}: the first answer to POST {ECHO_PATH} was {}, not 200",
                reply.status
            ),
            Err(_) => {
                child.ensure_running()?;
                if started.elapsed() > GIVE_UP {
                    anyhow::bail!("{name} did not answer within {GIVE_UP:?}");
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Waits until the dispatcher's health says nothing is compiling behind.
pub(super) fn wait_optimized(child: &mut ChildGuard, addr: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let reply = probe::get(addr, "/_dispatcher/health", Duration::from_secs(5))?;
        let health: serde_json::Value =
            serde_json::from_slice(&reply.body).context("health is not JSON")?;
        if health["optimizing"] == 0 {
            return Ok(());
        }
        child.ensure_running()?;
        if started.elapsed() > OPTIMIZE_GIVE_UP {
            anyhow::bail!("still optimizing after {OPTIMIZE_GIVE_UP:?}: {health}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}
