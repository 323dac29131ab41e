//! What telemetry costs per request: the in-process cost of one invocation's metrics, request
//! id and recent-invocations record; then the echo function under load with the metrics
//! listener scraped every second, traces off and then exported over OTLP to a local
//! receiver, each beside the native hyper echo of the same run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::throughput::{check_echo, measure, print_run, Measured};
use super::Section;
use crate::artifacts::Artifacts;
use crate::probe;
use crate::process::{free_local_addr, ChildGuard};
use crate::report::Row;
use crate::servers::{self, ECHO_PATH};
use crate::stats::us;
use crate::wrk;

pub const SECTION: Section = Section {
    name: "telemetry",
    title: "8. Telemetry per request: metrics, request ids, traces (echo.wasm, wrk -t2, 64 conns, POST 64 B)",
    run,
};

const CONNECTIONS: u32 = 64;
/// Target: what metrics and request ids add to a request.
const TARGET_ADDED_US: f64 = 2.0;

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    wrk::check_installed()?;
    // In process: the work itself, without the noise of a load run.
    dispatcher::telemetry_cost_per_invocation(20_000);
    let cost = dispatcher::telemetry_cost_per_invocation(500_000);
    println!(
        "  telemetry of one invocation, in process: {:.3} us (request id, in-flight gauge, 4 histograms, 2 counters, recent-invocations ring)",
        us(cost)
    );

    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifests = servers::write_echo_manifests(tmp.path(), &artifacts.echo_wasm)?;
    let script = tmp.path().join("post.lua");
    std::fs::write(&script, wrk::post_script(64)).context("cannot write the wrk script")?;
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();

    let (mut native, native_addr) = servers::start(
        "native_echo",
        &mut servers::native_echo_command(artifacts, any_port),
        servers::NATIVE_READY,
        None,
    )?;
    check_echo("native_echo", native_addr, ECHO_PATH)?;
    let n = measure(&mut native, native_addr, CONNECTIONS, &script)?;
    print_run("native                    ", CONNECTIONS, &n);
    drop(native);

    let metrics_addr = free_local_addr()?;
    let scraper = Scraper::start(metrics_addr);
    let mut cmd =
        servers::dispatcher_command(artifacts, &manifests, any_port, &tmp.path().join("cache"));
    cmd.arg("--metrics-listen").arg(metrics_addr.to_string());
    let off = run_dispatcher(
        "dispatcher, traces off      ",
        &mut cmd,
        &tmp.path().join("off.log"),
        &script,
    )?;
    let scrapes = scraper.stop();
    println!("    metrics scraped {scrapes} times during the run");

    let receiver = OtlpReceiver::start()?;
    let mut cmd =
        servers::dispatcher_command(artifacts, &manifests, any_port, &tmp.path().join("cache"));
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{}", receiver.addr),
    )
    .env("OTEL_BSP_SCHEDULE_DELAY", "1000");
    let on = run_dispatcher(
        "dispatcher, traces to OTLP  ",
        &mut cmd,
        &tmp.path().join("on.log"),
        &script,
    )?;
    println!(
        "    the OTLP receiver took {} exports, {} KiB",
        receiver.exports.load(Ordering::Relaxed),
        receiver.bytes.load(Ordering::Relaxed) / 1024
    );

    let native_us = us(n.cpu_per_request);
    let added = us(on.cpu_per_request) - us(off.cpu_per_request);
    println!("    traces add {added:.1} us of server CPU per request (4 spans)");
    Ok(vec![
        Row::new(
            "telemetry work/request (metrics, id)",
            format!("{:.2} µs", us(cost)),
            format!("{native_us:.1} µs"),
        )
        .ratio(us(cost), native_us)
        .target(
            format!("< {TARGET_ADDED_US} µs added"),
            Some(us(cost) < TARGET_ADDED_US),
        ),
        Row::new(
            "echo CPU/request, metrics scraped",
            format!("{:.1} µs", us(off.cpu_per_request)),
            format!("{native_us:.1} µs"),
        )
        .ratio(us(off.cpu_per_request), native_us),
        Row::new(
            "echo CPU/request, + OTLP traces",
            format!("{:.1} µs", us(on.cpu_per_request)),
            format!("{native_us:.1} µs"),
        )
        .ratio(us(on.cpu_per_request), native_us)
        .target(format!("{added:+.1} µs vs traces off"), None),
    ])
}

fn run_dispatcher(
    name: &str,
    cmd: &mut std::process::Command,
    log: &std::path::Path,
    script: &std::path::Path,
) -> anyhow::Result<Measured> {
    let (mut d, addr): (ChildGuard, SocketAddr) =
        servers::start("dispatcher", cmd, servers::DISPATCHER_READY, Some(log))?;
    check_echo("dispatcher", addr, ECHO_PATH)?;
    let m = measure(&mut d, addr, CONNECTIONS, script)?;
    print_run(name, CONNECTIONS, &m);
    Ok(m)
}

/// Scrapes `/metrics` once a second, as Prometheus would, until stopped.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ok = 0;
            while !flag.load(Ordering::Relaxed) {
                if probe::get(addr, "/metrics", Duration::from_secs(2))
                    .is_ok_and(|r| r.status == 200)
                {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            ok
        });
        Scraper { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// An OTLP/HTTP endpoint that takes every export and answers 200, counting what came.
struct OtlpReceiver {
    addr: SocketAddr,
    exports: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl OtlpReceiver {
    fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("OTLP receiver")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let exports = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (e, b) = (exports.clone(), bytes.clone());
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("bench: the OTLP receiver's runtime: {e}"),
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    let (e, b) = (e.clone(), b.clone());
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (e, b) = (e.clone(), b.clone());
                            async move {
                                use http_body_util::BodyExt;
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                e.fetch_add(1, Ordering::Relaxed);
                                b.fetch_add(body.len() as u64, Ordering::Relaxed);
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::new()),
                                ))
                            }
                        },
                    );
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                    );
                }
            });
        });
        Ok(OtlpReceiver {
            addr,
            exports,
            bytes,
        })
    }
}
