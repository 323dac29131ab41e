//! The per-instance file-descriptor table.
//!
//! A fresh instance starts with exactly three descriptors: stdin (the request body), stdout (the
//! response, captured up to a cap) and stderr (forwarded to the log, line by line). There are
//! no preopened directories, so a guest sees no filesystem. Sockets (the WasmEdge extension)
//! are added to the same table as further descriptor kinds.

use bytes::Bytes;

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
    Socket(Box<super::socket::Socket>),
}

/// The request body, read once from the front.
#[derive(Debug, Default)]
pub struct Stdin {
    /// Bytes not read yet.
    pub remaining: Bytes,
}

impl Stdin {
    /// Copies up to `buf.len()` bytes into `buf`, returning how many; 0 means end of input.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.remaining.len());
        buf[..n].copy_from_slice(&self.remaining[..n]);
        let _consumed = self.remaining.split_to(n);
        n
    }
}

/// Output captured in memory, up to `cap` bytes.
#[derive(Debug)]
pub struct Capture {
    /// What the guest has written so far.
    pub data: Vec<u8>,
    /// Most bytes the guest may write; one more fails the invocation.
    pub cap: usize,
    /// Set once the guest tried to write past `cap`.
    pub overflowed: bool,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            data: Vec::new(),
            cap,
            overflowed: false,
        }
    }

    /// Appends `bytes`; returns false (and keeps nothing of them) past the cap.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        if self.data.len() + bytes.len() > self.cap {
            self.overflowed = true;
            return false;
        }
        self.data.extend_from_slice(bytes);
        true
    }
}

/// Splits a byte stream into lines and logs each one, tagged with the function's name.
#[derive(Debug)]
pub struct LogLines {
    /// The function the lines come from.
    pub function: std::sync::Arc<str>,
    /// A line not yet ended by `\n`.
    pending: Vec<u8>,
}

/// Longest stderr line kept; the rest of a longer line is cut off in the log.
const MAX_LOG_LINE: usize = 8 * 1024;

impl LogLines {
    pub fn new(function: std::sync::Arc<str>) -> Self {
        LogLines {
            function,
            pending: Vec::new(),
        }
    }

    pub fn write(&mut self, mut bytes: &[u8]) {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            self.push(&bytes[..i]);
            self.flush();
            bytes = &bytes[i + 1..];
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LOG_LINE.saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Logs the pending line, if any.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.trim_end_matches('\r');
        tracing::info!(target: "guest", function = %self.function, "{line}");
        self.pending.clear();
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The descriptors of one instance, indexed by fd number.
#[derive(Debug)]
pub struct FdTable {
    slots: Vec<Option<Descriptor>>,
}

impl FdTable {
    /// stdin, stdout and stderr at 0, 1 and 2.
    pub fn new(stdin: Bytes, stdout_cap: usize, function: std::sync::Arc<str>) -> Self {
        FdTable {
            slots: vec![
                Some(Descriptor::Stdin(Stdin { remaining: stdin })),
                Some(Descriptor::Stdout(Capture::new(stdout_cap))),
                Some(Descriptor::Stderr(LogLines::new(function))),
            ],
        }
    }

    pub fn get_mut(&mut self, fd: u32) -> Option<&mut Descriptor> {
        self.slots.get_mut(fd as usize).and_then(Option::as_mut)
    }

    pub fn get(&self, fd: u32) -> Option<&Descriptor> {
        self.slots.get(fd as usize).and_then(Option::as_ref)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_caps() {
        let mut c = Capture::new(4);
        assert!(c.write(b"ab"));
        assert!(!c.write(b"cde"));
        assert!(c.overflowed);
        assert_eq!(c.data, b"ab");
    }

    #[test]
    fn stdin_reads_in_pieces() {
        let mut s = Stdin {
            remaining: Bytes::from_static(b"hello"),
        };
        let mut buf = [0u8; 3];
        assert_eq!(s.read(&mut buf), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(s.read(&mut buf), 2);
        assert_eq!(s.read(&mut buf), 0);
    }

    #[test]
    fn lowest_free_slot() {
        let mut t = FdTable::new(Bytes::new(), 10, "f".into());
        t.remove(0);
        assert_eq!(t.insert(Descriptor::Stdin(Stdin::default())), 0);
        assert_eq!(t.insert(Descriptor::Stdin(Stdin::default())), 3);
    }
}
