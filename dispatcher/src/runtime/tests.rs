//! End-to-end checks of the host calls through a real instance: a guest that hands the host
//! bad pointers and sizes gets errnos back, and the host does not panic.

use std::sync::Arc;
use std::time::Duration;

use super::abi::Errno;
use super::{CStrings, Caps, Compile, Invocation, InvokeError, NetPolicy, Runtime, RuntimeConfig};

/// Calls host functions with bad arguments and answers with one byte per result.
const BAD_ARGUMENTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_open" (func $sock_open (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_bind" (func $sock_bind (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 16: WasiAddress {buf = 32, len = 4}; 32: 127.0.0.1
  (data (i32.const 16) "\20\00\00\00\04\00\00\00")
  (data (i32.const 32) "\7f\00\00\01")
  ;; 48: an iovec whose buffer runs past the end of memory
  (data (i32.const 48) "\00\ff\00\00\00\02\00\00")
  ;; 300: the iovec of the answer, 8 bytes at 100
  (data (i32.const 300) "\64\00\00\00\08\00\00\00")
  (func (export "_start")
    ;; An iovec array that runs off the end of memory.
    (i32.store8 (i32.const 100) (call $fd_write (i32.const 1) (i32.const 0xfffffff8) (i32.const 2) (i32.const 0)))
    ;; An iovec count no memory could hold.
    (i32.store8 (i32.const 101) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 0x40000000) (i32.const 0)))
    ;; An out-pointer at the last byte of memory.
    (i32.store8 (i32.const 102) (call $args_sizes_get (i32.const 0xffff) (i32.const 0)))
    ;; A subscription count no memory could hold.
    (i32.store8 (i32.const 103) (call $poll_oneoff (i32.const 0) (i32.const 0) (i32.const 0x10000000) (i32.const 0)))
    ;; A buffer one byte past the end.
    (i32.store8 (i32.const 104) (call $random_get (i32.const 0xffff) (i32.const 2)))
    ;; A port past 65535.
    (drop (call $sock_open (i32.const 1) (i32.const 2) (i32.const 200)))
    (i32.store8 (i32.const 105) (call $sock_bind (i32.load (i32.const 200)) (i32.const 16) (i32.const 70000)))
    ;; Zero bytes at the very end of memory are fine.
    (i32.store8 (i32.const 106) (call $random_get (i32.const 0x10000) (i32.const 0)))
    ;; A valid iovec array whose buffer is not in memory.
    (i32.store8 (i32.const 107) (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 0)))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308)))))"#;

