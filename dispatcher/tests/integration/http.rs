//! The HTTP trigger end to end: the platform on port 0 (in this process, or the real binary
//! where a test reads its log, signals it or restarts it), real `.wasm` functions from
//! `functions/`, and tiny WAT guests for traps, spins and memory.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{
    client, in_process_config, manifest, probe, wasm, wat_module, Dispatcher, InProcess, Options,
    Server,
};
use serde_json::Value;

fn echo(dir: &Path) {
    manifest(
        dir,
        "echo",
        &format!(
            "name = \"echo\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/echo\"\nmethods = [\"POST\"]\n",
            wasm("echo").display()
        ),
    );
}

/// A module that spins forever.
const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop (br 0))))"#;

/// A module that grows its memory by 64 MiB and traps if that fails.
const GROW: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1)) (then unreachable))))"#;

/// Calls `path_open` (which the host does not provide) and answers 200 if it got ENOSYS.
const NOSYS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "Status: 200\n\nENOSYS")
  (data (i32.const 200) "Status: 500\n\nother")
  (func (export "_start")
    (local $errno i32)
    (local.set $errno (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 0) (select (i32.const 100) (i32.const 200) (i32.eq (local.get $errno) (i32.const 52))))
    (i32.store (i32.const 4) (select (i32.const 19) (i32.const 18) (i32.eq (local.get $errno) (i32.const 52))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

async fn json(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The dispatcher still answers after whatever the test did to it.
async fn still_serving(d: &impl Server, path: &str) {
    let resp = client().get(d.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the dispatcher stopped serving");
    assert_eq!(resp.text().await.unwrap(), "1");
}

#[tokio::test]
async fn every_contract_variable() {
    let dir = tempfile::tempdir().unwrap();
    probe(
        dir.path(),
        "contract",
        "/c/:item_id/...",
        "[env]\nGREETING = \"hi\"\nFROM_HOST = \"${DISPATCHER_TEST_SECRET}\"\nHTTP_X_OVERRIDE = \"operator\"\n",
    );
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            env: vec![("DISPATCHER_TEST_SECRET", "s3cret".into())],
            ..Options::default()
        },
    );
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let body = "field=value";
    let resp = client()
        .post(d.url("/c/42/a%20b/c.txt?do=env&x=1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-custom-header", "custom")
        .header("x-override", "client")
        .header("proxy", "http://evil")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(resp).await;
    assert_eq!(v["stdin_len"], body.len());
    let env = &v["env"];
    let expect = [
        ("REQUEST_METHOD", "POST".to_string()),
        ("SCRIPT_NAME", "/c/42".into()),
        ("PATH_INFO", "/a b/c.txt".into()),
        ("X_RAW_PATH_INFO", "/a%20b/c.txt".into()),
        ("QUERY_STRING", "do=env&x=1".into()),
        ("CONTENT_TYPE", "application/x-www-form-urlencoded".into()),
        ("CONTENT_LENGTH", body.len().to_string()),
        ("SERVER_NAME", "127.0.0.1".into()),
        ("SERVER_PORT", port.clone()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("GATEWAY_INTERFACE", "CGI/1.1".into()),
        ("HTTP_X_CUSTOM_HEADER", "custom".into()),
        ("HTTP_HOST", format!("127.0.0.1:{port}")),
        ("X_MATCHED_ROUTE", "/c/:item_id/...".into()),
        (
            "X_FULL_URL",
            format!("http://127.0.0.1:{port}/c/42/a%20b/c.txt?do=env&x=1"),
        ),
        ("REQUEST_URI", "/c/42/a%20b/c.txt?do=env&x=1".into()),
        ("ROUTE_PARAM_ITEM_ID", "42".into()),
        ("TRIGGER", "http".into()),
        ("GREETING", "hi".into()),
        ("FROM_HOST", "s3cret".into()),
        ("HTTP_X_OVERRIDE", "operator".into()),
    ];
    for (k, want) in expect {
        assert_eq!(env[k].as_str(), Some(want.as_str()), "{k} in {env}");
    }
    assert!(
        env.get("HTTP_PROXY").is_none(),
        "a Proxy header must not become HTTP_PROXY"
    );
    // The sandbox starts with nothing else of the host's environment.
    assert!(
        env.get("PATH").is_none() && env.get("HOME").is_none(),
        "{env}"
    );
    assert!(env.get("DISPATCHER_TEST_SECRET").is_none());
}

#[tokio::test]
async fn exact_route_has_empty_path_info_and_custom_status() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "exact", "/exact", "");
    let d = InProcess::start(dir.path());
    let v = json(client().get(d.url("/exact?do=env")).send().await.unwrap()).await;
    assert_eq!(v["env"]["SCRIPT_NAME"], "/exact");
    assert_eq!(v["env"]["PATH_INFO"], "");
    assert_eq!(v["env"]["CONTENT_LENGTH"], "0");
    assert_eq!(v["env"]["REQUEST_METHOD"], "GET");

    let resp = client()
        .get(d.url("/exact?do=status&code=201"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-probe"], "yes");
    assert_eq!(resp.headers()["location"], "/elsewhere");
    assert_eq!(resp.text().await.unwrap(), "custom");
}

#[tokio::test]
async fn echo_returns_one_mebibyte_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    echo(dir.path());
    let d = InProcess::start(dir.path());
    let body: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let resp = client()
        .post(d.url("/echo"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got[..] == body[..], "the echoed body differs");
}

#[tokio::test]
async fn no_state_survives_between_requests() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "counter", "/counter", "");
    let d = InProcess::start(dir.path());
    for _ in 0..3 {
        let resp = client()
            .get(d.url("/counter?do=counter"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "1");
    }
}

#[tokio::test]
async fn not_found_and_method_not_allowed() {
    let dir = tempfile::tempdir().unwrap();
    echo(dir.path());
    probe(dir.path(), "counter", "/counter", "");
    let d = InProcess::start(dir.path());
    let resp = client().get(d.url("/nothing-here")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(json(resp).await["error"], "not_found");
    let resp = client().get(d.url("/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(json(resp).await["error"], "method_not_allowed");
    still_serving(&d, "/counter?do=counter").await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let dir = tempfile::tempdir().unwrap();
    echo(dir.path());
    probe(dir.path(), "counter", "/counter", "");
    let mut config = in_process_config(dir.path());
    config.http.max_body_bytes = 65536;
    let d = InProcess::start_with(config);
    let resp = client()
        .post(d.url("/echo"))
        .body(vec![7u8; 65536])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a body at the limit is accepted");
    let resp = client()
        .post(d.url("/echo"))
        .body(vec![7u8; 65537])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v = json(resp).await;
    assert_eq!(v["error"], "body_too_large");
    assert_eq!(v["function"], "echo");
    // A chunked body with no Content-Length is cut off at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![1u8; 8192])).collect();
    let resp = client()
        .post(d.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    still_serving(&d, "/counter?do=counter").await;
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static {
    futures_util::stream::iter(items)
}

#[tokio::test]
async fn default_body_limit_is_16_mib() {
    let dir = tempfile::tempdir().unwrap();
    echo(dir.path());
    let d = InProcess::start(dir.path());
    let resp = client()
        .post(d.url("/echo"))
        .body(vec![0u8; (16 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn failures_give_502_and_the_dispatcher_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "probe", "/p", "[limits]\nmemory_mb = 128\n");
    wat_module(dir.path(), "grow", GROW);
    manifest(
        dir.path(),
        "grow",
        "name = \"grow\"\nwasm = \"grow.wasm\"\n[trigger.http]\npath = \"/grow\"\n[limits]\nmemory_mb = 16\n",
    );
    let d = Dispatcher::start(dir.path());
    let cases = [
        ("/p?do=panic", "trap"),
        ("/p?do=exit&code=3", "exit"),
        ("/p?do=garbage", "bad_output"),
        ("/p?do=alloc&mb=200", "memory_limit"),
        ("/p?do=output&mb=33", "output_limit"),
        ("/grow", "memory_limit"),
    ];
    for (path, kind) in cases {
        let resp = client().get(d.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 502, "{path}");
        let v = json(resp).await;
        assert_eq!(v["error"], kind, "{path}: {v}");
        assert!(v["function"].is_string(), "{v}");
        still_serving(&d, "/p?do=counter").await;
    }
    // Under the limits the same functions work.
    let resp = client()
        .get(d.url("/p?do=alloc&mb=8"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(d.url("/p?do=exit&code=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        502,
        "exit 0 before any output is still bad output"
    );
    assert_eq!(json(resp).await["error"], "bad_output");
    // Details stay in the log, not in the response.
    assert!(
        d.wait_for_log("the probe was asked to panic", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
}

#[tokio::test]
async fn timeouts_give_504_in_compute_and_in_host_waits() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "probe", "/p", "[limits]\ntimeout_ms = 300\n");
    wat_module(dir.path(), "spin", SPIN);
    manifest(
        dir.path(),
        "spin",
        "name = \"spin\"\nwasm = \"spin.wasm\"\n[trigger.http]\npath = \"/spin\"\n[limits]\ntimeout_ms = 300\n",
    );
    let d = InProcess::start(dir.path());
    for path in ["/spin", "/p?do=sleep&ms=5000"] {
        let started = Instant::now();
        let resp = client().get(d.url(path)).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status(), 504, "{path}");
        assert_eq!(json(resp).await["error"], "timeout");
        assert!(
            took < Duration::from_millis(300 + 200),
            "{path}: the 504 came after {took:?}"
        );
    }
    still_serving(&d, "/p?do=counter").await;
    // A short sleep inside the limit completes.
    let resp = client()
        .get(d.url("/p?do=sleep&ms=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn over_max_concurrency_gets_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "probe", "/p", "[limits]\nmax_concurrency = 1\n");
    let d = InProcess::start(dir.path());
    let slow = tokio::spawn(client().get(d.url("/p?do=sleep&ms=2500")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = client().get(d.url("/p?do=counter")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(json(resp).await["error"], "overloaded");
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    still_serving(&d, "/p?do=counter").await;
}

#[tokio::test]
async fn waiting_guests_do_not_block_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "probe", "/p", "");
    let d = InProcess::start(dir.path());
    // 32 guests sleeping 1 s each on a 2-worker runtime finish together, not one after another.
    let started = Instant::now();
    let handles: Vec<_> = (0..32)
        .map(|_| tokio::spawn(client().get(d.url("/p?do=sleep&ms=1000")).send()))
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unsupported_wasi_calls_get_enosys() {
    let dir = tempfile::tempdir().unwrap();
    wat_module(dir.path(), "nosys", NOSYS);
    manifest(
        dir.path(),
        "nosys",
        "name = \"nosys\"\nwasm = \"nosys.wasm\"\n[trigger.http]\npath = \"/nosys\"\n",
    );
    let d = InProcess::start(dir.path());
    let resp = client().get(d.url("/nosys")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ENOSYS");
}

#[tokio::test]
async fn guest_stderr_is_logged_with_the_function_name() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "talker", "/t", "");
    let d = Dispatcher::start(dir.path());
    let resp = client().get(d.url("/t?do=stderr")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(d.wait_for_log("second line from the probe", Duration::from_secs(5)));
    // The request's own line is written after the response, so it may come a moment later.
    assert!(d.wait_for_log("status=200", Duration::from_secs(5)));
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("first line from the probe"))
        .unwrap();
    assert!(line.contains("talker"), "{line}");
    // And one line per request, with function, status and duration.
    let req = log
        .lines()
        .find(|l| l.contains("request") && l.contains("status=200"))
        .unwrap();
    assert!(
        req.contains("function=talker") && req.contains("us="),
        "{req}"
    );
}

#[tokio::test]
async fn compile_cache_is_used_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    echo(dir.path());
    let opts = || Options {
        cache_dir: Some(cache.path()),
        ..Options::default()
    };
    let first = Dispatcher::start_with(dir.path(), opts());
    assert!(
        first.wait_for_log("compiled=true", Duration::from_secs(5)),
        "{}",
        first.log_text()
    );
    // Tiered: the artifact is Cranelift's, written when the background compile is done.
    assert!(
        first.wait_for_log("optimized code swapped in", Duration::from_secs(30)),
        "{}",
        first.log_text()
    );
    drop(first);
    let artifacts = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(artifacts, 1, "one artifact per module");
    let second = Dispatcher::start_with(dir.path(), opts());
    assert!(
        second.wait_for_log("compiled=false", Duration::from_secs(5)),
        "{}",
        second.log_text()
    );
    let resp = client()
        .post(second.url("/echo"))
        .body("cached")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "cached");
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "probe", "/p", "");
    let mut d = Dispatcher::start(dir.path());
    let slow = tokio::spawn(client().get(d.url("/p?do=sleep&ms=1500")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.terminate();
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the request in flight completes");
    assert!(resp.text().await.unwrap().starts_with("slept"));
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                return (s, d);
            }
            assert!(Instant::now() < deadline, "the dispatcher did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{:?}", status.0);
    assert!(status.1.wait_for_log("drained", Duration::from_secs(5)));
    // New connections are refused once it has stopped.
    assert!(client()
        .get(status.1.url("/p?do=counter"))
        .send()
        .await
        .is_err());
}

/// Opens a TCP socket and binds it to 127.0.0.1:0, then listens; opens a UDP socket and tries
/// to send on it. Answers `bind=<errno> listen=<errno> udp_open=<errno> udp_send=<errno>` as
/// single digits/letters: each errno is written as one byte, 'a' + errno.
const SOCKETS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_open" (func $sock_open (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_bind" (func $sock_bind (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_listen" (func $sock_listen (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send_to" (func $sock_send_to (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 1)
  ;; 16: WasiAddress {buf = 32, len = 4}; 32: 127.0.0.1
  (data (i32.const 16) "\20\00\00\00\04\00\00\00")
  (data (i32.const 32) "\7f\00\00\01")
  ;; 100: the answer
  (data (i32.const 100) "Status: 200\n\n....")
  (func (export "_start")
    (local $fd i32)
    (drop (call $sock_open (i32.const 1) (i32.const 2) (i32.const 0)))
    (local.set $fd (i32.load (i32.const 0)))
    (i32.store8 (i32.const 113) (i32.add (i32.const 97) (call $sock_bind (local.get $fd) (i32.const 16) (i32.const 0))))
    (i32.store8 (i32.const 114) (i32.add (i32.const 97) (call $sock_listen (local.get $fd) (i32.const 16))))
    (drop (call $fd_close (local.get $fd)))
    (i32.store8 (i32.const 115) (i32.add (i32.const 97) (call $sock_open (i32.const 1) (i32.const 1) (i32.const 0))))
    (local.set $fd (i32.load (i32.const 0)))
    (i32.store8 (i32.const 116) (i32.add (i32.const 97)
      (call $sock_send_to (local.get $fd) (i32.const 40) (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 0) (i32.const 48))))
    (i32.store (i32.const 200) (i32.const 100))
    (i32.store (i32.const 204) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208)))))"#;

#[tokio::test]
async fn bind_needs_the_manifest_and_udp_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    wat_module(dir.path(), "sockets", SOCKETS);
    manifest(
        dir.path(),
        "closed",
        "name = \"closed\"\nwasm = \"sockets.wasm\"\n[trigger.http]\npath = \"/closed\"\n",
    );
    manifest(
        dir.path(),
        "open",
        "name = \"open\"\nwasm = \"sockets.wasm\"\n[trigger.http]\npath = \"/open\"\n[network]\nlisten = [\"127.0.0.1:*\"]\n",
    );
    let d = Dispatcher::start(dir.path());
    // errno + 'a': 0 -> a, EACCES (2) -> c, EINVAL (28) -> '}', ENOTSUP (58) -> 0x9b.
    let closed = client()
        .get(d.url("/closed"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        closed[0],
        b'a' + 2,
        "bind without a listen entry is EACCES: {closed:?}"
    );
    assert_eq!(
        closed[1],
        b'a' + 2,
        "listen on an unbound socket is EACCES too: {closed:?}"
    );
    assert_eq!(closed[2], b'a', "opening a UDP socket works");
    assert_eq!(closed[3], b'a' + 58, "UDP sends are ENOTSUP, not a crash");
    assert!(d.wait_for_log("network: bind denied", Duration::from_secs(5)));
    let open = client()
        .get(d.url("/open"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        &open[..2],
        b"aa",
        "bind and listen succeed when the manifest allows them: {open:?}"
    );
}
