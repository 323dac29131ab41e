//! `poll_oneoff`: waits on clocks and descriptor readiness, level-triggered, as mio_wasi
//! expects (`docs/wasmedge-socket-abi.md` §5).

use std::future::Future;
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::Caller;

use super::{monotonic_ns, realtime_ns};
use crate::runtime::abi::wasi_types::{
    clockid, event, eventrwflags, eventtype, subclockflags, subscription,
};
use crate::runtime::abi::{Errno, GuestMemory, GuestPtr};
use crate::runtime::host::{with_mem, Host};

/// One parsed `poll_oneoff` subscription.
#[derive(Debug, Clone, Copy)]
enum Subscription {
    /// Fires at `deadline` (on the host's monotonic clock).
    Clock { userdata: u64, deadline: Instant },
    /// Fd readiness: `write` false for reading.
    Fd { userdata: u64, fd: u32, write: bool },
}

/// How far away a relative timeout too large for an `Instant` is put.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

fn parse_subscription(m: &GuestMemory<'_>, at: GuestPtr) -> Result<Subscription, Errno> {
    let userdata = m.read_u64(at.add(subscription::USERDATA)?)?;
    let tag = m.read_u8(at.add(subscription::TAG)?)?;
    match tag {
        eventtype::CLOCK => {
            let clock = m.read_u32(at.add(subscription::CLOCK_ID)?)?;
            let timeout = m.read_u64(at.add(subscription::CLOCK_TIMEOUT)?)?;
            let flags = m.read_u16(at.add(subscription::CLOCK_FLAGS)?)?;
            let now = Instant::now();
            let deadline = if flags & subclockflags::ABSTIME != 0 {
                // Absolute time on the named clock.
                let remaining = match clock {
                    clockid::REALTIME => timeout.saturating_sub(realtime_ns()),
                    clockid::MONOTONIC | clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => {
                        timeout.saturating_sub(monotonic_ns())
                    }
                    _ => return Err(Errno::Inval),
                };
                now.checked_add(Duration::from_nanos(remaining))
                    .unwrap_or(now + FAR_FUTURE)
            } else {
                now.checked_add(Duration::from_nanos(timeout))
                    .unwrap_or(now + FAR_FUTURE)
            };
            Ok(Subscription::Clock { userdata, deadline })
        }
        eventtype::FD_READ | eventtype::FD_WRITE => Ok(Subscription::Fd {
            userdata,
            fd: m.read_u32(at.add(subscription::FD)?)?,
            write: tag == eventtype::FD_WRITE,
        }),
        _ => Err(Errno::Inval),
    }
}

/// Most subscriptions one `poll_oneoff` takes; more is `EINVAL` (a guest waits on a
/// handful: its sockets, stdin and one timer).
pub const MAX_SUBSCRIPTIONS: u32 = 4096;

/// The subscriptions of an array of `count`: `EINVAL` for more than [`MAX_SUBSCRIPTIONS`],
/// `EFAULT` if the array is not all in memory.
fn parse_subscriptions(
    m: &GuestMemory<'_>,
    subs: GuestPtr,
    count: u32,
) -> Result<Vec<Subscription>, Errno> {
    if count > MAX_SUBSCRIPTIONS {
        return Err(Errno::Inval);
    }
    m.check_array(subs, count, subscription::SIZE)?;
    (0..count)
        .map(|i| parse_subscription(m, subs.element(i, subscription::SIZE)?))
        .collect()
}

/// An event to report. The error field is never set: tokio_wasi panics on it, so trouble is
/// reported as readiness with the hang-up flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    userdata: u64,
    kind: u8,
    nbytes: u64,
    hangup: bool,
}

fn write_event(m: &mut GuestMemory<'_>, at: GuestPtr, e: &Event) -> Result<(), Errno> {
    m.zero(at, event::SIZE)?;
    m.write_u64(at.add(event::USERDATA)?, e.userdata)?;
    m.write_u8(at.add(event::TYPE)?, e.kind)?;
    m.write_u64(at.add(event::NBYTES)?, e.nbytes)?;
    let flags = if e.hangup {
        eventrwflags::FD_READWRITE_HANGUP
    } else {
        0
    };
    m.write_u16(at.add(event::FLAGS)?, flags)
}

/// Longest a `poll_oneoff` that waits on fds blocks before returning no events. tokio_wasi's
/// current-thread runtime can park while its main task is already woken (its unpark is a no-op
/// on WASI), so an unbounded wait could hang a guest whose socket stays quiet; a bounded one
/// makes it look again.
const MAX_FD_WAIT: Duration = Duration::from_millis(5);

