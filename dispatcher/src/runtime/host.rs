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
    /// Most sockets open at once; past it `sock_open` and `sock_accept` give `EMFILE`.
    pub max_sockets: usize,
    /// Most sessions with endpoints the host serves (the database pool) at once; past it a
    /// connect to one gives `ECONNREFUSED`.
    pub max_pooled_sessions: usize,
    /// Told of each session opened with an endpoint the host serves.
    pub sessions: Option<Arc<dyn super::HostSessions>>,
}

impl Host {
    /// `EMFILE` when another socket would pass the instance's cap.
    pub fn room_for_a_socket(&self) -> Result<(), Errno> {
        if self.fds.sockets() >= self.max_sockets {
            tracing::warn!(function = %self.function, max = self.max_sockets, "network: socket refused: the instance holds its `limits.max_sockets`");
            return Err(Errno::Mfile);
        }
        Ok(())
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
