//! The per-instance file-descriptor table.
//!
//! A fresh instance starts with exactly three descriptors: stdin (the request body), stdout (the
//! response, captured up to a cap) and stderr (forwarded to the log, line by line). There are
//! no preopened directories, so a guest sees no filesystem. Sockets (the WasmEdge extension)
//! are added to the same table as further descriptor kinds.
//!
//! What preview1 asks of any descriptor (its fdstat, its readiness for `poll_oneoff`) is
//! answered here, so the preview1 calls need not know the socket calls.

mod socket;
mod stdio;

use std::task::Context;

use bytes::Bytes;

use super::abi::wasi_types::{fdflags, filetype, rights};
use super::abi::Errno;
pub use socket::{SockKind, SockState, Socket};
pub use stdio::{Capture, LogLines, LogSink, Stdin};

/// An open descriptor.
#[derive(Debug)]
pub enum Descriptor {
    /// fd 0: the event's input.
    Stdin(Stdin),
    /// fd 1: what the guest answers.
    Stdout(Capture),
    /// fd 2: diagnostics, logged with the function's name.
    Stderr(LogLines),
    /// A socket from WasmEdge's socket extension.
    Socket(Box<Socket>),
}

/// The rights every descriptor reports, base and inheriting alike.
pub const RIGHTS: u64 = rights::FD_READ | rights::FD_WRITE | rights::POLL_FD_READWRITE;

impl Descriptor {
    /// The `fs_filetype` of its fdstat.
    pub fn filetype(&self) -> u8 {
        match self {
            Descriptor::Stdin(_) | Descriptor::Stdout(_) | Descriptor::Stderr(_) => {
                filetype::CHARACTER_DEVICE
            }
            Descriptor::Socket(s) => s.filetype(),
        }
    }

    /// The `fs_flags` of its fdstat.
    pub fn fdflags(&self) -> u16 {
        match self {
            Descriptor::Socket(s) if s.nonblocking => fdflags::NONBLOCK,
            _ => 0,
        }
    }

    /// Applies `fd_fdstat_set_flags`. `NONBLOCK` is the one flag that matters, for sockets;
    /// stdio is never waited on, so blocking and non-blocking mode are the same there.
    pub fn set_fdflags(&mut self, flags: u16) {
        if let Descriptor::Socket(s) = self {
            s.nonblocking = flags & fdflags::NONBLOCK != 0;
        }
    }
}

/// A descriptor that `poll_oneoff` may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Bytes available (stdin only; 0 elsewhere).
    pub nbytes: u64,
    /// Nothing more will come, or the wait was on a direction the descriptor never serves.
    pub hangup: bool,
}

/// The descriptors of one instance, indexed by fd number.
#[derive(Debug)]
pub struct FdTable {
    slots: Vec<Option<Descriptor>>,
}

impl FdTable {
    /// stdin, stdout and stderr at 0, 1 and 2.
    pub fn new(stdin: Bytes, stdout_cap: usize, stderr: LogLines) -> Self {
        FdTable {
            slots: vec![
                Some(Descriptor::Stdin(Stdin { remaining: stdin })),
                Some(Descriptor::Stdout(Capture::new(stdout_cap))),
                Some(Descriptor::Stderr(stderr)),
            ],
        }
    }

    pub fn get_mut(&mut self, fd: u32) -> Option<&mut Descriptor> {
        self.slots.get_mut(fd as usize).and_then(Option::as_mut)
    }

    pub fn get(&self, fd: u32) -> Option<&Descriptor> {
        self.slots.get(fd as usize).and_then(Option::as_ref)
    }

    /// The socket at `fd`: `EBADF` if nothing is open there, `ENOTSOCK` if it is no socket.
    pub fn socket_mut(&mut self, fd: u32) -> Result<&mut Socket, Errno> {
        match self.get_mut(fd) {
            Some(Descriptor::Socket(s)) => Ok(s),
            Some(_) => Err(Errno::Notsock),
            None => Err(Errno::Badf),
        }
    }

