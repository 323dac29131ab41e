//! No-op invocation cost: a fresh instance of `noop.wasm` per call (instantiate, run, tear
//! down) through the dispatcher's library, against spawning a native process that does the same.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use dispatcher::runtime::{Invocation, Runtime, RuntimeConfig};

use super::Section;
use crate::artifacts::Artifacts;
use crate::report::Row;
use crate::stats::{us, Summary};

pub const SECTION: Section = Section {
    name: "invoke",
    title: "1. no-op invocation: fresh wasm instance vs native process spawn",
    run,
};

/// What `noop` (wasm and native) writes.
const EXPECTED: &[u8] = b"Status: 204\n\n";
const WARMUP: usize = 500;
const INVOCATIONS: usize = 5000;
const SPAWN_WARMUP: usize = 20;
const SPAWNS: usize = 500;
/// The stated target for the median.
const TARGET: Duration = Duration::from_micros(20);

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    let wasm = invoke_wasm(artifacts)?;
    println!(
        "wasm:   median {:.1} us, p99 {:.1} us, max {:.1} us over {} invocations (after {WARMUP} warm-up)",
        us(wasm.median),
        us(wasm.p99),
        us(wasm.max),
        wasm.count
    );
    let native = spawn_native(artifacts)?;
    println!(
        "native: median {:.1} us, p99 {:.1} us, max {:.1} us over {} spawns (after {SPAWN_WARMUP} warm-up)",
        us(native.median),
        us(native.p99),
        us(native.max),
        native.count
    );
    println!(
        "a wasm invocation costs {:.3}x a process spawn ({:.0}x cheaper)",
        us(wasm.median) / us(native.median),
        us(native.median) / us(wasm.median)
    );
    Ok(vec![
        Row::new(
            "no-op invocation, median",
            format!("{:.1} µs", us(wasm.median)),
            format!("{:.1} µs (spawn)", us(native.median)),
        )
        .ratio(us(wasm.median), us(native.median))
        .target(
            format!("≤ {} µs", TARGET.as_micros()),
            Some(wasm.median <= TARGET),
        ),
        Row::new(
            "no-op invocation, p99",
            format!("{:.1} µs", us(wasm.p99)),
            format!("{:.1} µs (spawn)", us(native.p99)),
        )
        .ratio(us(wasm.p99), us(native.p99)),
    ])
}

/// Prepares `noop.wasm` once and times each of [`INVOCATIONS`] sequential invocations on a
/// current-thread tokio runtime.
fn invoke_wasm(artifacts: &Artifacts) -> anyhow::Result<Summary> {
    let bytes = std::fs::read(&artifacts.noop_wasm)
        .with_context(|| format!("cannot read {}", artifacts.noop_wasm.display()))?;
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: None,
        max_instances: 100,
        ..Default::default()
    })
    .context("cannot create the dispatcher's runtime")?;
    let prepared = runtime
        .prepare(&bytes)
        .map_err(|e| anyhow::anyhow!("cannot prepare {}: {e}", artifacts.noop_wasm.display()))?;
    println!(
        "noop.wasm: {} bytes, compiled in {:.1} ms",
        bytes.len(),
        prepared.load_time.as_secs_f64() * 1e3
    );

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let function: Arc<str> = Arc::from("noop");
    let invocation = || Invocation {
        function: function.clone(),
        args: vec!["noop".into()],
        env: Vec::new(),
        stdin: Bytes::new(),
        memory_bytes: 128 << 20,
        timeout: Duration::from_secs(10),
        stdout_cap: 32 << 20,
    };
    let samples = tokio.block_on(async {
        let mut samples = Vec::with_capacity(INVOCATIONS);
        for i in 0..WARMUP + INVOCATIONS {
            let inv = invocation();
            let started = Instant::now();
            let result = prepared.invoke(inv).await;
            let elapsed = started.elapsed();
            let output = result.with_context(|| format!("invocation {i} failed"))?;
            if output != EXPECTED {
                anyhow::bail!(
                    "invocation {i} wrote {:?}, expected {:?}",
                    String::from_utf8_lossy(&output),
                    String::from_utf8_lossy(EXPECTED)
                );
            }
            if i >= WARMUP {
                samples.push(elapsed);
            }
        }
        Ok(samples)
    })?;
    Summary::of(&samples).context("no samples")
}

/// Times [`SPAWNS`] sequential runs of `noop_native` (spawn, read its stdout, wait).
fn spawn_native(artifacts: &Artifacts) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(SPAWNS);
    for i in 0..SPAWN_WARMUP + SPAWNS {
        let started = Instant::now();
        let out = Command::new(&artifacts.noop_native)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", artifacts.noop_native.display()))?;
        let elapsed = started.elapsed();
        if !out.status.success() || out.stdout != EXPECTED {
            anyhow::bail!("noop_native run {i}: {} wrote {:?}", out.status, out.stdout);
        }
        if i >= SPAWN_WARMUP {
            samples.push(elapsed);
        }
    }
    Summary::of(&samples).context("no samples")
}
