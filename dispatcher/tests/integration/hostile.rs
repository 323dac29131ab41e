//! Hostile guests: tiny WAT modules that each attack one host call (bad and wrap-around
//! pointers, huge counts, descriptor, connection, look-up and stderr floods, deep recursion,
//! `poll_oneoff` with every kind of subscription, sockets used after close, ...), served by
//! one real dispatcher beside the real `echo` function. For each: the request gets the
//! answer expected (each call's errno, or the status its limit gives), `echo` still answers,
//! and the dispatcher's open descriptors and memory come back to their level.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{manifest, wait_until, wasm, wat_module, Dispatcher, Options};

/// The imports, data and helpers every hostile guest shares. Memory (2 pages):
/// 0 the CGI header; 16 a `WasiAddress` of 127.0.0.1 (at 32); 48 an iovec whose buffer runs
/// past the end; 64 and 72 the answer's two iovecs; 256 a timeval of u64::MAX s and us;
/// 300 "localhost"; 1000.. one byte per recorded result ($r), sent as the body by $respond.
const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $fd_fdstat_set_flags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_open" (func $sock_open (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_bind" (func $sock_bind (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_connect" (func $sock_connect (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_getlocaladdr" (func $sock_getlocaladdr (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_getaddrinfo" (func $sock_getaddrinfo (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_setsockopt" (func $sock_setsockopt (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "Status: 200\n\n")
  (data (i32.const 16) "\20\00\00\00\04\00\00\00")
  (data (i32.const 32) "\7f\00\00\01")
  (data (i32.const 48) "\00\ff\01\00\00\02\00\00")
  (data (i32.const 64) "\00\00\00\00\0d\00\00\00\e8\03\00\00\00\00\00\00")
  (data (i32.const 256) "\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff")
  (data (i32.const 300) "localhost\00")
  (global $n (mut i32) (i32.const 0))
  (func $r (param i32)
    (i32.store8 (i32.add (i32.const 1000) (global.get $n)) (local.get 0))
    (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func $respond
    (i32.store (i32.const 76) (global.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 2) (i32.const 80))))
  (func $open (result i32)
    (drop (call $sock_open (i32.const 1) (i32.const 2) (i32.const 200)))
    (i32.load (i32.const 200)))
"#;

/// One attack: its name (and route), the `_start` body, extra manifest TOML, and the answer.
struct Attack {
    name: &'static str,
    body: &'static str,
    manifest: &'static str,
    expect: Expect,
}

enum Expect {
    /// 200 with these bytes: one result per call.
    Results(&'static [u8]),
    /// Just this status.
    Status(u16),
}

// WASI errno numbers.
const EACCES: u8 = 2;
const EAFNOSUPPORT: u8 = 5;
const EAGAIN: u8 = 6;
const EBADF: u8 = 8;
const EFAULT: u8 = 21;
const EINVAL: u8 = 28;
const EMFILE: u8 = 33;
const ENOPROTOOPT: u8 = 50;
const ENOSYS: u8 = 52;
const ENOTCONN: u8 = 53;
const ENOTSOCK: u8 = 57;

/// Connections the `connections` attack may hold (its `limits.max_connections`).
const MAX_CONNECTIONS: usize = 8;

fn attacks() -> Vec<Attack> {
    use Expect::*;
    vec![
        Attack {
            name: "pointers",
            body: r#"
    (call $r (call $fd_write (i32.const 2) (i32.const 0xfffffff8) (i32.const 2) (i32.const 80)))
    (call $r (call $fd_write (i32.const 2) (i32.const 64) (i32.const 1) (i32.const 0xfffffffe)))
    (call $r (call $args_get (i32.const 0xfffffffc) (i32.const 96)))
    (call $r (call $environ_get (i32.const 96) (i32.const 0xffffff00)))
    (call $r (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 0xfffffff9)))
    (call $r (call $random_get (i32.const 0x100) (i32.const 0xffffffff)))
    (call $r (call $fd_read (i32.const 0) (i32.const 48) (i32.const 1) (i32.const 96)))
    (call $r (call $sock_getaddrinfo (i32.const 0xfffffff0) (i32.const 0x100) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 400) (i32.const 1) (i32.const 96)))
    (call $r (call $fd_fdstat_get (i32.const 0) (i32.const 0xffffffff)))
    (call $r (call $poll_oneoff (i32.const 0xffffffd0) (i32.const 96) (i32.const 1) (i32.const 96)))
    (call $r (call $sock_connect (call $open) (i32.const 0xfffffffc) (i32.const 80)))"#,
            manifest: "",
            expect: Results(&[EFAULT; 11]),
        },
        Attack {
            name: "counts",
            body: r#"
    (call $r (call $fd_write (i32.const 2) (i32.const 64) (i32.const 1025) (i32.const 80)))
    (call $r (call $fd_write (i32.const 2) (i32.const 64) (i32.const 0x20000000) (i32.const 80)))
    (call $r (call $poll_oneoff (i32.const 2048) (i32.const 4096) (i32.const 5000) (i32.const 96)))
    (call $r (call $poll_oneoff (i32.const 2048) (i32.const 4096) (i32.const 0) (i32.const 96)))
    (call $r (call $fd_fdstat_set_flags (i32.const 0) (i32.const 0x10000)))
    (call $r (call $clock_time_get (i32.const 99) (i64.const 0) (i32.const 96)))
    (call $r (call $sock_open (i32.const 7) (i32.const 2) (i32.const 200)))
    (call $r (call $sock_open (i32.const 1) (i32.const 99) (i32.const 200)))
    (call $r (call $sock_getaddrinfo (i32.const 300) (i32.const 0x10000) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 400) (i32.const 0) (i32.const 96)))"#,
            manifest: "",
            expect: Results(&[
                EINVAL,
                EINVAL,
                EINVAL,
                EINVAL,
                EINVAL,
                EINVAL,
                EAFNOSUPPORT,
                EINVAL,
                // "localhost" (the rest is NULs) is a name, and not on the allow list.
                EACCES,
            ]),
        },
        Attack {
            name: "ports_and_options",
            body: r#"
    (local $fd i32)
    (local.set $fd (call $open))
    (call $r (call $sock_bind (local.get $fd) (i32.const 16) (i32.const 70000)))
    (call $r (call $sock_connect (local.get $fd) (i32.const 16) (i32.const 0x10000)))
    (call $r (call $sock_connect (local.get $fd) (i32.const 16) (i32.const -1)))
    (call $r (call $sock_setsockopt (local.get $fd) (i32.const 0) (i32.const 11) (i32.const 256) (i32.const 16)))
    (call $r (call $sock_setsockopt (local.get $fd) (i32.const 0) (i32.const 12) (i32.const 256) (i32.const 8)))
    (call $r (call $sock_setsockopt (local.get $fd) (i32.const 0) (i32.const 11) (i32.const 0xfffffff8) (i32.const 16)))
    (call $r (call $sock_setsockopt (local.get $fd) (i32.const 99) (i32.const 11) (i32.const 256) (i32.const 16)))"#,
            manifest: "",
            expect: Results(&[EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EFAULT, ENOPROTOOPT]),
        },
        Attack {
            name: "after_close",
            body: r#"
    (local $fd i32)
    (local.set $fd (call $open))
    (call $r (call $fd_close (local.get $fd)))
    (call $r (call $sock_connect (local.get $fd) (i32.const 16) (i32.const 80)))
    (call $r (call $sock_send (local.get $fd) (i32.const 48) (i32.const 1) (i32.const 0) (i32.const 96)))
    (call $r (call $sock_recv (local.get $fd) (i32.const 48) (i32.const 1) (i32.const 0) (i32.const 96) (i32.const 100)))
    (call $r (call $sock_getlocaladdr (local.get $fd) (i32.const 16) (i32.const 96) (i32.const 100)))
    (call $r (call $fd_close (local.get $fd)))
    (call $r (call $sock_accept (i32.const 0) (i32.const 204)))
    (local.set $fd (call $open))
    (call $r (call $sock_accept (local.get $fd) (i32.const 204)))
    (call $r (call $sock_recv (local.get $fd) (i32.const 48) (i32.const 1) (i32.const 0) (i32.const 96) (i32.const 100)))
    (call $r (call $sock_shutdown (local.get $fd) (i32.const 3)))
    (call $r (call $fd_write (local.get $fd) (i32.const 64) (i32.const 1) (i32.const 80)))
    (call $r (call $fd_read (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 96)))
    (call $r (call $fd_close (i32.const 0)))
    (call $r (call $fd_read (i32.const 0) (i32.const 48) (i32.const 1) (i32.const 96)))"#,
            manifest: "",
            expect: Results(&[
                0, EBADF, EBADF, EBADF, EBADF, EBADF, ENOTSOCK, EINVAL, ENOTCONN, ENOTCONN, EBADF,
                EBADF, 0, EBADF,
            ]),
        },
        Attack {
            name: "poll",
            // Subscriptions at 2048 (48 bytes each), events at 4096.
            body: r#"
    ;; A relative clock of u64::MAX ns beside stdin, ready at once.
    (i64.store (i32.const 2048) (i64.const 1))
    (i32.store8 (i32.const 2056) (i32.const 0))
    (i32.store (i32.const 2064) (i32.const 1))
    (i64.store (i32.const 2072) (i64.const -1))
    (i64.store (i32.const 2096) (i64.const 2))
    (i32.store8 (i32.const 2104) (i32.const 1))
    (i32.store (i32.const 2112) (i32.const 0))
    (call $r (call $poll_oneoff (i32.const 2048) (i32.const 4096) (i32.const 2) (i32.const 96)))
    (call $r (i32.load (i32.const 96)))
    ;; An unknown event type.
    (i32.store8 (i32.const 2104) (i32.const 9))
    (call $r (call $poll_oneoff (i32.const 2048) (i32.const 4096) (i32.const 2) (i32.const 96)))
    ;; An absolute time on the realtime clock, long past.
    (i32.store (i32.const 2064) (i32.const 0))
    (i64.store (i32.const 2072) (i64.const 0))
    (i32.store16 (i32.const 2088) (i32.const 1))
    (call $r (call $poll_oneoff (i32.const 2048) (i32.const 4096) (i32.const 1) (i32.const 96)))
    (call $r (i32.load (i32.const 96)))
    ;; An absolute time on a clock that does not exist.
    (i32.store (i32.const 2064) (i32.const 99))
    (call $r (call $poll_oneoff (i32.const 2048) (i32.const 4096) (i32.const 1) (i32.const 96)))
    ;; Reading a descriptor that is not open, and writing an unconnected socket.
    (i32.store8 (i32.const 2104) (i32.const 1))
    (i32.store (i32.const 2112) (i32.const 999))
    (call $r (call $poll_oneoff (i32.const 2096) (i32.const 4096) (i32.const 1) (i32.const 96)))
    (call $r (i32.load (i32.const 96)))
    (i32.store8 (i32.const 2104) (i32.const 2))
    (i32.store (i32.const 2112) (call $open))
    (call $r (call $poll_oneoff (i32.const 2096) (i32.const 4096) (i32.const 1) (i32.const 96)))
    ;; Events written past the end of memory.
    (i32.store8 (i32.const 2104) (i32.const 1))
    (i32.store (i32.const 2112) (i32.const 0))
    (call $r (call $poll_oneoff (i32.const 2096) (i32.const 0x1fff0) (i32.const 1) (i32.const 96)))"#,
            manifest: "",
            expect: Results(&[0, 1, EINVAL, 0, 1, EINVAL, 0, 1, 0, EFAULT]),
        },
        Attack {
            name: "descriptors",
            // sock_open until it fails: the cap, then EMFILE; a close makes room again.
            body: r#"
    (local $k i32) (local $e i32)
    (block $full (loop $more
      (local.set $e (call $sock_open (i32.const 1) (i32.const 2) (i32.const 200)))
      (br_if $full (local.get $e))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $full (i32.ge_u (local.get $k) (i32.const 100000)))
      (br $more)))
    (call $r (local.get $k))
    (call $r (local.get $e))
    (call $r (call $fd_close (i32.const 3)))
    (call $r (call $sock_open (i32.const 1) (i32.const 2) (i32.const 200)))"#,
            manifest: "[limits]\nmax_sockets = 50\n",
            expect: Results(&[50, EMFILE, 0, 0]),
        },
        Attack {
            name: "connections",
            // Connects to the test's listener until refused by the cap.
            body: r#"
    (local $k i32) (local $e i32)
    (block $full (loop $more
      (local.set $e (call $sock_connect (call $open) (i32.const 16) (i32.const {PORT})))
      (br_if $full (local.get $e))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $full (i32.ge_u (local.get $k) (i32.const 2000)))
      (br $more)))
    (call $r (local.get $k))
    (call $r (local.get $e))"#,
            manifest: "[limits]\nmax_connections = 8\n[network]\nallow = [\"127.0.0.1:{PORT}\"]\n",
            expect: Results(&[MAX_CONNECTIONS as u8, EMFILE]),
        },
        Attack {
            name: "lookups",
            body: r#"
    (local $k i32)
    (loop $more
      (call $r (call $sock_getaddrinfo (i32.const 300) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 400) (i32.const 0) (i32.const 96)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $k) (i32.const 6))))"#,
            manifest: "[limits]\nmax_lookups = 3\n[network]\nallow = [\"localhost:80\"]\n",
            expect: Results(&[0, 0, 0, EAGAIN, EAGAIN, EAGAIN]),
        },
        Attack {
            name: "unsupported_call",
            body: r#"
    (call $r (call $path_open (i32.const 3) (i32.const 0) (i32.const 300) (i32.const 9) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 96)))"#,
            manifest: "",
            expect: Results(&[ENOSYS]),
        },
        Attack {
            name: "memory_growth",
            // Grows until refused (the cap is 16 MiB), then answers.
            body: r#"
    (block $refused (loop $more
      (br_if $refused (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
      (br $more)))
    (call $r (i32.shr_u (memory.size) (i32.const 4)))"#,
            manifest: "[limits]\nmemory_mb = 16\n",
            // 16 MiB = 256 pages: 2 + 15 steps of 16 pages fit, the 16th does not.
            expect: Results(&[15]),
        },
        Attack {
            name: "stderr_flood",
            // 64 KiB lines to stderr until the timeout.
            body: r#"
    (memory.fill (i32.const 8192) (i32.const 120) (i32.const 65535))
    (i32.store8 (i32.const 73727) (i32.const 10))
    (i32.store (i32.const 128) (i32.const 8192))
    (i32.store (i32.const 132) (i32.const 65536))
    (loop $more
      (drop (call $fd_write (i32.const 2) (i32.const 128) (i32.const 1) (i32.const 96)))
      (br $more))"#,
            manifest: "[limits]\ntimeout_ms = 1000\nmax_log_kb = 64\n",
            expect: Status(504),
        },
        Attack {
            name: "stdout_flood",
            body: r#"
    ;; 64 KiB at a time (after one iovec past the end), until a write fails.
    (i32.store (i32.const 128) (i32.const 8192))
    (i32.store (i32.const 132) (i32.const 65536))
    (drop (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 96)))
    (block $full (loop $more
      (br_if $full (call $fd_write (i32.const 1) (i32.const 128) (i32.const 1) (i32.const 96)))
      (br $more)))"#,
            manifest: "",
            expect: Status(502),
        },
        Attack {
            name: "recursion",
            body: "(call $deep)",
            manifest: "",
            expect: Status(502),
        },
        Attack {
            name: "yield_spin",
            body: "(loop $more (drop (call $sched_yield)) (br $more))",
            manifest: "[limits]\ntimeout_ms = 300\n",
            expect: Status(504),
        },
        Attack {
            name: "exit",
            body: "(call $proc_exit (i32.const -1))",
            manifest: "",
            expect: Status(502),
        },
    ]
}

