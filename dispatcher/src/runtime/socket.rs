//! WasmEdge's socket extension (`sock_*` in module `wasi_snapshot_preview1`), on tokio.
//!
//! Guests built with `tokio_wasi`, `mio_wasi`, `wasmedge_wasi_socket`, `hyper_wasi` and
//! `mysql_async_wasi` call these; `docs/wasmedge-socket-abi.md` has the layouts and the
//! behaviour those crates expect. The host owns the real sockets: every TCP socket gets
//! `TCP_NODELAY` (the guest crates cannot set it, and Nagle plus delayed ACKs cost 40 ms per
//! request/response), every wait is an async tokio wait, and connections go only where the
//! function's `[network]` allow-list says.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use wasmtime::{Caller, Linker};

use super::fd::Descriptor;
use super::wasi::{errno, with_mem, Errno, GuestMemory, Host, MODULE};

/// How long a connect may take before the guest gets `ETIMEDOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// More WASI errno values, for sockets.
mod sockerr {
    pub const ADDRINUSE: i32 = 3;
    pub const ADDRNOTAVAIL: i32 = 4;
    pub const AFNOSUPPORT: i32 = 5;
    pub const CONNABORTED: i32 = 13;
    pub const CONNREFUSED: i32 = 14;
    pub const CONNRESET: i32 = 15;
    pub const HOSTUNREACH: i32 = 23;
    pub const ISCONN: i32 = 30;
    pub const NETUNREACH: i32 = 40;
    pub const NOPROTOOPT: i32 = 50;
    pub const NOTCONN: i32 = 53;
    pub const NOTSOCK: i32 = 57;
    pub const NOTSUP: i32 = 58;
    pub const PIPE: i32 = 64;
    pub const TIMEDOUT: i32 = 73;
}

/// Stream or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockKind {
    Stream,
    Dgram,
}

/// A guest's socket.
#[derive(Debug)]
pub struct Socket {
    /// TCP or UDP.
    pub kind: SockKind,
    /// IPv6 rather than IPv4.
    v6: bool,
    /// O_NONBLOCK, set through `fd_fdstat_set_flags`: calls that would wait return `EAGAIN`.
    pub nonblocking: bool,
    /// SO_RCVTIMEO / SO_SNDTIMEO for blocking calls.
    recv_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    /// SO_REUSEADDR, applied at bind.
    reuse_addr: bool,
    /// Where it is in its life.
    state: SockState,
}

#[derive(Debug)]
enum SockState {
    /// Opened, perhaps bound, not connected or listening.
    Open { socket: Option<TcpSocket> },
    /// A connected TCP stream.
    Connected(TcpStream),
    /// A listening socket, with a connection that `poll_oneoff` accepted ahead of `sock_accept`.
    Listening {
        listener: TcpListener,
        ready: Option<(TcpStream, SocketAddr)>,
    },
    /// A connect that failed: reads and writes report this error.
    Failed(Errno),
    /// A UDP socket: it can be opened and closed; sending and receiving is not supported yet.
    Udp,
}

impl Socket {
    /// Readiness for `poll_oneoff`: `Some(hangup)` when ready. Registers `cx` otherwise.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>, write: bool) -> Option<bool> {
        match &mut self.state {
            SockState::Connected(stream) => {
                let poll = if write {
                    stream.poll_write_ready(cx)
                } else {
                    stream.poll_read_ready(cx)
                };
                match poll {
                    Poll::Ready(Ok(())) => Some(false),
                    Poll::Ready(Err(_)) => Some(true),
                    Poll::Pending => None,
                }
            }
            SockState::Listening { listener, ready } => {
                if write {
                    return None;
                }
                if ready.is_some() {
                    return Some(false);
                }
                match listener.poll_accept(cx) {
                    Poll::Ready(Ok(conn)) => {
                        *ready = Some(conn);
                        Some(false)
                    }
                    // The error comes back from sock_accept's own attempt.
                    Poll::Ready(Err(_)) => Some(false),
                    Poll::Pending => None,
                }
            }
            // Nothing will ever arrive: ready, hung up, so the guest's next call gets the error.
            SockState::Failed(_) | SockState::Open { .. } | SockState::Udp => Some(true),
        }
    }
}

