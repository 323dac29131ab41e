//! Constants and record layouts of WasmEdge's socket extension, as the guest crates encode
//! them (`docs/wasmedge-socket-abi.md` §2 and §3). Offsets are in bytes (wasm32,
//! little-endian unless noted).

/// `AddressFamily` (a `u8` in records, a `u32` where the host writes it out; 0 is
/// "unspecified", which the host never writes).
pub mod address_family {
    pub const INET4: u8 = 1;
    pub const INET6: u8 = 2;
}

/// `SocketType` (a `u8`).
pub mod socket_type {
    /// "Any": this host opens a stream socket.
    pub const ANY: u8 = 0;
    pub const DGRAM: u8 = 1;
    pub const STREAM: u8 = 2;
}

/// `AiProtocol` (a `u8`).
pub mod protocol {
    pub const TCP: u8 = 1;
}

/// Option levels of `sock_setsockopt` / `sock_getsockopt`.
pub mod sockopt_level {
    /// The only level there is.
    pub const SOL_SOCKET: u32 = 0;
}

/// Option names at `SOL_SOCKET`.
pub mod sockopt {
    pub const REUSEADDR: u32 = 0;
    pub const TYPE: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const DONTROUTE: u32 = 3;
    pub const BROADCAST: u32 = 4;
    pub const SNDBUF: u32 = 5;
    pub const RCVBUF: u32 = 6;
    pub const KEEPALIVE: u32 = 7;
    pub const OOBINLINE: u32 = 8;
    pub const LINGER: u32 = 9;
    pub const RCVLOWAT: u32 = 10;
    pub const RCVTIMEO: u32 = 11;
    pub const SNDTIMEO: u32 = 12;
    pub const ACCEPTCONN: u32 = 13;
    pub const BINDTODEVICE: u32 = 14;
}

/// `sock_recv` in-flags (`riflags`).
pub mod riflags {
    pub const PEEK: u32 = 1;
}

/// `sock_shutdown`'s `how` (`sdflags`).
pub mod sdflags {
    pub const RD: u32 = 1;
    pub const WR: u32 = 2;
    pub const BOTH: u32 = RD | WR;
}

/// An option value of type `timeval`: `{sec: i64, usec: i64}`.
pub mod timeval {
    pub const SIZE: u32 = 16;
    pub const SEC: u32 = 0;
    pub const USEC: u32 = 8;
}

/// An option value of type `int`.
pub const INT_SIZE: u32 = 4;

/// `WasiAddress` (8 bytes): `{buf: *u8, size: u32}`, raw IP bytes in network order.
pub mod wasi_address {
    pub const BUF: u32 = 0;
    pub const LEN: u32 = 4;
    /// Length of an IPv4 address's bytes.
    pub const V4_LEN: u32 = 4;
    /// Length of an IPv6 address's bytes, and the buffer `get{local,peer}addr` need.
    pub const V6_LEN: u32 = 16;
}

/// `WasiSockaddr`: `{family: u8, _pad, sa_data_len: u32, sa_data: *u8}`.
pub mod sockaddr {
    pub const FAMILY: u32 = 0;
    pub const DATA_LEN: u32 = 4;
    pub const DATA: u32 = 8;
    /// The `sa_data` of an IPv4 address: port (big-endian u16) then the 4 address bytes,
    /// then zeros, as in a native `sockaddr_in` from `sin_port` on.
    pub const V4_DATA_LEN: u32 = 14;
    /// Where the IPv4 address bytes sit in `sa_data`.
    pub const V4_DATA_IP: usize = 2;
}

/// `WasiAddrinfo`, `repr(C, packed(4))`.
pub mod addrinfo {
    pub const SIZE: u32 = 28;
    /// `ai_flags: u16`.
    pub const FLAGS: u32 = 0;
    /// `ai_family: u8`.
    pub const FAMILY: u32 = 2;
    /// `ai_socktype: u8`.
    pub const SOCKTYPE: u32 = 3;
    /// `ai_protocol: u8`.
    pub const PROTOCOL: u32 = 4;
    /// `ai_addrlen: u32`, non-zero or the guest skips the entry.
    pub const ADDRLEN: u32 = 8;
    /// `ai_addr: *WasiSockaddr`.
    pub const ADDR: u32 = 12;
    /// `ai_canonnamelen: u32`.
    pub const CANONNAMELEN: u32 = 20;
    /// `ai_next: *WasiAddrinfo`.
    pub const NEXT: u32 = 24;
    /// `ai_addrlen` of an IPv4 entry: a native `sockaddr_in`.
    pub const V4_ADDRLEN: u32 = 16;
}
