//! The TCP data path: connecting, accepting, and moving bytes between a stream and guest
//! memory (`sock_connect`, `sock_accept`, `sock_recv`, `sock_send`). Every wait is an async
//! tokio wait, bounded by the socket's timeouts, and never holds guest memory across an
//! await.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use wasmtime::Caller;

use super::address::read_socket_addr;
use crate::runtime::abi::socket_types::riflags;
use crate::runtime::abi::{Errno, GuestMemory, GuestPtr, Iovec};
use crate::runtime::fd::{Descriptor, FdTable, SockKind, SockState, Socket};
use crate::runtime::host::{with_mem, Cap, Host};

/// How long a connect may take before the guest gets `ETIMEDOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes one `MSG_PEEK` copies.
const MAX_PEEK: u32 = 1 << 16;

/// A future polled by hand with the socket borrowed from the table each time, so that the
/// guest's memory and the host state are never borrowed across an await.
fn poll_socket<'a, R>(
    fds: &'a mut FdTable,
    fd: u32,
    mut f: impl FnMut(&mut Socket, &mut Context<'_>) -> Poll<Result<R, Errno>> + 'a,
) -> impl Future<Output = Result<R, Errno>> + 'a {
    std::future::poll_fn(move |cx| match fds.socket_mut(fd) {
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
            .unwrap_or(Err(Errno::Again)),
        None => fut.await,
    }
}

/// `sock_accept`: the next connection of a listening socket, as a new descriptor at `out`.
pub async fn accept(c: &mut Caller<'_, Host>, fd: u32, out: GuestPtr) -> Result<(), Errno> {
    c.data_mut().room_for_a_socket()?;
    let nonblocking = c.data_mut().fds.socket_mut(fd)?.nonblocking;
    let (stream, _peer) = poll_socket(&mut c.data_mut().fds, fd, |s, cx| {
        let SockState::Listening { listener, ready } = &mut s.state else {
            return Poll::Ready(Err(Errno::Inval));
        };
        if let Some(conn) = ready.take() {
            return Poll::Ready(Ok(conn));
        }
        match listener.poll_accept(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(Errno::from)),
            Poll::Pending if nonblocking => Poll::Ready(Err(Errno::Again)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay on an accepted socket: {e}");
    }
    let v6 = stream.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    with_mem(c, |m, h| {
        let socket = Socket::new(SockKind::Stream, v6, SockState::Connected(stream));
        let new = h.fds.insert(Descriptor::Socket(Box::new(socket)));
        m.write_u32(out, new)
    })
}

/// `sock_connect`: connects an open TCP socket where the allow-list permits. A failure stays
/// on the socket, so later reads and writes report it too.
pub async fn connect(
    c: &mut Caller<'_, Host>,
    fd: u32,
    addr_ptr: GuestPtr,
    port: u32,
) -> Result<(), Errno> {
    let (addr, socket, pooled) = with_mem(c, |m, h| {
        // A descriptor that is no socket is told so before its address is looked at.
        h.fds.socket_mut(fd)?;
        let addr = read_socket_addr(m, addr_ptr, port)?;
        if !h.net.allows_connect(addr, &h.resolved) {
            tracing::warn!(function = %h.function, %addr, "network: connection denied by the manifest's [network] allow list");
            return Err(Errno::Acces);
        }
        let redirect = h.net.redirect(addr, &h.resolved);
        if redirect.is_some() {
            h.within(
                Cap::PooledSessions,
                h.fds.pooled_sessions(),
                h.caps.pooled_sessions,
            )?;
        }
        h.within(Cap::Connections, h.fds.connections(), h.caps.connections)?;
        let s = h.fds.socket_mut(fd)?;
        if s.v6 != addr.is_ipv6() {
            return Err(Errno::Afnosupport);
        }
        let socket = match &mut s.state {
            SockState::Open { socket } => socket.take().ok_or(Errno::Inval)?,
            SockState::Connected(_) => return Err(Errno::Isconn),
            SockState::Udp => return Err(Errno::Notsup),
            _ => return Err(Errno::Inval),
        };
        s.outbound = true;
        Ok(match redirect {
            // The host serves this endpoint itself: connect to its listener instead, with a
            // socket of the listener's family.
            Some(to) => (to, None),
            None => (addr, Some(socket)),
        })
        .map(|(to, socket)| (to, socket, redirect.is_some()))
    })?;
    let connecting = async {
        match socket {
            Some(socket) => socket.connect(addr).await,
            None => TcpStream::connect(addr).await,
        }
    };
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(stream)) => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("set_nodelay: {e}");
            }
            Ok(stream)
        }
        Ok(Err(e)) => Err(Errno::from(&e)),
        Err(_) => Err(Errno::Timedout),
    };
    if let (Ok(stream), true, Some(sessions)) = (&result, pooled, &c.data().sessions) {
        if let Ok(local) = stream.local_addr() {
            sessions.opened(local);
        }
    }
    let s = c.data_mut().fds.socket_mut(fd)?;
    match result {
        Ok(stream) => {
            s.state = SockState::Connected(stream);
            s.pooled = pooled;
            Ok(())
        }
        Err(e) => {
            // Some guests ignore connect's result and wait to write: they must see the error
            // there too, so the socket stays failed (ready, with this error) until closed.
            s.state = SockState::Failed(e);
            s.outbound = false;
            Err(e)
        }
    }
}