/// Maps an I/O error to the WASI errno the guest crates expect.
fn io_errno(e: &io::Error) -> Errno {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => sockerr::CONNREFUSED,
        ConnectionReset => sockerr::CONNRESET,
        ConnectionAborted => sockerr::CONNABORTED,
        NotConnected => sockerr::NOTCONN,
        AddrInUse => sockerr::ADDRINUSE,
        AddrNotAvailable => sockerr::ADDRNOTAVAIL,
        BrokenPipe => sockerr::PIPE,
        WouldBlock => errno::AGAIN,
        TimedOut => sockerr::TIMEDOUT,
        PermissionDenied => errno::ACCES,
        InvalidInput => errno::INVAL,
        HostUnreachable => sockerr::HOSTUNREACH,
        NetworkUnreachable => sockerr::NETUNREACH,
        _ => errno::IO,
    }
}

fn socket_mut(host: &mut Host, fd: u32) -> Result<&mut Socket, Errno> {
    match host.fds.get_mut(fd) {
        Some(Descriptor::Socket(s)) => Ok(s),
        Some(_) => Err(sockerr::NOTSOCK),
        None => Err(errno::BADF),
    }
}

/// Reads a `WasiAddress {buf, size}` holding raw IP bytes.
fn read_ip(m: &[u8], addr_ptr: u32) -> Result<IpAddr, Errno> {
    let buf = m.read_u32(addr_ptr)?;
    let len = m.read_u32(addr_ptr + 4)?;
    let bytes = m.slice(buf, len)?;
    match len {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(bytes);
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => Err(errno::INVAL),
    }
}

/// Writes an address as `get{local,peer}addr` return it: IP bytes into the `WasiAddress`'s
/// buffer, the family (1 or 2) and the port.
fn write_addr(
    m: &mut [u8],
    addr: SocketAddr,
    addr_ptr: u32,
    type_out: u32,
    port_out: u32,
) -> Result<(), Errno> {
    let buf = m.read_u32(addr_ptr)?;
    let size = m.read_u32(addr_ptr + 4)?;
    if size < 16 {
        return Err(errno::INVAL);
    }
    let family = match addr.ip() {
        IpAddr::V4(ip) => {
            m.slice_mut(buf, 4)?.copy_from_slice(&ip.octets());
            1
        }
        IpAddr::V6(ip) => {
            m.slice_mut(buf, 16)?.copy_from_slice(&ip.octets());
            2
        }
    };
    m.write_u32(type_out, family)?;
    m.write_u32(port_out, u32::from(addr.port()))
}

/// A future polled by hand with the socket borrowed from the host each time, so that the
/// guest's memory and the host state are never borrowed across an await.
fn poll_socket<'a, R>(
    host: &'a mut Host,
    fd: u32,
    mut f: impl FnMut(&mut Socket, &mut Context<'_>) -> Poll<Result<R, Errno>> + 'a,
) -> impl Future<Output = Result<R, Errno>> + 'a {
    std::future::poll_fn(move |cx| match socket_mut(host, fd) {
        Ok(s) => f(s, cx),
        Err(e) => Poll::Ready(Err(e)),
    })
}

/// Waits for `fut` up to `limit` (no limit if `None`), with `EAGAIN` on expiry.
async fn within<R>(
    limit: Option<Duration>,
    fut: impl Future<Output = Result<R, Errno>>,
) -> Result<R, Errno> {
    match limit {
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .unwrap_or(Err(errno::AGAIN)),
        None => fut.await,
    }
}

/// The socket functions, added to the WASI host's linker.
pub const PROVIDED: &[&str] = &[
    "sock_open",
    "sock_bind",
    "sock_listen",
    "sock_accept",
    "sock_connect",
    "sock_recv",
    "sock_recv_from",
    "sock_send",
    "sock_send_to",
    "sock_shutdown",
    "sock_getlocaladdr",
    "sock_getpeeraddr",
    "sock_getaddrinfo",
    "sock_setsockopt",
    "sock_getsockopt",
];

fn ret(r: Result<(), Errno>) -> wasmtime::Result<i32> {
    Ok(r.err().unwrap_or(errno::SUCCESS))
}

