//! No-op invocation cost: a fresh instance of `noop.wasm` per call (instantiate, run, tear
//! down) through the dispatcher's library, against spawning a native process that does the same.
//! For scale, the same is timed for `echo.wasm` with a typical CGI request (what each request of
//! the throughput section costs the engine, without HTTP).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use dispatcher::runtime::{CStrings, Caps, Invocation, NetPolicy, Runtime, RuntimeConfig};

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
const NOOP_OUTPUT: &[u8] = b"Status: 204\n\n";
const WARMUP: usize = 500;
const INVOCATIONS: usize = 5000;
const ECHO_INVOCATIONS: usize = 2000;
const SPAWN_WARMUP: usize = 20;
const SPAWNS: usize = 500;
/// The stated target for the median.
const TARGET: Duration = Duration::from_micros(20);

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: None,
        max_instances: 100,
        ..Default::default()
    })
    .context("cannot create the dispatcher's runtime")?;

    let noop = time_invocations(
        &runtime,
        &artifacts.noop_wasm,
        CStrings::default(),
        Bytes::new(),
        INVOCATIONS,
        |out| out == NOOP_OUTPUT,
    )?;
    print_summary("noop.wasm ", &noop, "invocations", WARMUP);
    let native = spawn_native(artifacts)?;
    print_summary("native    ", &native, "spawns", SPAWN_WARMUP);
    println!(
        "  a no-op wasm invocation costs {:.3}x a process spawn ({:.0}x cheaper)",
        us(noop.median) / us(native.median),
        us(native.median) / us(noop.median)
    );

    let body = Bytes::from(vec![b'x'; 64]);
    let echo = time_invocations(
        &runtime,
        &artifacts.echo_wasm,
        cgi_env(body.len()),
        body.clone(),
        ECHO_INVOCATIONS,
        |out| out.starts_with(b"Status: 200\n") && out.ends_with(&body),
    )?;
    print_summary(
        "echo.wasm ",
        &echo,
        "invocations (64 B POST, CGI env)",
        WARMUP,
    );

    Ok(vec![
        Row::new(
            "no-op invocation, median",
            format!("{:.1} µs", us(noop.median)),
            format!("{:.1} µs (spawn)", us(native.median)),
        )
        .ratio(us(noop.median), us(native.median))
        .target(
            format!("≤ {} µs", TARGET.as_micros()),
            Some(noop.median <= TARGET),
        ),
        Row::new(
            "no-op invocation, p99",
            format!("{:.1} µs", us(noop.p99)),
            format!("{:.1} µs (spawn)", us(native.p99)),
        )
        .ratio(us(noop.p99), us(native.p99)),
        Row::new(
            "echo invocation (no HTTP), median",
            format!("{:.1} µs", us(echo.median)),
            "-".into(),
        ),
    ])
}

fn print_summary(what: &str, s: &Summary, unit: &str, warmup: usize) {
    println!(
        "  {what} median {:7.1} us, p99 {:7.1} us, max {:8.1} us over {} {unit} (after {warmup} warm-up)",
        us(s.median),
        us(s.p99),
        us(s.max),
        s.count
    );
}

/// Prepares the module once, then times each of `count` sequential invocations (after
/// [`WARMUP`] untimed ones) on a current-thread tokio runtime. `valid` checks every output.
fn time_invocations(
    runtime: &Runtime,
    wasm: &Path,
    env: CStrings,
    stdin: Bytes,
    count: usize,
    valid: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Summary> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let prepared = runtime
        .prepare(&bytes)
        .map_err(|e| anyhow::anyhow!("cannot prepare {}: {e}", wasm.display()))?;
    let name = wasm
        .file_stem()
        .map_or("function".into(), |s| s.to_string_lossy().into_owned());
    println!(
        "  {name}.wasm: {} bytes, compiled in {:.1} ms",
        bytes.len(),
        prepared.load_time.as_secs_f64() * 1e3
    );

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let function: Arc<str> = Arc::from(name.as_str());
    // No network: these functions need none.
    let net = Arc::new(NetPolicy::default());
    let invocation = || Invocation {
        function: function.clone(),
        request_id: "bench".into(),
        log: None,
        args: CStrings::from_items([&name]),
        env: env.clone(),
        stdin: stdin.clone(),
        memory_bytes: 128 << 20,
        timeout: Duration::from_secs(10),
        caps: Caps::default(),
        sessions: None,
        net: net.clone(),
    };
    let samples = tokio.block_on(async {
        let mut samples = Vec::with_capacity(count);
        for i in 0..WARMUP + count {
            let inv = invocation();
            let started = Instant::now();
            let result = prepared.invoke(inv).await;
            let elapsed = started.elapsed();
            let output = result.with_context(|| format!("{name}: invocation {i} failed"))?;
            if !valid(&output) {
                anyhow::bail!(
                    "{name}: invocation {i} wrote an unexpected {:?}",
                    String::from_utf8_lossy(&output)
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

/// The environment the HTTP trigger gives `POST /echo` with a body of `len` bytes.
fn cgi_env(len: usize) -> CStrings {
    let len = len.to_string();
    let vars = [
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", "/echo"),
        ("PATH_INFO", ""),
        ("X_RAW_PATH_INFO", ""),
        ("PATH_TRANSLATED", ""),
        ("QUERY_STRING", ""),
        ("REQUEST_URI", "/echo"),
        ("CONTENT_TYPE", "application/octet-stream"),
        ("CONTENT_LENGTH", &len),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "8080"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "dispatcher/0.1.0"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_HOST", "127.0.0.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("HTTP_HOST", "127.0.0.1:8080"),
        ("HTTP_CONTENT_TYPE", "application/octet-stream"),
        ("HTTP_CONTENT_LENGTH", &len),
        ("X_MATCHED_ROUTE", "/echo"),
        ("X_FULL_URL", "http://127.0.0.1:8080/echo"),
        ("TRIGGER", "http"),
    ];
    CStrings::from_vars(vars)
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
        if !out.status.success() || out.stdout != NOOP_OUTPUT {
            anyhow::bail!("noop_native run {i}: {} wrote {:?}", out.status, out.stdout);
        }
        if i >= SPAWN_WARMUP {
            samples.push(elapsed);
        }
    }
    Summary::of(&samples).context("no samples")
}
