//! WasmEdge's socket extension (`sock_*` in module `wasi_snapshot_preview1`), on tokio.
//!
//! Guests built with `tokio_wasi`, `mio_wasi`, `wasmedge_wasi_socket`, `hyper_wasi` and
//! `mysql_async_wasi` call these; `docs/wasmedge-socket-abi.md` has the layouts and the
//! behaviour those crates expect. The host owns the real sockets: every TCP socket gets
//! `TCP_NODELAY` (the guest crates cannot set it, and Nagle plus delayed ACKs cost 40 ms per
//! request/response), every wait is an async tokio wait, and connections go only where the
//! function's `[network]` allow-list says.
//!
//! This file defines the calls and holds the socket's life cycle (open, bind, listen,
//! shutdown); [`stream`] has the data path, [`address`] the address encodings and name
//! lookup, [`option`] the socket options. The socket itself is a descriptor (`fd::Socket`).

mod address;
mod option;
mod stream;

use std::future::Future;
use std::net::{Shutdown, SocketAddr};

use tokio::net::TcpSocket;
use wasmtime::{Caller, Linker};

use super::abi::socket_types::{address_family, sdflags, socket_type};
use super::abi::{Errno, GuestPtr, MODULE};
use super::fd::{Descriptor, SockKind, SockState, Socket};
use super::host::{ret, with_mem, Host};

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
                boxed(async move { stream::accept(&mut c, fd, out.into()).await })
            },
        )?;
    } else {
        linker.func_wrap_async(
            MODULE,
            "sock_accept",
            |mut c: Caller<'_, Host>, (fd, out): (u32, u32)| {
                boxed(async move { stream::accept(&mut c, fd, out.into()).await })
            },
        )?;
    }
    Ok(())
}

/// `sock_open`: a new TCP (or, for show, UDP) socket of family `af`, its fd at `fd_out`.
fn open(host: &mut Host, af: u32, ty: u32) -> Result<u32, Errno> {
    host.room_for_a_socket()?;
    let v6 = match u8::try_from(af) {
        Ok(address_family::INET4) => false,
        Ok(address_family::INET6) => true,
        _ => return Err(Errno::Afnosupport),
    };
    let (kind, state) = match u8::try_from(ty) {
        Ok(socket_type::STREAM | socket_type::ANY) => {
            let socket = if v6 {
                TcpSocket::new_v6()
            } else {
                TcpSocket::new_v4()
            }?;
            (
                SockKind::Stream,
                SockState::Open {
                    socket: Some(socket),
                },
            )
        }
        Ok(socket_type::DGRAM) => (SockKind::Dgram, SockState::Udp),
        _ => return Err(Errno::Inval),
    };
    let socket = Socket::new(kind, v6, state);
    Ok(host.fds.insert(Descriptor::Socket(Box::new(socket))))
}

/// `sock_bind`: binds an open TCP socket to `addr` if the listen list allows it.
fn bind(host: &mut Host, fd: u32, addr: SocketAddr) -> Result<(), Errno> {
    if !host.net.allows_listen(addr) {
        tracing::warn!(function = %host.function, %addr, "network: bind denied by the manifest's [network] listen list");
        return Err(Errno::Acces);
    }
    let s = host.fds.socket_mut(fd)?;
    match &s.state {
        SockState::Open {
            socket: Some(socket),
        } => {
            if s.reuse_addr {
                socket.set_reuseaddr(true)?;
            }
            Ok(socket.bind(addr)?)
        }
        SockState::Udp => Err(Errno::Notsup),
        _ => Err(Errno::Inval),
    }
}

/// `sock_listen`: turns an open TCP socket into a listener, if the listen list allows its
/// address.
fn listen(host: &mut Host, fd: u32, backlog: u32) -> Result<(), Errno> {
    let s = host.fds.socket_mut(fd)?;
    let SockState::Open { socket } = &mut s.state else {
        return Err(Errno::Inval);
    };
    // An unbound socket would listen on 0.0.0.0 and a random port: check it like bind.
    let local = socket
        .as_ref()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    if !host.net.allows_listen(local) {
        tracing::warn!(function = %host.function, addr = %local, "network: listen denied by the manifest's [network] listen list");
        return Err(Errno::Acces);
    }
    let socket = socket.take().ok_or(Errno::Inval)?;
    let listener = socket.listen(backlog.clamp(1, 4096))?;
    s.state = SockState::Listening {
        listener,
        ready: None,
    };
    Ok(())
}

/// `sock_shutdown`: shuts down one or both directions of a connected stream.
fn shutdown(host: &mut Host, fd: u32, how: u32) -> Result<(), Errno> {
    let s = host.fds.socket_mut(fd)?;
    let how = match how {
        sdflags::RD => Shutdown::Read,
        sdflags::WR => Shutdown::Write,
        sdflags::BOTH => Shutdown::Both,
        _ => return Err(Errno::Inval),
    };
    match &s.state {
        SockState::Connected(stream) => Ok(socket2::SockRef::from(stream).shutdown(how)?),
        _ => Err(Errno::Notconn),
    }
}