/// Boxes an async host-call body for `func_wrap_async`.
type HostFuture<'a> = Box<dyn Future<Output = wasmtime::Result<i32>> + Send + 'a>;
fn boxed<'a>(f: impl Future<Output = Result<(), Errno>> + Send + 'a) -> HostFuture<'a> {
    Box::new(async move { ret(f.await) })
}

/// Defines `sock_accept` with the arity a module imports: WasmEdge's takes `(fd, *new_fd)`,
/// preview1's `(fd, flags, *new_fd)`.
pub fn define_accept(linker: &mut Linker<Host>, accept_params: usize) -> wasmtime::Result<()> {
    if accept_params == 3 {
        linker.func_wrap_async(
            MODULE,
            "sock_accept",
            |mut c: Caller<'_, Host>, (fd, _flags, out): (u32, u32, u32)| {
                boxed(async move { accept(&mut c, fd, out).await })
            },
        )?;
    } else {
        linker.func_wrap_async(
            MODULE,
            "sock_accept",
            |mut c: Caller<'_, Host>, (fd, out): (u32, u32)| {
                boxed(async move { accept(&mut c, fd, out).await })
            },
        )?;
    }
    Ok(())
}

/// Defines the socket extension in `linker`, with WasmEdge's two-argument `sock_accept`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    define_accept(linker, 2)?;
    linker.func_wrap(
        MODULE,
        "sock_open",
        |mut c: Caller<'_, Host>, af: u32, ty: u32, fd_out: u32| {
            ret(with_mem(&mut c, |m, h| {
                let v6 = match af {
                    1 => false,
                    2 => true,
                    _ => return Err(sockerr::AFNOSUPPORT),
                };
                let (kind, state) = match ty {
                    2 | 0 => {
                        let socket = if v6 {
                            TcpSocket::new_v6()
                        } else {
                            TcpSocket::new_v4()
                        };
                        let socket = socket.map_err(|e| io_errno(&e))?;
                        (
                            SockKind::Stream,
                            SockState::Open {
                                socket: Some(socket),
                            },
                        )
                    }
                    1 => (SockKind::Dgram, SockState::Udp),
                    _ => return Err(errno::INVAL),
                };
                let fd = h.fds.insert(Descriptor::Socket(Box::new(Socket {
                    kind,
                    v6,
                    nonblocking: false,
                    recv_timeout: None,
                    send_timeout: None,
                    reuse_addr: false,
                    state,
                })));
                m.write_u32(fd_out, fd)
            }))
        },
    )?;

    linker.func_wrap(MODULE, "sock_bind", |mut c: Caller<'_, Host>, fd: u32, addr: u32, port: u32| {
        ret(with_mem(&mut c, |m, h| {
            let ip = read_ip(m, addr)?;
            let addr = SocketAddr::new(ip, port as u16);
            if !h.net.allows_listen(addr) {
                tracing::warn!(function = %h.function, %addr, "network: bind denied by the manifest's [network] listen list");
                return Err(errno::ACCES);
            }
            let s = socket_mut(h, fd)?;
            match &s.state {
                SockState::Open { socket: Some(socket) } => {
                    if s.reuse_addr {
                        socket.set_reuseaddr(true).map_err(|e| io_errno(&e))?;
                    }
                    socket.bind(addr).map_err(|e| io_errno(&e))
                }
                SockState::Udp => Err(sockerr::NOTSUP),
                _ => Err(errno::INVAL),
            }
        }))
    })?;

    linker.func_wrap(
        MODULE,
        "sock_listen",
        |mut c: Caller<'_, Host>, fd: u32, backlog: u32| {
            let host = c.data_mut();
            let (net, function) = (host.net.clone(), host.function.clone());
            let s = match socket_mut(host, fd) {
                Ok(s) => s,
                Err(e) => return Ok(e),
            };
            let SockState::Open { socket } = &mut s.state else {
                return Ok(errno::INVAL);
            };
            // An unbound socket would listen on 0.0.0.0 and a random port: check it like bind.
            let local = socket
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            if !net.allows_listen(local) {
                tracing::warn!(function = %function, addr = %local, "network: listen denied by the manifest's [network] listen list");
                return Ok(errno::ACCES);
            }
            let Some(socket) = socket.take() else {
                return Ok(errno::INVAL);
            };
            match socket.listen(backlog.clamp(1, 4096)) {
                Ok(listener) => {
                    s.state = SockState::Listening {
                        listener,
                        ready: None,
                    };
                    Ok(errno::SUCCESS)
                }
                Err(e) => Ok(io_errno(&e)),
            }
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "sock_connect",
        |mut c: Caller<'_, Host>, (fd, addr, port): (u32, u32, u32)| {
            boxed(async move { connect(&mut c, fd, addr, port).await })
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "sock_recv",
        |mut c: Caller<'_, Host>,
         (fd, iovs, count, flags, nread, roflags): (u32, u32, u32, u32, u32, u32)| {
            boxed(async move {
                // One buffer per call: a short read is always allowed, and the guest crates
                // pass a single iovec anyway.
                let buf = with_mem(&mut c, |m, _| first_buffer(m, iovs, count))?;
                let n = match buf {
                    None => 0,
                    Some((ptr, len)) if flags & 1 == 1 => peek(&mut c, fd, ptr, len).await?,
                    Some((ptr, len)) => transfer(&mut c, fd, ptr, len, Direction::Read).await?,
                };
                with_mem(&mut c, |m, _| {
                    m.write_u32(nread, n as u32)?;
                    // roflags is a u16 in a guest-zeroed 4-byte slot.
                    m.slice_mut(roflags, 2)?.fill(0);
                    Ok(())
                })
            })
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "sock_send",
        |mut c: Caller<'_, Host>,
         (fd, iovs, count, _flags, nwritten): (u32, u32, u32, u32, u32)| {
            boxed(async move {
                let n = match with_mem(&mut c, |m, _| first_buffer(m, iovs, count))? {
                    None => 0,
                    Some((ptr, len)) => transfer(&mut c, fd, ptr, len, Direction::Write).await?,
                };
                with_mem(&mut c, |m, _| m.write_u32(nwritten, n as u32))
            })
        },
    )?;

    // UDP transfer is not supported yet: a clean error, never a crash.
    linker.func_wrap(
        MODULE,
        "sock_recv_from",
        |c: Caller<'_, Host>, fd: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| {
            Ok(match c.data().fds.get(fd) {
                Some(Descriptor::Socket(_)) => sockerr::NOTSUP,
                Some(_) => sockerr::NOTSOCK,
                None => errno::BADF,
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send_to",
        |c: Caller<'_, Host>, fd: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| {
            Ok(match c.data().fds.get(fd) {
                Some(Descriptor::Socket(_)) => sockerr::NOTSUP,
                Some(_) => sockerr::NOTSOCK,
                None => errno::BADF,
            })
        },
    )?;

    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        |mut c: Caller<'_, Host>, fd: u32, how: u32| {
            let s = match socket_mut(c.data_mut(), fd) {
                Ok(s) => s,
                Err(e) => return Ok(e),
            };
            let how = match how {
                1 => std::net::Shutdown::Read,
                2 => std::net::Shutdown::Write,
                3 => std::net::Shutdown::Both,
                _ => return Ok(errno::INVAL),
            };
            Ok(match &s.state {
                SockState::Connected(stream) => {
                    match socket2::SockRef::from(stream).shutdown(how) {
                        Ok(()) => errno::SUCCESS,
                        Err(e) => io_errno(&e),
                    }
                }
                _ => sockerr::NOTCONN,
            })
        },
    )?;

    linker.func_wrap(
        MODULE,
        "sock_getlocaladdr",
        |mut c: Caller<'_, Host>, fd: u32, addr: u32, ty: u32, port: u32| {
            ret(with_mem(&mut c, |m, h| {
                let local = match &socket_mut(h, fd)?.state {
                    SockState::Connected(s) => s.local_addr(),
                    SockState::Listening { listener, .. } => listener.local_addr(),
                    SockState::Open { socket: Some(s) } => s.local_addr(),
                    _ => return Err(sockerr::NOTCONN),
                }
                .map_err(|e| io_errno(&e))?;
                write_addr(m, local, addr, ty, port)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getpeeraddr",
        |mut c: Caller<'_, Host>, fd: u32, addr: u32, ty: u32, port: u32| {
            ret(with_mem(&mut c, |m, h| {
                let peer = match &socket_mut(h, fd)?.state {
                    SockState::Connected(s) => s.peer_addr().map_err(|e| io_errno(&e))?,
                    _ => return Err(sockerr::NOTCONN),
                };
                write_addr(m, peer, addr, ty, port)
            }))
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "sock_getaddrinfo",
        |mut c: Caller<'_, Host>,
         (node, node_len, _service, _service_len, _hints, res, max, res_len): (
            u32,
            u32,
            u32,
            u32,
            u32,
            u32,
            u32,
            u32,
        )| {
            boxed(async move { getaddrinfo(&mut c, node, node_len, res, max, res_len).await })
        },
    )?;

    linker.func_wrap(
        MODULE,
        "sock_setsockopt",
        |mut c: Caller<'_, Host>, fd: u32, level: u32, name: u32, val: u32, len: u32| {
            ret(with_mem(&mut c, |m, h| {
                let s = socket_mut(h, fd)?;
                if level != 0 {
                    return Err(sockerr::NOPROTOOPT);
                }
                let int = || m.read_u32(val).map(|v| v != 0);
                let timeval = || -> Result<Option<Duration>, Errno> {
                    if len < 16 {
                        return Err(errno::INVAL);
                    }
                    let secs = m.read_u64(val)?;
                    let usecs = m.read_u64(val + 8)?;
                    let d = Duration::from_secs(secs) + Duration::from_micros(usecs);
                    Ok((!d.is_zero()).then_some(d))
                };
                match name {
                    0 => s.reuse_addr = int()?,
                    11 => s.recv_timeout = timeval()?,
                    12 => s.send_timeout = timeval()?,
                    // Keep-alive, buffer sizes, linger and the like: accepted, left to the host.
                    3..=10 | 14 => {}
                    _ => return Err(sockerr::NOPROTOOPT),
                }
                Ok(())
            }))
        },
    )?;

    linker.func_wrap(
        MODULE,
        "sock_getsockopt",
        |mut c: Caller<'_, Host>, fd: u32, level: u32, name: u32, val: u32, len_ptr: u32| {
            ret(with_mem(&mut c, |m, h| {
                let s = socket_mut(h, fd)?;
                if level != 0 {
                    return Err(sockerr::NOPROTOOPT);
                }
                let value: i32 = match name {
                    0 => i32::from(s.reuse_addr),
                    1 => match s.kind {
                        SockKind::Dgram => 1,
                        SockKind::Stream => 2,
                    },
                    2 => match &mut s.state {
                        SockState::Failed(e) => std::mem::replace(e, 0),
                        SockState::Connected(stream) => match stream.take_error() {
                            Ok(Some(e)) => io_errno(&e),
                            _ => 0,
                        },
                        _ => 0,
                    },
                    13 => i32::from(matches!(s.state, SockState::Listening { .. })),
                    11 | 12 => {
                        let t = if name == 11 {
                            s.recv_timeout
                        } else {
                            s.send_timeout
                        };
                        let t = t.unwrap_or_default();
                        m.write_u64(val, t.as_secs())?;
                        m.write_u64(val + 8, u64::from(t.subsec_micros()))?;
                        return m.write_u32(len_ptr, 16);
                    }
                    _ => return Err(sockerr::NOPROTOOPT),
                };
                m.write_u32(val, value as u32)?;
                m.write_u32(len_ptr, 4)
            }))
        },
    )?;
    Ok(())
}

