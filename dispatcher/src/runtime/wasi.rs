//! The dispatcher's own WASI preview1 host: the subset functions use, with no filesystem.
//!
//! Provided: args, environ, stdin/stdout/stderr, clocks, random, `proc_exit`, `sched_yield`
//! and `poll_oneoff` (clocks and fd readiness). Every other `wasi_snapshot_preview1` import a
//! module declares is bound at load time to a stub that returns `ENOSYS` (see [`stub_missing`]),
//! so a guest gets a clean error code instead of a link failure. Waits (`poll_oneoff`,
//! `sched_yield`) are async and never block a tokio worker.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, ExternType, Linker, Memory, Module, Val, ValType};

use super::fd::{Descriptor, FdTable};
use super::socket;
use super::net_policy::NetPolicy;

/// The import module every WASI preview1 (and WasmEdge socket) function lives in.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// WASI errno values used here.
#[allow(dead_code)]
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const ACCES: i32 = 2;
    pub const AGAIN: i32 = 6;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const IO: i32 = 29;
    pub const NOSYS: i32 = 52;
    pub const SPIPE: i32 = 70;
    pub const FBIG: i32 = 22;
}

/// An error code handed back to the guest.
pub type Errno = i32;

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
    /// Program arguments, each without its NUL.
    pub args: Vec<Vec<u8>>,
    /// Environment as `KEY=VALUE` entries, each without its NUL.
    pub env: Vec<Vec<u8>>,
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
}

/// The process-wide origin of the monotonic clock the guests see.
static MONOTONIC_ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn monotonic_ns() -> u64 {
    MONOTONIC_ORIGIN.elapsed().as_nanos() as u64
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The guest's exported linear memory.
fn memory(caller: &mut Caller<'_, Host>) -> Result<Memory, Errno> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(errno::FAULT),
    }
}

/// Guest memory accessors that fail with `EFAULT` instead of panicking.
pub trait GuestMemory {
    fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno>;
    fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno>;
    fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(
            self.slice(ptr, 4)?.try_into().unwrap_or_default(),
        ))
    }
    fn read_u64(&self, ptr: u32) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(
            self.slice(ptr, 8)?.try_into().unwrap_or_default(),
        ))
    }
    fn write_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.slice_mut(ptr, 4)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn write_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.slice_mut(ptr, 8)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    /// The `(buf, len)` pairs of an iovec array.
    fn iovecs(&self, iovs: u32, count: u32) -> Result<Vec<(u32, u32)>, Errno> {
        (0..count)
            .map(|i| {
                let at = iovs
                    .checked_add(i.checked_mul(8).ok_or(errno::FAULT)?)
                    .ok_or(errno::FAULT)?;
                Ok((self.read_u32(at)?, self.read_u32(at + 4)?))
            })
            .collect()
    }
}

impl GuestMemory for [u8] {
    fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let start = ptr as usize;
        self.get(start..start + len as usize).ok_or(errno::FAULT)
    }
    fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let start = ptr as usize;
        self.get_mut(start..start + len as usize)
            .ok_or(errno::FAULT)
    }
}

/// Turns a host-call body's `Result<(), Errno>` into the errno the guest receives.
fn ret(r: Result<(), Errno>) -> wasmtime::Result<i32> {
    Ok(match r {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    })
}

/// Runs `f` with the guest memory and the host state borrowed together.
pub(super) fn with_mem<R>(
    caller: &mut Caller<'_, Host>,
    f: impl FnOnce(&mut [u8], &mut Host) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let mem = memory(caller)?;
    let (data, host) = mem.data_and_store_mut(caller);
    f(data, host)
}

/// Writes NUL-terminated `items` into a guest `argv`/`environ` pointer array and buffer.
fn write_strings(mem: &mut [u8], items: &[Vec<u8>], ptrs: u32, buf: u32) -> Result<(), Errno> {
    let mut at = buf;
    for (i, item) in items.iter().enumerate() {
        mem.write_u32(ptrs + 4 * i as u32, at)?;
        let dst = mem.slice_mut(at, item.len() as u32 + 1)?;
        dst[..item.len()].copy_from_slice(item);
        dst[item.len()] = 0;
        at += item.len() as u32 + 1;
    }
    Ok(())
}

fn write_sizes(mem: &mut [u8], items: &[Vec<u8>], count: u32, size: u32) -> Result<(), Errno> {
    mem.write_u32(count, items.len() as u32)?;
    mem.write_u32(size, items.iter().map(|i| i.len() as u32 + 1).sum())
}

/// The names this module defines; any other preview1 import gets [`stub_missing`].
pub const PROVIDED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_read",
    "fd_write",
    "fd_seek",
    "poll_oneoff",
    "proc_exit",
    "random_get",
    "sched_yield",
];