/// The module of an attack: the prelude, a function that recurses for ever, and its body.
fn module(attack: &Attack, port: u16) -> String {
    let body = attack.body.replace("{PORT}", &port.to_string());
    format!(
        "(module {PRELUDE}\n  (func $deep (call $deep))\n  (func (export \"_start\")\n{body}\n    (call $respond)))"
    )
}

/// What a process's descriptors point at.
fn descriptors(pid: u32) -> Vec<String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// A listener that accepts and holds connections, counting them, until its peers close.
fn holding_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut conn = conn;
                let _eof = conn.read(&mut [0u8; 16]);
            });
        }
    });
    (port, accepted)
}

fn write_manifests(dir: &Path, port: u16) {
    for attack in attacks() {
        let path = wat_module(dir, attack.name, &module(&attack, port));
        let extra = attack.manifest.replace("{PORT}", &port.to_string());
        let name = attack.name;
        let body = format!(
            "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/h/{name}\"\n{extra}",
            path.display()
        );
        manifest(dir, name, &body);
    }
    let echo = wasm("echo");
    let body = format!(
        "name = \"echo\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/echo\"\n",
        echo.display()
    );
    manifest(dir, "echo", &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_get_errors_and_the_platform_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (port, accepted) = holding_listener();
    write_manifests(dir.path(), port);
    // Optimized code from the start: no background compile adds code images mid-test.
    let opts = Options {
        args: vec!["--compile", "optimized"],
        ..Options::default()
    };
    let d = Dispatcher::start_with(dir.path(), opts);
    let pid = d.child.id();
    let http = crate::harness::client();
    let echo_answers = || async {
        match http.post(d.url("/echo")).body("still here").send().await {
            Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t == "still here"),
            _ => false,
        }
    };

    // Round 0 warms every path (slots, code, buffers); rounds 1..=3 must not grow past it.
    let mut level = None;
    for round in 0..4 {
        for attack in attacks() {
            let url = d.url(&format!("/h/{}", attack.name));
            let resp = http.get(&url).send().await;
            let resp = resp.unwrap_or_else(|e| panic!("{}: no answer: {e}", attack.name));
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap();
            match attack.expect {
                Expect::Results(want) => {
                    assert_eq!(status, 200, "{}: {body:?}", attack.name);
                    assert_eq!(&body[..], want, "{}: one errno per call", attack.name);
                }
                Expect::Status(want) => assert_eq!(status, want, "{}: {body:?}", attack.name),
            }
            assert!(echo_answers().await, "echo after {}", attack.name);
        }
        let (fds, rss) = d.usage();
        println!("round {round}: {fds} descriptors, {rss} KiB resident");
        match level {
            None => level = Some((fds, rss)),
            Some((fds0, rss0)) => {
                // Connections the guests held close with their instances.
                assert!(
                    wait_until(Duration::from_secs(5), || d.usage().0 <= fds0 + 2),
                    "round {round}: descriptors {} after, {fds0} before: {:?}",
                    d.usage().0,
                    descriptors(pid)
                );
                assert!(
                    rss <= rss0 + 32 * 1024,
                    "round {round}: {rss} KiB resident, {rss0} KiB after the first round"
                );
            }
        }
    }
    // Each round's connections attack got through exactly its cap.
    assert_eq!(accepted.load(Ordering::SeqCst), 4 * MAX_CONNECTIONS);

    // The floods are bounded in the log: the stderr flood logged one cut line of its 64 KiB
    // budget per round, then one line saying how much it dropped.
    let log = d.log_text();
    let flood: Vec<&str> = log.lines().filter(|l| l.contains("stderr_flood")).collect();
    let bytes: usize = flood.iter().map(|l| l.len()).sum();
    assert!(bytes < 4 * 80 * 1024, "{bytes} bytes of stderr_flood log");
    let dropped = flood.iter().filter(|l| l.contains("bytes dropped")).count();
    assert_eq!(dropped, 4, "one dropped-bytes line per flooding request");
    // Each refusal by a cap is one log line per invocation, not one per call.
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused: the instance holds its `limits.max_sockets`"))
        .count();
    assert_eq!(refusals, 4, "one line per descriptors request");
}