async fn accept(c: &mut Caller<'_, Host>, fd: u32, out: u32) -> Result<(), Errno> {
    let nonblocking = socket_mut(c.data_mut(), fd)?.nonblocking;
    let (stream, _peer) = poll_socket(c.data_mut(), fd, |s, cx| {
        let SockState::Listening { listener, ready } = &mut s.state else {
            return Poll::Ready(Err(errno::INVAL));
        };
        if let Some(conn) = ready.take() {
            return Poll::Ready(Ok(conn));
        }
        match listener.poll_accept(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(|e| io_errno(&e))),
            Poll::Pending if nonblocking => Poll::Ready(Err(errno::AGAIN)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay on an accepted socket: {e}");
    }
    let v6 = stream.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    with_mem(c, |m, h| {
        let new = h.fds.insert(Descriptor::Socket(Box::new(Socket {
            kind: SockKind::Stream,
            v6,
            nonblocking: false,
            recv_timeout: None,
            send_timeout: None,
            reuse_addr: false,
            state: SockState::Connected(stream),
        })));
        m.write_u32(out, new)
    })
}

async fn connect(c: &mut Caller<'_, Host>, fd: u32, addr_ptr: u32, port: u32) -> Result<(), Errno> {
    let (addr, socket) = with_mem(c, |m, h| {
        let ip = read_ip(m, addr_ptr)?;
        let addr = SocketAddr::new(ip, port as u16);
        if !h.net.allows_connect(addr, &h.resolved) {
            tracing::warn!(function = %h.function, %addr, "network: connection denied by the manifest's [network] allow list");
            return Err(errno::ACCES);
        }
        let s = socket_mut(h, fd)?;
        if s.v6 != addr.is_ipv6() {
            return Err(sockerr::AFNOSUPPORT);
        }
        match &mut s.state {
            SockState::Open { socket } => socket.take().map(|s| (addr, s)).ok_or(errno::INVAL),
            SockState::Connected(_) => Err(sockerr::ISCONN),
            SockState::Udp => Err(sockerr::NOTSUP),
            _ => Err(errno::INVAL),
        }
    })?;
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(Ok(stream)) => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("set_nodelay: {e}");
            }
            Ok(stream)
        }
        Ok(Err(e)) => Err(io_errno(&e)),
        Err(_) => Err(sockerr::TIMEDOUT),
    };
    let s = socket_mut(c.data_mut(), fd)?;
    match result {
        Ok(stream) => {
            s.state = SockState::Connected(stream);
            Ok(())
        }
        Err(e) => {
            // Some guests ignore connect's result and wait to write: they must see the error
            // there too, so the socket stays failed (ready, with this error) until closed.
            s.state = SockState::Failed(e);
            Err(e)
        }
    }
}