    /// Puts a descriptor in the lowest free slot and returns its number.
    pub fn insert(&mut self, d: Descriptor) -> u32 {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = Some(d);
            i as u32
        } else {
            self.slots.push(Some(d));
            (self.slots.len() - 1) as u32
        }
    }

    /// How many sockets hold a session of an endpoint the host serves (the database pool).
    pub fn pooled_sessions(&self) -> usize {
        self.slots
            .iter()
            .filter(|d| matches!(d, Some(Descriptor::Socket(s)) if s.pooled))
            .count()
    }

    /// How many sockets are connecting or connected outbound.
    pub fn connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|d| matches!(d, Some(Descriptor::Socket(s)) if s.outbound))
            .count()
    }

    /// How many sockets are open.
    pub fn sockets(&self) -> usize {
        self.slots
            .iter()
            .filter(|d| matches!(d, Some(Descriptor::Socket(_))))
            .count()
    }

    pub fn remove(&mut self, fd: u32) -> Option<Descriptor> {
        self.slots.get_mut(fd as usize).and_then(Option::take)
    }

    /// The captured stdout, taken out of the table (empty if the guest closed fd 1).
    pub fn take_stdout(&mut self) -> Option<Capture> {
        match self.slots.get_mut(1).and_then(Option::take) {
            Some(Descriptor::Stdout(c)) => Some(c),
            _ => None,
        }
    }

    /// Readiness of `fd` for reading (or writing) now; registers `cx` for a wakeup if it is not
    /// ready. Stdio waited on the wrong way, or a closed fd, is never ready otherwise, so it is
    /// reported at once, hung up.
    pub fn poll_ready(&mut self, fd: u32, write: bool, cx: &mut Context<'_>) -> Option<Readiness> {
        let ready = |nbytes, hangup| Some(Readiness { nbytes, hangup });
        match self.get_mut(fd) {
            Some(Descriptor::Stdin(s)) if !write => ready(s.remaining.len() as u64, false),
            Some(Descriptor::Stdout(_) | Descriptor::Stderr(_)) if write => ready(0, false),
            Some(Descriptor::Socket(s)) => s.poll_ready(cx, write).and_then(|h| ready(0, h)),
            _ => ready(0, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> FdTable {
        FdTable::new(
            Bytes::from_static(b"abc"),
            10,
            LogLines::new("f".into(), "r".into(), None, 1 << 20),
        )
    }

    #[test]
    fn lowest_free_slot() {
        let mut t = table();
        t.remove(0);
        assert_eq!(t.insert(Descriptor::Stdin(Stdin::default())), 0);
        assert_eq!(t.insert(Descriptor::Stdin(Stdin::default())), 3);
    }

    #[test]
    fn stdio_fdstat() {
        let mut t = table();
        for fd in 0..3 {
            let d = t.get_mut(fd).unwrap();
            assert_eq!(d.filetype(), filetype::CHARACTER_DEVICE);
            d.set_fdflags(fdflags::NONBLOCK);
            assert_eq!(d.fdflags(), 0);
        }
        assert_eq!(t.socket_mut(0).err(), Some(Errno::Notsock));
        assert_eq!(t.socket_mut(3).err(), Some(Errno::Badf));
    }

    #[test]
    fn stdio_readiness() {
        let mut t = table();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let r = |nbytes, hangup| Some(Readiness { nbytes, hangup });
        assert_eq!(t.poll_ready(0, false, &mut cx), r(3, false));
        assert_eq!(t.poll_ready(0, true, &mut cx), r(0, true));
        assert_eq!(t.poll_ready(1, true, &mut cx), r(0, false));
        assert_eq!(t.poll_ready(2, false, &mut cx), r(0, true));
        assert_eq!(t.poll_ready(9, false, &mut cx), r(0, true));
    }
}
