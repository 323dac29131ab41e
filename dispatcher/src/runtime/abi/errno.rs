//! The WASI errno values the host hands back to guests, and the one mapping from host I/O
//! errors to them.
//!
//! Both the preview1 calls and the WasmEdge socket calls return these (WasmEdge uses the WASI
//! numbering too; `docs/wasmedge-socket-abi.md` §7).

use std::io;

/// A WASI `errno`, with its preview1 number. Only the values this host returns are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Errno {
    /// No error. Only ever stored, never returned as an `Err`, except where a socket's
    /// pending `SO_ERROR` has been read and cleared (see `fd::socket`).
    Success = 0,
    Acces = 2,
    Addrinuse = 3,
    Addrnotavail = 4,
    Afnosupport = 5,
    Again = 6,
    Badf = 8,
    Connaborted = 13,
    Connrefused = 14,
    Connreset = 15,
    Fault = 21,
    Fbig = 22,
    Hostunreach = 23,
    Inval = 28,
    Io = 29,
    Isconn = 30,
    /// Too many open descriptors: the instance holds its socket cap.
    Mfile = 33,
    Netunreach = 40,
    Noprotoopt = 50,
    Nosys = 52,
    Notconn = 53,
    Notsock = 57,
    Notsup = 58,
    Pipe = 64,
    Spipe = 70,
    Timedout = 73,
}

impl Errno {
    /// The number the guest receives as a host call's `i32` result.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl From<&io::Error> for Errno {
    /// The errno the guest crates expect for a host I/O error; anything unrecognised is `EIO`.
    fn from(e: &io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Errno::Connrefused,
            ConnectionReset => Errno::Connreset,
            ConnectionAborted => Errno::Connaborted,
            NotConnected => Errno::Notconn,
            AddrInUse => Errno::Addrinuse,
            AddrNotAvailable => Errno::Addrnotavail,
            BrokenPipe => Errno::Pipe,
            WouldBlock => Errno::Again,
            TimedOut => Errno::Timedout,
            PermissionDenied => Errno::Acces,
            InvalidInput => Errno::Inval,
            HostUnreachable => Errno::Hostunreach,
            NetworkUnreachable => Errno::Netunreach,
            _ => Errno::Io,
        }
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Errno::from(&e)
    }
}

/// The `i32` a host call returns for a body's result: 0 on success, else the errno.
pub fn result_code(r: Result<(), Errno>) -> i32 {
    match r {
        Ok(()) => Errno::Success.code(),
        Err(e) => e.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_wasi_ones() {
        // Spot checks against the preview1 table (and docs/wasmedge-socket-abi.md §7).
        assert_eq!(Errno::Success.code(), 0);
        assert_eq!(Errno::Acces.code(), 2);
        assert_eq!(Errno::Again.code(), 6);
        assert_eq!(Errno::Badf.code(), 8);
        assert_eq!(Errno::Fault.code(), 21);
        assert_eq!(Errno::Inval.code(), 28);
        assert_eq!(Errno::Nosys.code(), 52);
        assert_eq!(Errno::Notsup.code(), 58);
        assert_eq!(Errno::Timedout.code(), 73);
    }

    #[test]
    fn io_errors_map_to_socket_errnos() {
        use io::ErrorKind::*;
        let cases = [
            (ConnectionRefused, Errno::Connrefused),
            (ConnectionReset, Errno::Connreset),
            (ConnectionAborted, Errno::Connaborted),
            (NotConnected, Errno::Notconn),
            (AddrInUse, Errno::Addrinuse),
            (AddrNotAvailable, Errno::Addrnotavail),
            (BrokenPipe, Errno::Pipe),
            (WouldBlock, Errno::Again),
            (TimedOut, Errno::Timedout),
            (PermissionDenied, Errno::Acces),
            (InvalidInput, Errno::Inval),
            (HostUnreachable, Errno::Hostunreach),
            (NetworkUnreachable, Errno::Netunreach),
            (UnexpectedEof, Errno::Io),
            (Other, Errno::Io),
        ];
        for (kind, errno) in cases {
            assert_eq!(Errno::from(io::Error::from(kind)), errno, "{kind:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn raw_os_errors_map_by_kind() {
        // What tokio hands back from a refused connect, a reset and a timeout on Linux.
        assert_eq!(
            Errno::from(io::Error::from_raw_os_error(111)),
            Errno::Connrefused
        );
        assert_eq!(
            Errno::from(io::Error::from_raw_os_error(104)),
            Errno::Connreset
        );
        assert_eq!(
            Errno::from(io::Error::from_raw_os_error(110)),
            Errno::Timedout
        );
    }

    #[test]
    fn results_become_codes() {
        assert_eq!(result_code(Ok(())), 0);
        assert_eq!(result_code(Err(Errno::Badf)), 8);
    }
}
