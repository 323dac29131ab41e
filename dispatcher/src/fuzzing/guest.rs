//! The host ABI target: a guest generated from the fuzzer's bytes, which imports host calls
//! (preview1, WasmEdge's sockets, one the host does not provide) and calls them in the
//! order and with the arguments the bytes choose, run through [`Runtime`] as a deploy and a
//! request would run it. A host panic, or an instance slot that is not given back, is a crash.
//!
//! The bytes: one flag byte (bit 0: preview1's three-argument `sock_accept` instead of
//! WasmEdge's two), one byte `n` and `8 * n` bytes of initial memory at address 0, then the
//! calls: a byte choosing the import, and for each argument a byte choosing its kind (see
//! [`Reader::arg`]) and then that kind's bytes. Missing bytes read as zero.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::runtime::{
    CStrings, Caps, Compile, Endpoint, Invocation, InvokeError, NetPolicy, Runtime, RuntimeConfig,
};

/// A value type of the host calls' signatures.
#[derive(Clone, Copy, PartialEq)]
enum Ty {
    I32,
    I64,
}
use Ty::{I32, I64};

/// One import: its name, its parameters, and whether it returns an errno.
type Import = (&'static str, &'static [Ty], bool);

/// Every host call, with the signature the host defines (`runtime::linking`), and
/// `path_open`, which the host leaves to a stub.
const IMPORTS: &[Import] = &[
    ("args_get", &[I32, I32], true),
    ("args_sizes_get", &[I32, I32], true),
    ("environ_get", &[I32, I32], true),
    ("environ_sizes_get", &[I32, I32], true),
    ("clock_res_get", &[I32, I32], true),
    ("clock_time_get", &[I32, I64, I32], true),
    ("fd_close", &[I32], true),
    ("fd_fdstat_get", &[I32, I32], true),
    ("fd_fdstat_set_flags", &[I32, I32], true),
    ("fd_prestat_get", &[I32, I32], true),
    ("fd_prestat_dir_name", &[I32, I32, I32], true),
    ("fd_read", &[I32, I32, I32, I32], true),
    ("fd_write", &[I32, I32, I32, I32], true),
    ("fd_seek", &[I32, I64, I32, I32], true),
    ("poll_oneoff", &[I32, I32, I32, I32], true),
    ("proc_exit", &[I32], false),
    ("random_get", &[I32, I32], true),
    ("sched_yield", &[], true),
    ("sock_open", &[I32, I32, I32], true),
    ("sock_bind", &[I32, I32, I32], true),
    ("sock_listen", &[I32, I32], true),
    ("sock_accept", &[I32, I32], true),
    ("sock_connect", &[I32, I32, I32], true),
    ("sock_recv", &[I32; 6], true),
    ("sock_recv_from", &[I32; 8], true),
    ("sock_send", &[I32; 5], true),
    ("sock_send_to", &[I32; 7], true),
    ("sock_shutdown", &[I32, I32], true),
    ("sock_getlocaladdr", &[I32; 4], true),
    ("sock_getpeeraddr", &[I32; 4], true),
    ("sock_getaddrinfo", &[I32; 8], true),
    ("sock_setsockopt", &[I32; 5], true),
    ("sock_getsockopt", &[I32; 5], true),
    (
        "path_open",
        &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
        true,
    ),
];

/// preview1's own `sock_accept`: `(fd, flags, *new_fd)`.
const ACCEPT3: Import = ("sock_accept", &[I32, I32, I32], true);

/// Most calls one guest makes.
const MAX_CALLS: usize = 256;

/// How long one guest may run: a call that waits (a poll, an accept) waits this long.
const TIMEOUT: Duration = Duration::from_millis(20);

/// Values at the edges of a 64 KiB memory and of the integer types.
const EDGES: [i32; 8] = [
    0xffff,
    0x10000,
    0xfffc,
    0xfff8,
    -1,
    i32::MIN,
    i32::MAX,
    0x4000_0000,
];

