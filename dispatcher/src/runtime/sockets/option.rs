//! Socket options: `sock_setsockopt` and `sock_getsockopt` at `SOL_SOCKET`, the only level.
//! Options that only tune the host's own socket are accepted and ignored.

use std::time::Duration;

use crate::runtime::abi::socket_types::{socket_type, sockopt, sockopt_level, timeval, INT_SIZE};
use crate::runtime::abi::{Errno, GuestMemory, GuestPtr};
use crate::runtime::fd::{SockKind, SockState, Socket};

/// Reads a `timeval` option value; zero means no timeout.
fn read_timeval(m: &GuestMemory<'_>, val: GuestPtr, len: u32) -> Result<Option<Duration>, Errno> {
    if len < timeval::SIZE {
        return Err(Errno::Inval);
    }
    let secs = m.read_u64(val.add(timeval::SEC)?)?;
    let usecs = m.read_u64(val.add(timeval::USEC)?)?;
    let d = Duration::from_secs(secs)
        .checked_add(Duration::from_micros(usecs))
        .ok_or(Errno::Inval)?;
    Ok((!d.is_zero()).then_some(d))
}

fn write_timeval(m: &mut GuestMemory<'_>, val: GuestPtr, t: Option<Duration>) -> Result<(), Errno> {
    let t = t.unwrap_or_default();
    m.write_u64(val.add(timeval::SEC)?, t.as_secs())?;
    m.write_u64(val.add(timeval::USEC)?, u64::from(t.subsec_micros()))
}

/// `sock_setsockopt(fd, level, name, val, len)` on the socket `s`.
pub fn set(
    m: &GuestMemory<'_>,
    s: &mut Socket,
    level: u32,
    name: u32,
    val: GuestPtr,
    len: u32,
) -> Result<(), Errno> {
    if level != sockopt_level::SOL_SOCKET {
        return Err(Errno::Noprotoopt);
    }
    let int = || m.read_u32(val).map(|v| v != 0);
    match name {
        sockopt::REUSEADDR => s.reuse_addr = int()?,
        sockopt::RCVTIMEO => s.recv_timeout = read_timeval(m, val, len)?,
        sockopt::SNDTIMEO => s.send_timeout = read_timeval(m, val, len)?,
        // Keep-alive, buffer sizes, linger and the like: accepted, left to the host.
        sockopt::DONTROUTE
        | sockopt::BROADCAST
        | sockopt::SNDBUF
        | sockopt::RCVBUF
        | sockopt::KEEPALIVE
        | sockopt::OOBINLINE
        | sockopt::LINGER
        | sockopt::RCVLOWAT
        | sockopt::BINDTODEVICE => {}
        _ => return Err(Errno::Noprotoopt),
    }
    Ok(())
}

