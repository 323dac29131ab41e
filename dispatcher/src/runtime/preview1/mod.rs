//! The dispatcher's own WASI preview1 host: the subset functions use, with no filesystem.
//!
//! Provided: args, environ, stdin/stdout/stderr, clocks, random, `proc_exit`, `sched_yield`
//! and `poll_oneoff` (clocks and fd readiness, see [`poll`]). Every other
//! `wasi_snapshot_preview1` import a module declares is bound at load time to a stub that
//! returns `ENOSYS` (see `linking`), so a guest gets a clean error code instead of a link
//! failure. Waits (`poll_oneoff`, `sched_yield`) are async and never block a tokio worker.

mod poll;

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::abi::wasi_types::{clockid, fdstat};
use super::abi::{Errno, GuestMemory, GuestPtr, MODULE};
use super::cstrings::CStrings;
use super::fd::{Descriptor, RIGHTS};
use super::host::{ret, with_mem, ExitCode, Host};

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

/// Nanoseconds since the clock's epoch, or `EINVAL` for a clock that does not exist.
fn now_ns(id: u32) -> Result<u64, Errno> {
    match id {
        clockid::REALTIME => Ok(realtime_ns()),
        // Monotonic, and the CPU-time clocks approximated by it.
        clockid::MONOTONIC | clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => {
            Ok(monotonic_ns())
        }
        _ => Err(Errno::Inval),
    }
}

/// Writes `items` (NUL-terminated already) into a guest `argv`/`environ` buffer in one copy,
/// then their addresses into the pointer array.
fn write_strings(
    m: &mut GuestMemory<'_>,
    items: &CStrings,
    ptrs: GuestPtr,
    buf: GuestPtr,
) -> Result<(), Errno> {
    let bytes = items.bytes();
    let len = u32::try_from(bytes.len()).map_err(|_| Errno::Inval)?;
    m.bytes_mut(buf, len)?.copy_from_slice(bytes);
    for (i, start) in (0u32..).zip(items.starts()) {
        let at = buf.add(start)?;
        m.write_u32(ptrs.element(i, 4)?, at.0)?;
    }
    Ok(())
}

fn write_sizes(
    m: &mut GuestMemory<'_>,
    items: &CStrings,
    count: GuestPtr,
    size: GuestPtr,
) -> Result<(), Errno> {
    let total = u32::try_from(items.bytes().len()).map_err(|_| Errno::Inval)?;
    m.write_u32(count, items.count())?;
    m.write_u32(size, total)
}

/// The names this module defines; any other preview1 import gets a stub (see `linking`).
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