/// Whether the host defines this `wasi_snapshot_preview1` function (preview1 subset or socket
/// extension).
pub fn provides(name: &str) -> bool {
    PROVIDED.contains(&name) || socket::PROVIDED.contains(&name)
}

/// Defines the preview1 subset in `linker`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "args_get",
        |mut c: Caller<'_, Host>, argv: u32, buf: u32| {
            ret(with_mem(&mut c, |m, h| {
                write_strings(m, &h.args, argv, buf)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: Caller<'_, Host>, n: u32, size: u32| {
            ret(with_mem(&mut c, |m, h| write_sizes(m, &h.args, n, size)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        |mut c: Caller<'_, Host>, env: u32, buf: u32| {
            ret(with_mem(&mut c, |m, h| write_strings(m, &h.env, env, buf)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: Caller<'_, Host>, n: u32, size: u32| {
            ret(with_mem(&mut c, |m, h| write_sizes(m, &h.env, n, size)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: Caller<'_, Host>, id: u32, out: u32| {
            ret(with_mem(&mut c, |m, _| {
                if id > 3 {
                    return Err(errno::INVAL);
                }
                m.write_u64(out, 1_000)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, Host>, id: u32, _precision: u64, out: u32| {
            ret(with_mem(&mut c, |m, _| {
                let now = match id {
                    0 => realtime_ns(),
                    // Monotonic, and the CPU-time clocks approximated by it.
                    1..=3 => monotonic_ns(),
                    _ => return Err(errno::INVAL),
                };
                m.write_u64(out, now)
            }))
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |mut c: Caller<'_, Host>, fd: u32| {
        let host = c.data_mut();
        ret(host.fds.remove(fd).map(drop).ok_or(errno::BADF))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, Host>, fd: u32, out: u32| {
            ret(with_mem(&mut c, |m, h| {
                let (filetype, flags) = match h.fds.get(fd).ok_or(errno::BADF)? {
                    // character_device
                    Descriptor::Stdin(_) | Descriptor::Stdout(_) | Descriptor::Stderr(_) => {
                        (2u8, 0u16)
                    }
                    Descriptor::Socket(s) => {
                        (socket::filetype(s), if s.nonblocking { 4 } else { 0 })
                    }
                };
                let stat = m.slice_mut(out, 24)?;
                stat.fill(0);
                stat[0] = filetype;
                stat[2..4].copy_from_slice(&flags.to_le_bytes());
                // fd_read | fd_write | poll_fd_readwrite, and the same inheritable.
                let rights: u64 = (1 << 1) | (1 << 6) | (1 << 27);
                stat[8..16].copy_from_slice(&rights.to_le_bytes());
                stat[16..24].copy_from_slice(&rights.to_le_bytes());
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, Host>, fd: u32, flags: u32| {
            ret(match c.data_mut().fds.get_mut(fd) {
                // NONBLOCK (4) is the one flag that matters, for sockets.
                Some(Descriptor::Socket(s)) => {
                    s.nonblocking = flags & 4 != 0;
                    Ok(())
                }
                // Stdio is never waited on, so blocking and non-blocking mode are the same.
                Some(_) => Ok(()),
                None => Err(errno::BADF),
            })
        },
    )?;
    // No preopened directories: EBADF ends the guest's scan at fd 3.
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |_: Caller<'_, Host>, _fd: u32, _out: u32| Ok(errno::BADF),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: Caller<'_, Host>, _fd: u32, _path: u32, _len: u32| Ok(errno::BADF),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |c: Caller<'_, Host>, fd: u32, _offset: i64, _whence: u32, _out: u32| {
            Ok(match c.data().fds.get(fd) {
                Some(_) => errno::SPIPE,
                None => errno::BADF,
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, Host>, fd: u32, iovs: u32, count: u32, nread: u32| {
            ret(with_mem(&mut c, |m, h| {
                let iovs = m.iovecs(iovs, count)?;
                let Some(Descriptor::Stdin(stdin)) = h.fds.get_mut(fd) else {
                    return Err(errno::BADF);
                };
                let mut total = 0u32;
                for (ptr, len) in iovs {
                    let n = stdin.read(m.slice_mut(ptr, len)?);
                    total += n as u32;
                    if n < len as usize {
                        break;
                    }
                }
                m.write_u32(nread, total)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, Host>, fd: u32, iovs: u32, count: u32, nwritten: u32| {
            ret(with_mem(&mut c, |m, h| {
                let iovs = m.iovecs(iovs, count)?;
                let mut total = 0u32;
                for (ptr, len) in iovs {
                    let bytes = m.slice(ptr, len)?;
                    match h.fds.get_mut(fd).ok_or(errno::BADF)? {
                        Descriptor::Stdout(out) => {
                            if !out.write(bytes) {
                                return Err(errno::FBIG);
                            }
                        }
                        Descriptor::Stderr(log) => log.write(bytes),
                        Descriptor::Stdin(_) | Descriptor::Socket(_) => return Err(errno::BADF),
                    }
                    total += len;
                }
                m.write_u32(nwritten, total)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: Caller<'_, Host>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ExitCode(code)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut c: Caller<'_, Host>, buf: u32, len: u32| {
            ret(with_mem(&mut c, |m, _| {
                getrandom::fill(m.slice_mut(buf, len)?).map_err(|_| errno::IO)
            }))
        },
    )?;
    linker.func_wrap_async(MODULE, "sched_yield", |_: Caller<'_, Host>, (): ()| {
        Box::new(async {
            tokio::task::yield_now().await;
            wasmtime::Result::<i32>::Ok(errno::SUCCESS)
        })
    })?;
    linker.func_wrap_async(
        MODULE,
        "poll_oneoff",
        |mut c: Caller<'_, Host>, (subs, events, count, nevents): (u32, u32, u32, u32)| {
            Box::new(async move { ret(poll_oneoff(&mut c, subs, events, count, nevents).await) })
        },
    )?;
    Ok(())
}

/// One parsed `poll_oneoff` subscription.
#[derive(Debug, Clone, Copy)]
enum Subscription {
    /// Fires at `deadline` (on the host's monotonic clock).
    Clock { userdata: u64, deadline: Instant },
    /// Fd readiness: `write` false for reading.
    Fd { userdata: u64, fd: u32, write: bool },
}

/// Size of a `subscription` record.
const SUBSCRIPTION_SIZE: u32 = 48;
/// Size of an `event` record.
const EVENT_SIZE: u32 = 32;

fn parse_subscription(m: &[u8], at: u32) -> Result<Subscription, Errno> {
    let userdata = m.read_u64(at)?;
    let tag = m.slice(at + 8, 1)?[0];
    match tag {
        0 => {
            let clock = m.read_u32(at + 16)?;
            let timeout = m.read_u64(at + 24)?;
            let flags = u16::from_le_bytes(m.slice(at + 40, 2)?.try_into().unwrap_or_default());
            let now = Instant::now();
            let deadline = if flags & 1 == 1 {
                // Absolute time on the named clock.
                let remaining = match clock {
                    0 => timeout.saturating_sub(realtime_ns()),
                    1..=3 => timeout.saturating_sub(monotonic_ns()),
                    _ => return Err(errno::INVAL),
                };
                now + Duration::from_nanos(remaining)
            } else {
                now.checked_add(Duration::from_nanos(timeout))
                    .unwrap_or(now + Duration::from_secs(86_400 * 365))
            };
            Ok(Subscription::Clock { userdata, deadline })
        }
        1 | 2 => Ok(Subscription::Fd {
            userdata,
            fd: m.read_u32(at + 16)?,
            write: tag == 2,
        }),
        _ => Err(errno::INVAL),
    }
}

/// An event to report: `(userdata, type, nbytes, hangup)`. The error field is never set:
/// tokio_wasi panics on it, so trouble is reported as readiness with the hang-up flag.
type Event = (u64, u8, u64, bool);

/// Longest a `poll_oneoff` that waits on fds blocks before returning no events. tokio_wasi's
/// current-thread runtime can park while its main task is already woken (its unpark is a no-op
/// on WASI), so an unbounded wait could hang a guest whose socket stays quiet; a bounded one
/// makes it look again.
const MAX_FD_WAIT: Duration = Duration::from_millis(5);

/// Readiness of one fd subscription now; registers `cx` for a wakeup if not ready.
fn fd_ready(
    fds: &mut FdTable,
    fd: u32,
    write: bool,
    cx: &mut std::task::Context<'_>,
) -> Option<(u64, bool)> {
    match fds.get_mut(fd) {
        Some(Descriptor::Stdin(s)) if !write => Some((s.remaining.len() as u64, false)),
        Some(Descriptor::Stdout(_) | Descriptor::Stderr(_)) if write => Some((0, false)),
        Some(Descriptor::Socket(s)) => s.poll_ready(cx, write).map(|hangup| (0, hangup)),
        // Stdio waited on the wrong way, or a closed fd: never ready otherwise, so say so now.
        _ => Some((0, true)),
    }
}

async fn poll_oneoff(
    caller: &mut Caller<'_, Host>,
    subs_ptr: u32,
    events_ptr: u32,
    count: u32,
    nevents_ptr: u32,
) -> Result<(), Errno> {
    if count == 0 {
        return Err(errno::INVAL);
    }
    let subs = with_mem(caller, |m, _| {
        (0..count)
            .map(|i| parse_subscription(m, subs_ptr + i * SUBSCRIPTION_SIZE))
            .collect::<Result<Vec<_>, _>>()
    })?;
    tracing::trace!(?subs, "poll_oneoff");
    let has_fds = subs.iter().any(|s| matches!(s, Subscription::Fd { .. }));
    let clock_deadline = subs
        .iter()
        .filter_map(|s| match s {
            Subscription::Clock { deadline, .. } => Some(*deadline),
            Subscription::Fd { .. } => None,
        })
        .min();
    let cap = has_fds.then(|| Instant::now() + MAX_FD_WAIT);
    let wake_at = match (clock_deadline, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut sleep = wake_at.map(|at| Box::pin(tokio::time::sleep_until(at.into())));

    let host = caller.data_mut();
    let events: Vec<Event> = std::future::poll_fn(|cx| {
        let mut events = Vec::new();
        for s in &subs {
            if let Subscription::Fd {
                userdata,
                fd,
                write,
            } = *s
            {
                if let Some((nbytes, hangup)) = fd_ready(&mut host.fds, fd, write, cx) {
                    events.push((userdata, if write { 2 } else { 1 }, nbytes, hangup));
                }
            }
        }
        let now = Instant::now();
        for s in &subs {
            if let Subscription::Clock { userdata, deadline } = *s {
                if deadline <= now {
                    events.push((userdata, 0, 0, false));
                }
            }
        }
        if !events.is_empty() {
            return Poll::Ready(events);
        }
        match sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Vec::new()),
            _ => Poll::Pending,
        }
    })
    .await;

    with_mem(caller, |m, _| {
        for (i, (userdata, kind, nbytes, hangup)) in events.iter().enumerate() {
            let at = events_ptr + i as u32 * EVENT_SIZE;
            let ev = m.slice_mut(at, EVENT_SIZE)?;
            ev.fill(0);
            ev[0..8].copy_from_slice(&userdata.to_le_bytes());
            ev[10] = *kind;
            ev[16..24].copy_from_slice(&nbytes.to_le_bytes());
            ev[24] = u8::from(*hangup);
        }
        m.write_u32(nevents_ptr, events.len() as u32)
    })
}

/// Binds every `wasi_snapshot_preview1` import of `module` that the host does not provide to a
/// stub: functions returning one `i32` get `ENOSYS`; any other shape traps with a clear message
/// when called. Imports from other modules are an error the caller reports at load time.
pub fn stub_missing(linker: &mut Linker<Host>, module: &Module) -> Result<(), String> {
    for import in module.imports() {
        if import.module() != MODULE {
            return Err(format!(
                "the module imports `{}::{}`, which the host does not provide: expected imports from `{MODULE}` only",
                import.module(),
                import.name()
            ));
        }
        if provides(import.name()) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            return Err(format!(
                "the module imports `{MODULE}::{}` as a non-function, which the host does not provide",
                import.name()
            ));
        };
        let errno_result =
            ty.results().len() == 1 && matches!(ty.results().next(), Some(ValType::I32));
        let name = import.name().to_string();
        linker
            .func_new(MODULE, import.name(), ty, move |_c, _params, results| {
                if errno_result {
                    results[0] = Val::I32(errno::NOSYS);
                    Ok(())
                } else {
                    Err(wasmtime::Error::msg(format!(
                        "the guest called `{MODULE}::{name}`, which this host does not support"
                    )))
                }
            })
            .map_err(|e| format!("cannot bind `{MODULE}::{}`: {e}", import.name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_memory_bounds() {
        let mut mem = [0u8; 16];
        assert_eq!(mem.slice(10, 8), Err(errno::FAULT));
        mem.write_u32(12, 7).unwrap();
        assert_eq!(mem.read_u32(12), Ok(7));
        assert_eq!(mem.write_u64(12, 1), Err(errno::FAULT));
    }

    #[test]
    fn strings_are_nul_terminated() {
        let mut mem = vec![0xffu8; 64];
        let items = vec![b"A=1".to_vec(), b"B=".to_vec()];
        write_sizes(&mut mem, &items, 0, 4).unwrap();
        assert_eq!(mem.read_u32(0), Ok(2));
        assert_eq!(mem.read_u32(4), Ok(7));
        write_strings(&mut mem, &items, 8, 32).unwrap();
        assert_eq!(mem.read_u32(8), Ok(32));
        assert_eq!(mem.read_u32(12), Ok(36));
        assert_eq!(&mem[32..39], b"A=1\0B=\0");
    }
}