/// `sock_getlocaladdr`: where the socket is bound.
fn local_addr(s: &Socket) -> Result<SocketAddr, Errno> {
    Ok(match &s.state {
        SockState::Connected(s) => s.local_addr(),
        SockState::Listening { listener, .. } => listener.local_addr(),
        SockState::Open { socket: Some(s) } => s.local_addr(),
        _ => return Err(Errno::Notconn),
    }?)
}

/// `sock_getpeeraddr`: where a connected socket goes.
fn peer_addr(s: &Socket) -> Result<SocketAddr, Errno> {
    match &s.state {
        SockState::Connected(s) => Ok(s.peer_addr()?),
        _ => Err(Errno::Notconn),
    }
}

/// Defines the socket extension in `linker`, with WasmEdge's two-argument `sock_accept`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    define_accept(linker, 2)?;
    linker.func_wrap(
        MODULE,
        "sock_open",
        |mut c: Caller<'_, Host>, af: u32, ty: u32, fd_out: u32| {
            ret(with_mem(&mut c, |m, h| {
                let fd = open(h, af, ty)?;
                m.write_u32(fd_out.into(), fd)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_bind",
        |mut c: Caller<'_, Host>, fd: u32, addr: u32, port: u32| {
            ret(with_mem(&mut c, |m, h| {
                bind(h, fd, address::read_socket_addr(m, addr.into(), port)?)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_listen",
        |mut c: Caller<'_, Host>, fd: u32, backlog: u32| ret(listen(c.data_mut(), fd, backlog)),
    )?;
    linker.func_wrap_async(
        MODULE,
        "sock_connect",
        |mut c: Caller<'_, Host>, (fd, addr, port): (u32, u32, u32)| {
            boxed(async move { stream::connect(&mut c, fd, addr.into(), port).await })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "sock_recv",
        |mut c: Caller<'_, Host>,
         (fd, iovs, count, flags, nread, roflags): (u32, u32, u32, u32, u32, u32)| {
            boxed(async move {
                let (iovs, nread, roflags) = (iovs.into(), nread.into(), roflags.into());
                stream::recv(&mut c, fd, iovs, count, flags, nread, roflags).await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "sock_send",
        |mut c: Caller<'_, Host>,
         (fd, iovs, count, _flags, nwritten): (u32, u32, u32, u32, u32)| {
            boxed(
                async move { stream::send(&mut c, fd, iovs.into(), count, nwritten.into()).await },
            )
        },
    )?;

    // UDP transfer is not supported yet: a clean error, never a crash.
    linker.func_wrap(
        MODULE,
        "sock_recv_from",
        |mut c: Caller<'_, Host>,
         fd: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32| { ret(c.data_mut().fds.socket_mut(fd).and(Err(Errno::Notsup))) },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send_to",
        |mut c: Caller<'_, Host>, fd: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| {
            ret(c.data_mut().fds.socket_mut(fd).and(Err(Errno::Notsup)))
        },
    )?;

    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        |mut c: Caller<'_, Host>, fd: u32, how: u32| ret(shutdown(c.data_mut(), fd, how)),
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getlocaladdr",
        |mut c: Caller<'_, Host>, fd: u32, addr: u32, ty: u32, port: u32| {
            ret(with_mem(&mut c, |m, h| {
                let local = local_addr(h.fds.socket_mut(fd)?)?;
                address::write_addr(m, local, addr.into(), ty.into(), port.into())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getpeeraddr",
        |mut c: Caller<'_, Host>, fd: u32, addr: u32, ty: u32, port: u32| {
            ret(with_mem(&mut c, |m, h| {
                let peer = peer_addr(h.fds.socket_mut(fd)?)?;
                address::write_addr(m, peer, addr.into(), ty.into(), port.into())
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
            boxed(async move {
                let (node, res, res_len) = (GuestPtr(node), GuestPtr(res), GuestPtr(res_len));
                address::getaddrinfo(&mut c, node, node_len, res, max, res_len).await
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_setsockopt",
        |mut c: Caller<'_, Host>, fd: u32, level: u32, name: u32, val: u32, len: u32| {
            ret(with_mem(&mut c, |m, h| {
                option::set(m, h.fds.socket_mut(fd)?, level, name, val.into(), len)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getsockopt",
        |mut c: Caller<'_, Host>, fd: u32, level: u32, name: u32, val: u32, len_out: u32| {
            ret(with_mem(&mut c, |m, h| {
                option::get(
                    m,
                    h.fds.socket_mut(fd)?,
                    level,
                    name,
                    val.into(),
                    len_out.into(),
                )
            }))
        },
    )?;
    Ok(())
}
