//! The three standard descriptors of an instance: the event's input, the captured answer and
//! the log.

use std::sync::Arc;

use bytes::Bytes;

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

/// Where a guest's stderr lines go besides the process log (the function's recent lines).
pub trait LogSink: Send + Sync + std::fmt::Debug {
    fn guest_line(&self, request_id: &str, line: &str);
}

/// Splits a byte stream into lines and logs each one, tagged with the function's name and
/// the invocation's id, up to a budget of bytes per invocation: past it the rest is dropped,
/// and one line at the end says how much.
#[derive(Debug)]
pub struct LogLines {
    /// The function the lines come from.
    pub function: Arc<str>,
    /// The invocation's id.
    pub request_id: Arc<str>,
    /// Also gets every line, if set.
    pub sink: Option<Arc<dyn LogSink>>,
    /// A line not yet ended by `\n`.
    pending: Vec<u8>,
    /// Bytes that may still be logged.
    budget: usize,
    /// The budget it started with (`limits.max_log_bytes`).
    cap: usize,
    /// Bytes dropped past the budget.
    dropped: u64,
}

/// Longest stderr line kept; the rest of a longer line is cut off in the log.
const MAX_LOG_LINE: usize = 8 * 1024;

impl LogLines {
    pub fn new(
        function: Arc<str>,
        request_id: Arc<str>,
        sink: Option<Arc<dyn LogSink>>,
        cap: usize,
    ) -> Self {
        LogLines {
            function,
            request_id,
            sink,
            pending: Vec::new(),
            budget: cap,
            cap,
            dropped: 0,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let keep = bytes.len().min(self.budget);
        self.budget -= keep;
        self.dropped += (bytes.len() - keep) as u64;
        self.write_lines(&bytes[..keep]);
    }

    fn write_lines(&mut self, mut bytes: &[u8]) {
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
        tracing::info!(target: "guest", request_id = %self.request_id, function = %self.function, "{line}");
        if let Some(sink) = &self.sink {
            sink.guest_line(&self.request_id, line);
        }
        self.pending.clear();
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.flush();
        if self.dropped > 0 {
            let line = format!(
                "stderr: {} bytes dropped past the invocation's `limits.max_log_bytes` ({} bytes)",
                self.dropped, self.cap
            );
            tracing::warn!(request_id = %self.request_id, function = %self.function, "{line}");
            if let Some(sink) = &self.sink {
                sink.guest_line(&self.request_id, &line);
            }
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
    fn long_log_lines_are_cut() {
        let mut l = LogLines::new("f".into(), "r".into(), None, 1 << 20);
        l.write(&vec![b'x'; MAX_LOG_LINE + 10]);
        assert_eq!(l.pending.len(), MAX_LOG_LINE);
        l.write(b"\nnext");
        assert_eq!(l.pending, b"next");
        assert_eq!(l.dropped, 0);
    }

    #[test]
    fn past_the_budget_bytes_are_dropped_and_counted() {
        let mut l = LogLines::new("f".into(), "r".into(), None, 10);
        l.write(b"abcdef\n");
        l.write(b"ghijkl\n");
        assert_eq!(l.pending, b"ghi");
        assert_eq!(l.dropped, 4);
        l.write(&vec![b'x'; 1 << 20]);
        assert_eq!(l.pending, b"ghi");
        assert_eq!(l.dropped, 4 + (1 << 20));
    }
}
