//! A test function for the platform's own tests: `?do=<what>` picks one behaviour. As a
//! schedule job (`TRIGGER=schedule`) it logs the event and can fail or sleep on request.
//!
//! - `env`: the environment as a JSON object, and the body length it read from stdin.
//! - `counter`: increments a static counter and prints it (a fresh instance always says 1).
//! - `sleep&ms=N`: waits N ms on the async runtime (a host-side `poll_oneoff` wait).
//! - `alloc&mb=N`: allocates and touches N MiB.
//! - `exit&code=N`: exits with that code, before writing anything.
//! - `panic`: panics (a trap).
//! - `stderr`: writes two lines to stderr and answers `ok`.
//! - `output&mb=N`: writes an N MiB body.
//! - `garbage`: writes output that is not CGI.
//! - `status&code=N`: answers with that status and a `Location` and custom header.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use function_sdk::{query, text, Request, Response};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn main() {
    if std::env::var("TRIGGER").as_deref() == Ok("schedule") {
        return scheduled();
    }
    function_sdk::run_async(|req: Request| async move { handle(req).await });
}

/// A schedule event: logs what it saw; fails while `ATTEMPT <= PROBE_FAIL_UNTIL_ATTEMPT`;
/// sleeps `PROBE_SLEEP_MS` first.
fn scheduled() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let mut payload = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut payload);
    eprintln!(
        "schedule-event name={} at={} attempt={} method={} payload={}",
        var("SCHEDULE_NAME"),
        var("SCHEDULED_AT"),
        var("ATTEMPT"),
        var("REQUEST_METHOD"),
        payload
    );
    let sleep_ms: u64 = var("PROBE_SLEEP_MS").parse().unwrap_or(0);
    if sleep_ms > 0 {
        std::thread::sleep(Duration::from_millis(sleep_ms));
    }
    let attempt: u32 = var("ATTEMPT").parse().unwrap_or(0);
    let fail_until: u32 = var("PROBE_FAIL_UNTIL_ATTEMPT").parse().unwrap_or(0);
    if attempt <= fail_until {
        println!("Status: 500\n\nfailing attempt {attempt} on purpose");
    }
    eprintln!(
        "schedule-done at={} attempt={}",
        var("SCHEDULED_AT"),
        attempt
    );
}

fn num(req: &Request, name: &str) -> u64 {
    query(req, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn handle(req: Request) -> Response {
    match query(&req, "do").as_deref().unwrap_or("") {
        "env" => {
            let vars: serde_json::Map<String, serde_json::Value> = std::env::vars()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let body = serde_json::json!({ "env": vars, "stdin_len": req.body().len() });
            let mut resp = Response::new(body.to_string().into_bytes());
            resp.headers_mut().insert(
                "content-type",
                function_sdk::http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        "counter" => {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
            text(200, n.to_string())
        }
        "sleep" => {
            let started = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(num(&req, "ms"))).await;
            text(200, format!("slept {} ms", started.elapsed().as_millis()))
        }
        "alloc" => {
            let mb = num(&req, "mb") as usize;
            let mut v: Vec<u8> = Vec::with_capacity(mb << 20);
            v.resize(mb << 20, 1);
            text(
                200,
                format!(
                    "allocated {} bytes",
                    v.iter().map(|&b| b as usize).sum::<usize>()
                ),
            )
        }
        "exit" => std::process::exit(num(&req, "code") as i32),
        "panic" => panic!("the probe was asked to panic"),
        "stderr" => {
            eprintln!("first line from the probe");
            eprint!("second line");
            eprintln!(" from the probe");
            text(200, "ok")
        }
        "output" => Response::new(vec![b'x'; (num(&req, "mb") as usize) << 20]),
        "garbage" => {
            print!("this is not a CGI header section");
            std::process::exit(0)
        }
        "status" => {
            let mut resp = text(num(&req, "code") as u16, "custom");
            resp.headers_mut().insert(
                "location",
                function_sdk::http::HeaderValue::from_static("/elsewhere"),
            );
            resp.headers_mut().insert(
                "x-probe",
                function_sdk::http::HeaderValue::from_static("yes"),
            );
            resp
        }
        other => text(400, format!("unknown do={other}")),
    }
}
