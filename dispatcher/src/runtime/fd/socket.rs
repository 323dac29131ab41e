//! A socket descriptor (WasmEdge's socket extension): what the host keeps for it, and its
//! readiness for `poll_oneoff`. The calls that create and use sockets are in `sockets`.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::runtime::abi::wasi_types::filetype;
use crate::runtime::abi::Errno;

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
    pub v6: bool,
    /// O_NONBLOCK, set through `fd_fdstat_set_flags`: calls that would wait return `EAGAIN`.
    pub nonblocking: bool,
    /// SO_RCVTIMEO / SO_SNDTIMEO for blocking calls.
    pub recv_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    /// SO_REUSEADDR, applied at bind.
    pub reuse_addr: bool,
    /// Connected to an endpoint the host serves itself (a database session from the pool).
    pub pooled: bool,
    /// Connecting or connected outbound (`sock_connect`, not `sock_accept`).
    pub outbound: bool,
    /// Where it is in its life.
    pub state: SockState,
}

#[derive(Debug)]
pub enum SockState {
    /// Opened, perhaps bound, not connected or listening.
    Open { socket: Option<TcpSocket> },
    /// A connected TCP stream.
    Connected(TcpStream),
    /// A listening socket, with a connection that `poll_oneoff` accepted ahead of `sock_accept`.
    Listening {
        listener: TcpListener,
        ready: Option<(TcpStream, SocketAddr)>,
    },
    /// A connect that failed: reads and writes report this error. Reading `SO_ERROR` clears
    /// it to `Success`, which reads and writes then report as their result.
    Failed(Errno),
    /// A UDP socket: it can be opened and closed; sending and receiving is not supported yet.
    Udp,
}

impl Socket {
    /// A socket in blocking mode with no options set.
    pub fn new(kind: SockKind, v6: bool, state: SockState) -> Self {
        Socket {
            kind,
            v6,
            nonblocking: false,
            recv_timeout: None,
            send_timeout: None,
            reuse_addr: false,
            pooled: false,
            outbound: false,
            state,
        }
    }

    /// The `fd_fdstat_get` file type.
    pub fn filetype(&self) -> u8 {
        match self.kind {
            SockKind::Dgram => filetype::SOCKET_DGRAM,
            SockKind::Stream => filetype::SOCKET_STREAM,
        }
    }

    /// The stream of a connected socket, or the errno its state calls for.
    pub fn connected(&self) -> Result<&TcpStream, Errno> {
        match &self.state {
            SockState::Connected(stream) => Ok(stream),
            SockState::Failed(e) => Err(*e),
            SockState::Udp => Err(Errno::Notsup),
            _ => Err(Errno::Notconn),
        }
    }

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
