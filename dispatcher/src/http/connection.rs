//! What one client connection may hold: a slot under the listener's cap (past it, a canned
//! 503 and close), and a socket whose writes may stall only so long (a client that stops
//! reading its response is cut off, and the response's memory freed).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use super::tally::Tally;

/// Connections turned away at once, each for at most [`REFUSE_TIME`]; past that, a new
/// connection over the cap is closed without an answer.
const REFUSING: usize = 256;
const REFUSE_TIME: Duration = Duration::from_millis(500);

/// Descriptors kept for everything but client connections: guests' sockets, database pools,
/// the compile cache, the log.
const RESERVED_FDS: usize = 256;

/// The answer to a connection over the cap, written before its request is read.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 104\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"this replica holds its most open connections: retry shortly\"}";

/// The listener's cap on open connections.
pub struct Slots {
    /// One permit per connection that may be open; the permit lives in its task.
    open: Arc<Semaphore>,
    /// Connections being turned away right now.
    refusing: Arc<Semaphore>,
    /// The cap, for the log.
    max: usize,
    /// The log's count of connections turned away.
    refused: Arc<Tally>,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Slots {
            open: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(REFUSING)),
            max,
            refused: Tally::new(
                "connections turned away at the connection limit",
                super::refusals::INTERVAL,
            ),
        }
    }

    /// A slot for a new connection, or `None` after answering it 503 (in a task of its own).
    pub fn admit(
        &self,
        stream: TcpStream,
    ) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
        if let Ok(permit) = self.open.clone().try_acquire_owned() {
            return Some((stream, permit));
        }
        if self.refused.note() {
            tracing::warn!(
                "{} connections are open, the limit (--max-connections): answering new ones 503",
                self.max
            );
        }
        if let Ok(permit) = self.refusing.clone().try_acquire_owned() {
            tokio::spawn(async move {
                refuse(stream).await;
                drop(permit);
            });
        }
        None
    }
}

/// `max`, or less when the process may not open that many descriptors besides the ones it
/// keeps for everything else (`ulimit -n`): past the limit, `accept` would fail instead of
/// the clear 503.
pub fn within_fd_limit(max: usize) -> usize {
    let Some(limit) = load_fd_limit() else {
        return max;
    };
    let room = limit.saturating_sub(RESERVED_FDS).max(16);
    if max <= room {
        return max;
    }
    // Said once at start-up; a default over a low limit is not a fault.
    tracing::info!(
        "--max-connections {max} is more than the descriptor limit of {limit} leaves room for: \
         at most {room} connections (raise `ulimit -n` for more)"
    );
    room
}

/// The soft limit on open descriptors, from `/proc/self/limits` (`None`: unknown or
/// unlimited).
fn load_fd_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Writes the 503, then reads what the client sends for a moment so that closing does not
/// reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let answer = async {
        stream.write_all(FULL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut seen = 0;
        while seen < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => seen += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    // Past the time, the connection is simply closed.
    if let Ok(Err(e)) = tokio::time::timeout(REFUSE_TIME, answer).await {
        tracing::debug!("answering a connection over the limit: {e}");
    }
}

/// A client's socket whose writes fail with `TimedOut` once one has waited `limit` for the
/// client to read.
pub struct Stalling {
    inner: TcpStream,
    limit: Duration,
    /// Armed while a write waits (a full send buffer): the moment it gives up.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Stalling {
    pub fn new(inner: TcpStream, limit: Duration) -> Self {
        Stalling {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes on a write's outcome, and times out one that keeps waiting.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        self.stalled = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing of its response for {limit:?}"),
        )))
    }
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_answer_is_well_formed() {
        let text = std::str::from_utf8(FULL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
    }

    #[test]
    fn the_descriptor_limit_is_read() {
        assert!(load_fd_limit().is_some_and(|n| n > 0));
        assert!(within_fd_limit(10) <= 10);
    }
}
