//! What each function did lately, kept in memory per replica: its last log lines (the guest's
//! stderr and the platform's lines about it) and its last invocations, bounded, with a live
//! feed of new lines for `logs --follow`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{Outcome, Trigger};
use crate::api::{InvocationRecord, LogLine, LogSource};

/// One invocation as kept: no text is formatted until someone asks.
#[derive(Debug, Clone)]
pub struct Kept {
    /// When it arrived, in microseconds since the Unix epoch.
    pub at_micros: i64,
    pub request_id: Arc<str>,
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub status: u16,
    pub duration_us: u64,
}

impl Kept {
    /// As the API answers it.
    pub fn record(&self) -> InvocationRecord {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(self.at_micros)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        InvocationRecord {
            at,
            request_id: self.request_id.to_string(),
            trigger: self.trigger.as_str().into(),
            outcome: self.outcome.as_str().into(),
            status: self.status,
            duration_us: self.duration_us,
        }
    }
}

/// Most log lines kept per function.
pub const MAX_LINES: usize = 1000;
/// Most bytes of log text kept per function.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Most invocations kept per function.
pub const MAX_INVOCATIONS: usize = 500;
/// Lines a slow follower may fall behind before it skips ahead.
const FOLLOW_BUFFER: usize = 256;

/// One function's recent lines and invocations.
#[derive(Debug)]
pub struct Recent {
    state: Mutex<State>,
    /// New lines, for followers.
    feed: broadcast::Sender<Arc<LogLine>>,
}

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<Arc<LogLine>>,
    line_bytes: usize,
    invocations: VecDeque<Kept>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            state: Mutex::default(),
            feed: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }
}

impl Recent {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only pushes and copies happen under the lock; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a line (dropping the oldest past the bounds) and hands it to followers.
    pub fn line(&self, source: LogSource, level: &'static str, request_id: &str, message: &str) {
        let line = Arc::new(LogLine {
            at: now_text(),
            request_id: (!request_id.is_empty()).then(|| request_id.to_string()),
            source,
            level: level.into(),
            message: message.to_string(),
        });
        {
            let mut s = self.state();
            s.line_bytes += line.message.len();
            s.lines.push_back(line.clone());
            while s.lines.len() > MAX_LINES || s.line_bytes > MAX_LINE_BYTES {
                match s.lines.pop_front() {
                    Some(old) => s.line_bytes -= old.message.len(),
                    None => break,
                }
            }
        }
        // No follower is the usual case: nothing to do then.
        if self.feed.receiver_count() > 0 && self.feed.send(line).is_err() {
            tracing::trace!("the last follower left");
        }
    }

    /// Keeps an invocation's record.
    pub fn invocation(&self, record: Kept) {
        let mut s = self.state();
        if s.invocations.len() == MAX_INVOCATIONS {
            s.invocations.pop_front();
        }
        s.invocations.push_back(record);
    }

    /// The kept lines, oldest first, of one request if `request` is given.
    pub fn lines(&self, request: Option<&str>) -> Vec<Arc<LogLine>> {
        self.state()
            .lines
            .iter()
            .filter(|l| request.is_none_or(|r| l.request_id.as_deref() == Some(r)))
            .cloned()
            .collect()
    }

    /// The kept invocations, newest first.
    pub fn invocations(&self, limit: usize) -> Vec<Kept> {
        self.state()
            .invocations
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Lines from now on.
    pub fn follow(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.feed.subscribe()
    }
}

/// Now, as the API writes times: RFC 3339 in UTC with milliseconds.
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_within_bounds() {
        let r = Recent::default();
        for i in 0..MAX_LINES + 5 {
            r.line(LogSource::Guest, "info", "a", &format!("line {i}"));
        }
        let lines = r.lines(None);
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].message, "line 5");
        let big = "x".repeat(300 * 1024);
        for _ in 0..5 {
            r.line(LogSource::Guest, "info", "b", &big);
        }
        let lines = r.lines(None);
        assert!(lines.iter().map(|l| l.message.len()).sum::<usize>() <= MAX_LINE_BYTES);
        assert_eq!(r.lines(Some("b")).len(), 3);
        assert!(r.lines(Some("a")).is_empty());
    }

    #[tokio::test]
    async fn followers_get_new_lines() {
        let r = Recent::default();
        r.line(LogSource::Guest, "info", "", "before");
        let mut rx = r.follow();
        r.line(LogSource::Platform, "warn", "id1", "after");
        let got = rx.recv().await.unwrap();
        assert_eq!(got.message, "after");
        assert_eq!(got.request_id.as_deref(), Some("id1"));
    }
}