/// Defines the preview1 subset in `linker`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "args_get",
        |mut c: Caller<'_, Host>, argv: u32, buf: u32| {
            ret(with_mem(&mut c, |m, h| {
                write_strings(m, &h.args, argv.into(), buf.into())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: Caller<'_, Host>, n: u32, size: u32| {
            ret(with_mem(&mut c, |m, h| {
                write_sizes(m, &h.args, n.into(), size.into())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        |mut c: Caller<'_, Host>, env: u32, buf: u32| {
            ret(with_mem(&mut c, |m, h| {
                write_strings(m, &h.env, env.into(), buf.into())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: Caller<'_, Host>, n: u32, size: u32| {
            ret(with_mem(&mut c, |m, h| {
                write_sizes(m, &h.env, n.into(), size.into())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: Caller<'_, Host>, id: u32, out: u32| {
            ret(with_mem(&mut c, |m, _| {
                now_ns(id)?;
                m.write_u64(out.into(), 1_000)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, Host>, id: u32, _precision: u64, out: u32| {
            ret(with_mem(&mut c, |m, _| {
                m.write_u64(out.into(), now_ns(id)?)
            }))
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |mut c: Caller<'_, Host>, fd: u32| {
        let host = c.data_mut();
        ret(host.fds.remove(fd).map(drop).ok_or(Errno::Badf))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, Host>, fd: u32, out: u32| {
            ret(with_mem(&mut c, |m, h| {
                let d = h.fds.get(fd).ok_or(Errno::Badf)?;
                let out = GuestPtr(out);
                m.zero(out, fdstat::SIZE)?;
                m.write_u8(out.add(fdstat::FILETYPE)?, d.filetype())?;
                m.write_u16(out.add(fdstat::FLAGS)?, d.fdflags())?;
                m.write_u64(out.add(fdstat::RIGHTS_BASE)?, RIGHTS)?;
                m.write_u64(out.add(fdstat::RIGHTS_INHERITING)?, RIGHTS)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, Host>, fd: u32, flags: u32| {
            let d = c.data_mut().fds.get_mut(fd).ok_or(Errno::Badf);
            // fdflags is a u16: anything above it is no flag at all.
            ret(d.and_then(|d| {
                d.set_fdflags(u16::try_from(flags).map_err(|_| Errno::Inval)?);
                Ok(())
            }))
        },
    )?;
    // No preopened directories: EBADF ends the guest's scan at fd 3.
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |_: Caller<'_, Host>, _fd: u32, _out: u32| Ok(Errno::Badf.code()),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: Caller<'_, Host>, _fd: u32, _path: u32, _len: u32| Ok(Errno::Badf.code()),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |c: Caller<'_, Host>, fd: u32, _offset: i64, _whence: u32, _out: u32| {
            Ok(match c.data().fds.get(fd) {
                Some(_) => Errno::Spipe,
                None => Errno::Badf,
            }
            .code())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, Host>, fd: u32, iovs: u32, count: u32, nread: u32| {
            ret(with_mem(&mut c, |m, h| {
                let iovs = m.iovecs(iovs.into(), count)?;
                let Some(Descriptor::Stdin(stdin)) = h.fds.get_mut(fd) else {
                    return Err(Errno::Badf);
                };
                // `iovecs` checked that the lengths add up to a u32, so the total does too;
                // each read is at most its buffer's `v.len` bytes.
                let mut total = 0u32;
                for v in iovs {
                    let n = stdin.read(m.bytes_mut(v.buf, v.len)?) as u32;
                    total += n;
                    if n < v.len {
                        break;
                    }
                }
                m.write_u32(nread.into(), total)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, Host>, fd: u32, iovs: u32, count: u32, nwritten: u32| {
            ret(with_mem(&mut c, |m, h| {
                let iovs = m.iovecs(iovs.into(), count)?;
                let mut total = 0u32;
                for v in iovs {
                    let bytes = m.bytes(v.buf, v.len)?;
                    match h.fds.get_mut(fd).ok_or(Errno::Badf)? {
                        Descriptor::Stdout(out) => {
                            if !out.write(bytes) {
                                return Err(Errno::Fbig);
                            }
                        }
                        Descriptor::Stderr(log) => log.write(bytes),
                        Descriptor::Stdin(_) | Descriptor::Socket(_) => return Err(Errno::Badf),
                    }
                    // As in fd_read, the total cannot overflow.
                    total += v.len;
                }
                m.write_u32(nwritten.into(), total)
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
                getrandom::fill(m.bytes_mut(buf.into(), len)?).map_err(|_| Errno::Io)
            }))
        },
    )?;
    linker.func_wrap_async(MODULE, "sched_yield", |_: Caller<'_, Host>, (): ()| {
        Box::new(async {
            tokio::task::yield_now().await;
            wasmtime::Result::<i32>::Ok(Errno::Success.code())
        })
    })?;
    linker.func_wrap_async(
        MODULE,
        "poll_oneoff",
        |mut c: Caller<'_, Host>, (subs, events, count, nevents): (u32, u32, u32, u32)| {
            Box::new(async move {
                ret(
                    poll::poll_oneoff(&mut c, subs.into(), events.into(), count, nevents.into())
                        .await,
                )
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_nul_terminated() {
        let mut raw = vec![0xffu8; 64];
        let mut m = GuestMemory::new(&mut raw);
        let items = CStrings::from_items(["A=1", "B="]);
        write_sizes(&mut m, &items, GuestPtr(0), GuestPtr(4)).unwrap();
        assert_eq!(m.read_u32(GuestPtr(0)), Ok(2));
        assert_eq!(m.read_u32(GuestPtr(4)), Ok(7));
        write_strings(&mut m, &items, GuestPtr(8), GuestPtr(32)).unwrap();
        assert_eq!(m.read_u32(GuestPtr(8)), Ok(32));
        assert_eq!(m.read_u32(GuestPtr(12)), Ok(36));
        assert_eq!(m.bytes(GuestPtr(32), 7), Ok(&b"A=1\0B=\0"[..]));
    }

    #[test]
    fn strings_out_of_memory_fault() {
        let mut raw = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut raw);
        let items = CStrings::from_items(["A=1", "B="]);
        // The buffer runs past the end.
        assert_eq!(
            write_strings(&mut m, &items, GuestPtr(0), GuestPtr(60)),
            Err(Errno::Fault)
        );
        // The pointer array wraps around the address space.
        assert_eq!(
            write_strings(&mut m, &items, GuestPtr(u32::MAX - 3), GuestPtr(32)),
            Err(Errno::Fault)
        );
        // The buffer's end wraps around.
        assert_eq!(
            write_strings(&mut m, &items, GuestPtr(0), GuestPtr(u32::MAX - 1)),
            Err(Errno::Fault)
        );
        assert_eq!(
            write_sizes(&mut m, &items, GuestPtr(62), GuestPtr(0)),
            Err(Errno::Fault)
        );
    }

    #[test]
    fn clocks() {
        assert!(now_ns(clockid::REALTIME).unwrap() > 1_600_000_000_000_000_000);
        let a = now_ns(clockid::MONOTONIC).unwrap();
        assert!(now_ns(clockid::THREAD_CPUTIME).unwrap() >= a);
        assert_eq!(now_ns(4), Err(Errno::Inval));
    }
}
