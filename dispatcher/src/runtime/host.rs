//! The state of one instance, as every host call sees it: its arguments, environment,
//! descriptors, memory cap and network policy, and how a call borrows it together with the
//! guest's memory.

use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::{Caller, Extern};

use super::abi::{Errno, GuestMemory};
use super::cstrings::CStrings;
use super::fd::FdTable;
use super::net_policy::NetPolicy;

/// What `proc_exit` raises to unwind the guest; exit code 0 is a success.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the guest exited with code {0}")]
pub struct ExitCode(pub i32);

/// Caps a guest's linear memory and records when it asked for more.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// Most bytes of linear memory the instance may have.
    pub max_bytes: usize,
    /// Set when a growth past `max_bytes` was refused.
    pub hit: bool,
    /// The largest size the memory grew to, for the log.
    pub peak: usize,
}

/// Most table elements an instance may grow to (function tables of big Rust modules fit).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// What one instance may hold or use, besides memory and time: past each cap the call that
/// would pass it fails with an error code (and one log line per invocation), never the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Sockets open at once (listening, connected or not yet either). Past it `sock_open` and
    /// `sock_accept` give `EMFILE`. The only descriptors besides stdio, so this caps those too.
    pub sockets: usize,
    /// Outbound connections open at once (connected, or connecting: a connect waits in the
    /// host call, so one instance has at most one in progress). Past it `sock_connect` gives
    /// `EMFILE`.
    pub connections: usize,
    /// Sessions with endpoints the host serves (database pools) at once; past it a connect to
    /// one gives `ECONNREFUSED`.
    pub pooled_sessions: usize,
    /// Name look-ups (`sock_getaddrinfo` of a name, not of an address literal) in the whole
    /// invocation; past it they give `EAGAIN`.
    pub lookups: usize,
    /// Bytes the guest may write to stdout; one more fails the invocation (`output_limit`).
    pub stdout_bytes: usize,
    /// Bytes of stderr forwarded to the log; the rest is dropped and counted in one line.
    pub log_bytes: usize,
}

impl Default for Caps {
    /// The manifest's defaults (see `[limits]` in the README).
    fn default() -> Self {
        Caps {
            sockets: 64,
            connections: 32,
            pooled_sessions: 4,
            lookups: 32,
            stdout_bytes: 32 << 20,
            log_bytes: 1 << 20,
        }
    }
}

/// The state of one instance: everything its host calls can see.
pub struct Host {
    /// Program arguments.
    pub args: CStrings,
    /// Environment as `KEY=VALUE` entries.
    pub env: CStrings,
    /// Open descriptors: stdio now, sockets with the WasmEdge extension.
    pub fds: FdTable,
    /// The memory cap, consulted by wasmtime on every `memory.grow`.
    pub limiter: MemoryLimiter,
    /// The function's name, for logs.
    pub function: Arc<str>,
    /// Where the function may connect and listen.
    pub net: Arc<NetPolicy>,
    /// `(name, ip)` pairs this instance's own lookups returned, for the allow-list.
    pub resolved: Vec<(String, IpAddr)>,
    /// What it may hold and use.
    pub caps: Caps,
    /// Name look-ups made so far.
    pub lookups: usize,
    /// Caps already reported in the log for this invocation (one line per cap).
    pub reported: u8,
    /// Told of each session opened with an endpoint the host serves.
    pub sessions: Option<Arc<dyn super::HostSessions>>,
}

/// The caps a call can run into, for [`Host::refuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Sockets,
    Connections,
    PooledSessions,
    Lookups,
}

impl Cap {
    /// The manifest field that sets it, and the error code past it.
    fn field_and_errno(self) -> (&'static str, Errno) {
        match self {
            Cap::Sockets => ("limits.max_sockets", Errno::Mfile),
            Cap::Connections => ("limits.max_connections", Errno::Mfile),
            Cap::PooledSessions => ("limits.max_db_sessions", Errno::Connrefused),
            Cap::Lookups => ("limits.max_lookups", Errno::Again),
        }
    }
}

impl Host {
    /// `Ok` while `used` is under `max`; else the cap's error code, and (the first time in
    /// this invocation) a log line naming the cap.
    pub fn within(&mut self, cap: Cap, used: usize, max: usize) -> Result<(), Errno> {
        if used < max {
            return Ok(());
        }
        let (field, errno) = cap.field_and_errno();
        let bit = 1u8 << (cap as u8);
        if self.reported & bit == 0 {
            self.reported |= bit;
            tracing::warn!(function = %self.function, max, "refused: the instance holds its `{field}` (reported once per invocation)");
        }
        Err(errno)
    }

    /// `EMFILE` when another socket would pass the instance's cap.
    pub fn room_for_a_socket(&mut self) -> Result<(), Errno> {
        self.within(Cap::Sockets, self.fds.sockets(), self.caps.sockets)
    }
}

/// Runs `f` with the guest memory and the host state borrowed together. `EFAULT` if the
/// guest exports no memory.
pub fn with_mem<R>(
    caller: &mut Caller<'_, Host>,
    f: impl FnOnce(&mut GuestMemory<'_>, &mut Host) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
        return Err(Errno::Fault);
    };
    let (data, host) = mem.data_and_store_mut(caller);
    f(&mut GuestMemory::new(data), host)
}

/// Turns a host-call body's result into the `i32` errno the guest receives.
pub fn ret(r: Result<(), Errno>) -> wasmtime::Result<i32> {
    Ok(super::abi::result_code(r))
}