pub(super) async fn poll_oneoff(
    caller: &mut Caller<'_, Host>,
    subs_ptr: GuestPtr,
    events_ptr: GuestPtr,
    count: u32,
    nevents_ptr: GuestPtr,
) -> Result<(), Errno> {
    // The guest expects EINVAL for "nothing to wait for" (§5).
    if count == 0 {
        return Err(Errno::Inval);
    }
    let subs = with_mem(caller, |m, _| parse_subscriptions(m, subs_ptr, count))?;
    tracing::trace!(?subs, "poll_oneoff");
    let has_fds = subs.iter().any(|s| matches!(s, Subscription::Fd { .. }));
    let clock_deadline = subs
        .iter()
        .filter_map(|s| match s {
            Subscription::Clock { deadline, .. } => Some(*deadline),
            Subscription::Fd { .. } => None,
        })
        .min();
    let cap = has_fds.then(|| Instant::now() + MAX_FD_WAIT);
    let wake_at = match (clock_deadline, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut sleep = wake_at.map(|at| Box::pin(tokio::time::sleep_until(at.into())));

    let host = caller.data_mut();
    let events: Vec<Event> = std::future::poll_fn(|cx| {
        let mut events = Vec::new();
        for s in &subs {
            if let Subscription::Fd {
                userdata,
                fd,
                write,
            } = *s
            {
                if let Some(r) = host.fds.poll_ready(fd, write, cx) {
                    events.push(Event {
                        userdata,
                        kind: if write {
                            eventtype::FD_WRITE
                        } else {
                            eventtype::FD_READ
                        },
                        nbytes: r.nbytes,
                        hangup: r.hangup,
                    });
                }
            }
        }
        let now = Instant::now();
        for s in &subs {
            if let Subscription::Clock { userdata, deadline } = *s {
                if deadline <= now {
                    events.push(Event {
                        userdata,
                        kind: eventtype::CLOCK,
                        nbytes: 0,
                        hangup: false,
                    });
                }
            }
        }
        if !events.is_empty() {
            return Poll::Ready(events);
        }
        match sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Vec::new()),
            _ => Poll::Pending,
        }
    })
    .await;

    with_mem(caller, |m, _| {
        // At most one event per subscription, so the count fits a u32.
        let mut n = 0u32;
        for e in &events {
            write_event(m, events_ptr.element(n, event::SIZE)?, e)?;
            n += 1;
        }
        m.write_u32(nevents_ptr, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_sub(m: &mut GuestMemory<'_>, at: u32, userdata: u64, timeout: u64, flags: u16) {
        let at = GuestPtr(at);
        m.write_u64(at, userdata).unwrap();
        m.write_u8(at.add(8).unwrap(), eventtype::CLOCK).unwrap();
        m.write_u32(at.add(16).unwrap(), clockid::MONOTONIC)
            .unwrap();
        m.write_u64(at.add(24).unwrap(), timeout).unwrap();
        m.write_u16(at.add(40).unwrap(), flags).unwrap();
    }

    #[test]
    fn parses_subscriptions() {
        let mut raw = vec![0u8; 2 * 48];
        let mut m = GuestMemory::new(&mut raw);
        clock_sub(&mut m, 0, 7, u64::MAX, 0);
        m.write_u64(GuestPtr(48), 3).unwrap();
        m.write_u8(GuestPtr(56), eventtype::FD_WRITE).unwrap();
        m.write_u32(GuestPtr(64), 5).unwrap();
        let subs = parse_subscriptions(&m, GuestPtr(0), 2).unwrap();
        assert!(matches!(subs[0], Subscription::Clock { userdata: 7, .. }));
        assert!(matches!(
            subs[1],
            Subscription::Fd {
                userdata: 3,
                fd: 5,
                write: true
            }
        ));
    }

    #[test]
    fn bad_subscription_arrays() {
        let mut raw = vec![0u8; 2 * 48];
        let mut m = GuestMemory::new(&mut raw);
        // One record past the end.
        assert_eq!(
            parse_subscriptions(&m, GuestPtr(0), 3).err(),
            Some(Errno::Fault)
        );
        assert_eq!(
            parse_subscriptions(&m, GuestPtr(u32::MAX - 8), 1).err(),
            Some(Errno::Fault)
        );
        // More records than any 32-bit memory holds.
        assert_eq!(
            parse_subscriptions(&m, GuestPtr(0), u32::MAX).err(),
            Some(Errno::Inval)
        );
        // An unknown tag, and an absolute time on an unknown clock.
        m.write_u8(GuestPtr(8), 9).unwrap();
        assert_eq!(
            parse_subscriptions(&m, GuestPtr(0), 1).err(),
            Some(Errno::Inval)
        );
        clock_sub(&mut m, 0, 0, 0, subclockflags::ABSTIME);
        m.write_u32(GuestPtr(16), 4).unwrap();
        assert_eq!(
            parse_subscriptions(&m, GuestPtr(0), 1).err(),
            Some(Errno::Inval)
        );
    }

    #[test]
    fn writes_events() {
        let mut raw = vec![0xffu8; 40];
        let mut m = GuestMemory::new(&mut raw);
        let e = Event {
            userdata: 0x0102,
            kind: eventtype::FD_READ,
            nbytes: 9,
            hangup: true,
        };
        write_event(&mut m, GuestPtr(8), &e).unwrap();
        assert_eq!(m.read_u64(GuestPtr(8)), Ok(0x0102));
        assert_eq!(m.read_u16(GuestPtr(16)), Ok(0), "the error field stays 0");
        assert_eq!(m.read_u8(GuestPtr(18)), Ok(eventtype::FD_READ));
        assert_eq!(m.read_u64(GuestPtr(24)), Ok(9));
        assert_eq!(m.read_u16(GuestPtr(32)), Ok(1));
        assert_eq!(
            m.read_u8(GuestPtr(0)),
            Ok(0xff),
            "nothing before the record"
        );
        assert_eq!(write_event(&mut m, GuestPtr(9), &e), Err(Errno::Fault));
    }
}
