//! Admin calls refused for a missing or wrong token, counted per client address: past a few
//! in an interval, that address gets 429 with `Retry-After` instead of 401, and the log gets
//! one line per interval instead of one per refusal. A right token is always let in, from
//! any address, so a flood of wrong ones cannot lock the operator out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tally::Tally;

/// The interval over which refusals are counted and logged.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Refusals one address gets as 401 in an interval; the ones after that get 429.
pub const PER_ADDRESS: u32 = 10;

/// Addresses tracked in one interval; refusals from more are answered 401 uncounted.
const ADDRESSES: usize = 10_000;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization: Bearer` header.
    NoToken,
    /// A token that is not the admin token.
    WrongToken,
}

/// What a refused call is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401, and whether to log it in full (the first of a spell).
    Unauthorized { log: bool },
    /// 429: this address was refused too often; retry after that many seconds.
    TooMany { retry_after: u64 },
}

/// The refusals of the current interval.
pub struct Refusals {
    /// Per address, in the interval that started at `since`.
    window: Mutex<Window>,
    /// The log's counts of refusals without a token, and with a wrong one.
    without_token: Arc<Tally>,
    wrong_token: Arc<Tally>,
}

struct Window {
    since: Instant,
    counts: HashMap<IpAddr, u32>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            window: Mutex::new(Window {
                since: Instant::now(),
                counts: HashMap::new(),
            }),
            without_token: Tally::new("admin requests without a token refused", INTERVAL),
            wrong_token: Tally::new("admin requests with a wrong token refused", INTERVAL),
        }
    }
}

impl Refusals {
    /// Counts a refusal of a call from `peer` and says how to answer it.
    pub fn refuse(&self, peer: IpAddr, why: Refused) -> Refusal {
        let log = match why {
            Refused::NoToken => self.without_token.note(),
            Refused::WrongToken => self.wrong_token.note(),
        };
        let now = Instant::now();
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(w.since) >= INTERVAL {
            w.since = now;
            w.counts.clear();
        }
        let full = w.counts.len() >= ADDRESSES;
        let n = match w.counts.get_mut(&peer) {
            Some(n) => n,
            None if full => return Refusal::Unauthorized { log },
            None => w.counts.entry(peer).or_default(),
        };
        *n = n.saturating_add(1);
        if *n > PER_ADDRESS {
            let left = INTERVAL.saturating_sub(now.duration_since(w.since));
            return Refusal::TooMany {
                retry_after: left.as_secs_f64().ceil().max(1.0) as u64,
            };
        }
        Refusal::Unauthorized { log }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_past_the_limit_gets_429_and_others_do_not() {
        let r = Refusals::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let wrong = Refused::WrongToken;
        assert_eq!(r.refuse(a, wrong), Refusal::Unauthorized { log: true });
        assert_eq!(
            r.refuse(a, Refused::NoToken),
            Refusal::Unauthorized { log: true },
            "each kind of refusal is logged once in full"
        );
        for _ in 2..PER_ADDRESS {
            assert_eq!(r.refuse(a, wrong), Refusal::Unauthorized { log: false });
        }
        let Refusal::TooMany { retry_after } = r.refuse(a, wrong) else {
            panic!("the address past its limit is not told to wait");
        };
        assert!((1..=10).contains(&retry_after), "{retry_after}");
        assert_eq!(r.refuse(b, wrong), Refusal::Unauthorized { log: false });
    }
}
