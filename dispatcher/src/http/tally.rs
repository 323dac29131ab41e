//! A count of one kind of event that a client can cause at any rate (a refused admin call, a
//! connection turned away), logged at most once per interval: the first event of a quiet
//! spell in full, then one summary line per interval while they keep coming.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The events of one kind, and whether a summary is due.
pub struct Tally {
    /// What the summary line counts, in the plural: `admin requests refused`.
    what: &'static str,
    /// How often, at most, a summary is logged.
    interval: Duration,
    /// Events since the last line, and whether a task is waiting to log them.
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Events not yet logged.
    unlogged: u64,
    /// A summary task is running: the events are part of a spell already announced.
    spell: bool,
}

impl Tally {
    pub fn new(what: &'static str, interval: Duration) -> Arc<Self> {
        Arc::new(Tally {
            what,
            interval,
            state: Mutex::new(Counts::default()),
        })
    }

    /// Counts one event. True when it starts a spell: the caller logs it in full. Later ones
    /// are counted, and a line per interval says how many came (`500 admin requests refused
    /// in the last 10 s`) until an interval passes without any.
    pub fn note(self: &Arc<Self>) -> bool {
        let mut counts = self.lock();
        if counts.spell {
            counts.unlogged += 1;
            return false;
        }
        counts.spell = true;
        drop(counts);
        let me = self.clone();
        tokio::spawn(async move { me.summarize().await });
        true
    }

    /// Logs the count once per interval until an interval passes without an event.
    async fn summarize(&self) {
        loop {
            tokio::time::sleep(self.interval).await;
            let n = {
                let mut counts = self.lock();
                if counts.unlogged == 0 {
                    counts.spell = false;
                    return;
                }
                std::mem::take(&mut counts.unlogged)
            };
            let secs = self.interval.as_secs_f64();
            tracing::warn!("{n} more {} in the last {secs} s", self.what);
        }
    }

    /// Events counted since the last summary line (for tests).
    #[cfg(test)]
    fn unlogged(&self) -> u64 {
        self.lock().unlogged
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_line_starts_a_spell_and_a_quiet_interval_ends_it() {
        let interval = Duration::from_millis(200);
        let t = Tally::new("things", interval);
        assert!(t.note(), "the first event is logged in full");
        for _ in 0..499 {
            assert!(!t.note());
        }
        assert_eq!(t.unlogged(), 499);
        tokio::time::sleep(interval + interval / 2).await;
        assert_eq!(t.unlogged(), 0, "the summary took the count");
        assert!(!t.note(), "the spell goes on while events keep coming");
        // The interval with that event logs it; the next one, quiet, ends the spell.
        tokio::time::sleep(interval * 3).await;
        assert!(t.note(), "after a quiet interval, a new spell");
    }
}