/// The fuzzer's bytes, read from the front; past the end every byte is zero.
struct Reader<'a> {
    data: &'a [u8],
    /// The port of the local server the guest may connect to.
    port: u16,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        *first
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Code pushing one `i32` argument; the kind byte's low 3 bits choose what it is: a
    /// small number (fds, flags, lengths), an address in the initial memory, an edge value,
    /// any 32 bits, the `i32` stored at an address (an fd `sock_open` wrote, say), or the
    /// port of the local server.
    fn arg(&mut self, code: &mut Vec<u8>) {
        let kind = self.byte();
        let small = i64::from(kind >> 3);
        match kind & 7 {
            1 => {
                let at = i64::from(self.byte()) * 8 + small;
                i32_const(code, at);
            }
            2 => i32_const(code, i64::from(EDGES[usize::from(kind >> 5)])),
            3 => i32_const(code, i64::from(self.u32() as i32)),
            4 => {
                i32_const(code, small * 4);
                code.extend_from_slice(&[0x28, 2, 0]); // i32.load align=4 offset=0
            }
            5 => i32_const(code, i64::from(self.port)),
            _ => i32_const(code, small),
        }
    }

    fn arg64(&mut self, code: &mut Vec<u8>) {
        let kind = self.byte();
        code.push(0x42); // i64.const
        if kind & 1 == 1 {
            let v = (u64::from(self.u32()) << 32) | u64::from(self.u32());
            sleb(code, v as i64);
        } else {
            sleb(code, i64::from(kind >> 1));
        }
    }
}

fn i32_const(code: &mut Vec<u8>, v: i64) {
    code.push(0x41);
    sleb(code, v);
}

fn sleb(out: &mut Vec<u8>, mut v: i64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return;
        }
    }
}

fn uleb(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        out.push(if v == 0 { byte } else { byte | 0x80 });
        if v == 0 {
            return;
        }
    }
}