fn runtime(compile: Compile) -> Runtime {
    Runtime::new(&RuntimeConfig {
        cache_dir: None,
        max_instances: 2,
        max_memory_bytes: 16 << 20,
        compile,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn invocation(name: &str) -> Invocation {
    Invocation {
        function: name.into(),
        request_id: "bench".into(),
        log: None,
        args: CStrings::from_items([name]),
        env: CStrings::default(),
        stdin: Default::default(),
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(10),
        caps: Caps {
            stdout_bytes: 1 << 10,
            ..Caps::default()
        },
        sessions: None,
        net: Arc::new(NetPolicy::default()),
    }
}

#[tokio::test]
async fn bad_guest_pointers_get_errnos_not_panics() {
    let wasm = wat::parse_str(BAD_ARGUMENTS).unwrap();
    let (fault, inval) = (Errno::Fault.code() as u8, Errno::Inval.code() as u8);
    // Winch's code and Cranelift's see the same host.
    for compile in [Compile::Baseline, Compile::Optimized] {
        let prepared = runtime(compile).prepare(&wasm).unwrap();
        let out = prepared.invoke(invocation("bad")).await.unwrap();
        assert_eq!(
            out,
            [fault, inval, fault, inval, fault, inval, 0, fault],
            "one errno per bad call ({compile:?})"
        );
    }
}

#[tokio::test]
async fn tiered_code_is_swapped_for_optimized_code_in_place() {
    let wasm = wat::parse_str(BAD_ARGUMENTS).unwrap();
    let rt = runtime(Compile::Tiered);
    let prepared = rt.prepare(&wasm).unwrap();
    let first = prepared.invoke(invocation("bad")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rt.optimizing() > 0 {
        assert!(std::time::Instant::now() < deadline, "never optimized");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rt.is_optimized(&prepared),
        "the same Prepared now runs Cranelift's code"
    );
    assert_eq!(prepared.invoke(invocation("bad")).await.unwrap(), first);
    // Seen before: no compile, and optimized at once.
    let again = rt.prepare(&wasm).unwrap();
    assert_eq!(again.origin, super::Origin::Cached);
    assert!(rt.is_optimized(&again));

    let baseline = runtime(Compile::Baseline);
    let prepared = baseline.prepare(&wasm).unwrap();
    assert_eq!(baseline.optimizing(), 0);
    assert!(
        !baseline.is_optimized(&prepared),
        "baseline only stays on Winch's code"
    );
    let optimized = runtime(Compile::Optimized);
    let prepared = optimized.prepare(&wasm).unwrap();
    assert!(
        optimized.is_optimized(&prepared),
        "optimized only is Cranelift's from the start"
    );
}

/// Opens sockets until `sock_open` fails; answers with the count and the failing errno.
const SOCKET_FLOOD: &str = r#"(module
  (import "wasi_snapshot_preview1" "sock_open" (func $sock_open (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 300: the iovec of the answer, 2 bytes at 100
  (data (i32.const 300) "\64\00\00\00\02\00\00\00")
  (func (export "_start")
    (local $n i32) (local $r i32)
    (block $done
      (loop $more
        (local.set $r (call $sock_open (i32.const 1) (i32.const 2) (i32.const 200)))
        (br_if $done (local.get $r))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $done (i32.ge_u (local.get $n) (i32.const 1000)))
        (br $more)))
    (i32.store8 (i32.const 100) (local.get $n))
    (i32.store8 (i32.const 101) (local.get $r))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308)))))"#;

#[tokio::test]
async fn an_instance_holds_at_most_max_sockets() {
    let rt = Runtime::new(&RuntimeConfig {
        cache_dir: None,
        max_instances: 2,
        max_memory_bytes: 16 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let prepared = rt.prepare(&wat::parse_str(SOCKET_FLOOD).unwrap()).unwrap();
    let out = prepared
        .invoke(Invocation {
            function: "flood".into(),
            request_id: "bench".into(),
            log: None,
            args: CStrings::from_items(["flood"]),
            env: CStrings::default(),
            stdin: Default::default(),
            memory_bytes: 16 << 20,
            timeout: Duration::from_secs(10),
            caps: Caps {
                sockets: 5,
                stdout_bytes: 1 << 10,
                ..Caps::default()
            },
            sessions: None,
            net: Arc::new(NetPolicy::default()),
        })
        .await
        .unwrap();
    assert_eq!(
        out,
        [5, Errno::Mfile.code() as u8],
        "five sockets, then EMFILE"
    );
}

/// Spins for ever.
const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

#[tokio::test]
async fn a_spinning_guest_times_out_on_either_compiler() {
    let wasm = wat::parse_str(SPIN).unwrap();
    for compile in [Compile::Baseline, Compile::Optimized] {
        let prepared = runtime(compile).prepare(&wasm).unwrap();
        let mut inv = invocation("spin");
        inv.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), prepared.invoke(inv)).await;
        assert!(
            matches!(result, Ok(Err(super::InvokeError::Timeout(_)))),
            "{compile:?}: {:?}",
            result.map(|r| r.map(|_| ()))
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{compile:?}");
    }
}

/// Calls the test build's panicking host call (`linking::TEST_PANIC`).
const PANICS_IN_THE_HOST: &str = r#"(module
  (import "wasi_snapshot_preview1" "dispatcher_test_panic" (func $panic (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $panic))))"#;

#[tokio::test]
async fn a_panic_in_a_host_call_ends_that_invocation_only() {
    for compile in [Compile::Baseline, Compile::Optimized] {
        let rt = runtime(compile);
        let panics = rt
            .prepare(&wat::parse_str(PANICS_IN_THE_HOST).unwrap())
            .unwrap();
        let result = panics.invoke(invocation("panics")).await;
        assert!(
            matches!(&result, Err(InvokeError::HostPanic(m)) if m.contains("own bug")),
            "{compile:?}: {result:?}"
        );
        // The runtime, its instance slots and other modules go on.
        let spin = rt.prepare(&wat::parse_str(SPIN).unwrap()).unwrap();
        for _ in 0..3 {
            assert!(panics.invoke(invocation("panics")).await.is_err());
        }
        let mut inv = invocation("spin");
        inv.timeout = Duration::from_millis(50);
        assert!(matches!(
            spin.invoke(inv).await,
            Err(InvokeError::Timeout(_))
        ));
    }
}