/// `sock_getsockopt(fd, level, name, val, len_out)` on the socket `s`: writes the value and
/// its length. `SO_ERROR` is a WASI errno, and reading it clears it.
pub fn get(
    m: &mut GuestMemory<'_>,
    s: &mut Socket,
    level: u32,
    name: u32,
    val: GuestPtr,
    len_out: GuestPtr,
) -> Result<(), Errno> {
    if level != sockopt_level::SOL_SOCKET {
        return Err(Errno::Noprotoopt);
    }
    let value: i32 = match name {
        sockopt::REUSEADDR => i32::from(s.reuse_addr),
        sockopt::TYPE => i32::from(match s.kind {
            SockKind::Dgram => socket_type::DGRAM,
            SockKind::Stream => socket_type::STREAM,
        }),
        sockopt::ERROR => match &mut s.state {
            SockState::Failed(e) => std::mem::replace(e, Errno::Success).code(),
            SockState::Connected(stream) => match stream.take_error() {
                Ok(Some(e)) => Errno::from(&e).code(),
                _ => 0,
            },
            _ => 0,
        },
        sockopt::ACCEPTCONN => i32::from(matches!(s.state, SockState::Listening { .. })),
        sockopt::RCVTIMEO | sockopt::SNDTIMEO => {
            let t = if name == sockopt::RCVTIMEO {
                s.recv_timeout
            } else {
                s.send_timeout
            };
            write_timeval(m, val, t)?;
            return m.write_u32(len_out, timeval::SIZE);
        }
        _ => return Err(Errno::Noprotoopt),
    };
    m.write_bytes(val, &value.to_le_bytes())?;
    m.write_u32(len_out, INT_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp() -> Socket {
        Socket::new(SockKind::Dgram, false, SockState::Udp)
    }

    #[test]
    fn timeouts_round_trip() {
        let mut raw = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut raw);
        let mut s = udp();
        m.write_u64(GuestPtr(0), 2).unwrap();
        m.write_u64(GuestPtr(8), 500_000).unwrap();
        set(&m, &mut s, 0, sockopt::RCVTIMEO, GuestPtr(0), 16).unwrap();
        assert_eq!(s.recv_timeout, Some(Duration::from_millis(2500)));
        get(
            &mut m,
            &mut s,
            0,
            sockopt::RCVTIMEO,
            GuestPtr(32),
            GuestPtr(48),
        )
        .unwrap();
        assert_eq!(m.read_u64(GuestPtr(32)), Ok(2));
        assert_eq!(m.read_u64(GuestPtr(40)), Ok(500_000));
        assert_eq!(m.read_u32(GuestPtr(48)), Ok(16));
        // Zero clears it; a short value is EINVAL.
        m.zero(GuestPtr(0), 16).unwrap();
        set(&m, &mut s, 0, sockopt::RCVTIMEO, GuestPtr(0), 16).unwrap();
        assert_eq!(s.recv_timeout, None);
        assert_eq!(
            set(&m, &mut s, 0, sockopt::SNDTIMEO, GuestPtr(0), 8),
            Err(Errno::Inval)
        );
    }

    #[test]
    fn absurd_timeouts_are_einval_not_a_panic() {
        let mut raw = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u64(GuestPtr(0), u64::MAX).unwrap();
        m.write_u64(GuestPtr(8), u64::MAX).unwrap();
        let mut s = udp();
        assert_eq!(
            set(&m, &mut s, 0, sockopt::RCVTIMEO, GuestPtr(0), 16),
            Err(Errno::Inval)
        );
        assert_eq!(
            set(&m, &mut s, 0, sockopt::RCVTIMEO, GuestPtr(8), 16),
            Err(Errno::Fault)
        );
    }

    #[test]
    fn ints_levels_and_unknown_names() {
        let mut raw = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        let mut s = udp();
        m.write_u32(GuestPtr(0), 1).unwrap();
        set(&m, &mut s, 0, sockopt::REUSEADDR, GuestPtr(0), 4).unwrap();
        assert!(s.reuse_addr);
        assert_eq!(
            set(&m, &mut s, 0, sockopt::KEEPALIVE, GuestPtr(0), 4),
            Ok(())
        );
        assert_eq!(
            set(&m, &mut s, 1, sockopt::REUSEADDR, GuestPtr(0), 4),
            Err(Errno::Noprotoopt)
        );
        assert_eq!(
            set(&m, &mut s, 0, 99, GuestPtr(0), 4),
            Err(Errno::Noprotoopt)
        );
        get(&mut m, &mut s, 0, sockopt::TYPE, GuestPtr(4), GuestPtr(8)).unwrap();
        assert_eq!(m.read_u32(GuestPtr(4)), Ok(1));
        assert_eq!(m.read_u32(GuestPtr(8)), Ok(4));
        get(
            &mut m,
            &mut s,
            0,
            sockopt::ACCEPTCONN,
            GuestPtr(4),
            GuestPtr(8),
        )
        .unwrap();
        assert_eq!(m.read_u32(GuestPtr(4)), Ok(0));
        assert_eq!(
            get(&mut m, &mut s, 0, sockopt::ERROR, GuestPtr(14), GuestPtr(8)),
            Err(Errno::Fault)
        );
    }

    #[test]
    fn so_error_reports_a_failed_connect_once() {
        let mut raw = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        let mut s = Socket::new(
            SockKind::Stream,
            false,
            SockState::Failed(Errno::Connrefused),
        );
        get(&mut m, &mut s, 0, sockopt::ERROR, GuestPtr(0), GuestPtr(4)).unwrap();
        assert_eq!(m.read_u32(GuestPtr(0)), Ok(14));
        get(&mut m, &mut s, 0, sockopt::ERROR, GuestPtr(0), GuestPtr(4)).unwrap();
        assert_eq!(m.read_u32(GuestPtr(0)), Ok(0));
    }
}