/// Which way [`transfer`] moves data.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// The first non-empty `(ptr, len)` of a guest iovec array.
fn first_buffer(m: &[u8], iovs: u32, count: u32) -> Result<Option<(u32, u32)>, Errno> {
    Ok(m.iovecs(iovs, count)?.into_iter().find(|&(_, len)| len > 0))
}

/// The stream of a connected socket, or the errno its state calls for.
fn connected(s: &Socket) -> Result<&TcpStream, Errno> {
    match &s.state {
        SockState::Connected(stream) => Ok(stream),
        SockState::Failed(e) => Err(*e),
        SockState::Udp => Err(sockerr::NOTSUP),
        _ => Err(sockerr::NOTCONN),
    }
}

/// Moves bytes between a connected socket and the guest buffer `(ptr, len)`, with no copy in
/// between: one non-blocking attempt, and in blocking mode a wait for readiness (bounded by
/// SO_RCVTIMEO / SO_SNDTIMEO) before each further attempt.
async fn transfer(
    c: &mut Caller<'_, Host>,
    fd: u32,
    ptr: u32,
    len: u32,
    dir: Direction,
) -> Result<usize, Errno> {
    let (nonblocking, limit) = {
        let s = socket_mut(c.data_mut(), fd)?;
        let limit = match dir {
            Direction::Read => s.recv_timeout,
            Direction::Write => s.send_timeout,
        };
        (s.nonblocking, limit)
    };
    let attempt = |c: &mut Caller<'_, Host>| {
        with_mem(c, |m, h| {
            let stream = connected(socket_mut(h, fd)?)?;
            match dir {
                Direction::Read => stream.try_read(m.slice_mut(ptr, len)?),
                Direction::Write => stream.try_write(m.slice(ptr, len)?),
            }
            .map_err(|e| io_errno(&e))
        })
    };
    let work = async {
        loop {
            match attempt(c) {
                Err(errno::AGAIN) if !nonblocking => {
                    poll_socket(c.data_mut(), fd, |s, cx| {
                        let stream = match connected(s) {
                            Ok(stream) => stream,
                            Err(e) => return Poll::Ready(Err(e)),
                        };
                        let ready = match dir {
                            Direction::Read => stream.poll_read_ready(cx),
                            Direction::Write => stream.poll_write_ready(cx),
                        };
                        ready.map(|r| r.map_err(|e| io_errno(&e)))
                    })
                    .await?;
                }
                done => return done,
            }
        }
    };
    within(if nonblocking { None } else { limit }, work).await
}