/// The first non-empty buffer of a guest iovec array.
fn first_buffer(m: &GuestMemory<'_>, iovs: GuestPtr, count: u32) -> Result<Option<Iovec>, Errno> {
    Ok(m.iovecs(iovs, count)?.into_iter().find(|v| v.len > 0))
}

/// `sock_recv`: one buffer per call (a short read is always allowed, and the guest crates
/// pass a single iovec anyway); `MSG_PEEK` copies without consuming.
pub async fn recv(
    c: &mut Caller<'_, Host>,
    fd: u32,
    iovs: GuestPtr,
    count: u32,
    flags: u32,
    nread: GuestPtr,
    roflags: GuestPtr,
) -> Result<(), Errno> {
    // The descriptor first: `EBADF`/`ENOTSOCK` even when there is nothing to read into.
    let buf = with_mem(c, |m, h| {
        h.fds.socket_mut(fd)?;
        first_buffer(m, iovs, count)
    })?;
    let n = match buf {
        None => 0,
        Some(buf) if flags & riflags::PEEK != 0 => peek(c, fd, buf).await?,
        Some(buf) => transfer(c, fd, buf, Direction::Read).await?,
    };
    with_mem(c, |m, _| {
        m.write_u32(nread, n)?;
        // roflags is a u16 in a guest-zeroed 4-byte slot.
        m.zero(roflags, 2)
    })
}

/// `sock_send`: one buffer per call, like [`recv`].
pub async fn send(
    c: &mut Caller<'_, Host>,
    fd: u32,
    iovs: GuestPtr,
    count: u32,
    nwritten: GuestPtr,
) -> Result<(), Errno> {
    let buf = with_mem(c, |m, h| {
        h.fds.socket_mut(fd)?;
        first_buffer(m, iovs, count)
    })?;
    let n = match buf {
        None => 0,
        Some(buf) => transfer(c, fd, buf, Direction::Write).await?,
    };
    with_mem(c, |m, _| m.write_u32(nwritten, n))
}

/// Which way [`transfer`] moves data.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// A byte count no larger than the guest buffer it was moved to or from, as a guest `u32`.
fn moved(n: usize) -> Result<u32, Errno> {
    u32::try_from(n).map_err(|_| Errno::Io)
}

/// Moves bytes between a connected socket and the guest buffer, with no copy in between: one
/// non-blocking attempt, and in blocking mode a wait for readiness (bounded by SO_RCVTIMEO /
/// SO_SNDTIMEO) before each further attempt.
async fn transfer(
    c: &mut Caller<'_, Host>,
    fd: u32,
    buf: Iovec,
    dir: Direction,
) -> Result<u32, Errno> {
    let (nonblocking, limit) = {
        let s = c.data_mut().fds.socket_mut(fd)?;
        let limit = match dir {
            Direction::Read => s.recv_timeout,
            Direction::Write => s.send_timeout,
        };
        (s.nonblocking, limit)
    };
    let attempt = |c: &mut Caller<'_, Host>| {
        with_mem(c, |m, h| {
            let stream = h.fds.socket_mut(fd)?.connected()?;
            match dir {
                Direction::Read => stream.try_read(m.bytes_mut(buf.buf, buf.len)?),
                Direction::Write => stream.try_write(m.bytes(buf.buf, buf.len)?),
            }
            .map_err(Errno::from)
            .and_then(moved)
        })
    };
    let work = async {
        loop {
            match attempt(c) {
                Err(Errno::Again) if !nonblocking => {
                    poll_socket(&mut c.data_mut().fds, fd, |s, cx| {
                        let stream: &TcpStream = match s.connected() {
                            Ok(stream) => stream,
                            Err(e) => return Poll::Ready(Err(e)),
                        };
                        let ready = match dir {
                            Direction::Read => stream.poll_read_ready(cx),
                            Direction::Write => stream.poll_write_ready(cx),
                        };
                        ready.map(|r| r.map_err(Errno::from))
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
async fn peek(c: &mut Caller<'_, Host>, fd: u32, buf: Iovec) -> Result<u32, Errno> {
    let nonblocking = c.data_mut().fds.socket_mut(fd)?.nonblocking;
    let mut tmp = vec![0u8; buf.len.min(MAX_PEEK) as usize];
    let n = poll_socket(&mut c.data_mut().fds, fd, |s, cx| {
        let stream = match s.connected() {
            Ok(stream) => stream,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match stream.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut tmp)) {
            Poll::Ready(r) => Poll::Ready(r.map_err(Errno::from)),
            Poll::Pending if nonblocking => Poll::Ready(Err(Errno::Again)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    let n32 = moved(n)?;
    with_mem(c, |m, _| m.write_bytes(buf.buf, &tmp[..n]))?;
    Ok(n32)
}