fn name(out: &mut Vec<u8>, s: &str) {
    uleb(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Appends section `id` with `count` entries of `body`.
fn section(module: &mut Vec<u8>, id: u8, count: usize, body: &[u8]) {
    let mut content = Vec::new();
    uleb(&mut content, count);
    content.extend_from_slice(body);
    module.push(id);
    uleb(module, content.len());
    module.extend_from_slice(&content);
}

/// The guest module the bytes describe: a WASI command whose `_start` makes the calls;
/// `port` is the local server's.
pub fn module(data: &[u8], port: u16) -> Vec<u8> {
    let mut r = Reader { data, port };
    let accept3 = r.byte() & 1 == 1;
    let imports: Vec<Import> = IMPORTS
        .iter()
        .map(|&i| {
            if accept3 && i.0 == "sock_accept" {
                ACCEPT3
            } else {
                i
            }
        })
        .collect();
    let memory_len = usize::from(r.byte()) * 8;
    let memory = r.take(memory_len).to_vec();

    // Only the calls it makes are imported, in the order of first use: every import's
    // signature costs the compile a trampoline.
    let mut used: Vec<usize> = Vec::new();
    let mut code = vec![0]; // no locals
    for _ in 0..MAX_CALLS {
        if r.data.is_empty() {
            break;
        }
        let index = usize::from(r.byte()) % imports.len();
        let (_, params, returns) = imports[index];
        for &ty in params {
            match ty {
                I32 => r.arg(&mut code),
                I64 => r.arg64(&mut code),
            }
        }
        let func = used.iter().position(|&u| u == index).unwrap_or_else(|| {
            used.push(index);
            used.len() - 1
        });
        code.push(0x10); // call
        uleb(&mut code, func);
        if returns {
            code.push(0x1a); // drop
        }
    }
    code.push(0x0b); // end
    let imports: Vec<Import> = used.iter().map(|&i| imports[i]).collect();

    let mut types = Vec::new();
    for (_, params, returns) in &imports {
        types.push(0x60);
        uleb(&mut types, params.len());
        types.extend(params.iter().map(|t| if *t == I32 { 0x7f } else { 0x7e }));
        types.extend_from_slice(if *returns { &[1, 0x7f] } else { &[0] });
    }
    types.extend_from_slice(&[0x60, 0, 0]); // _start: [] -> []
    let mut import_section = Vec::new();
    for (i, (field, _, _)) in imports.iter().enumerate() {
        name(&mut import_section, "wasi_snapshot_preview1");
        name(&mut import_section, field);
        import_section.push(0); // a function
        uleb(&mut import_section, i);
    }
    let mut function = Vec::new();
    uleb(&mut function, imports.len());
    let mut exports = Vec::new();
    name(&mut exports, "_start");
    exports.push(0);
    uleb(&mut exports, imports.len());
    name(&mut exports, "memory");
    exports.extend_from_slice(&[2, 0]);
    let mut body = Vec::new();
    uleb(&mut body, code.len());
    body.extend_from_slice(&code);
    let mut segment = vec![0, 0x41, 0, 0x0b]; // memory 0, at i32.const 0
    uleb(&mut segment, memory.len());
    segment.extend_from_slice(&memory);

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(&mut module, 1, imports.len() + 1, &types);
    section(&mut module, 2, imports.len(), &import_section);
    section(&mut module, 3, 1, &function);
    section(&mut module, 5, 1, &[0, 1]); // one memory of one page, no maximum
    section(&mut module, 7, 2, &exports);
    section(&mut module, 10, 1, &body);
    section(&mut module, 11, 1, &segment);
    module
}

/// The engine the guests share, a tokio runtime to run them on, and a local TCP server
/// they are allowed to connect to.
struct Fixture {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    /// The local server's port.
    port: u16,
    /// Connections to the local server (by address or by `localhost`), binding port 0.
    net: Arc<NetPolicy>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let server = serve_greeting().expect("a local TCP server for the guests");
        let endpoints = |list: &[String]| -> Vec<Endpoint> {
            list.iter()
                .map(|e| Endpoint::parse(e).expect("a valid endpoint"))
                .collect()
        };
        let port = server.port();
        Fixture {
            port,
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            runtime: Runtime::new(&RuntimeConfig {
                max_instances: 4,
                max_memory_bytes: 16 << 20,
                compile: Compile::Baseline,
                ..RuntimeConfig::default()
            })
            .expect("the wasm runtime"),
            net: Arc::new(NetPolicy {
                allow: endpoints(&[format!("127.0.0.1:{port}"), format!("localhost:{port}")]),
                listen: endpoints(&["127.0.0.1:0".into()]),
                ..NetPolicy::default()
            }),
        }
    })
}

/// A server on a free local port that greets each connection and reads it to its end.
fn serve_greeting() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                if conn.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
                    && conn.write_all(b"hello\r\n").is_ok()
                {
                    let _ = std::io::copy(&mut (&conn).take(1 << 20), &mut std::io::sink());
                }
            });
        }
    });
    Ok(addr)
}

/// Builds the guest the bytes describe and runs it once.
pub fn host_abi(data: &[u8]) {
    let fx = fixture();
    let wasm = module(data, fx.port);
    let prepared = match fx.runtime.prepare(&wasm) {
        Ok(p) => p,
        Err(e) => {
            panic!("the generated guest does not load (has a host call's signature changed?): {e}")
        }
    };
    let inv = Invocation {
        function: "fuzz".into(),
        request_id: "fuzz".into(),
        log: None,
        args: CStrings::from_items(["fuzz", "--flag"]),
        env: CStrings::from_items(["A=1", "PATH_INFO=/x"]),
        stdin: bytes::Bytes::from_static(b"stdin bytes\n"),
        memory_bytes: 16 << 20,
        timeout: TIMEOUT,
        caps: Caps {
            stdout_bytes: 64 << 10,
            log_bytes: 4 << 10,
            ..Caps::default()
        },
        sessions: None,
        net: fx.net.clone(),
    };
    match fx.tokio.block_on(prepared.invoke(inv)) {
        Err(InvokeError::HostPanic(message)) => panic!("a host call panicked: {message}"),
        Err(InvokeError::Capacity(message)) => {
            panic!("an instance slot was not given back: {message}")
        }
        Ok(_) | Err(_) => {}
    }
}