/// `MSG_PEEK`: copies what is waiting into the guest buffer without consuming it.
async fn peek(c: &mut Caller<'_, Host>, fd: u32, ptr: u32, len: u32) -> Result<usize, Errno> {
    let nonblocking = socket_mut(c.data_mut(), fd)?.nonblocking;
    let mut buf = vec![0u8; len.min(1 << 16) as usize];
    let n = poll_socket(c.data_mut(), fd, |s, cx| {
        let stream = match connected(s) {
            Ok(stream) => stream,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match stream.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut buf)) {
            Poll::Ready(r) => Poll::Ready(r.map_err(|e| io_errno(&e))),
            Poll::Pending if nonblocking => Poll::Ready(Err(errno::AGAIN)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    with_mem(c, |m, _| {
        m.slice_mut(ptr, n as u32)
            .map(|dst| dst.copy_from_slice(&buf[..n]))
    })?;
    Ok(n)
}

/// Size of a WasmEdge `WasiAddrinfo` record.
const ADDRINFO_SIZE: u32 = 28;

async fn getaddrinfo(
    c: &mut Caller<'_, Host>,
    node: u32,
    node_len: u32,
    res: u32,
    max: u32,
    res_len: u32,
) -> Result<(), Errno> {
    let name = with_mem(c, |m, _| {
        let raw = m.slice(node, node_len)?;
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        String::from_utf8(raw.to_vec()).map_err(|_| errno::INVAL)
    })?;
    let ips: Vec<IpAddr> = if let Ok(ip) = name.parse::<IpAddr>() {
        vec![ip]
    } else {
        let host = c.data();
        if !host.net.allows_name(&name) {
            tracing::warn!(function = %host.function, name, "network: name lookup denied: the name is not in the manifest's [network] allow list");
            return Err(errno::ACCES);
        }
        match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(e) => {
                tracing::debug!(name, "lookup failed: {e}");
                return Err(errno::IO);
            }
        }
    };
    // The guest crates decode IPv4 entries only.
    let mut v4: Vec<Ipv4Addr> = ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    v4.dedup();
    v4.truncate(max as usize);
    let host = c.data_mut();
    for ip in &v4 {
        host.resolved.push((name.clone(), IpAddr::V4(*ip)));
    }
    with_mem(c, |m, _| {
        let mut rec = m.read_u32(res)?;
        for ip in &v4 {
            let r = m.slice_mut(rec, ADDRINFO_SIZE)?;
            r[0..2].fill(0); // flags
            r[2] = 1; // family: IPv4
            r[3] = 2; // socktype: stream
            r[4] = 1; // protocol: TCP
            r[8..12].copy_from_slice(&16u32.to_le_bytes()); // addrlen
            r[20..24].fill(0); // canonname length
            let sockaddr = m.read_u32(rec + 12)?;
            m.slice_mut(sockaddr, 1)?[0] = 1;
            m.write_u32(sockaddr + 4, 14)?;
            let data = m.read_u32(sockaddr + 8)?;
            let sa = m.slice_mut(data, 14)?;
            sa.fill(0);
            sa[2..6].copy_from_slice(&ip.octets());
            rec = m.read_u32(rec + 24)?;
        }
        m.write_u32(res_len, v4.len() as u32)
    })
}

/// The `fd_fdstat_get` file type of a socket.
pub fn filetype(s: &Socket) -> u8 {
    match s.kind {
        SockKind::Dgram => 5,
        SockKind::Stream => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_addresses() {
        let mut m = vec![0u8; 64];
        m.write_u32(0, 16).unwrap();
        m.write_u32(4, 4).unwrap();
        m[16..20].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(read_ip(&m, 0), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        m.write_u32(4, 5).unwrap();
        assert_eq!(read_ip(&m, 0), Err(errno::INVAL));
    }

    #[test]
    fn writes_addresses_for_the_guest() {
        let mut m = vec![0u8; 64];
        m.write_u32(0, 32).unwrap();
        m.write_u32(4, 16).unwrap();
        write_addr(&mut m, "10.1.2.3:3306".parse().unwrap(), 0, 8, 12).unwrap();
        assert_eq!(&m[32..36], &[10, 1, 2, 3]);
        assert_eq!(m.read_u32(8), Ok(1));
        assert_eq!(m.read_u32(12), Ok(3306));
    }
}
